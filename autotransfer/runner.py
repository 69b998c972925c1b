"""The trial runner: train one strategy, validate every epoch, report, stop early.

Read top to bottom: set up (backbone, head, data), compute the frozen prefix once when
the strategy allows it, then the epoch loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import _batch, plugins
from .cache import CacheKey, FeatureCache, weights_id
from .data import Dataset
from .errors import DataError, ModalityError, StrategyError, TrialFailed
from .model import TransferModel
from .preprocessing import Preprocessing
from .strategy import Strategy

Report = Callable[[float, int], None]


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


@dataclass
class Prepared:
    """A task's data, preprocessed for one backbone: inputs and encoded targets."""

    x_train: Any
    y_train: torch.Tensor
    x_valid: Any
    y_valid: torch.Tensor
    info: dict
    preprocessing: Preprocessing
    fingerprints: tuple[str, str] = ("", "")  # of the raw train and valid inputs


def prepare(strategy: Strategy, train: Dataset, valid: Dataset, task: str) -> Prepared:
    """Check the data fits the backbone and the task, then preprocess and encode it."""
    backbone = plugins.get_backbone(strategy.backbone)
    head = plugins.get_head(task)
    for name, ds in (("train", train), ("valid", valid)):
        if ds.modality != backbone.modality:
            fits = plugins.list_backbones(modality=ds.modality)
            raise ModalityError(
                f"Backbone {backbone.name!r} takes {backbone.modality} inputs, but the "
                f"{name} data holds {ds.modality}; {ds.modality} backbones: "
                f"{', '.join(fits) or 'none registered'}."
            )
    if len(train) < 2:
        raise DataError(f"Training needs at least 2 examples, but got {len(train)}.")
    if strategy.mixup and backbone.modality != "image":
        raise StrategyError(f"mixup applies to images; backbone {backbone.name!r} takes "
                            f"{backbone.modality}. Use mixup=0.")
    pre = backbone.preprocessing(image_size=strategy.image_size, max_length=strategy.max_length)
    y_train, info = head.encode(train.labels)
    y_valid, _ = head.encode(valid.labels, info)
    return Prepared(pre.prepare(train.inputs), y_train, pre.prepare(valid.inputs), y_valid,
                    info, pre, (train.fingerprint(), valid.fingerprint()))


def build_model(strategy: Strategy, task: str, info: dict) -> TransferModel:
    """The untrained model for a strategy: pretrained (or random) body plus a new head."""
    backbone = plugins.get_backbone(strategy.backbone)
    head = plugins.get_head(task)
    body = backbone.build(pretrained=strategy.pretrained, drop_path=strategy.drop_path)
    return TransferModel(body, head.build(body.num_features, info, dropout=strategy.dropout),
                         backbone.layer_groups(body), backbone.stages(body))


