"""The data pipeline: a task's data readied for one backbone, and the loaders a trial reads.

Images are decoded in ``DataLoader`` worker processes through timm's transforms; nothing
is decoded before the first batch. When the whole data set at the trial's input size fits
``HOLD_BYTES``, the first pass keeps what it decodes as uint8 and later passes slice
tensors (the fast path; augmented crops then come from the held images); past that
budget every epoch streams from the source, so memory does not grow with the data set.
Text is tokenized once and padded per batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from . import Dataset
from . import batch as _batch
from ._sources import to_pil
from .preprocessing import Preprocessing, TextPreprocessing

# Per process: a data set whose images, at the trial's input size, fit this budget is
# kept in memory as uint8 once decoded (memory grows by at most this much).
HOLD_BYTES = int(os.environ.get("AUTOTRANSFER_HOLD_BYTES", 256 << 20))
SMALL = 512  # fewer items than this: decode in the main process (workers cost more)


class Held:
    """A data set's eval-transformed images, kept as uint8 as loaders first decode them.

    Nothing is decoded up front: the first pass over the data streams from its source
    through loader workers and fills :attr:`images`; later passes slice tensors.
    """

    def __init__(self, ds: Dataset, size: int) -> None:
        self.ds = ds
        self.images = torch.empty((len(ds), 3, size, size), dtype=torch.uint8)  # lazy pages
        self.filled = torch.zeros(len(ds), dtype=torch.bool)
        self.complete = False

    def __len__(self) -> int:
        return len(self.ds)

    def put(self, idx: torch.Tensor, x: torch.Tensor) -> None:
        self.images[idx] = x
        self.filled[idx] = True
        self.complete = bool(self.filled.all())


@dataclass
class Prepared:
    """A task's data for one backbone's preprocessing: inputs and encoded targets.

    ``x_train``/``x_valid`` are :class:`Held` images, lists of token encodings, or the
    :class:`Dataset` itself when images stream every epoch.
    """

    x_train: Any
    y_train: torch.Tensor
    x_valid: Any
    y_valid: torch.Tensor
    info: dict
    preprocessing: Preprocessing
    fingerprints: tuple[str, str] = ("", "")  # of the raw train and valid inputs

    @property
    def held(self) -> bool:
        return isinstance(self.x_train, Held)


def ready(pre: Preprocessing, train: Dataset, valid: Dataset, y_train: torch.Tensor,
          y_valid: torch.Tensor, info: dict) -> Prepared:
    """Hold the images (as they are first decoded) when they fit :data:`HOLD_BYTES`."""
    fps = (train.fingerprint(), valid.fingerprint())
    if isinstance(pre, TextPreprocessing):
        return Prepared(pre.encode(list(train.inputs)), y_train, pre.encode(list(valid.inputs)),
                        y_valid, info, pre, fps)
    if (len(train) + len(valid)) * 3 * pre.size ** 2 > HOLD_BYTES:
        return Prepared(train, y_train, valid, y_valid, info, pre, fps)
    return Prepared(Held(train, pre.size), y_train, Held(valid, pre.size), y_valid, info,
                    pre, fps)


def workers(n_items: int) -> int:
    """Loader processes: the cores this trial's worker owns, none for small sets."""
    return 0 if n_items < SMALL else max(1, torch.get_num_threads())


class _Decoded(torch.utils.data.Dataset):
    """Items of a Dataset through a transform: ``(input, target, position)``."""

    def __init__(self, ds: Dataset, transform: Any, size_hint: int | None,
                 targets: torch.Tensor) -> None:
        self.ds, self.transform, self.size_hint, self.targets = ds, transform, size_hint, targets

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any, int]:
        return self.transform(self.ds.load(i, self.size_hint)), self.targets[i], i


class _HeldAugmented(torch.utils.data.Dataset):
    """Held images through a train-time transform."""

    def __init__(self, held: torch.Tensor, targets: torch.Tensor, transform: Any) -> None:
        self.held, self.targets, self.transform = held, targets, transform

    def __len__(self) -> int:
        return len(self.held)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.transform(to_pil(self.held[i])), self.targets[i], i


class _Stream:
    """Batches ``(inputs, targets)`` of a loader, with the items' positions when
    ``indexed``; fills ``held`` on the way.

    With ``full`` set, a smaller (ragged last) batch is decoded and held but not yielded.
    """

    def __init__(self, loader: DataLoader, held: Held | None = None, full: int | None = None,
                 indexed: bool = False) -> None:
        self.loader, self.held, self.full, self.indexed = loader, held, full, indexed

    def __iter__(self) -> Iterator[tuple]:
        for x, y, idx in self.loader:
            if self.held is not None:
                self.held.put(idx, x)
            if self.full is None or len(y) == self.full:
                yield (x, y, idx) if self.indexed else (x, y)


class _Switch:
    """A held split: read from the held images once complete, else from the source."""

    def __init__(self, held: Held, fast: Iterable, slow: Iterable) -> None:
        self.held, self.fast, self.slow = held, fast, slow

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        return iter(self.fast if self.held.complete else self.slow)


