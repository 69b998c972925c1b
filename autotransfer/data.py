"""Data adapters: arrays, image folders, pandas text columns, and a built-in demo set.

A :class:`Dataset` holds raw inputs (uint8 images or strings) and raw labels; the backbone
decides the preprocessing and the head decides what the labels mean.

Example:
    >>> import numpy as np, autotransfer as at
    >>> ds = at.data.from_arrays(np.zeros((4, 8, 8), np.uint8), [0, 1, 0, 1])
    >>> ds.modality, tuple(ds.inputs.shape)
    ('image', (4, 3, 8, 8))
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError, UnknownNameError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Dataset:
    """Raw inputs and labels.

    Attributes:
        inputs: uint8 images ``(N, 3, H, W)``, a list of ``(3, H, W)`` images of varied
            sizes, or a list of strings.
        labels: One label per input (a class, a number, a row of numbers or a label list).
        modality: ``"image"`` or ``"text"``.
    """

    inputs: Any
    labels: Any
    modality: str

    def __post_init__(self) -> None:
        n = len(self.inputs)
        if n == 0:
            raise DataError("The dataset is empty; give at least two inputs with labels.")
        if len(self.labels) != n:
            raise DataError(f"Got {n} inputs but {len(self.labels)} labels; they must match.")

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, idx: Any) -> Dataset:
        idx = np.asarray(idx, dtype=np.int64)
        if isinstance(self.inputs, torch.Tensor):
            inputs: Any = self.inputs[torch.from_numpy(idx)]
        else:
            inputs = [self.inputs[i] for i in idx]
        labels = self.labels
        labels = labels[idx] if isinstance(labels, np.ndarray) else [labels[i] for i in idx]
        return Dataset(inputs, labels, self.modality)

    def split(self, valid_fraction: float = 0.2, *, seed: int = 0,
              stratify: bool = True) -> tuple[Dataset, Dataset]:
        """A seeded (stratified when labels are classes) train/validation split."""
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
        arr = np.asarray(self.labels, dtype=object) if not isinstance(self.labels, np.ndarray) \
            else self.labels
        if arr.ndim != 1 or (arr.dtype.kind == "f" and not np.all(arr == np.round(arr))):
            return None
        return arr

    def fingerprint(self) -> str:
        """A hash of the inputs (what a feature cache is keyed on)."""
        h = hashlib.sha1(self.modality.encode())
        items = [self.inputs] if isinstance(self.inputs, torch.Tensor) else self.inputs
        for item in items:
            if isinstance(item, torch.Tensor):
                h.update(str(tuple(item.shape)).encode())
                h.update(item.contiguous().numpy().tobytes())
            else:
                h.update(str(item).encode() + b"\0")
        return h.hexdigest()[:16]


def from_arrays(x: Any, y: Any) -> Dataset:
    """Images (NCHW or NHWC, uint8 or float, grayscale or RGB) or a list of strings.

    Float images in [0, 1] are scaled to [0, 255]; grayscale is made 3-channel.
    """
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, str) for v in x):
        return Dataset(list(x), _labels(y), "text")
    if isinstance(x, np.ndarray) and x.dtype.kind in "US":
        return Dataset(x.tolist(), _labels(y), "text")
    return Dataset(to_uint8_images(x), _labels(y), "image")


def from_texts(texts: Any, labels: Any) -> Dataset:
    """A list of strings and their labels."""
    texts = list(texts)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise DataError(f"Text inputs must be strings, but got {type(bad[0]).__name__}: "
                        f"{bad[0]!r}.")
    return Dataset(texts, _labels(labels), "text")


def _labels(y: Any) -> Any:
    if hasattr(y, "to_numpy"):
        y = y.to_numpy()
    if isinstance(y, torch.Tensor):
        y = y.cpu().numpy()
    if isinstance(y, np.ndarray):
        return y
    y = list(y)
    if y and all(isinstance(v, (list, tuple, set)) for v in y):
        return y  # label lists (multilabel) stay lists
    return np.asarray(y)


def to_uint8_images(x: Any) -> torch.Tensor:
    """Any batch of images -> uint8 ``(N, 3, H, W)``; names the shape it cannot read."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise DataError("The dataset is empty; give at least two inputs with labels.")
        x = np.stack([np.asarray(v) for v in x])
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x.detach().cpu()
    if t.numel() == 0:
        raise DataError("The dataset is empty; give at least two inputs with labels.")
    if t.dtype.is_complex or t.dtype == torch.bool or not (
        t.dtype.is_floating_point or t.dtype in (torch.uint8, torch.int16, torch.int32,
                                                 torch.int64, torch.int8)
    ):
        raise DataError(f"Images must be numeric arrays, but got dtype {t.dtype}.")
    if t.ndim == 3:  # (N, H, W) grayscale
        t = t[:, None]
    if t.ndim != 4:
        raise DataError(
            f"Images must be (N, H, W), (N, C, H, W) or (N, H, W, C) with C in 1, 3, 4, "
            f"but got shape {tuple(t.shape)}; for text give a list of strings."
        )
    if t.shape[1] not in (1, 3, 4) and t.shape[-1] in (1, 3, 4):
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] not in (1, 3, 4):
        raise DataError(f"Images must have 1, 3 or 4 channels, but got shape {tuple(t.shape)}.")
    if t.shape[1] == 4:
        t = t[:, :3]  # drop alpha
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    if t.dtype.is_floating_point:
        t = t.float()
        if t.max() <= 1.0:
            t = t * 255
        t = t.round()
    return t.clamp(0, 255).to(torch.uint8).contiguous()