def run_trial(strategy: Strategy, train: Dataset, valid: Dataset, *,
              task: str = "classification", device: str | torch.device = "cpu",
              report: Report | None = None, patience: int | None = 5, seed: int = 0,
              prepared: Prepared | None = None,
              cache: bool | FeatureCache = True,
              timings: dict[str, float] | None = None) -> TrialResult:
    """Train ``strategy`` on ``train``, validating on ``valid`` after every epoch.

    Args:
        strategy: What to train.
        train, valid: The data (see :mod:`autotransfer.data`).
        task: A registered head ("classification", "regression", "multilabel").
        device: Where to train.
        report: Called as ``report(value, epoch)`` after each epoch with the primary
            validation metric; it may raise ``optuna.TrialPruned`` to stop the trial.
        patience: Stop after this many epochs without improvement (None: never).
        seed: Seeds the head's init, the shuffling and mixup.
        prepared: Data already passed through :func:`prepare` (reused across trials).
        cache: A :class:`FeatureCache` shares frozen-prefix outputs across trials; True
            computes them once for this trial; False runs the prefix every batch (same
            results, slower: for checks and benchmarks).
        timings: Filled with ``compute_s`` as training goes, so a caller knows the
            compute time of a trial that ends early (pruned, failed).

    Raises:
        TrialFailed: the loss became NaN/inf, or the device ran out of memory.
    """
    started = time.perf_counter()
    head = plugins.get_head(task)
    data = prepared or prepare(strategy, train, valid, task)
    dev = _Device.for_(device, data.preprocessing.modality)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    model = dev.prepare(build_model(strategy, task, data.info))
    n_train = _batch.length(data.x_train)
    batch_size = min(strategy.batch_size, n_train)
    steps = max(1, n_train // batch_size)  # drop the ragged last batch (BatchNorm needs > 1)
    applied = strategy.apply(model, steps)
    normalize = data.preprocessing.normalize

    # The frozen prefix does not change while training, so unless mixup mixes raw inputs
    # its output is computed once (or found in the cache) and the epochs run only the tail.
    cached = bool(cache) and model.n_prefix > 0 and not strategy.mixup
    t0 = time.perf_counter()
    if cached:
        (x_train, x_valid), source = _prefix_features(model, data, strategy, dev, cache)
    else:
        x_train, x_valid = data.x_train, data.x_valid
        source = ("off" if not cache else "no (mixup)" if strategy.mixup and model.n_prefix
                  else "no (nothing frozen)" if strategy.frozen_groups == 0
                  else "no (prefix not separable)")
    compute = time.perf_counter() - t0
    timings = timings if timings is not None else {}
    timings["compute_s"] = compute
    x_train, x_valid = dev.pin(x_train), dev.pin(x_valid)

    best = -math.inf if head.direction == "maximize" else math.inf
    best_state: dict[str, torch.Tensor] = {}
    best_metrics: dict[str, float] = {}
    best_epoch, bad_epochs, history = 0, 0, []
    try:
        for epoch in range(1, strategy.epochs + 1):
            # --- train one epoch ---
            model.train()
            t0 = time.perf_counter()
            perm = torch.randperm(n_train, generator=gen)
            total_loss = 0.0
            for step in range(steps):
                idx = perm[step * batch_size : (step + 1) * batch_size]
                xb = dev.batch(_batch.take(x_train, idx))
                yb = data.y_train[idx].to(dev.device, non_blocking=True)
                loss = _batch_loss(model, head, strategy, applied, dev, normalize, xb, yb,
                                   cached, gen)
                if not torch.isfinite(loss):
                    raise TrialFailed(
                        f"loss became {loss.item()} at epoch {epoch}, step {step + 1} "
                        f"(lr={strategy.lr:g}); try a lower lr or grad_clip > 0"
                    )
                _step(model, loss, applied, dev, strategy.grad_clip)
                total_loss += loss.item()

            # --- validate ---
            outputs = _predict(model, x_valid, normalize, dev, cached)
            metrics = head.metrics(outputs, data.y_valid.to(outputs.device), data.info)
            metrics["train_loss"] = total_loss / steps
            compute += time.perf_counter() - t0
            timings["compute_s"] = compute
            history.append({"epoch": epoch, **metrics})
            value = metrics[head.metric]
            improved = value > best if head.direction == "maximize" else value < best
            if improved:
                best, best_epoch, best_metrics, bad_epochs = value, epoch, metrics, 0
                best_state = {k: v.detach().to("cpu", copy=True)
                              for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            if report is not None:
                report(value, epoch)  # may raise optuna.TrialPruned
            if patience is not None and bad_epochs >= patience:
                break
    except torch.OutOfMemoryError as exc:
        raise TrialFailed(f"out of memory on {dev.device} at batch_size={batch_size}; "
                          f"try a smaller batch_size or trials_per_device") from exc

    trainable, total = model.param_counts()
    return TrialResult(
        strategy=strategy, task=task, metric=head.metric, value=float(best),
        metrics=best_metrics, history=history, best_epoch=best_epoch, epochs_run=len(history),
        duration_s=time.perf_counter() - started, compute_s=compute,
        trainable_params=trainable, total_params=total, n_groups=model.n_groups,
        cached=cached, cache_source=source, device=str(dev.device), info=data.info,
        preprocessing=data.preprocessing,
        state_dict=best_state,
    )


def _batch_loss(model, head, strategy, applied, dev, normalize, xb, yb, cached,
                gen) -> torch.Tensor:
    ls = strategy.label_smoothing
    with dev.autocast():
        if cached:  # xb holds frozen-prefix outputs
            loss = head.loss(model.forward_tail(xb), yb, label_smoothing=ls)
        elif strategy.mixup:
            loss = _mixup_loss(model, head, dev.layout(normalize(xb)), yb, strategy, gen)
        else:
            loss = head.loss(model(dev.layout(normalize(xb))), yb, label_smoothing=ls)
    if applied.penalty is not None:
        loss = loss + applied.penalty()
    return loss


def _step(model, loss, applied, dev, grad_clip: float) -> None:
    applied.optimizer.zero_grad(set_to_none=True)
    dev.scaler.scale(loss).backward()
    if grad_clip:
        dev.scaler.unscale_(applied.optimizer)
        torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], grad_clip)
    dev.scaler.step(applied.optimizer)
    dev.scaler.update()
    applied.scheduler.step()


