"""A trial's moving parts: where batches come from (frozen-prefix outputs or live loaders),
the epoch loop with its optimizer step and the techniques' points in it, the best epoch
kept, and the device."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from ..data import batch as _batch
from ..data import pipeline
from ..data.pipeline import Prepared
from ..errors import TrialCut, TrialFailed
from ..strategy.strategy import Strategy
from ..techniques import Started
from ..techniques.adapters import merged_state
from . import features
from .cache import FeatureCache
from .devices import torch_device
from .model import TransferModel

Report = Callable[[float, int], None]


Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


EVAL_BATCH = 256


class Best:
    """The best epoch so far (or, ``last=True``, the latest): its value, metrics and
    weights; epochs since it."""

    def __init__(self, direction: str, *, last: bool = False) -> None:
        self.sign, self.last = (1 if direction == "maximize" else -1), last
        self.value, self.epoch, self.stale = -self.sign * math.inf, 0, 0
        self.metrics: dict[str, float] = {}
        self.state: dict[str, torch.Tensor] = {}

    def update(self, epoch: int, value: float, metrics: dict, model: TransferModel) -> None:
        if self.last or self.sign * value > self.sign * self.value:
            self.value, self.epoch, self.metrics, self.stale = value, epoch, metrics, 0
            self.state = merged_state(model)  # LoRA folded in: loads without peft
        else:
            self.stale += 1


@dataclass
class Feed:
    """Where a trial's batches come from: frozen-prefix outputs, or live loaders."""

    train: Iterable
    valid: Iterable
    prefixed: bool  # batches hold frozen-prefix outputs
    cached: Callable[[], bool]  # ... and they were kept (not over the cache budget)
    source: Callable[[], str]  # memory / disk / computed, or why the prefix runs live
    prep: Callable[[Any], Any]  # on the device: normalize (images) and memory layout


def feed_for(model: TransferModel, data: Prepared, strategy: Strategy, dev: Device,
             cache: bool | FeatureCache, gen: torch.Generator, batch_size: int,
             live: str | None = None) -> Feed:
    """``live``: why the active techniques need the inputs through the whole model."""
    def prep(x: Any) -> Any:
        return dev.layout(data.preprocessing.normalize(x))

    reason = features.live_reason(model, strategy, cache, live)
    pin = dev.device.type == "cuda"  # page-locked batches copy to the GPU asynchronously
    if reason is None:
        f = features.prefix_features(model, data, strategy, dev, cache, batch_size=batch_size,
                                     eval_batch=EVAL_BATCH, generator=gen, pin=pin)
        return Feed(f.train, f.valid, True, lambda: f.cached, lambda: f.source, prep)
    return Feed(pipeline.loader(data, "train", batch_size, shuffle=True,
                                 augment=strategy.augment, generator=gen, pin=pin),
                 pipeline.loader(data, "valid", EVAL_BATCH, pin=pin), False, lambda: False,
                 lambda: reason, prep)