def from_folder(path: str | Path) -> Dataset:
    """One subfolder per class holding images (or ``.txt`` files for text)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"Data folder {str(root)!r} does not exist or is not a folder.")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"Data folder {str(root)!r} has no class subfolders; expected "
                        f"{root}/<class>/<file> with image or .txt files.")
    files = [(f, c.name) for c in classes for f in sorted(c.iterdir()) if f.is_file()]
    texts = [(f, c) for f, c in files if f.suffix.lower() == ".txt"]
    images = [(f, c) for f, c in files if f.suffix.lower() in IMAGE_SUFFIXES]
    if texts and not images:
        return Dataset([f.read_text() for f, _ in texts], np.asarray([c for _, c in texts]), "text")
    if not images:
        raise DataError(f"No image files ({', '.join(sorted(IMAGE_SUFFIXES))}) or .txt files "
                        f"under {str(root)!r}.")
    from PIL import Image

    tensors = []
    for f, _ in images:
        with Image.open(f) as im:
            tensors.append(torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1))
    same = len({tuple(t.shape) for t in tensors}) == 1
    inputs: Any = torch.stack(tensors) if same else tensors
    return Dataset(inputs, np.asarray([c for _, c in images]), "image")


def from_pandas(df: Any, *, text: str, label: str | list[str]) -> Dataset:
    """A text column and a label column (or a list of columns: several targets or labels)."""
    cols = list(df.columns)
    for col in [text] + ([label] if isinstance(label, str) else list(label)):
        if col not in cols:
            raise DataError(f"Column {col!r} is not in the data frame; columns: {cols}.")
    y = df[label].to_numpy()
    return from_texts(df[text].astype(str).tolist(), y)


def from_csv(path: str | Path, *, text: str, label: str | list[str]) -> Dataset:
    """:func:`from_pandas` on a CSV file."""
    import pandas as pd

    if not Path(path).is_file():
        raise DataError(f"CSV file {str(path)!r} does not exist.")
    return from_pandas(pd.read_csv(path), text=text, label=label)


DEMOS = ("digits",)


def demo(name: str = "digits", *, image_size: int = 32, per_class: int = 20,
         valid_per_class: int | None = None, seed: int = 0) -> tuple[Dataset, Dataset]:
    """A built-in real data set that works offline, as (train, valid).

    ``digits``: scikit-learn's 1,797 handwritten 8x8 digits, upsampled to ``image_size``
    and made RGB; ``per_class`` labelled examples per class for training, the rest (or
    ``valid_per_class`` per class) for validation.
    """
    if name not in DEMOS:
        raise UnknownNameError("demo data set", name, DEMOS)
    from sklearn.datasets import load_digits

    from .preprocessing import _resize_uint8

    d = load_digits()
    x = torch.from_numpy(d.images * (255.0 / 16.0)).round().to(torch.uint8)[:, None]
    x = _resize_uint8(x.expand(-1, 3, -1, -1), image_size)
    y = d.target
    rng = np.random.default_rng(seed)
    train_idx, valid_idx = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        if per_class >= len(idx):
            raise DataError(f"per_class={per_class} leaves no validation data: class {c} has "
                            f"{len(idx)} examples.")
        train_idx += idx[:per_class].tolist()
        rest = idx[per_class:]
        valid_idx += (rest if valid_per_class is None else rest[:valid_per_class]).tolist()
    full = Dataset(x, y, "image")
    return full.subset(sorted(train_idx)), full.subset(sorted(valid_idx))
