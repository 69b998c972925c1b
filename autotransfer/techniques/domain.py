"""Domain adaptation from unlabeled target inputs: AdaBN and DANN.

A search given ``unlabeled=`` target inputs (``at.search(..., unlabeled=...)``) may choose,
per trial, like any other Strategy field:

- ``adabn`` (Li et al., 2016, "Revisiting Batch Normalization for Practical Domain
  Adaptation"): every BatchNorm layer's running mean and variance are re-estimated on the
  target inputs before each validation, and the kept model carries those statistics.
  Nothing else changes: no weight moves. A frozen layer keeps ImageNet's statistics, so
  the training data was never N(0, 1) after it: there the target's moments are mapped
  onto the training inputs', not onto N(0, 1) (:func:`target_statistics`).
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


def source_batches(trial: Any, batch_size: int) -> Iterable | None:
    """Batches of a trial's training inputs (the source domain), prepared as for
    validation (no augmentation), in an order drawn from a generator of their own (the
    trial's stays as it was); None when the trial does not carry its data."""
    if trial.data is None:
        return None
    return pipeline.loader(trial.data, "train", batch_size, shuffle=True, every=True,
                           generator=torch.Generator().manual_seed(0),
                           pin=torch.device(trial.device).type == "cuda")


def _bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]


Moments = dict[nn.Module, tuple[torch.Tensor, torch.Tensor]]  # layer -> (mean, variance)