class _Rows(torch.utils.data.Dataset):
    """Tensors (or dicts/tuples of them) read a whole batch of rows at a time.

    With ``views`` > 1, ``x`` holds that many versions of every item (view v of item i
    at row v * N + i) and each read takes one at random.
    """

    def __init__(self, x: Any, y: torch.Tensor, views: int = 1,
                 generator: torch.Generator | None = None) -> None:
        self.x, self.y, self.views, self.generator = x, y, views, generator

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: list[int]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        idx_t = torch.as_tensor(idx)
        rows = idx_t
        if self.views > 1:
            view = torch.randint(self.views, (len(idx_t),), generator=self.generator)
            rows = view * len(self.y) + idx_t
        return _batch.take(self.x, rows), self.y[idx_t], idx_t


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, encodings: list[dict], y: torch.Tensor) -> None:
        self.encodings, self.y = encodings, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[dict, torch.Tensor, int]:
        return self.encodings[i], self.y[i], i


class _PadTokens:
    """Collate (encoding, target, position) triples: pad the batch to its longest input."""

    def __init__(self, pre: TextPreprocessing) -> None:
        self.pre = pre

    def __call__(self, items: list[tuple]) -> tuple[dict, torch.Tensor, torch.Tensor]:
        return (self.pre.collate([e for e, _, _ in items]), torch.stack([y for _, y, _ in items]),
                torch.tensor([i for _, _, i in items]))


def rows(x: Any, y: torch.Tensor, batch_size: int, *, shuffle: bool = False,
         generator: torch.Generator | None = None, views: int = 1, pin: bool = False,
         indexed: bool = False, every: bool = False) -> Iterable:
    """Batches of in-memory rows (held images, cached features), shuffled or in order."""
    data = _Rows(x, y, views, generator)
    order = RandomSampler(data, generator=generator) if shuffle else SequentialSampler(data)
    sampler = BatchSampler(order, batch_size, drop_last=shuffle and not every)
    return _Stream(DataLoader(data, sampler=sampler, batch_size=None, pin_memory=pin),
                   indexed=indexed)


def loader(p: Prepared, split: str, batch_size: int, *, shuffle: bool = False,
           augment: str = "none", generator: torch.Generator | None = None,
           pin: bool = False, indexed: bool = False, every: bool = False) -> Iterable:
    """(inputs, targets) batches of ``split`` ("train" or "valid"), in order or shuffled
    (then the ragged last batch is dropped: BatchNorm needs more than one example).

    Image inputs are uint8 ``(N, 3, size, size)``, to normalize on the device; text
    inputs are padded token tensors. ``indexed`` adds the items' positions to each
    batch; ``every`` yields the ragged last batch of a shuffled pass too.
    """
    x, y = (p.x_train, p.y_train) if split == "train" else (p.x_valid, p.y_valid)
    pre = p.preprocessing
    n = workers(len(y))

    drop = shuffle and not every

    def batches(data: Any, *, held: Held | None = None, **kw: Any) -> _Stream:
        # The order comes from ``generator`` alone, whichever path reads the data, so a
        # cached, held or streamed trial sees the same batches. A pass that fills ``held``
        # reads every item and yields only the batches a dropping pass would.
        order = RandomSampler(data, generator=generator) if shuffle else SequentialSampler(data)
        return _Stream(DataLoader(data, batch_size=batch_size, sampler=order,
                                  drop_last=drop and held is None, pin_memory=pin, **kw),
                       held, batch_size if drop and held is not None else None, indexed)

    if isinstance(pre, TextPreprocessing):
        return batches(_Tokens(x, y), collate_fn=_PadTokens(pre))
    source, parallel = (x.ds if p.held else x), dict(num_workers=n, persistent_workers=n > 0)
    if augment != "none":
        transform = pre.train_transform(augment)
        slow = batches(_Decoded(source, transform, pre.resize, y), **parallel)
        if not p.held:
            return slow
        return _Switch(x, batches(_HeldAugmented(x.images, y, transform), **parallel), slow)
    if not p.held:
        return batches(_Decoded(x, pre.eval_transform(), pre.resize, y), **parallel)
    # A first pass holds every item it decodes; in training it yields only full batches.
    slow = batches(_Decoded(source, pre.eval_transform(), pre.resize, y), held=x,
                   num_workers=n)
    return _Switch(x, rows(x.images, y, batch_size, shuffle=shuffle, generator=generator,
                           pin=pin, indexed=indexed, every=every), slow)


def inference_batches(pre: Preprocessing, data: Dataset, batch_size: int) -> Iterable:
    """The inputs of ``data`` in order, in batches ready for ``pre.normalize`` (no labels):
    prediction, features for ranking."""
    if isinstance(pre, TextPreprocessing):
        texts = list(data.inputs)
        for i in range(0, len(texts), batch_size):
            yield pre.prepare(texts[i:i + batch_size])
        return
    zeros = torch.zeros(len(data))
    prepared = Prepared(data, zeros, data, zeros, {}, pre)
    for xb, _ in loader(prepared, "valid", batch_size):
        yield xb