@dataclass
class Loop:
    """A trial's epochs: train on the feed, validate (in the techniques' validation
    context: AdaBN's target statistics), keep the best epoch, report, stop early."""

    model: TransferModel
    feed: Feed
    head: Any
    strategy: Strategy
    applied: Any
    dev: Device
    criterion: Loss  # the training loss, after the techniques' criterion hooks
    info: dict
    deadline: float | None = None  # time.time() when the search's budget ends
    cut: str = ""  # why the budget stopped it, once it has

    @property
    def techniques(self) -> Started:
        return self.applied.techniques

    def run(self, best: Best, report: Report | None, patience: int | None,
            timings: dict[str, float]) -> list[dict[str, float]]:
        history: list[dict[str, float]] = []
        for epoch in range(1, self.strategy.epochs + 1):
            t0 = time.perf_counter()
            try:
                loss = self.epoch(epoch, timings)
            except _Deadline:
                self._cut(epoch, best)
                break
            with self.techniques.validation(self.model):
                outputs, targets = predict(self.model, self.feed.valid, self.dev, self.feed)
                metrics = {**self.head.metrics(outputs, targets, self.info), "train_loss": loss,
                           "val_loss": float(self.head.loss(outputs, targets))}  # breaks ties
                best.update(epoch, metrics[self.head.metric], metrics, self.model)
            timings["compute_s"] += time.perf_counter() - t0
            history.append({"epoch": epoch, **metrics})
            if report is not None:
                report(metrics[self.head.metric], epoch)  # may raise optuna.TrialPruned
            if patience is not None and best.stale >= patience:
                break
            if self._late() and epoch < self.strategy.epochs:
                self._cut(epoch + 1, best)
                break
        return history

    def _late(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def _cut(self, epoch: int, best: Best) -> None:
        """The budget ended during ``epoch``: keep the best validated epoch, or fail."""
        if not best.epoch:
            raise TrialCut(f"cut by the time budget during epoch {epoch} of "
                           f"{self.strategy.epochs}, before any epoch was validated")
        self.cut = (f"cut by the time budget during epoch {epoch} of {self.strategy.epochs} "
                    f"(best epoch {best.epoch} kept)")

    def epoch(self, epoch: int, timings: dict[str, float]) -> float:
        model, feed, techniques, dev = self.model, self.feed, self.techniques, self.dev
        model.train()
        total, steps = 0.0, 0
        for xb, yb in feed.train:
            if self._late():
                raise _Deadline
            xb, yb = dev.batch(xb), yb.to(dev.device, non_blocking=True)
            extra: Any = 0.0
            with dev.autocast():
                if feed.prefixed:  # xb holds frozen-prefix outputs
                    feats = model.embed_tail(xb)
                else:
                    xb, yb = techniques.batch(feed.prep(xb), yb)  # mixing: soft targets
                    feats, extra = techniques.embed(model, xb)
                out = model.head(feats)  # the features stay for the techniques' losses
                loss = self.criterion(out, yb) + extra + techniques.loss(model, feats, out, yb)
            if not torch.isfinite(loss):
                raise TrialFailed(f"loss became {loss.item()} at epoch {epoch}, step "
                                  f"{steps + 1} (lr={self.strategy.lr:g}); try a lower lr or "
                                  f"grad_clip > 0")
            step(model, loss, self.applied, dev, self.strategy.grad_clip)
            timings.setdefault("first_step_s", time.perf_counter() - timings["started"])
            total, steps = total + loss.item(), steps + 1
        techniques.epoch_end(model, epoch)
        return total / max(1, steps)


class _Deadline(Exception):
    """The search's time budget ended inside an epoch."""


def step(model, loss, applied, dev, grad_clip: float) -> None:
    applied.optimizer.zero_grad(set_to_none=True)
    dev.scaler.scale(loss).backward()
    if grad_clip:
        dev.scaler.unscale_(applied.optimizer)
        torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], grad_clip)
    dev.scaler.step(applied.optimizer)
    applied.techniques.step(dev.scaler)  # DANN's domain classifier
    dev.scaler.update()
    applied.advance()


@torch.no_grad()
def predict(model: TransferModel, batches: Iterable, dev: Device,
             feed: Feed) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    outs, targets = [], []
    for xb, yb in batches:
        xb = dev.batch(xb)
        with dev.autocast():
            outs.append(model.forward_tail(xb) if feed.prefixed else model(feed.prep(xb)))
        targets.append(yb)
    return torch.cat(outs).float(), torch.cat(targets).to(dev.device)


@dataclass
class Device:
    """GPU habits in one place: bf16 autocast (fp16 + loss scaling where bf16 is missing),
    pinned memory with non-blocking copies, and channels_last for images. On the CPU each
    is a no-op."""

    device: torch.device
    amp: torch.dtype | None
    channels_last: bool
    scaler: Any

    @classmethod
    def for_(cls, device: str | torch.device, modality: str) -> Device:
        device = torch_device(device)
        cuda = device.type == "cuda"
        amp = None
        if cuda:
            amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
        return cls(device, amp, cuda and modality == "image", scaler)

    def prepare(self, model: TransferModel) -> TransferModel:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)

    def batch(self, x: Any) -> Any:
        return _batch.to(x, self.device, non_blocking=self.device.type == "cuda")

    def layout(self, x: Any) -> Any:
        if self.channels_last and isinstance(x, torch.Tensor) and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x