class _Moments:
    """Per-channel mean and unbiased variance of a layer's inputs, averaged over batches
    with equal weights (BatchNorm's cumulative average, ``momentum=None``)."""

    def __init__(self) -> None:
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None
        self.batches = 0

    def add(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Count a batch in; returns its mean and biased variance (what BatchNorm in
        training mode normalizes it by)."""
        x = x.detach().float()
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        n = x.numel() // x.shape[1]
        unbiased = var * n / max(n - 1, 1)
        self.batches += 1
        if self.mean is None or self.var is None:
            self.mean, self.var = mean, unbiased
        else:
            self.mean = self.mean + (mean - self.mean) / self.batches
            self.var = self.var + (unbiased - self.var) / self.batches
        return mean, var


@contextmanager
def _reading(model: nn.Module, layers: list[nn.Module],
             read: Callable[[nn.Module, torch.Tensor], Any]) -> Iterator[None]:
    """Inside: the model in eval mode, ``read(layer, input)`` before each layer's forward;
    after: the modules' train/eval modes as they were, no hooks."""
    modes = {m: m.training for m in model.modules()}

    def hook(layer: nn.Module, args: tuple) -> None:
        read(layer, args[0])

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    model.eval()
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode


def _feed(batches: Iterable, forward: Callable[[Any], Any], limit: int | None = None) -> int:
    """Pass ``batches`` through ``forward`` (at most ``limit`` inputs); the inputs read."""
    seen = 0
    for xb, *_ in batches:
        if limit is not None and seen >= limit:
            break
        forward(xb)
        seen += len(xb) if isinstance(xb, torch.Tensor) else 1
    return seen


@torch.no_grad()
def moments(model: nn.Module, batches: Iterable, forward: Callable[[Any], Any],
            limit: int | None = None, layers: list[nn.Module] | None = None) -> Moments:
    """Every BatchNorm layer's (or those of ``layers``) per-channel input mean and variance
    over ``batches`` (at most ``limit`` inputs), the model in eval mode as validation runs
    it: the source's moments for :func:`adabn` when ``batches`` are the training inputs."""
    layers = _bn_layers(model) if layers is None else layers
    seen = {m: _Moments() for m in layers}
    with _reading(model, layers, lambda m, x: seen[m].add(x)):
        _feed(batches, forward, limit)
    return {m: (s.mean, s.var) for m, s in seen.items() if s.mean is not None and
            s.var is not None}


def _mapped(target: tuple[torch.Tensor, torch.Tensor], source: tuple[torch.Tensor, torch.Tensor],
            own: tuple[torch.Tensor, torch.Tensor], eps: float) -> tuple[torch.Tensor, ...]:
    """The running mean and variance under which BatchNorm gives inputs of the
    ``target``'s moments the mean and spread it gives inputs of the ``source``'s under
    its ``own`` running statistics. With ``own`` equal to ``source``: the target's (to
    within BatchNorm's ``eps``)."""
    (mean_t, var_t), (mean_s, var_s), (mean_r, var_r) = target, source, own
    ratio = (var_t + 1e-3 * eps) / (var_s + 1e-3 * eps)  # a constant channel stays finite
    # (x - m') / sqrt(v' + eps) = (x - mean_t) / sqrt(var_t) * sqrt(var_s / (var_r + eps))
    #     + (mean_s - mean_r) / sqrt(var_r + eps): the source's mean and variance. A
    # variance stays >= 0, which leaves a channel whose target spread falls below eps flat.
    return mean_t - (mean_s - mean_r) * ratio.sqrt(), ((var_r + eps) * ratio - eps).clamp_min(0)


@torch.no_grad()
def adabn(model: nn.Module, batches: Iterable, forward: Callable[[Any], Any],
          source: Moments | None = None) -> int:
    """Re-estimate every BatchNorm layer's running statistics on ``batches`` (target
    inputs, passed through ``forward``). A layer whose input moments on the source
    ``source`` holds (:func:`moments` of the training inputs) gives target inputs the mean
    and spread it gives the source's; every other layer (all with ``source=None``) gets
    the target's mean and variance, so it maps the target onto N(0, 1): classic AdaBN.
    Returns the number of inputs read.

    A frozen layer keeps statistics of other data (ImageNet's): classic AdaBN would map
    the target onto N(0, 1) there, where the source never was, and shift what the
    trained layers after it read. Where a layer's statistics are the source's, both agree
    (to within its ``eps``).

    One pass, layer by layer: each layer maps every batch by that batch's moments, so the
    layers after it read the target as adapted (as BatchNorm in training mode normalizes
    by the batch), and its statistics average the batches'. Weights, other buffers and
    the modules' train/eval modes are left as they were.
    """
    layers, source = _bn_layers(model), source or {}
    own = {m: (m.running_mean.clone(), m.running_var.clone()) for m in layers}
    seen = {m: _Moments() for m in layers}

    def put(m: nn.Module, target: tuple[Any, Any]) -> None:
        mean, var = _mapped(target, source[m], own[m], m.eps) if m in source else target
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)

    n = -1
    try:
        with _reading(model, layers, lambda m, x: put(m, seen[m].add(x))):
            n = _feed(batches, forward)
    finally:  # a layer the forward did not reach (or a pass that failed) keeps its own
        for m, s in seen.items():
            if n >= 0 and s.mean is not None:
                put(m, (s.mean, s.var))
            else:
                m.running_mean.copy_(own[m][0])
                m.running_var.copy_(own[m][1])
    return n


@contextmanager
def target_statistics(model: nn.Module, batches: Iterable | None,
                      forward: Callable[[Any], Any], source: Iterable | None = None,
                      limit: int | None = None) -> Iterator[None]:
    """Inside: the BatchNorm statistics of the target (:func:`adabn`); after: the source's
    again, so training goes on as before. ``batches=None`` changes nothing.

    Called with each layer in the mode it trains in. A layer in training mode normalized
    every batch by its own moments, so the layers after it learned from N(0, 1), which
    classic AdaBN gives the target. A frozen one (in eval mode) normalized by statistics
    of other data: it maps the target onto the moments of the ``source`` batches (the
    training inputs, at most ``limit`` of them; None: classic AdaBN there too)."""
    if batches is None:
        yield
        return
    layers = _bn_layers(model)
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in layers]
    frozen = [m for m in layers if not m.training]
    try:
        adabn(model, batches, forward, moments(model, source, forward, limit, frozen)
              if source is not None and frozen else None)
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
