"""Strategy: validation, and what apply() does to a real model."""

import math

import pytest
import torch

import autotransfer as at
from autotransfer.training.model import build_model
from autotransfer.training.optim import apply


@pytest.mark.parametrize("field,value,accepted", [
    ("lr", 0.0, "a finite number > 0"),
    ("layer_decay", 1.5, r"in \(0, 1\]"),
    ("dropout", 1.0, r"in \[0, 1\)"),
    ("optimizer", "lamb", "one of"),
    ("batch_size", 0, "an integer >= 1"),
    ("frozen_groups", -1, "an integer >= 0"),
    ("augment", "autoaugment", r"one of \('none', 'flip', 'trivial', 'randaugment'\)"),
    ("cutmix", -1.0, ">= 0"),
])
def test_out_of_range_values_name_the_field(field, value, accepted):
    with pytest.raises(at.StrategyError, match=f"{field} must be {accepted}"):
        at.Strategy("tiny_cnn", **{field: value})


def test_frozen_groups_beyond_the_backbone_names_the_range():
    model = build_model(at.Strategy("tiny_cnn"), "classification", {"classes": [0, 1]})
    with pytest.raises(at.StrategyError, match="frozen_groups=9 is out of range.*6 layer groups.*0..6"):
        apply(at.Strategy("tiny_cnn", frozen_groups=9), model, 1)


def test_from_dict_names_unknown_fields():
    with pytest.raises(at.StrategyError, match=r"Unknown strategy field\(s\) \['learning_rate'\]"):
        at.Strategy.from_dict({"backbone": "x", "learning_rate": 1e-3})
    s = at.Strategy("tiny_cnn", frozen_groups=2, lr=3e-4)
    assert at.Strategy.from_dict(s.to_dict()) == s


def test_no_weight_decay_on_norms_and_biases():
    model = build_model(at.Strategy("tiny_cnn"), "classification", {"classes": [0, 1]})
    applied = apply(at.Strategy("tiny_cnn", weight_decay=0.1), model, 1)
    for g in applied.optimizer.param_groups:
        for p in g["params"]:
            assert g["weight_decay"] == (0.1 if p.ndim > 1 else 0.0)


def test_l2sp_pulls_toward_the_pretrained_start():
    model = build_model(at.Strategy("tiny_cnn"), "classification", {"classes": [0, 1]})
    strategy = at.Strategy("tiny_cnn", l2sp=0.5, frozen_groups=2)
    applied = apply(strategy, model, 1)
    (l2sp,) = [t for t in applied.techniques if t.name == "l2sp"]  # the built-in plugin

    def penalty():
        return l2sp.loss(model, None, None, None, strategy)

    assert penalty().item() == 0.0
    p = next(p for p in model.body.parameters() if p.requires_grad)
    with torch.no_grad():
        p.add_(1.0)
    assert penalty().item() == pytest.approx(0.5 * 0.5 * p.numel(), rel=1e-5)
    # L2-SP replaces decay toward zero on the backbone; the head keeps weight decay
    decays = {g["name"]: g["weight_decay"] for g in applied.optimizer.param_groups}
    assert decays["group5"] == 0.0 and decays["head"] == 0.05
    with pytest.raises(at.StrategyError, match="l2sp must be 0 with pretrained=False"):
        at.Strategy("tiny_cnn", pretrained=False, l2sp=0.1)


def test_warmup_then_cosine():
    model = build_model(at.Strategy("tiny_cnn"), "classification", {"classes": [0, 1]})
    applied = apply(at.Strategy("tiny_cnn", lr=1.0, epochs=10, warmup=0.2), model, 10)
    lrs = []
    for _ in range(100):
        lrs.append(applied.optimizer.param_groups[-1]["lr"])
        applied.optimizer.step()
        applied.advance()
    assert lrs[0] == pytest.approx(1 / 20)
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) in (19, 20)
    assert lrs[-1] < 0.01 and all(a >= b for a, b in zip(lrs[20:], lrs[21:]))
    assert not math.isnan(sum(lrs))
