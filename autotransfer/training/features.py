"""Frozen-prefix features: a trial's inputs through its frozen layers, computed once.

A frozen prefix is a fixed function of its input, so when nothing random touches the
inputs its outputs are kept, shared across trials through the
:class:`~autotransfer.training.cache.FeatureCache`, and later epochs run only the trainable tail.
Nothing is computed up front: the first pass over a split runs the prefix on each batch
as training reads it, trains on the outputs and keeps them, so the first step comes as
soon as the first batch is decoded. With train-time augmentation the first
``AUG_VIEWS`` passes each keep one augmented view of every training image; later epochs
read one of those views per image at random: augmentation at cache speed, from a fixed
pool of views rather than a fresh one per epoch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .. import plugins
from ..data import batch as _batch
from ..data import pipeline
from ..data.pipeline import Prepared
from ..strategy.strategy import Strategy
from .cache import LOCAL, CacheKey, FeatureCache, weights_id
from .model import TransferModel

# Augmented views per training image whose prefix outputs are kept; 0 runs augmented
# trials' prefix live on every batch instead (fresh views every epoch, slower).
AUG_VIEWS = int(os.environ.get("AUTOTRANSFER_AUG_VIEWS", 4))


def live_reason(model: TransferModel, strategy: Strategy, cache: Any,
                live: str | None = None) -> str | None:
    """Why the frozen prefix must run on every batch, or None when it can be kept.
    ``live``: why the active techniques need the inputs through the whole model
    (mixing, domain adaptation: :meth:`~autotransfer.techniques.Technique.live`)."""
    if not cache:
        return "off"
    if model.n_prefix == 0:
        return "no (nothing frozen)" if strategy.frozen_groups == 0 \
            else "no (prefix not separable)"
    if live is not None:
        return live
    if strategy.augment != "none" and AUG_VIEWS < 1:
        return f"no (augment={strategy.augment})"
    return None


class Prefixed:
    """One split's batches as prefix outputs ``(features, targets)``: computed and kept
    while the first passes read the data, then read back from what was kept.

    Past ``budget`` bytes nothing is kept and every pass runs the prefix (``over``).
    """

    def __init__(self, run: Callable[[Any], Any], data: Prepared, split: str, batch_size: int,
                 *, shuffle: bool, augment: str, views: int, generator: torch.Generator | None,
                 pin: bool, budget: int, done: Callable[[Any], None],
                 stored: Any = None, source: str = "computed") -> None:
        self.run, self.data, self.split, self.batch_size = run, data, split, batch_size
        self.shuffle, self.augment, self.views = shuffle, augment, views
        self.generator, self.pin, self.budget, self.done = generator, pin, budget, done
        self.y = data.y_train if split == "train" else data.y_valid
        self.value, self.source = stored, source  # all views, once complete
        self.view, self.over = 0, 0  # the view being filled; estimated bytes if over budget
        self.filled = torch.zeros(len(self.y), dtype=torch.bool)
        self.buffer: Any = None  # a preallocated tensor, or [(rows, outputs)] parts

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        if self.value is not None:
            yield from pipeline.rows(self.value, self.y, self.batch_size, shuffle=self.shuffle,
                                     generator=self.generator, views=self.views, pin=self.pin)
            return
        augment = self.augment if self.views > 1 else "none"
        for x, y, idx in pipeline.loader(self.data, self.split, self.batch_size,
                                         shuffle=self.shuffle, augment=augment,
                                         generator=self.generator, pin=self.pin,
                                         indexed=True, every=True):
            h = self.run(x)
            self._keep(idx, h)
            if not self.shuffle or len(y) == self.batch_size:  # no ragged training batch
                yield h, y
        self._pass_done()

    def _keep(self, idx: torch.Tensor, h: Any) -> None:
        n = len(self.y)
        if self.buffer is None and not self.over:
            estimate = _batch.nbytes(h) * n * self.views // _batch.length(h)
            if estimate > self.budget:
                self.over = estimate
            elif isinstance(h, torch.Tensor):  # pages are touched only as rows are written
                self.buffer = torch.empty((self.views * n, *h.shape[1:]), dtype=h.dtype)
            else:
                self.buffer = []
        if self.over:
            return
        rows, h = self.view * n + idx, _batch.to(h, "cpu")
        if isinstance(self.buffer, list):
            self.buffer.append((rows, h))
        else:
            self.buffer[rows] = h
        self.filled[idx] = True

    def _pass_done(self) -> None:
        if self.over or not bool(self.filled.all()):
            return
        self.view, self.filled[:] = self.view + 1, False
        if self.view < self.views:
            return
        if isinstance(self.buffer, list):  # varied-length text states: pad, then order
            rows = torch.cat([r for r, _ in self.buffer])
            self.buffer = _batch.take(_batch.cat([h for _, h in self.buffer]), rows.argsort())
        self.value, self.buffer = self.buffer, None
        self.done(self.value)


class Features:
    """The train and validation splits as prefix outputs, and where they came from."""

    def __init__(self, train: Prefixed, valid: Prefixed) -> None:
        self.train, self.valid = train, valid

    @property
    def cached(self) -> bool:
        return not (self.train.over or self.valid.over)

    @property
    def source(self) -> str:
        over = self.train.over + self.valid.over
        if over:
            return f"no (features {over / 2**20:.0f} MB > cache budget)"
        a, b = self.train.source, self.valid.source
        label = a if a == b else f"{a}/{b}"
        v = self.train.views
        return label if v == 1 else f"{label} ({v} views, augment={self.train.augment})"


def prefix_features(model: TransferModel, data: Prepared, strategy: Strategy, dev: Any,
                    cache: bool | FeatureCache, *, batch_size: int, eval_batch: int,
                    generator: torch.Generator, pin: bool) -> Features:
    """The train views' and validation set's prefix outputs, from the cache or as read."""
    views = 1 if strategy.augment == "none" else AUG_VIEWS
    budget = cache.max_bytes if isinstance(cache, FeatureCache) else pipeline.HOLD_BYTES

    def run(x: Any) -> Any:  # frozen modules stay in eval mode while the tail trains
        with dev.autocast():
            return model.forward_prefix(dev.layout(data.preprocessing.normalize(dev.batch(x))))

    splits = []
    for split, k, size, fp in (("train", views, batch_size, data.fingerprints[0]),
                               ("valid", 1, eval_batch, data.fingerprints[1])):
        key = _key(model, data, strategy, dev, fp, split, "none" if k == 1 else strategy.augment,
                   k)
        stored, source = cache.get(key) if isinstance(cache, FeatureCache) else (None, None)
        keep = (lambda v, key=key: cache.put(key, v)) if isinstance(cache, FeatureCache) \
            else (lambda v: None)
        splits.append(Prefixed(run, data, split, size, shuffle=split == "train",
                               augment=strategy.augment, views=k, generator=generator, pin=pin,
                               budget=budget, done=keep, stored=stored,
                               source=source or "computed"))
    return Features(*splits)


def _key(model: TransferModel, data: Prepared, strategy: Strategy, dev: Any, fp: str,
         split: str, augment: str, views: int) -> CacheKey:
    backbone = plugins.get_backbone(strategy.backbone)
    x = data.x_train if split == "train" else data.x_valid
    weights = weights_id(backbone)
    if backbone.weights is None or not strategy.pretrained:  # a seeded random init
        weights += f"|init:{_digest(model)}"
    return CacheKey(
        backbone=backbone.name, weights=weights, pretrained=strategy.pretrained,
        frozen_groups=strategy.frozen_groups, n_prefix=model.n_prefix,
        preprocessing=repr(data.preprocessing),
        # data without a fingerprint (a torch Dataset) is shared in this process only
        data=fp or f"{LOCAL}{os.getpid()}:{id(x)}", dtype=str(dev.amp or torch.float32),
        views="" if augment == "none" else f"{augment} x{views}")


def _digest(model: TransferModel) -> str:
    """A hash of the frozen prefix's weights: random inits of other seeds differ."""
    import hashlib

    h = hashlib.sha1()
    params = dict(model.body.named_parameters())
    for stage in model._stages[: model.n_prefix]:
        for name in sorted(stage.params):
            h.update(name.encode() + params[name].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:12]
