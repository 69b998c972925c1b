"""Dataset: labels and references to inputs, decoded on demand."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ._sources import ImageList, Joined, Source, TensorImages, Texts


class Dataset:
    """Labelled inputs that are read when used: paths, rows or in-memory arrays.

    ``ds[i]`` is ``(input, label)`` with the input decoded (an RGB ``PIL.Image`` or a
    ``str``); memory is O(items). Build one with the ``at.data.from_*`` functions.

    Args:
        source: A :class:`Source`, or in-memory inputs: uint8 images ``(N, 3, H, W)``, a
            list of ``(3, H, W)`` uint8 images, or a list of strings.
        labels: One label per input (a class, a number, a row of numbers, a label list),
            or a pandas DataFrame with a column per task (multi-task learning,
            :mod:`autotransfer.heads.multitask`).
        modality: ``"image"`` or ``"text"`` (taken from the source when left out).
    """

    def __init__(self, source: Any, labels: Any, modality: str | None = None, *,
                 index: np.ndarray | None = None, skipped: Sequence[str] = ()) -> None:
        self.source = _as_source(source)
        self.modality = modality or self.source.modality
        self.index = np.arange(len(self.source)) if index is None else np.asarray(index)
        self.labels = labels.reset_index(drop=True) if is_table(labels) else labels
        self.skipped = list(skipped)  # files left out by on_error="skip"
        n = len(self.index)
        if n == 0:
            raise DataError("The dataset is empty; give at least two inputs with labels.")
        if len(self.labels) != n:
            raise DataError(f"Got {n} inputs but {len(self.labels)} labels; they must match.")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        if is_table(self.labels):  # a label per task: {column: label}
            return self.load(i), self.labels.iloc[i].to_dict()
        return self.load(i), self.labels[i]

    def load(self, i: int, size_hint: int | None = None) -> Any:
        """Input ``i`` decoded: an RGB ``PIL.Image`` or a ``str``."""
        return self.source.load(int(self.index[i]), size_hint)

    @property
    def inputs(self) -> Any:
        """The inputs: a uint8 tensor for in-memory images, else a lazy sequence."""
        if isinstance(self.source, TensorImages):
            return self.source.images[torch.from_numpy(self.index)]
        if isinstance(self.source, Texts):
            return [self.source.texts[i] for i in self.index]
        return _Inputs(self)

    @property
    def classes(self) -> list | None:
        """Sorted distinct labels when they are classes, else None (also for a table of
        labels: ``ds.labels[column]`` holds each task's)."""
        if is_table(self.labels):
            return None
        arr = self._class_labels()
        return None if arr is None else _sorted(set(arr.tolist()))

    def subset(self, idx: Any) -> Dataset:
        idx = np.asarray(idx, dtype=np.int64)
        labels = self.labels
        if is_table(labels):
            labels = labels.iloc[idx]
        else:
            labels = labels[idx] if isinstance(labels, np.ndarray) else [labels[i] for i in idx]
        return Dataset(self.source, labels, self.modality, index=self.index[idx])

    def concat(self, other: Dataset) -> Dataset:
        """This data followed by ``other`` (same modality): train + valid for a refit."""
        if not isinstance(other, Dataset) or other.modality != self.modality:
            what = other.modality if isinstance(other, Dataset) else type(other).__name__
            raise DataError(f"Can only join {self.modality} data with {self.modality} data, "
                            f"but got {what}.")
        if is_table(self.labels) or is_table(other.labels):
            labels: Any = _join_tables(self.labels, other.labels)
        elif isinstance(self.labels, np.ndarray) and isinstance(other.labels, np.ndarray) \
                and self.labels.ndim == other.labels.ndim:
            labels = np.concatenate([self.labels, other.labels])
        else:
            labels = [*self.labels, *other.labels]
        if other.source is self.source:
            return Dataset(self.source, labels, self.modality,
                           index=np.concatenate([self.index, other.index]))
        joined = Joined([(self.source, self.index), (other.source, other.index)])
        return Dataset(joined, labels, self.modality)

    def split(self, valid_fraction: float = 0.2, *, seed: int = 0,
              stratify: bool = True) -> tuple[Dataset, Dataset]:
        """A seeded (stratified when labels are classes; on the first column of a table of
        labels, the primary task) train/validation split."""
        from sklearn.model_selection import train_test_split

        if not 0 < valid_fraction < 1:
            raise DataError(f"valid_fraction must be in (0, 1), but got {valid_fraction!r}.")
        idx = np.arange(len(self))
        strat = self._class_labels() if stratify else None
        try:
            tr, va = train_test_split(idx, test_size=valid_fraction, random_state=seed,
                                      stratify=strat)
        except ValueError:  # a class with a single example cannot be stratified
            tr, va = train_test_split(idx, test_size=valid_fraction, random_state=seed)
        return self.subset(np.sort(tr)), self.subset(np.sort(va))

    def _class_labels(self) -> np.ndarray | None:
        labels = self.labels.iloc[:, 0].to_numpy() if is_table(self.labels) else self.labels
        arr = labels if isinstance(labels, np.ndarray) else np.asarray(labels, dtype=object)
        if arr.ndim != 1 or (arr.dtype.kind == "f" and not np.all(arr == np.round(arr))):
            return None
        return arr

    def fingerprint(self) -> str:
        """A hash of the inputs (what a feature cache is keyed on); "" when unknown."""
        fp = self.source.fingerprint(self.index)
        if fp is None:
            return ""
        return hashlib.sha1(f"{self.modality}|{fp}".encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        classes = self.classes
        what = (f"{len(classes)} classes: {_preview(classes)}" if classes is not None
                and len(classes) <= max(50, len(self) // 2) else "labels: values")
        if is_table(self.labels):
            what = f"label columns: {_preview(list(self.labels.columns))}"
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        return (f"Dataset({self.source.describe()}, {self.modality}, {len(self)} items, "
                f"{what}{skipped})")


class _Inputs(Sequence):
    """A dataset's inputs as a read-only sequence, decoded item by item."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return _Inputs(self.ds.subset(np.arange(len(self.ds))[i]))
        return self.ds.load(i)


def is_table(labels: Any) -> bool:
    """Whether ``labels`` hold one column per task (a pandas DataFrame)."""
    return hasattr(labels, "columns") and hasattr(labels, "iloc")


def _join_tables(a: Any, b: Any) -> Any:
    """Two tables of labels with the same columns, one after the other."""
    import pandas as pd

    cols = [list(x.columns) if is_table(x) else "one label column" for x in (a, b)]
    if cols[0] != cols[1]:
        raise DataError(f"Can only join data with the same label columns, but got {cols[0]} "
                        f"and {cols[1]}.")
    return pd.concat([a, b], ignore_index=True)


def _as_source(x: Any) -> Source:
    if isinstance(x, Source):
        return x
    if isinstance(x, torch.Tensor):
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise DataError(f"In-memory images must be uint8 (N, 3, H, W), but got "
                            f"{x.dtype} {tuple(x.shape)}; use at.data.from_arrays to convert.")
        return TensorImages(x)
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, str) for v in x):
        return Texts(list(x))
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, torch.Tensor) for v in x):
        bad = next((v for v in x if v.dtype != torch.uint8 or v.ndim != 3 or v.shape[0] != 3),
                   None)
        if bad is not None:  # read as they are, other values would decode wrongly
            raise DataError(f"In-memory images must be uint8 (3, H, W) each, but got "
                            f"{bad.dtype} {tuple(bad.shape)}; use at.data.from_arrays to "
                            f"convert.")
        return ImageList(list(x))
    if isinstance(x, (list, tuple)) and not x:
        raise DataError("The dataset is empty; give at least two inputs with labels.")
    raise DataError(f"Dataset inputs must be a Source, a uint8 image tensor, a list of "
                    f"images or a list of strings, but got {type(x).__name__}; use the "
                    f"at.data.from_* functions.")


def _preview(items: list, n: int = 5) -> str:
    shown = ", ".join(repr(c) for c in items[:n])
    return shown + (", ..." if len(items) > n else "")


def _sorted(values: set) -> list:
    try:
        return sorted(values)
    except TypeError:  # mixed types: a stable order all the same
        return sorted(values, key=repr)
