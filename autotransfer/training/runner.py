"""The trial runner: train one strategy, validate every epoch, report, stop early.

Read top to bottom: set up (backbone, head, data), the feed (frozen-prefix features
computed once when nothing random touches the inputs, else live loaders), then the epoch
loop (:mod:`autotransfer.training.loop`).
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import checks, plugins
from ..data import Dataset, pipeline
from ..data.pipeline import Prepared
from ..data.preprocessing import Preprocessing
from ..errors import (
    ConfigError,
    DataError,
    ModalityError,
    StrategyError,
    TrialFailed,
    UnknownNameError,
)
from ..strategy import fields
from ..strategy.strategy import Strategy
from ..techniques import Started, Trial
from ..techniques import active as active_techniques
from . import optim
from .cache import FeatureCache
from .loop import Best, Device, Loop, Loss, Report, feed_for
from .model import TransferModel, build_model


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
    cut: str = ""  # why the time budget stopped it before its epochs ran out


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
    reason = fields.fits(strategy, backbone, task=task)
    if reason is not None:
        raise StrategyError(reason)


@dataclass
class TrialSetup:
    """How one trial runs, beyond its strategy and data: what :func:`run_trial` takes.

    Attributes:
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
        unlabeled: Target-domain inputs for ``adabn`` / ``dann``
            (:mod:`autotransfer.techniques.domain`).
        deadline: ``time.time()`` at which to stop: the best validated epoch is kept and
            the result says it was cut (:class:`TrialCut` if none was validated yet).
    """

    task: Any = "classification"
    device: str | torch.device = "cpu"
    report: Report | None = None
    patience: int | None = 5
    seed: int = 0
    prepared: Prepared | None = None
    cache: bool | FeatureCache = True
    timings: dict[str, float] | None = None
    keep: str = "best"
    loss: Loss | None = None
    unlabeled: Dataset | None = None
    deadline: float | None = None


def run_trial(strategy: Strategy, train: Dataset, valid: Dataset,
              setup: TrialSetup | None = None, **options: Any) -> TrialResult:
    """Train ``strategy`` on ``train``, validating on ``valid`` each epoch (:class:`TrialFailed`
    when the loss becomes NaN/inf or memory runs out).

    ``setup`` says how (:class:`TrialSetup`); ``options`` set its fields by keyword
    (``run_trial(s, train, valid, task="regression", patience=None)``).
    """
    started, setup = time.perf_counter(), _setup(setup, options)
    head = _checked(strategy, setup.task, setup.patience, setup.keep)
    data = setup.prepared or prepare(strategy, train, valid, setup.task)
    head = head.configured(strategy, data.info)  # a multi-task head's loss weights
    dev = Device.for_(setup.device, data.preprocessing.modality)
    gen = _seed_everything(setup.seed)
    model = dev.prepare(build_model(strategy, setup.task, data.info))
    chosen = active_techniques(strategy)
    batch_size = _batch_size(strategy, len(data.y_train), any(t.even_batches for t in chosen))
    steps = max(1, len(data.y_train) // batch_size)
    techniques = _start(chosen, Trial(strategy, model, head, data.info, dev.device,
                                      strategy.epochs * steps, batch_size, setup.unlabeled,
                                      data.preprocessing, gen, data=data), dev)
    applied = optim.apply(strategy, model, steps, techniques)
    # Frozen-prefix outputs kept as first read (or cached) unless a technique needs inputs.
    feed = feed_for(model, data, strategy, dev, setup.cache, gen, batch_size, techniques.live())
    timings = setup.timings if setup.timings is not None else {}
    timings.update(compute_s=0.0, started=started)
    loop = Loop(model, feed, head, strategy, applied, dev,
                techniques.criterion(setup.loss or head.loss), data.info, setup.deadline)
    best = Best(head.direction, last=setup.keep == "last")
    try:
        history = loop.run(best, setup.report, setup.patience, timings)
    except torch.OutOfMemoryError as exc:
        raise TrialFailed(f"out of memory on {dev.device} at batch_size={batch_size}; "
                          f"try a smaller batch_size or trials_per_device") from exc
    trainable, total = model.param_counts()
    return TrialResult(
        strategy=strategy, task=setup.task, metric=head.metric, value=float(best.value),
        metrics=best.metrics, history=history, best_epoch=best.epoch, epochs_run=len(history),
        duration_s=time.perf_counter() - started, compute_s=timings["compute_s"],
        trainable_params=trainable, total_params=total, n_groups=model.n_groups,
        cached=feed.cached(), cache_source=feed.source(), device=str(dev.device), info=data.info,
        preprocessing=data.preprocessing, state_dict=best.state,
        first_step_s=timings.get("first_step_s", 0.0), cut=loop.cut)


def _setup(setup: Any, options: dict[str, Any]) -> TrialSetup:
    """``setup`` with ``options`` set, naming any option that is not a TrialSetup field."""
    if setup is not None and not isinstance(setup, TrialSetup):
        raise ConfigError(f"setup must be an autotransfer.training.runner.TrialSetup, but got "
                          f"{type(setup).__name__}.")
    names = [f.name for f in dataclasses.fields(TrialSetup)]
    for key in options:
        if key not in names:
            raise UnknownNameError("run_trial() option", key, names)
    return dataclasses.replace(setup or TrialSetup(), **options)


def _checked(strategy: Any, task: str, patience: Any, keep: str = "best") -> Any:
    """The task's head, once the call's own arguments are known to be sound."""
    if keep not in ("best", "last"):
        raise StrategyError(f"keep must be 'best' or 'last', but got keep={keep!r}.")
    if not isinstance(strategy, Strategy):
        raise StrategyError(f"strategy must be an autotransfer.Strategy (e.g. "
                            f"at.Strategy('efficientnet_lite0', frozen_groups=4)), but got "
                            f"{type(strategy).__name__} {strategy!r:.80}.")
    if patience is not None:
        checks.integer("patience", patience, low=1)
    return plugins.get_head(task)


def _seed_everything(seed: int) -> torch.Generator:
    # timm's Mixup draws from numpy, its augmentations from `random`: seed them all.
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _batch_size(strategy: Strategy, n_train: int, even: bool) -> int:
    size = min(strategy.batch_size, n_train)
    return size - size % 2 if even else size  # mixing pairs a batch with its flip


def _start(chosen: list, trial: Trial, dev: Device) -> Started:
    """The active techniques started on ``trial``, given its inputs and forward here."""
    model: TransferModel = trial.model
    pre = trial.preprocessing

    def inputs(x: Any) -> Any:
        return dev.layout(pre.normalize(dev.batch(x)))

    def forward(x: Any) -> Any:
        with dev.autocast():
            return model(inputs(x))

    trial.inputs, trial.forward = inputs, forward
    return Started(trial, chosen)
