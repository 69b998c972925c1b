"""Helpers for testing autotransfer and its plugins.

- :class:`BackboneConformance`: a pytest suite any backbone plugin can run::

      from autotransfer.testing import BackboneConformance

      class TestMyBackbone(BackboneConformance):
          backbone = MyBackbone("mine")

- This module is also a plugin registering tiny random-init backbones (``tiny_cnn``,
  ``tiny_resnet``, ``tiny_bert``) built from config for fast tests:
  ``at.register_plugin("autotransfer.testing")``.
- :func:`toy_images`: a small learnable image task.
- :class:`PauseAt` / :func:`paused_head`: a task that pauses a trial at a known point, for
  fault drills that synchronise on a file instead of on time.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from .backbones import Backbone, HFBackbone, TimmBackbone
from .data import Dataset
from .data import batch as _batch
from .hookspecs import hookimpl
from .strategy.strategy import Strategy
from .training.model import TransferModel
from .training.optim import apply


def tiny_text_backbone(name: str = "tiny_bert") -> HFBackbone:
    """A 2-layer BERT with random weights and the MiniLM tokenizer (from the weights extra)."""
    from autotransfer_plugins.packaged_backbones import _minilm  # the tokenizer only
    from transformers import BertConfig

    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64)
    return HFBackbone(name, weights=None, config=config, tokenizer=str(_minilm()),
                      max_length=16)


@hookimpl
def register_backbones(register):
    register(TimmBackbone("tiny_cnn", timm_name="test_efficientnet", image_size=32))
    register(TimmBackbone("tiny_resnet", timm_name="test_resnet", image_size=32))
    try:
        register(tiny_text_backbone())
    except ImportError:  # its tokenizer comes with the `weights` extra
        pass


def toy_images(n: int = 96, *, classes: int = 3, size: int = 16, seed: int = 0) -> Dataset:
    """Images whose class is a bright quadrant: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 60, size=(n, 3, size, size), dtype=np.uint8)
    half = size // 2
    for i, c in enumerate(y):
        r, col = divmod(int(c) % 4, 2)
        x[i, :, r * half:(r + 1) * half, col * half:(col + 1) * half] += 150
    return Dataset(torch.from_numpy(x), y, "image")


def paused_head(marker: str, after: int) -> Any:
    """A classification head that pauses, once, at the ``after``-th validation of a process.

    For fault drills that must not depend on timing: with ``E`` epochs per trial and no
    pruning or early stopping, ``after = k * E + 2`` pauses with k trials done and one an
    epoch in. It then creates ``marker`` (holding the process id) and waits there until the
    process is killed or interrupted; a test waits for the file, not for time. A process
    that finds the marker already made never pauses (a restarted worker, a rerun).
    """
    from autotransfer_plugins.heads import ClassificationHead

    class Paused(ClassificationHead):
        name = "paused"
        validations = 0

        def metrics(self, outputs: Any, targets: Any, info: dict) -> dict[str, float]:
            out = super().metrics(outputs, targets, info)
            Paused.validations += 1
            if Paused.validations == after:
                _pause(marker)
            return out

    return Paused()


def _pause(marker: str) -> None:
    import os
    import time

    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    while True:  # until killed, or Ctrl-C raises here
        time.sleep(0.05)


class PauseAt:
    """An object plugin registering :func:`paused_head` as task ``"paused"``."""

    def __init__(self, marker: str, after: int) -> None:
        self.marker, self.after = str(marker), after

    @hookimpl
    def register_heads(self, register: Any) -> None:
        register(paused_head(self.marker, self.after))


def sample_inputs(backbone: Backbone, n: int = 3) -> Any:
    """Raw inputs of the backbone's modality, preprocessed and normalized."""
    pre = backbone.preprocessing()
    if backbone.modality == "text":
        return pre.prepare(["a short sentence", "another, somewhat longer sentence here", "x"][:n])
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (n, 3, pre.size, pre.size), generator=g, dtype=torch.uint8)
    return pre.normalize(raw)


