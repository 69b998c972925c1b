"""Adapters: LoRA (via peft), BitFit and norm-only tuning inside the trainable groups."""

import pytest
import torch

import autotransfer as at
from autotransfer import plugins
from autotransfer.techniques import adapters
from autotransfer.techniques.adapters import merged_state
from autotransfer.testing import toy_images
from autotransfer.training.model import build_model
from autotransfer.training.optim import apply

INFO = {"classes": ["a", "b"]}


@pytest.fixture
def tiny_vit():
    """timm's test ViT at 32 px, for the image side of adapters."""
    b = at.TimmBackbone("tiny_vit", timm_name="test_vit", image_size=32, img_size=32)
    plugins.current().add_backbone(b)
    return b.name


def _applied(backbone, **fields):
    s = at.Strategy(backbone, **fields)
    model = build_model(s, "classification", INFO)
    apply(s, model, steps_per_epoch=1)
    return model


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _group_of(model, name):
    return next(i for i, names in enumerate(model.groups) if name in names)


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_vit"])
def test_lora_trains_only_adapters_in_the_trainable_groups_and_the_head(backbone, tiny_vit):
    model = _applied(backbone, adapter="lora", lora_rank=4, frozen_groups=1)
    trainable = _trainable(model)
    body = {n[len("body."):] for n in trainable if n.startswith("body.")}
    assert body and all(".lora_A." in n or ".lora_B." in n for n in body)
    assert {n for n in trainable if not n.startswith("body.")} == {
        n for n, _ in model.named_parameters() if n.startswith("head.")}
    assert all(_group_of(model, n) >= 1 for n in body)  # none in the frozen group 0
    assert any(".attn." in n or ".attention." in n for n in body)  # attention linears
    assert any("mlp" in n or "intermediate" in n for n in body)  # and MLP linears
    lora = sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    assert model.param_counts() == (lora, sum(p.numel() for p in model.parameters()))


def test_bitfit_and_norm_train_biases_or_norms_of_the_trainable_groups(tiny_vit):
    for adapter, kind in (("bitfit", "bias"), ("norm", "norm")):
        model = _applied("tiny_vit", adapter=adapter, frozen_groups=2)  # stem, block 0
        body = {n[len("body."):] for n in _trainable(model) if n.startswith("body.")}
        assert body and all(_group_of(model, n) >= 2 for n in body), adapter
        if kind == "bias":
            assert all(n.endswith(".bias") for n in body)
            assert any(".attn." in n for n in body)  # linear biases too, not only norms
        else:
            assert all("norm" in n for n in body)
        frozen_kind = [n for n in model.groups[1] if kind in n]
        assert frozen_kind and not set(frozen_kind) & body  # frozen groups stay frozen


def test_a_lora_model_is_saved_merged_and_loads_without_adapters(tiny_vit, tmp_path):
    s = at.Strategy("tiny_vit", adapter="lora", lora_rank=4, frozen_groups=1)
    model = _applied("tiny_vit", adapter="lora", lora_rank=4, frozen_groups=1).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:  # LoRA starts at zero: give it something to merge
                p.normal_(std=0.1)
        x = torch.randn(3, 3, 32, 32)
        live = model(x)
    state = merged_state(model)
    assert not any("lora" in k or "base_layer" in k for k in state)
    plain = build_model(s, "classification", INFO).eval()
    plain.load_state_dict(state)  # strict: the same keys as a model without adapters
    torch.testing.assert_close(plain(x), live, rtol=1e-4, atol=1e-5)
    pre = plugins.get_backbone("tiny_vit").preprocessing(image_size=32)
    path = at.Predictor(model, s, "classification", INFO, pre).save(tmp_path / "m.safetensors")
    loaded = at.Predictor.load(path)
    torch.testing.assert_close(loaded.model.eval()(x), live, rtol=1e-4, atol=1e-5)


def test_the_space_searches_adapters_only_where_they_apply(tiny_vit, tmp_path):
    study = at.search(toy_images(40, classes=2, size=32), backbones=["tiny_cnn", "tiny_vit"],
                      n_trials=8, storage=tmp_path / "s.db", name="a", progress=False,
                      space=at.SearchSpace(epochs=1, image_size=32), baselines=False,
                      warm_start=False, rank=False)
    for t in study.optuna.trials:
        on_vit = t.params["backbone"] == "tiny_vit"
        assert ("adapter" in t.params) == on_vit
        assert ("lora_rank" in t.params) == (t.params.get("adapter") == "lora")
    lb = study.leaderboard()
    assert {"adapter", "lora_rank", "trainable_params"} <= set(lb.columns)
    assert set(lb.loc[lb["backbone"] == "tiny_cnn", "adapter"]) <= {"none"}


