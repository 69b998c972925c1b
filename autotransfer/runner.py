"""The trial runner: train one strategy, validate every epoch, report, stop early.

Read top to bottom: set up (backbone, head, data), the feed (frozen-prefix features
computed once when nothing random touches the inputs, else live loaders), then the epoch
loop.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import _batch, domain, features, pipeline, plugins
from .adapters import describe, merged_state
from .cache import FeatureCache
from .data import Dataset
from .devices import torch_device
from .errors import DataError, ModalityError, StrategyError, TrialFailed
from .model import TransferModel
from .pipeline import Prepared
from .preprocessing import Preprocessing
from .strategy import Strategy

Report = Callable[[float, int], None]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
EVAL_BATCH = 256


@dataclass
class TrialResult:
    """What one trial produced. ``metrics`` are those of the best epoch."""

    strategy: Strategy
    task: str
    metric: str
    value: float
    metrics: dict[str, float]
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    duration_s: float
    compute_s: float
    trainable_params: int
    total_params: int
    n_groups: int
    cached: bool
    cache_source: str  # memory / disk / computed, or why the prefix ran every batch
    device: str
    info: dict
    preprocessing: Preprocessing
    state_dict: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    first_step_s: float = 0.0  # from the call to the first optimizer step


def prepare(strategy: Strategy, train: Dataset, valid: Dataset, task: str) -> Prepared:
    """Check the data fits the backbone and the task, encode the labels, ready the inputs."""
    backbone = plugins.get_backbone(strategy.backbone)
    head = plugins.get_head(task)
    for name, ds in (("train", train), ("valid", valid)):
        if not isinstance(ds, Dataset):
            raise DataError(f"{name} must be an autotransfer Dataset (at.data.from_folder, "
                            f"from_pandas, from_hf, ...), but got {type(ds).__name__}.")
        if ds.modality != backbone.modality:
            fits = plugins.list_backbones(modality=ds.modality)
            raise ModalityError(
                f"Backbone {backbone.name!r} takes {backbone.modality} inputs, but the "
                f"{name} data holds {ds.modality}; {ds.modality} backbones: "
                f"{', '.join(fits) or 'none registered'}."
            )
    if len(train) < 2:
        raise DataError(f"Training needs at least 2 examples, but got {len(train)}.")
    _check_applies(strategy, backbone, task)
    pre = backbone.preprocessing(image_size=strategy.image_size, max_length=strategy.max_length)
    y_train, info = head.encode(train.labels)
    y_valid, _ = head.encode(valid.labels, info)
    return pipeline.ready(pre, train, valid, y_train, y_valid, info)


def _check_applies(strategy: Strategy, backbone: Any, task: str) -> None:
    if backbone.modality != "image":
        for name, off in (("mixup", 0.0), ("cutmix", 0.0), ("augment", "none")):
            if getattr(strategy, name) != off:
                raise StrategyError(f"{name} applies to images; backbone {backbone.name!r} "
                                    f"takes {backbone.modality}. Use {name}={off!r}.")
    if strategy.mixes and task not in ("classification", "multilabel"):
        raise StrategyError(f"mixup and cutmix mix class targets; task {task!r} has none. "
                            f"Use mixup=0 and cutmix=0.")


def build_model(strategy: Strategy, task: str, info: dict) -> TransferModel:
    """The untrained model for a strategy: pretrained (or random) body plus a new head."""
    backbone = plugins.get_backbone(strategy.backbone)
    if strategy.adapter not in backbone.adapters:
        raise StrategyError(f"adapter={strategy.adapter!r} does not apply to backbone "
                            f"{backbone.name!r}; {describe(backbone.adapters)}.")
    head = plugins.get_head(task)
    body = backbone.build(pretrained=strategy.pretrained, drop_path=strategy.drop_path)
    # A timm model whose pooled output passes a last hidden layer (MobileNetV3's conv_head)
    # gives head_hidden_size features, not num_features.
    width = getattr(body, "head_hidden_size", None) or body.num_features
    return TransferModel(body, head.build(width, info, dropout=strategy.dropout),
                         backbone.layer_groups(body), backbone.stages(body))


def run_trial(strategy: Strategy, train: Dataset, valid: Dataset, *,
              task: str = "classification", device: str | torch.device = "cpu",
              report: Report | None = None, patience: int | None = 5, seed: int = 0,
              prepared: Prepared | None = None, cache: bool | FeatureCache = True,
              timings: dict[str, float] | None = None, keep: str = "best",
              loss: Loss | None = None, unlabeled: Dataset | None = None) -> TrialResult:
    """Train ``strategy`` on ``train``, validating on ``valid`` each epoch (:class:`TrialFailed`
    when the loss becomes NaN/inf or memory runs out).

    Args:
        strategy, train, valid: What to train, on which data (:mod:`autotransfer.data`).
        task, device: A registered head ("classification", ...); where to train.
        report: ``report(value, epoch)`` after each epoch with the primary validation
            metric; it may raise ``optuna.TrialPruned``.
        patience: Stop after this many epochs without improvement (None: never).
        seed: Seeds the head's init, the shuffling, augmentation and mixing.
        prepared: Data already passed through :func:`prepare` (reused across trials).
        cache: A :class:`FeatureCache` shares frozen-prefix outputs across trials; True:
            once for this trial; False: the prefix runs every batch.
        timings: Filled with ``compute_s`` (known if it ends early), ``first_step_s``.
        keep: "best" (validation epoch) or "last" epoch's weights (a refit).
        loss: ``loss(outputs, targets)`` in place of the head's training loss, for targets
            that carry more than labels (distillation's teacher logits); validation still
            uses the head's metrics.
        unlabeled: Target-domain inputs for ``adabn`` / ``dann`` (:mod:`autotransfer.domain`).
    """
    started, head = time.perf_counter(), _checked(strategy, task, patience, keep)
    data = prepared or prepare(strategy, train, valid, task)
    head = head.configured(strategy, data.info)  # a multi-task head's loss weights
    dev = _Device.for_(device, data.preprocessing.modality)
    gen = _seed_everything(seed)
    model = dev.prepare(build_model(strategy, task, data.info))
    domain.check(strategy, model, unlabeled)
    batch_size = _batch_size(strategy, len(data.y_train))
    steps = max(1, len(data.y_train) // batch_size)
    applied = strategy.apply(model, steps)
    # Frozen-prefix outputs kept as first read (or cached) unless mixing touches inputs.
    feed = _feed(model, data, strategy, dev, cache, gen, batch_size)
    feed.target = _Target.for_(strategy, model, data, unlabeled, dev, gen, batch_size,
                               strategy.epochs * steps)
    timings = timings if timings is not None else {}
    timings.update(compute_s=0.0, started=started)
    loop = _Loop(model, feed, head, strategy, applied, dev, _mixer(strategy, head, data.info),
                 loss, data.info)
    best = _Best(head.direction, last=keep == "last")
    try:
        history = loop.run(best, report, patience, timings)
    except torch.OutOfMemoryError as exc:
        raise TrialFailed(f"out of memory on {dev.device} at batch_size={batch_size}; "
                          f"try a smaller batch_size or trials_per_device") from exc
    trainable, total = model.param_counts()
    return TrialResult(
        strategy=strategy, task=task, metric=head.metric, value=float(best.value),
        metrics=best.metrics, history=history, best_epoch=best.epoch, epochs_run=len(history),
        duration_s=time.perf_counter() - started, compute_s=timings["compute_s"],
        trainable_params=trainable, total_params=total, n_groups=model.n_groups,
        cached=feed.cached(), cache_source=feed.source(), device=str(dev.device), info=data.info,
        preprocessing=data.preprocessing, state_dict=best.state,
        first_step_s=timings.get("first_step_s", 0.0))


def _checked(strategy: Any, task: str, patience: Any, keep: str = "best") -> Any:
    """The task's head, once the call's own arguments are known to be sound."""
    if keep not in ("best", "last"):
        raise StrategyError(f"keep must be 'best' or 'last', but got keep={keep!r}.")
    if not isinstance(strategy, Strategy):
        raise StrategyError(f"strategy must be an autotransfer.Strategy (e.g. "
                            f"at.Strategy('efficientnet_lite0', frozen_groups=4)), but got "
                            f"{type(strategy).__name__} {strategy!r:.80}.")
    if patience is not None:
        from .checks import integer

        integer("patience", patience, low=1)
    return plugins.get_head(task)


def _seed_everything(seed: int) -> torch.Generator:
    # timm's Mixup draws from numpy, its augmentations from `random`: seed them all.
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _batch_size(strategy: Strategy, n_train: int) -> int:
    size = min(strategy.batch_size, n_train)
    return size - size % 2 if strategy.mixes else size  # mixing pairs a batch with its flip


class _Best:
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
class _Feed:
    """Where a trial's batches come from: frozen-prefix outputs, or live loaders."""

    train: Iterable
    valid: Iterable
    prefixed: bool  # batches hold frozen-prefix outputs
    cached: Callable[[], bool]  # ... and they were kept (not over the cache budget)
    source: Callable[[], str]  # memory / disk / computed, or why the prefix runs live
    prep: Callable[[Any], Any]  # on the device: normalize (images) and memory layout
    target: _Target | None = None  # unlabeled target inputs (domain adaptation)


def _feed(model: TransferModel, data: Prepared, strategy: Strategy, dev: _Device,
          cache: bool | FeatureCache, gen: torch.Generator, batch_size: int) -> _Feed:
    def prep(x: Any) -> Any:
        return dev.layout(data.preprocessing.normalize(x))

    reason = features.live_reason(model, strategy, cache)
    pin = dev.device.type == "cuda"  # page-locked batches copy to the GPU asynchronously
    if reason is None:
        f = features.prefix_features(model, data, strategy, dev, cache, batch_size=batch_size,
                                     eval_batch=EVAL_BATCH, generator=gen, pin=pin)
        return _Feed(f.train, f.valid, True, lambda: f.cached, lambda: f.source, prep)
    return _Feed(pipeline.loader(data, "train", batch_size, shuffle=True,
                                 augment=strategy.augment, generator=gen, pin=pin),
                 pipeline.loader(data, "valid", EVAL_BATCH, pin=pin), False, lambda: False,
                 lambda: reason, prep)


def _mixer(strategy: Strategy, head: Any, info: dict) -> Callable | None:
    """timm's Mixup (mixup, CutMix and label smoothing on the targets), or None."""
    if not strategy.mixes:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=strategy.mixup, cutmix_alpha=strategy.cutmix, mode="batch",
                 label_smoothing=strategy.label_smoothing, num_classes=head.n_outputs(info),
                 multi_label=head.name == "multilabel")


