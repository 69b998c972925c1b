"""The data pipeline: a task's data readied for one backbone, and the loaders a trial reads.

Images are decoded in ``DataLoader`` worker processes through timm's transforms. When the
whole data set, resized to the backbone's input, fits ``HOLD_BYTES``, it is decoded once
and held as uint8 (the fast path: epochs slice tensors, augmentation crops from the held
images); past that budget every epoch streams from the source, so memory does not grow
with the data set. Text is tokenized once and padded per batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from . import _batch
from .data import Dataset
from .data._sources import to_pil
from .preprocessing import ImagePreprocessing, Preprocessing, TextPreprocessing

# Per process: a data set whose resized images fit is decoded once and held in memory.
# The bound also bounds that decode pass (about 1,300 images at 224 px), so a trial's
# first step never waits on decoding a whole large data set.
HOLD_BYTES = int(os.environ.get("AUTOTRANSFER_HOLD_BYTES", 256 << 20))
SMALL = 512  # fewer items than this: decode in the main process (workers cost more)


@dataclass
class Prepared:
    """A task's data for one backbone's preprocessing: inputs and encoded targets.

    ``x_train``/``x_valid`` are held uint8 images ``(N, 3, R, R)`` (R = the resize side),
    lists of token encodings, or the :class:`Dataset` itself when images stream.
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
        return not isinstance(self.x_train, Dataset)


def ready(pre: Preprocessing, train: Dataset, valid: Dataset, y_train: torch.Tensor,
          y_valid: torch.Tensor, info: dict) -> Prepared:
    """Hold the data (decoded once) when it fits :data:`HOLD_BYTES`, else stream it."""
    fps = (train.fingerprint(), valid.fingerprint())
    if isinstance(pre, TextPreprocessing):
        return Prepared(pre.encode(list(train.inputs)), y_train, pre.encode(list(valid.inputs)),
                        y_valid, info, pre, fps)
    if (len(train) + len(valid)) * 3 * pre.resize ** 2 > HOLD_BYTES:
        return Prepared(train, y_train, valid, y_valid, info, pre, fps)
    return Prepared(decode_all(train, pre), y_train, decode_all(valid, pre), y_valid, info,
                    pre, fps)


def decode_all(ds: Dataset, pre: ImagePreprocessing) -> torch.Tensor:
    """Every image of ``ds`` at the hold size, decoded by loader workers into one tensor."""
    out = torch.empty((len(ds), 3, pre.resize, pre.resize), dtype=torch.uint8)
    loader = DataLoader(_Decoded(ds, pre.hold_transform(), pre.resize), batch_size=64,
                        num_workers=workers(len(ds)))
    i = 0
    for batch, _ in loader:
        out[i:i + len(batch)] = batch
        i += len(batch)
    return out


def workers(n_items: int) -> int:
    """Loader processes: the cores this trial's worker owns, none for small sets."""
    return 0 if n_items < SMALL else max(1, torch.get_num_threads())


class _Decoded(torch.utils.data.Dataset):
    """Items of a Dataset through a transform, with their position as the target."""

    def __init__(self, ds: Dataset, transform: Any, size_hint: int | None,
                 targets: torch.Tensor | None = None) -> None:
        self.ds, self.transform, self.size_hint, self.targets = ds, transform, size_hint, targets

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        x = self.transform(self.ds.load(i, self.size_hint))
        return x, (i if self.targets is None else self.targets[i])


class _HeldAugmented(torch.utils.data.Dataset):
    """Held images through a train-time transform (crops come from the held size)."""

    def __init__(self, held: torch.Tensor, targets: torch.Tensor, transform: Any) -> None:
        self.held, self.targets, self.transform = held, targets, transform

    def __len__(self) -> int:
        return len(self.held)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(to_pil(self.held[i])), self.targets[i]


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

    def __getitem__(self, idx: list[int]) -> tuple[Any, torch.Tensor]:
        idx_t = torch.as_tensor(idx)
        rows = idx_t
        if self.views > 1:
            view = torch.randint(self.views, (len(idx_t),), generator=self.generator)
            rows = view * len(self.y) + idx_t
        return _batch.take(self.x, rows), self.y[idx_t]


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, encodings: list[dict], y: torch.Tensor) -> None:
        self.encodings, self.y = encodings, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[dict, torch.Tensor]:
        return self.encodings[i], self.y[i]


class _PadTokens:
    """Collate (encoding, target) pairs: pad the batch to its longest input."""

    def __init__(self, pre: TextPreprocessing) -> None:
        self.pre = pre

    def __call__(self, items: list[tuple[dict, torch.Tensor]]) -> tuple[dict, torch.Tensor]:
        return self.pre.collate([e for e, _ in items]), torch.stack([y for _, y in items])


def rows(x: Any, y: torch.Tensor, batch_size: int, *, shuffle: bool = False,
         generator: torch.Generator | None = None, views: int = 1,
         pin: bool = False) -> DataLoader:
    """Batches of in-memory rows (held images, cached features), shuffled or in order."""
    data = _Rows(x, y, views, generator)
    order = RandomSampler(data, generator=generator) if shuffle else SequentialSampler(data)
    return DataLoader(data, sampler=BatchSampler(order, batch_size, drop_last=shuffle),
                      batch_size=None, pin_memory=pin)


def loader(p: Prepared, split: str, batch_size: int, *, shuffle: bool = False,
           augment: str = "none", generator: torch.Generator | None = None,
           pin: bool = False) -> Iterable:
    """(inputs, targets) batches of ``split`` ("train" or "valid"), in order or shuffled
    (then the ragged last batch is dropped: BatchNorm needs more than one example).

    Image inputs are uint8 ``(N, 3, size, size)``, to normalize on the device; text
    inputs are padded token tensors.
    """
    x, y = (p.x_train, p.y_train) if split == "train" else (p.x_valid, p.y_valid)
    pre = p.preprocessing
    kw: dict[str, Any] = dict(batch_size=batch_size, shuffle=shuffle, drop_last=shuffle,
                              generator=generator, pin_memory=pin)
    if isinstance(pre, TextPreprocessing):
        return DataLoader(_Tokens(x, y), collate_fn=_PadTokens(pre), **kw)
    if p.held and augment == "none":
        return rows(pre.center_crop(x), y, batch_size, shuffle=shuffle, generator=generator,
                    pin=pin)
    transform = pre.eval_transform() if augment == "none" else pre.train_transform(augment)
    data = (_HeldAugmented(x, y, transform) if p.held
            else _Decoded(x, transform, pre.resize, y))
    n = workers(len(y))
    return DataLoader(data, num_workers=n, persistent_workers=n > 0, **kw)
