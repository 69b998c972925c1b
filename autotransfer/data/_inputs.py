"""What a user may hand to ``predict``: one input or many, of the model's modality.

One image (a PIL image, an ``(H, W)``/``(C, H, W)``/``(H, W, C)`` array or tensor, a file
path), a list of them of varied sizes, a batch array ``(N, ...)``, a folder, a DataFrame
column, or a :class:`Dataset`; for text one string, a list of strings, or a column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, ModalityError
from ._dataset import Dataset
from ._sources import (
    CHANNELS,
    IMAGE_SUFFIXES,
    ImageFiles,
    ImageList,
    Texts,
    check_image_file,
    image_tensor,
    open_image,
)


def as_dataset(inputs: Any, modality: str, *, column: str | None = None) -> tuple[Dataset, bool]:
    """``(dataset, single)``: the inputs as a Dataset, and whether one input was given."""
    if isinstance(inputs, Dataset):
        if inputs.modality != modality:
            raise ModalityError(f"This model takes {modality} inputs, but the dataset holds "
                                f"{inputs.modality}.")
        return inputs, False
    if _is_frame(inputs):
        inputs = _column(inputs, column)
    elif hasattr(inputs, "to_numpy") and hasattr(inputs, "index"):  # a pandas Series
        inputs = inputs.tolist()
    if modality == "text":
        return _texts(inputs)
    return _images(inputs)


def _is_frame(x: Any) -> bool:
    return hasattr(x, "columns") and hasattr(x, "iloc")


def _column(df: Any, column: str | None) -> list:
    cols = list(df.columns)
    if column is None and len(cols) == 1:
        column = cols[0]
    if column is None or column not in cols:
        raise DataError(f"Pass column= to say which DataFrame column holds the inputs; "
                        f"columns: {cols}." if column is None else
                        f"Column {column!r} is not in the DataFrame; columns: {cols}.")
    unique_columns(cols, [column], "DataFrame")
    return df[column].tolist()


def unique_columns(cols: list, used: list, what: str = "data frame") -> None:
    """Each column in ``used`` occurs once in ``cols``: a name given twice would read two
    columns glued together, or the wrong one."""
    twice = [c for c in dict.fromkeys(used) if cols.count(c) > 1]
    if twice:
        raise DataError(f"Column {twice[0]!r} occurs {cols.count(twice[0])} times in the "
                        f"{what}; column names must be unique: rename them (columns: "
                        f"{cols}).")


def _texts(x: Any) -> tuple[Dataset, bool]:
    if isinstance(x, str):
        return Dataset(Texts([x]), [None]), True
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, str) for v in x):
        return Dataset(Texts(list(x)), [None] * len(x)), False
    if isinstance(x, (list, tuple)) and not x:
        raise DataError("Nothing to predict: the inputs are empty.")
    raise ModalityError(f"This model takes text: a string or a list of strings, but got "
                        f"{_describe(x)}.")


def _images(x: Any) -> tuple[Dataset, bool]:
    from PIL import Image

    if isinstance(x, Image.Image):
        return _one(image_tensor(x)), True
    if isinstance(x, (str, Path)):
        path = Path(x)
        if path.is_dir():
            return _folder(path), False
        if path.is_file():
            return _files([str(path)], "files"), True
        raise ModalityError(f"This model takes images, but got the string {str(x)[:80]!r}, "
                            f"which is not an image file or folder.")
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return _array(x)
    if isinstance(x, (list, tuple)):
        if not x:
            raise DataError("Nothing to predict: the inputs are empty.")
        if all(isinstance(v, (str, Path)) for v in x):
            missing = [str(v) for v in x if not Path(v).is_file()]
            if missing:
                raise ModalityError(f"This model takes images; {len(missing)} of the given "
                                    f"strings are not image files, e.g. {missing[:3]}.")
            return _files([str(v) for v in x], "files"), False
        images = [_items(v, i) for i, v in enumerate(x)]
        return Dataset(ImageList(images), [None] * len(images)), False
    raise ModalityError(f"This model takes images (a PIL image, an array, a path, a folder, a "
                        f"list of them, a DataFrame column or a Dataset), but got {_describe(x)}.")


def _items(v: Any, i: int) -> torch.Tensor:
    from PIL import Image

    if isinstance(v, (Image.Image, np.ndarray, torch.Tensor)):
        return image_tensor(v, f"input {i}")
    if isinstance(v, (str, Path)) and Path(v).is_file():
        return image_tensor(open_image(str(v)), f"input {i}")
    raise ModalityError(f"This model takes images, but input {i} is {_describe(v)}.")


def _array(x: Any) -> tuple[Dataset, bool]:
    """One image (2-D, or 3-D with a channel axis of 1, 3 or 4) or a batch ``(N, ...)``.

    A 3-D array whose first or last axis is 1, 3 or 4 is one image: a batch of 1, 3 or 4
    grayscale images must be given as a list or as ``(N, H, W, 1)``.
    """
    shape = tuple(x.shape)
    if isinstance(x, np.ndarray) and x.dtype.kind in "USO":
        raise ModalityError(f"This model takes images, but got an array of {x.dtype} values.")
    if len(shape) == 3 and shape[-1] in (2, 5):  # an (H, W, C) image with a bad channel count
        raise DataError(f"Images must have 1, 3 or 4 channels, but got shape {shape}.")
    if len(shape) == 2 or (len(shape) == 3 and (shape[0] in CHANNELS or shape[-1] in CHANNELS)):
        return _one(image_tensor(x)), True
    if len(shape) in (3, 4):
        if shape[0] == 0:
            raise DataError("Nothing to predict: the inputs are empty.")
        images = [image_tensor(x[i], f"input {i}") for i in range(shape[0])]
        return Dataset(ImageList(images), [None] * len(images)), False
    raise DataError(f"An image array must be (H, W), (C, H, W), (H, W, C) or a batch "
                    f"(N, ...) of those, but got shape {shape}.")


def _one(image: torch.Tensor) -> Dataset:
    return Dataset(ImageList([image]), [None])


def _folder(path: Path) -> Dataset:
    """Every image file under ``path`` (class subfolders or not), sorted by path."""
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise DataError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) under {str(path)!r}.")
    return _files([str(f) for f in files], f"folder {str(path)!r}")


def _files(paths: list[str], where: str) -> Dataset:
    """Image files whose headers PIL reads (a decompression bomb, a broken file: named now,
    before any batch is decoded)."""
    for p in paths:
        why = check_image_file(p)
        if why:
            raise DataError(why if "too large to decode" in why else
                            f"Cannot read image {p!r}: {why}. Give image files PIL can open "
                            f"({', '.join(IMAGE_SUFFIXES)}).")
    return Dataset(ImageFiles(paths, where), [None] * len(paths))


def _describe(x: Any) -> str:
    if isinstance(x, str):
        return f"the string {x[:60]!r}"
    shape = getattr(x, "shape", None)
    return f"a {type(x).__name__}" + (f" of shape {tuple(shape)}" if shape is not None else "")