@dataclass
class _Loop:
    """A trial's epochs: train on the feed, validate (with the target's BatchNorm
    statistics under AdaBN), keep the best epoch, report, stop early."""

    model: TransferModel
    feed: _Feed
    head: Any
    strategy: Strategy
    applied: Any
    dev: _Device
    mix: Callable | None
    custom: Loss | None
    info: dict

    def run(self, best: _Best, report: Report | None, patience: int | None,
            timings: dict[str, float]) -> list[dict[str, float]]:
        history: list[dict[str, float]] = []
        target = self.feed.target
        for epoch in range(1, self.strategy.epochs + 1):
            t0 = time.perf_counter()
            loss = self.epoch(epoch, timings)
            with domain.target_statistics(self.model, target and target.statistics,
                                          self.forward):
                outputs, targets = _predict(self.model, self.feed.valid, self.dev, self.feed)
                metrics = {**self.head.metrics(outputs, targets, self.info), "train_loss": loss}
                best.update(epoch, metrics[self.head.metric], metrics, self.model)
            timings["compute_s"] += time.perf_counter() - t0
            history.append({"epoch": epoch, **metrics})
            if report is not None:
                report(metrics[self.head.metric], epoch)  # may raise optuna.TrialPruned
            if patience is not None and best.stale >= patience:
                break
        return history

    def forward(self, x: Any) -> Any:
        with self.dev.autocast():
            return self.model(self.feed.prep(self.dev.batch(x)))

    def epoch(self, epoch: int, timings: dict[str, float]) -> float:
        model, feed, strategy, dev = self.model, self.feed, self.strategy, self.dev
        dann = feed.target.dann if feed.target else None
        model.train()
        total, steps = 0.0, 0
        for xb, yb in feed.train:
            xb, yb = dev.batch(xb), yb.to(dev.device, non_blocking=True)
            extra = 0.0
            with dev.autocast():
                if feed.prefixed:  # xb holds frozen-prefix outputs
                    out = model.forward_tail(xb)
                else:
                    xb = feed.prep(xb)
                    if self.mix is not None:  # soft targets, label smoothing included
                        xb, yb = self.mix(xb, yb)
                    out, extra = self.adversarial(xb, dann) if dann else (model(xb), 0.0)
                loss = self.loss(out, yb) + extra
            if self.applied.penalty is not None:
                loss = loss + self.applied.penalty()
            if not torch.isfinite(loss):
                raise TrialFailed(f"loss became {loss.item()} at epoch {epoch}, step "
                                  f"{steps + 1} (lr={strategy.lr:g}); try a lower lr or "
                                  f"grad_clip > 0")
            _step(model, loss, self.applied, dev, strategy.grad_clip, dann)
            timings.setdefault("first_step_s", time.perf_counter() - timings["started"])
            total, steps = total + loss.item(), steps + 1
        return total / max(1, steps)

    def loss(self, out: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if self.custom is not None:
            return self.custom(out, yb)
        ls = 0.0 if self.mix is not None else self.strategy.label_smoothing
        return self.head.loss(out, yb, label_smoothing=ls)

    def adversarial(self, xb: Any, dann: domain.Dann) -> tuple[torch.Tensor, torch.Tensor]:
        """Source logits and the domain loss; images share one pass (and BatchNorm batch
        statistics) with the target batch, as in DANN."""
        xt = self.feed.prep(self.dev.batch(dann.next_target()))
        if isinstance(xb, torch.Tensor) and isinstance(xt, torch.Tensor):
            feats = self.model.embed(torch.cat([xb, xt]))
            source, target = feats[: len(xb)], feats[len(xb):]
        else:
            source, target = self.model.embed(xb), self.model.embed(xt)
        return self.model.head(source), dann.loss(source, target)


def _step(model, loss, applied, dev, grad_clip: float, dann: Any = None) -> None:
    applied.optimizer.zero_grad(set_to_none=True)
    if dann is not None:
        dann.zero_grad()
    dev.scaler.scale(loss).backward()
    if grad_clip:
        dev.scaler.unscale_(applied.optimizer)
        torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], grad_clip)
    dev.scaler.step(applied.optimizer)
    if dann is not None:
        dev.scaler.step(dann.optimizer)
    dev.scaler.update()
    applied.scheduler.step()


