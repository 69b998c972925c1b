"""``at.data.from_*``: build a lazy :class:`Dataset` from data the way people hold it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ._csv import read_csv
from ._dataset import Dataset
from ._inputs import unique_columns
from ._labels import labels as _labels
from ._pixels import pixels
from ._sources import (
    CHANNELS,
    IMAGE_SUFFIXES,
    HFColumn,
    ImageFiles,
    ImageList,
    TensorImages,
    TextFiles,
    Texts,
    TorchItems,
    as_pil,
    check_image_file,
    image_tensor,
    to_uint8,
)

ON_ERROR = ("raise", "skip")


def from_arrays(x: Any, y: Any) -> Dataset:
    """Images or strings held in memory, with their labels.

    Images: one array ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` with C in 1, 3,
    4, or a list of single images of varied sizes. The dtype says the scale: uint8 0-255,
    uint16 0-65535, float in [0, 1], other integers 0-255; values outside it are refused,
    never rescaled. Strings: a list of ``str``.

    Example:
        >>> import numpy as np, autotransfer as at
        >>> at.data.from_arrays(np.zeros((4, 8, 8), np.uint8), [0, 1, 0, 1])
        Dataset(arrays, image, 4 items, 2 classes: 0, 1)
    """
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, str) for v in x):
        return Dataset(Texts(list(x)), _labels(y))
    if isinstance(x, np.ndarray) and x.dtype.kind in "US":
        return Dataset(Texts(x.tolist()), _labels(y))
    if isinstance(x, (list, tuple)):
        if not x:
            raise DataError("The dataset is empty; give at least two inputs with labels.")
        images = [image_tensor(v, f"image {i}") for i, v in enumerate(x)]
        if len({tuple(t.shape) for t in images}) == 1:
            return Dataset(TensorImages(torch.stack(images)), _labels(y))
        return Dataset(ImageList(images), _labels(y))
    return Dataset(TensorImages(to_uint8_images(x)), _labels(y))


def to_uint8_images(x: Any) -> torch.Tensor:
    """A batch of same-size images -> uint8 ``(N, 3, H, W)``; names the shape it cannot read."""
    if hasattr(x, "columns") and hasattr(x, "iloc"):
        raise DataError(f"Images must be an array or a list of images, but got a DataFrame "
                        f"with columns {list(x.columns)}; for image paths in a column use "
                        f"at.data.from_pandas(df, image=<column>, label=<column>).")
    t, dtype = pixels(x)
    if t.numel() == 0:
        raise DataError("The dataset is empty; give at least two inputs with labels.")
    if t.ndim == 3:  # (N, H, W) grayscale
        t = t[:, None]
    if t.ndim != 4:
        raise DataError(
            f"Images must be (N, H, W), (N, C, H, W) or (N, H, W, C) with C in 1, 3, 4, "
            f"but got shape {tuple(t.shape)}; for text give a list of strings.")
    if t.shape[1] not in CHANNELS and t.shape[-1] in CHANNELS:
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] not in CHANNELS:
        raise DataError(f"Images must have 1, 3 or 4 channels, but got shape {tuple(t.shape)}.")
    if min(t.shape[-2:]) < MIN_SIDE:
        raise DataError(f"Images must be at least {MIN_SIDE}x{MIN_SIDE} pixels, but got shape "
                        f"{tuple(t.shape)}.")
    return to_uint8(t, dtype=dtype)


def from_texts(texts: Any, labels: Any) -> Dataset:
    """A list of strings and their labels."""
    texts = list(texts)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise DataError(f"Text inputs must be strings, but got {type(bad[0]).__name__}: "
                        f"{bad[0]!r}.")
    return Dataset(Texts(texts), _labels(labels))


MIN_SIDE = 4  # pixels: a smaller "image" is a vector in the wrong shape, not a picture


def from_folder(path: str | Path, *, on_error: str = "raise") -> Dataset:
    """One subfolder per class holding image files (or ``.txt`` files for text).

    Files are only listed and their headers checked here; images are decoded when a
    loader reads them. ``on_error="skip"`` leaves out unreadable files (counted in
    ``ds.skipped``); the default raises, naming them.
    """
    _check_on_error(on_error)
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"Data folder {str(root)!r} does not exist or is not a folder; give a "
                        f"folder with one subfolder of images (or .txt files) per class.")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"Data folder {str(root)!r} has no class subfolders; expected "
                        f"{root}/<class>/<file> with image or .txt files.")
    files = {c.name: sorted(f for f in c.iterdir() if f.is_file()
                            and not f.name.startswith(".")) for c in classes}
    empty = [name for name, fs in files.items() if not fs]
    if empty:
        raise DataError(f"Class folder(s) {empty} under {str(root)!r} are empty; every class "
                        f"needs at least one file (remove the folder or add examples).")
    pairs = [(f, c) for c, fs in files.items() for f in fs]
    texts = [(f, c) for f, c in pairs if f.suffix.lower() == ".txt"]
    if texts and len(texts) == len(pairs):
        return Dataset(TextFiles([f for f, _ in texts], f"folder {str(root)!r}"),
                       np.asarray([c for _, c in texts]))
    bad = [(str(f), f"not an image file (suffix {f.suffix or 'none'!r})") for f, _ in pairs
           if f.suffix.lower() not in IMAGE_SUFFIXES]
    pairs = [(f, c) for f, c in pairs if f.suffix.lower() in IMAGE_SUFFIXES]
    bad += [(str(f), why) for f, _ in pairs if (why := check_image_file(str(f)))]
    return _image_files([(str(f), c) for f, c in pairs], bad, on_error,
                        f"folder {str(root)!r}", IMAGE_SUFFIXES)


def _image_files(pairs: list[tuple[str, Any]], bad: list[tuple[str, str]], on_error: str,
                 where: str, accepted: Any, table: Any = None) -> Dataset:
    """Image files and their labels (with ``table``: the pairs hold row numbers of that
    table of labels)."""
    if bad and on_error == "raise":
        shown = "; ".join(f"{p} ({why})" for p, why in bad[:3])
        raise DataError(f"{len(bad)} file(s) in {where} cannot be read as images: {shown}"
                        f"{'; ...' if len(bad) > 3 else ''}. Accepted: {', '.join(accepted)} "
                        f"files PIL can open; pass on_error='skip' to leave them out.")
    bad_paths = {p for p, _ in bad}
    keep = [(p, c) for p, c in pairs if p not in bad_paths]
    if not keep:
        raise DataError(f"No readable image files in {where}; accepted: {', '.join(accepted)}.")
    labels = [c for _, c in keep]
    return Dataset(ImageFiles([p for p, _ in keep], where),
                   _labels(labels) if table is None else table.iloc[labels],
                   skipped=sorted(bad_paths))


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise DataError(f"on_error must be one of {ON_ERROR}, but got on_error={on_error!r}.")


def from_pandas(df: Any, *, label: str | list[str], image: str | None = None,
                text: str | None = None, root: str | Path | None = None,
                on_error: str = "raise") -> Dataset:
    """A DataFrame with an image-path column (``image=``) or a text column (``text=``).

    Relative image paths are resolved against ``root`` (default: the working folder).
    ``label`` is a column, or a list of columns: the labels are then that table, one
    column per task (``search(task={"species": "classification", "age": "regression"})``,
    :mod:`autotransfer.heads.multitask`), or several targets of one task (``task="regression"``,
    or 0/1 columns with ``task="multilabel"``).

    Example:
        >>> df = pd.DataFrame({"path": ["a/1.jpg", ...], "breed": ["pug", ...]})  # doctest: +SKIP
        >>> at.data.from_pandas(df, image="path", label="breed")                   # doctest: +SKIP
    """
    _check_on_error(on_error)
    if not hasattr(df, "columns"):
        raise DataError(f"from_pandas takes a pandas DataFrame, but got {type(df).__name__}; "
                        f"for arrays or lists use from_arrays, for a CSV file from_csv.")
    if (image is None) == (text is None):
        got = "both" if image is not None else "neither"
        raise DataError(f"Give exactly one of image='<path column>' or text='<text column>'; "
                        f"got {got}. Columns: {list(df.columns)}.")
    cols = list(df.columns)
    wanted = [label] if isinstance(label, str) else _label_columns(label)
    for col in [image or text] + wanted:
        if col not in cols:
            raise DataError(f"Column {col!r} is not in the data frame; columns: {cols}.")
    unique_columns(cols, [image or text] + wanted)
    if (image or text) in wanted:
        raise DataError(f"Column {image or text!r} is both the input and a label column; "
                        f"give label= the column(s) holding the labels (columns: {cols}).")
    y = _labels(df[label].to_numpy() if isinstance(label, str) else df[wanted])
    if text is not None:
        values = _text_column(df[text], text)
        if values and all(v.lower().endswith(IMAGE_SUFFIXES) for v in values):
            raise DataError(f"Column {text!r} holds image file paths ({values[0]!r}); "
                            f"pass image={text!r} to read the images, not their names.")
        return Dataset(Texts(values), y)
    base = Path(root) if root is not None else Path.cwd()
    paths = [str(p if Path(p).is_absolute() else base / p) for p in df[image].astype(str)]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing and on_error == "raise":
        raise DataError(f"{len(missing)} of {len(paths)} file(s) in column {image!r} do not "
                        f"exist, e.g. {missing[:3]} (relative paths are resolved against "
                        f"{str(base)!r}); pass on_error='skip' to leave them out.")
    bad = [(p, "file does not exist") for p in missing]
    bad += [(p, why) for p in paths if p not in set(missing) and (why := check_image_file(p))]
    table = y if hasattr(y, "columns") else None  # a table: the pairs hold its row numbers
    labels = list(range(len(paths))) if table is not None else list(y)
    return _image_files(list(zip(paths, labels)), bad, on_error, f"column {image!r}",
                        IMAGE_SUFFIXES, table)


def _text_column(column: Any, name: str) -> list[str]:
    """A column of texts as strings; a missing one (NaN, None) is named, not read "nan"."""
    missing = column.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError(f"Text column {name!r} has {int(missing.sum())} missing value(s), e.g. "
                        f"row {row} ({column.iloc[row]!r}); every input needs a text: drop "
                        f"or fill those rows first.")
    return [v if isinstance(v, str) else str(v) for v in column.tolist()]  # no pyarrow trip


def _label_columns(label: Any) -> list:
    """``label=`` as a list of column names: non-empty, each once."""
    if not isinstance(label, (list, tuple)) or not label:
        raise DataError(f"label must be a column name or a non-empty list of them, but got "
                        f"label={label!r}.")
    twice = sorted({c for c in label if list(label).count(c) > 1}, key=str)
    if twice:
        raise DataError(f"label names column(s) {twice} more than once: {list(label)!r}.")
    return list(label)


def from_csv(path: str | Path, *, label: str | list[str], image: str | None = None,
             text: str | None = None, on_error: str = "raise") -> Dataset:
    """:func:`from_pandas` on a CSV file; relative image paths are taken from its folder."""
    path = Path(path)
    return from_pandas(read_csv(path), label=label, image=image, text=text,
                       root=path.parent, on_error=on_error)


def from_hf(ds: Any, *, input: str, label: str) -> Dataset:
    """A Hugging Face ``datasets.Dataset``: an image or text column and a label column.

    Images decode when read; a ``ClassLabel`` column gives class names.
    """
    if not (hasattr(ds, "column_names") and hasattr(ds, "features")):
        raise DataError(f"from_hf takes a datasets.Dataset (a split, e.g. ds['train']), but "
                        f"got {type(ds).__name__}.")
    if not hasattr(ds, "__len__") or not hasattr(ds, "select_columns"):
        raise DataError(f"from_hf needs a map-style datasets.Dataset, not a "
                        f"{type(ds).__name__}; use a non-streaming split.")
    for col in (input, label):
        if col not in ds.column_names:
            raise DataError(f"Column {col!r} is not in the dataset; columns: {ds.column_names}.")
    feature = ds.features[input]
    kind = type(feature).__name__
    dtype = getattr(feature, "dtype", "")
    modality = "text" if dtype in ("string", "large_string") else "image"
    if modality == "image" and kind != "Image":
        raise DataError(f"Column {input!r} is a {kind}({dtype}); from_hf reads an Image "
                        f"column or a string (text) column.")
    labels = ds[label]
    names = getattr(ds.features[label], "names", None)
    y = _class_names(labels, names, label) if names else _labels(labels)
    if modality == "text":
        return Dataset(Texts(list(ds[input])), y)
    return Dataset(HFColumn(ds, input, "image"), y)


def _class_names(ids: Any, names: list[str], column: str) -> np.ndarray:
    """ClassLabel ids as their names; -1 (Hugging Face's "no label") or any id out of range
    is named, not read from the end of the list."""
    ids = np.asarray(ids)
    bad = np.flatnonzero((ids < 0) | (ids >= len(names)))
    if bad.size:
        row = int(bad[0])
        raise DataError(f"Label column {column!r} holds {ids[row].item()!r} at row {row} "
                        f"({bad.size} such row(s)), which is not a class id: ClassLabel ids "
                        f"must be 0-{len(names) - 1} (-1 means unlabelled); drop those rows "
                        f"first, e.g. ds.filter(lambda r: r[{column!r}] >= 0).")
    return np.asarray(names)[ids]


def from_torch(ds: Any, *, labels: Any = None, classes: Any = None) -> Dataset:
    """A torch ``Dataset`` whose items are ``(input, label)``; inputs are read when used.

    Labels come from ``labels=``, else the dataset's ``targets`` (torchvision's
    convention), else one pass over the items. Class ids become class names from
    ``classes=`` (a list, id i -> ``classes[i]``), else the dataset's ``classes``
    (torchvision's ``ImageFolder``, ``CIFAR10``, ...), so predictions come back as names.
    """
    if not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
        raise DataError(f"from_torch takes a map-style torch Dataset (with __len__ and "
                        f"__getitem__), but got {type(ds).__name__}.")
    if len(ds) == 0:
        raise DataError("The dataset is empty; give at least two inputs with labels.")
    first = ds[0]
    if not (isinstance(first, (tuple, list)) and len(first) == 2):
        shown = type(first).__name__ + (f" of length {len(first)}"
                                        if isinstance(first, (tuple, list)) else "")
        raise DataError(f"from_torch needs items that are (input, label) pairs, but item 0 "
                        f"is a {shown}.")
    modality = "text" if isinstance(first[0], str) else "image"
    if modality == "image":
        as_pil(first[0], "item 0")  # a bad scale or shape is named now, not in a trial
    if labels is None:
        labels = getattr(ds, "targets", None)
    if labels is None:
        labels = [ds[i][1] for i in range(len(ds))]
    if not isinstance(labels, (np.ndarray, torch.Tensor, dict)) and not hasattr(labels, "columns"):
        labels = [v.item() if isinstance(v, torch.Tensor) and v.ndim == 0 else v for v in labels]
    given = classes is not None
    classes = classes if given else getattr(ds, "classes", None)
    if classes is not None:
        labels = _named(labels, classes, given)
    return Dataset(TorchItems(ds, modality), _labels(labels))


def _named(labels: Any, classes: Any, given: bool) -> Any:
    """Class ids as ``classes``' names; labels that are not ids in range are refused when
    ``classes=`` was given, and kept as they are when it came from the dataset."""
    what = "classes=" if given else "the dataset's classes"
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__len__") \
            or len(set(map(str, classes))) != len(classes) or not len(classes):
        if not given:
            return labels
        raise DataError(f"classes= must be a list of distinct class names (id i -> "
                        f"classes[i]), but got {classes!r:.80}.")
    ids = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=object)
    ok = ids.ndim == 1 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                               and 0 <= v < len(classes) for v in ids)
    if not ok:
        if not given:
            return labels
        bad = next((v for v in ids.ravel() if not (isinstance(v, (int, np.integer))
                                                   and 0 <= v < len(classes))), ids.ravel()[0])
        raise DataError(f"{what} names {len(classes)} classes, so labels must be class ids "
                        f"0..{len(classes) - 1}, but got label {bad!r}.")
    return [classes[int(v)] for v in ids]