def test_an_adapter_that_does_not_apply_is_refused(tmp_path):
    with pytest.raises(at.StrategyError, match=r"adapter must be one of \('none', 'lora'"):
        at.Strategy("tiny_bert", adapter="prefix")
    data = toy_images(20, classes=2, size=16)
    with pytest.raises(at.StrategyError, match="adapter='lora' does not apply to backbone "
                                               "'tiny_cnn'; only adapter='none' .plain"):
        at.run_trial(at.Strategy("tiny_cnn", adapter="lora", epochs=1, image_size=16),
                     data, data)
    with pytest.raises(at.ConfigError, match=r"adapter='bitfit' applies to none of the "
                                             r"backbones \(tiny_cnn takes none\): adapters "
                                             r"apply to transformers encoders"):
        at.search(data, backbones=["tiny_cnn"], n_trials=2, storage=tmp_path / "s.db",
                  space=at.SearchSpace(adapter="bitfit"), progress=False)
    assert not (tmp_path / "s.db").exists()


def test_without_peft_the_default_space_leaves_lora_out(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(adapters, "peft_available", lambda: False)
    texts = at.data.from_texts(["good", "bad", "fine", "awful"] * 3, ["p", "n"] * 6)
    with pytest.raises(at.ConfigError, match=r"adapter='lora' asks for LoRA, which needs the "
                                             r"peft library: pip install 'autotransfer\[adapters\]'"):
        at.search(texts, backbones=["tiny_bert"], n_trials=2, storage=tmp_path / "s.db",
                  space=at.SearchSpace(adapter="lora"), progress=False)
    assert not (tmp_path / "s.db").exists()
    space = adapters.fit_space(at.SearchSpace(), ["tiny_bert"])
    assert space.adapter.choices == ("none", "bitfit", "norm")
    assert "leaves adapter='lora' out" in capsys.readouterr().err


@pytest.mark.parametrize("adapter", ["lora", "bitfit", "norm"])
def test_an_adapter_trial_trains_on_the_cached_prefix(adapter):
    texts = ["awful film", "dull and slow", "a waste", "lovely", "great fun", "moving"] * 4
    labels = (["neg"] * 3 + ["pos"] * 3) * 4
    train, valid = at.data.from_texts(texts, labels).split(0.25, seed=0)
    s = at.Strategy("tiny_bert", adapter=adapter, frozen_groups=2, epochs=2, lr=1e-2,
                    batch_size=4)
    r = at.run_trial(s, train, valid, patience=None)
    assert r.cache_source == "computed" and r.history[-1]["train_loss"] > 0
    assert not any("lora" in k or "base_layer" in k for k in r.state_dict)  # saved merged


@pytest.mark.parametrize("adapter", ["lora", "bitfit", "norm"])
def test_an_adapter_changes_only_the_trainable_groups_and_the_head(adapter, tmp_path):
    from safetensors.torch import save_file

    body = at.TimmBackbone("w", timm_name="test_vit", img_size=32).build(pretrained=False)
    save_file(body.state_dict(), tmp_path / "vit.safetensors")
    b = at.TimmBackbone("vit_w", timm_name="test_vit", image_size=32, img_size=32,
                        weights=tmp_path / "vit.safetensors")
    plugins.current().add_backbone(b)
    train, valid = toy_images(48, classes=2, size=32).split(0.25, seed=0)
    s = at.Strategy("vit_w", adapter=adapter, frozen_groups=2, epochs=2, lr=1e-2, batch_size=8)
    r = at.run_trial(s, train, valid, patience=None)
    groups = b.layer_groups(body)
    changed = {k[len("body."):] for k, v in r.state_dict.items()
               if k.startswith("body.") and not torch.equal(v, body.state_dict()[k[5:]])}
    assert changed and all(not any(k in g for g in groups[:2]) for k in changed)
    if adapter == "bitfit":
        assert all(k.endswith(".bias") for k in changed)
    if adapter == "lora":  # merged into the linear weights of the trainable groups
        assert any(k.endswith("qkv.weight") for k in changed)