def _mixup_loss(model, head, x, y, strategy, gen) -> torch.Tensor:
    # Mixup (Zhang et al., 2018): mix the inputs, and the losses with the same weight.
    seed = int(torch.randint(1 << 30, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(strategy.mixup, strategy.mixup))
    perm = torch.randperm(len(x), generator=gen).to(x.device)
    out = model(lam * x + (1 - lam) * x[perm])
    ls = strategy.label_smoothing
    return lam * head.loss(out, y, label_smoothing=ls) + \
        (1 - lam) * head.loss(out, y[perm], label_smoothing=ls)


def _chunks(x: Any, size: int = 256):
    n = _batch.length(x)
    for i in range(0, n, size):
        yield _batch.take(x, slice(i, i + size))


def _prefix_features(model: TransferModel, data: Prepared, strategy: Strategy, dev: _Device,
                     cache: bool | FeatureCache) -> tuple[tuple[Any, Any], str]:
    normalize = data.preprocessing.normalize
    if not isinstance(cache, FeatureCache):
        return (_prefix_all(model, data.x_train, normalize, dev),
                _prefix_all(model, data.x_valid, normalize, dev)), "computed"
    backbone = plugins.get_backbone(strategy.backbone)
    fps = data.fingerprints if all(data.fingerprints) else None
    out, sources = [], []
    for i, x in enumerate((data.x_train, data.x_valid)):
        key = CacheKey(
            backbone=backbone.name, weights=weights_id(backbone),
            pretrained=strategy.pretrained, frozen_groups=strategy.frozen_groups,
            n_prefix=model.n_prefix, preprocessing=repr(data.preprocessing),
            data=fps[i] if fps else _tensor_fingerprint(x),
            dtype=str(dev.amp or torch.float32))
        value, src = cache.get_or_compute(key, lambda x=x: _prefix_all(model, x, normalize, dev))
        out.append(value)
        sources.append(src)
    return (out[0], out[1]), sources[0] if sources[0] == sources[1] else "/".join(sources)


def _tensor_fingerprint(x: Any) -> str:
    import hashlib

    h = hashlib.sha1()
    for v in (x.values() if isinstance(x, dict) else [x]):
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _prefix_all(model: TransferModel, x: Any, normalize, dev: _Device) -> Any:
    model.eval()
    parts = []
    for c in _chunks(x):
        with dev.autocast():
            parts.append(_batch.to(model.forward_prefix(dev.layout(normalize(dev.batch(c)))),
                                   "cpu"))
    return _batch.cat(parts)


@torch.no_grad()
def _predict(model: TransferModel, x: Any, normalize, dev: _Device, cached: bool) -> torch.Tensor:
    model.eval()
    outs = []
    for c in _chunks(x):
        c = dev.batch(c)
        with dev.autocast():
            outs.append(model.forward_tail(c) if cached else model(dev.layout(normalize(c))))
    return torch.cat(outs).float()


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
        device = torch.device(device)
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

    def pin(self, x: Any) -> Any:
        return _batch.pin(x) if self.device.type == "cuda" else x

    def batch(self, x: Any) -> Any:
        return _batch.to(x, self.device, non_blocking=self.device.type == "cuda")

    def layout(self, x: Any) -> Any:
        if self.channels_last and isinstance(x, torch.Tensor) and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

