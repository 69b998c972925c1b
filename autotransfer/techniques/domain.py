"""Domain adaptation from unlabeled target inputs: AdaBN and DANN.

A search given ``unlabeled=`` target inputs (``at.search(..., unlabeled=...)``) may choose,
per trial, like any other Strategy field:

- ``adabn`` (Li et al., 2016, "Revisiting Batch Normalization for Practical Domain
  Adaptation"): every BatchNorm layer's running mean and variance are re-estimated on the
  target inputs before each validation, and the kept model carries those statistics.
  Nothing else changes: no weight moves.
- ``dann`` (Ganin et al., 2016, "Domain-Adversarial Training of Neural Networks"): a small
  domain classifier reads the body's features of source and target batches through a
  gradient-reversal layer, so the body learns features the classifier cannot tell apart.
  The value is the loss weight; the reversal strength ramps up as in the paper.

Selection still uses the labelled validation data: give a small labelled sample of the
target as ``valid=`` so the search picks what works on the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..data import pipeline
from ..errors import StrategyError

_BN = nn.modules.batchnorm._BatchNorm


class GradReverse(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by ``-scale`` on the way back."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The gradient-reversal layer of DANN."""
    return GradReverse.apply(x, scale)


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, _BN) for m in module.modules())


def applicable(body: nn.Module) -> tuple[str, ...]:
    """The domain-adaptation fields a body can use: DANN always, AdaBN with BatchNorm."""
    return ("adabn", "dann") if has_batchnorm(body) else ("dann",)


def check(strategy: Any, model: nn.Module, unlabeled: Any) -> None:
    """A strategy that adapts needs target inputs, and AdaBN needs BatchNorm layers."""
    if (strategy.adabn or strategy.dann) and unlabeled is None:
        raise StrategyError(f"adabn={strategy.adabn}, dann={strategy.dann} adapt to unlabeled "
                            f"target inputs, but none were given; pass unlabeled= (search or "
                            f"run_trial), or use adabn=False, dann=0.")
    if strategy.adabn and not has_batchnorm(model):
        raise StrategyError(f"adabn=True re-estimates BatchNorm statistics, but backbone "
                            f"{strategy.backbone!r} has no BatchNorm layer; use dann > 0 to "
                            f"adapt it, or adabn=False.")


def target_batches(trial: Any, batch_size: int, shuffle: bool = False) -> Iterable:
    """Batches of a trial's unlabeled target inputs (an :class:`~autotransfer.techniques.Trial`)
    prepared as its training inputs are; ``shuffle``: in a new order each pass, drawn
    from the trial's generator."""
    unlabeled = trial.unlabeled
    blank = torch.zeros(len(unlabeled))  # no labels: the loaders want targets all the same
    ready = pipeline.ready(trial.preprocessing, unlabeled, unlabeled.subset([0]), blank,
                           blank[:1], {})
    pin = torch.device(trial.device).type == "cuda"
    if shuffle:
        return pipeline.loader(ready, "train", batch_size, shuffle=True,
                               generator=trial.generator, pin=pin, every=True)
    return pipeline.loader(ready, "train", batch_size, pin=pin)


def _bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]


@torch.no_grad()
def adabn(model: nn.Module, batches: Iterable, forward: Callable[[Any], Any]) -> int:
    """Re-estimate every BatchNorm layer's running statistics on ``batches`` (target
    inputs, passed through ``forward``): a cumulative average over all of them. Weights,
    other buffers and the modules' train/eval modes are left as they were. Returns the
    number of inputs read."""
    layers = _bn_layers(model)
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in layers}
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average, not an exponential one
        m.train()
    seen = 0
    try:
        for xb, *_ in batches:
            forward(xb)
            seen += len(xb) if isinstance(xb, torch.Tensor) else 1
    finally:
        for m in layers:
            m.momentum = momenta[m]
        for m, mode in modes.items():
            m.training = mode
    return seen


@contextmanager
def target_statistics(model: nn.Module, batches: Iterable | None,
                      forward: Callable[[Any], Any]) -> Iterator[None]:
    """Inside: the BatchNorm statistics of the target (AdaBN); after: the source's again,
    so training goes on as before. ``batches=None`` changes nothing."""
    if batches is None:
        yield
        return
    layers = _bn_layers(model)
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in layers]
    adabn(model, batches, forward)
    try:
        yield
    finally:
        for m, state in zip(layers, saved):
            m.load_state_dict(state)


class DomainClassifier(nn.Module):
    """Source-or-target logits from body features, behind the gradient-reversal layer."""

    def __init__(self, width: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(0.1),
                                 nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor, scale: float) -> torch.Tensor:
        return self.net(grad_reverse(features.float(), scale)).squeeze(-1)


class Dann:
    """The adversarial part of a DANN trial: the domain classifier, its optimizer, the
    target batches (cycled) and the loss added to each training step."""

    def __init__(self, weight: float, width: int, target: Iterable, total_steps: int,
                 lr: float, device: torch.device) -> None:
        self.weight, self.target, self.total = weight, target, max(1, total_steps)
        self.classifier = DomainClassifier(width).to(device)
        self.optimizer = torch.optim.AdamW(self.classifier.parameters(), lr=lr,
                                           weight_decay=0.0)
        self.step, self._it = 0, iter(())

    def next_target(self) -> Any:
        """The next target batch, starting the target data over when it runs out."""
        try:
            return next(self._it)[0]
        except StopIteration:
            self._it = iter(self.target)
            return next(self._it)[0]

    def scale(self) -> float:
        """The reversal strength: 2 / (1 + exp(-10 p)) - 1 over training progress p."""
        p = min(1.0, self.step / self.total)
        return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0

    def loss(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``weight`` x the domain classifier's cross-entropy (source 0, target 1)."""
        feats = torch.cat([source, target])
        labels = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).to(feats.device)
        logits = self.classifier(feats, self.scale())
        self.step += 1
        return self.weight * nn.functional.binary_cross_entropy_with_logits(logits, labels)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def update(self) -> None:
        self.optimizer.step()