@dataclass
class _Target:
    """Unlabeled target inputs of a trial that adapts: batches for AdaBN's statistics,
    and DANN's adversarial part."""

    statistics: Iterable | None
    dann: domain.Dann | None

    @classmethod
    def for_(cls, strategy: Strategy, model: TransferModel, data: Prepared,
             unlabeled: Dataset | None, dev: _Device, gen: torch.Generator, batch_size: int,
             total_steps: int) -> _Target | None:
        if unlabeled is None or not (strategy.adabn or strategy.dann):
            return None
        n = len(unlabeled)
        blank = torch.zeros(n)  # no labels: the loaders want targets all the same
        tp = pipeline.ready(data.preprocessing, unlabeled, unlabeled.subset([0]), blank,
                            blank[:1], {})
        pin = dev.device.type == "cuda"
        stats = pipeline.loader(tp, "train", EVAL_BATCH, pin=pin) if strategy.adabn else None
        dann = None
        if strategy.dann:
            batches = pipeline.loader(tp, "train", batch_size, shuffle=True, generator=gen,
                                      pin=pin, every=True)
            width = getattr(model.body, "head_hidden_size", None) or model.body.num_features
            dann = domain.Dann(strategy.dann, width, batches, total_steps, strategy.lr,
                               dev.device)
        return cls(stats, dann)


@torch.no_grad()
def _predict(model: TransferModel, batches: Iterable, dev: _Device,
             feed: _Feed) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    outs, targets = [], []
    for xb, yb in batches:
        xb = dev.batch(xb)
        with dev.autocast():
            outs.append(model.forward_tail(xb) if feed.prefixed else model(feed.prep(xb)))
        targets.append(yb)
    return torch.cat(outs).float(), torch.cat(targets).to(dev.device)


@dataclass
class _Device:
    """GPU habits in one place: bf16 autocast (fp16 + loss scaling where bf16 is missing),
    pinned memory with non-blocking copies, and channels_last for images. On the CPU each
    is a no-op."""

    device: torch.device
    amp: torch.dtype | None
    channels_last: bool
    scaler: Any

    @classmethod
    def for_(cls, device: str | torch.device, modality: str) -> _Device:
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