class BackboneConformance:
    """What every backbone must do. Subclass with a ``backbone`` attribute; pytest runs it."""

    backbone: Backbone

    def _body(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return self.backbone.build(pretrained=False)

    def _model(self) -> TransferModel:
        body = self._body()
        head = torch.nn.Linear(body.num_features, 3)
        return TransferModel(body, head, self.backbone.layer_groups(body),
                             self.backbone.stages(body))

    def test_body_maps_inputs_to_features(self):
        body = self._body().eval()
        x = sample_inputs(self.backbone)
        with torch.no_grad():
            out = body(x)
        assert out.shape == (_batch.length(x), body.num_features)

    def test_groups_cover_every_parameter_exactly_once(self):
        body = self._body()
        groups = self.backbone.layer_groups(body)
        names = [n for g in groups for n in g]
        assert len(groups) >= 2, "a backbone needs at least two layer groups to freeze a part"
        assert all(groups), "every layer group holds parameters"
        assert len(names) == len(set(names)), "a parameter is in two groups"
        assert set(names) == {n for n, _ in body.named_parameters()}

    def test_groups_are_ordered_input_to_output(self):
        body = self._body().eval()
        first_use: dict[str, int] = {}
        counter = itertools.count()
        hooks = []
        for mod_name, module in body.named_modules():
            own = [n for n, _ in module.named_parameters(recurse=False)]
            if own:
                full = [f"{mod_name}.{n}" if mod_name else n for n in own]

                def hook(_m, _inp, full=full):
                    i = next(counter)
                    for n in full:
                        first_use.setdefault(n, i)

                hooks.append(module.register_forward_pre_hook(hook))
        with torch.no_grad():
            body(sample_inputs(self.backbone))
        for h in hooks:
            h.remove()
        order = [[first_use[n] for n in g if n in first_use] for g in
                 self.backbone.layer_groups(body)]
        for i, (a, b) in enumerate(zip(order, order[1:])):
            if a and b:
                assert max(a) <= min(b), f"group {i + 1} runs before the end of group {i}"

    def test_freezing_k_groups_freezes_exactly_those(self):
        model = self._model()
        groups = model.groups
        for k in sorted({0, 1, len(groups) // 2, len(groups)}):
            model.freeze(k)
            frozen = {n for n, p in model.body.named_parameters() if not p.requires_grad}
            assert frozen == {n for g in groups[:k] for n in g}
            assert all(p.requires_grad for p in model.head.parameters()), "the head always trains"

    def test_frozen_normalization_statistics_do_not_move(self):
        model = self._model()
        model.freeze(len(model.groups))
        before = {k: v.clone() for k, v in model.body.state_dict().items()}
        model.train()
        model(sample_inputs(self.backbone))
        after = model.body.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)

    def test_layer_decay_learning_rates(self):
        model = self._model()
        n = len(model.groups)
        strategy = Strategy(self.backbone.name, frozen_groups=1, lr=1e-2, layer_decay=0.5)
        applied = apply(strategy, model, steps_per_epoch=1)
        want = [None] + [1e-2 * 0.5 ** (n - 1 - i) for i in range(1, n)]
        assert applied.group_lrs == want
        lr_of = {id(p): g["lr"] for g in applied.optimizer.param_groups for p in g["params"]}
        params = dict(model.body.named_parameters())
        for i, names in enumerate(model.groups):
            for name in names:
                if i == 0:
                    assert id(params[name]) not in lr_of, "frozen parameters are not optimized"
                else:
                    assert lr_of[id(params[name])] == want[i]

    def test_prefix_then_tail_equals_forward(self):
        model = self._model().eval()
        x = sample_inputs(self.backbone)
        with torch.no_grad():
            want = model.head(model.body(x))
            for k in range(len(model.groups) + 1):
                model.freeze(k)
                model.eval()
                got = model.forward_tail(model.forward_prefix(x))
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
