"""Frozen-prefix features: a trial's inputs through its frozen layers, computed once.

A frozen prefix is a fixed function of its input, so when nothing random touches the
inputs its outputs are computed once per data set (and shared across trials through the
:class:`~autotransfer.cache.FeatureCache`), and the epochs run only the trainable tail.
With train-time augmentation the prefix outputs of ``AUG_VIEWS`` augmented views of each
training image are cached instead, and each epoch reads one view per image at random:
augmentation at cache speed, from a fixed pool of views rather than a fresh one per epoch.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from . import _batch, pipeline, plugins
from .cache import LOCAL, CacheKey, FeatureCache, weights_id
from .model import TransferModel
from .pipeline import Prepared
from .strategy import Strategy

# Augmented views per training image whose prefix outputs are cached; 0 runs augmented
# trials' prefix live on every batch instead (fresh views every epoch, slower).
AUG_VIEWS = int(os.environ.get("AUTOTRANSFER_AUG_VIEWS", 4))


class FeaturesTooLarge(Exception):
    """The prefix outputs would not fit the cache budget (args: the estimated bytes)."""


@dataclass
class Features:
    train: Any  # (views * N, ...): view v of item i at row v * N + i
    valid: Any
    views: int
    source: str  # memory / disk / computed, per split when they differ


def live_reason(model: TransferModel, strategy: Strategy, cache: Any) -> str | None:
    """Why the frozen prefix must run on every batch, or None when it can be cached."""
    if not cache:
        return "off"
    if model.n_prefix == 0:
        return "no (nothing frozen)" if strategy.frozen_groups == 0 \
            else "no (prefix not separable)"
    if strategy.mixes:  # mixing happens on the raw inputs, before the prefix
        return "no (mixup)" if strategy.mixup else "no (cutmix)"
    if strategy.augment != "none" and AUG_VIEWS < 1:
        return f"no (augment={strategy.augment})"
    return None


def prefix_features(model: TransferModel, data: Prepared, strategy: Strategy, dev: Any,
                    cache: bool | FeatureCache, batch_size: int) -> Features:
    """The prefix outputs of the train views and the validation set, cached when possible.

    Raises:
        FeaturesTooLarge: they would not fit the cache's memory budget.
    """
    views = 1 if strategy.augment == "none" else AUG_VIEWS
    budget = cache.max_bytes if isinstance(cache, FeatureCache) else pipeline.HOLD_BYTES
    rows = views * len(data.y_train) + len(data.y_valid)

    def compute(split: str, augment: str, k: int) -> Any:
        parts = []
        for v in range(k):  # view v: the same draw in every trial, so caches share it
            with _seeded(v):
                batches = pipeline.loader(data, split, batch_size, augment=augment,
                                          generator=torch.Generator().manual_seed(v))
                parts.append(_prefix_all(model, batches, dev, data.preprocessing.normalize,
                                         rows, budget))
        return _batch.cat(parts)

    plan = (("train", strategy.augment, views), ("valid", "none", 1))
    if not isinstance(cache, FeatureCache):
        out = [compute(*p) for p in plan]
        return Features(out[0], out[1], views, _label(["computed"] * 2, strategy, views))
    backbone = plugins.get_backbone(strategy.backbone)
    out, sources = [], []
    for (split, augment, k), fp, x in zip(plan, data.fingerprints, (data.x_train, data.x_valid)):
        key = CacheKey(
            backbone=backbone.name, weights=weights_id(backbone),
            pretrained=strategy.pretrained, frozen_groups=strategy.frozen_groups,
            n_prefix=model.n_prefix, preprocessing=repr(data.preprocessing),
            # data without a fingerprint (a torch Dataset) is shared in this process only
            data=fp or f"{LOCAL}{os.getpid()}:{id(x)}", dtype=str(dev.amp or torch.float32),
            views="" if augment == "none" else f"{augment} x{k}")
        value, src = cache.get_or_compute(key, lambda p=(split, augment, k): compute(*p))
        out.append(value)
        sources.append(src)
    return Features(out[0], out[1], views, _label(sources, strategy, views))


def _label(sources: list[str], strategy: Strategy, views: int) -> str:
    label = sources[0] if sources[0] == sources[1] else "/".join(sources)
    return label if views == 1 else f"{label} ({views} views, augment={strategy.augment})"


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch and ``random`` (timm's crops draw from it) without touching the trial's."""
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)


def _prefix_all(model: TransferModel, batches: Iterable, dev: Any, normalize: Any, rows: int,
                budget: int) -> Any:
    model.eval()
    parts = []
    for xb, _ in batches:
        with dev.autocast():
            parts.append(_batch.to(model.forward_prefix(dev.layout(normalize(dev.batch(xb)))),
                                   "cpu"))
        if len(parts) == 1:  # the first batch tells what all rows would take
            estimate = _batch.nbytes(parts[0]) * rows // _batch.length(parts[0])
            if estimate > budget:
                raise FeaturesTooLarge(estimate)
    return _batch.cat(parts)
