"""Where a data set's items live, and how one item is decoded on demand.

A :class:`Source` holds *references* (file paths, rows of a dataset object, an in-memory
array) and decodes item ``i`` when asked: an RGB ``PIL.Image`` for images, a ``str`` for
text. Its memory is O(items), never O(pixels), so DataLoader worker processes (forked)
share it cheaply.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CHANNELS = (1, 3, 4)  # grayscale, RGB, RGBA (alpha dropped)


class Source(ABC):
    """Items of one modality, decoded one at a time."""

    modality: str = "image"
    kind: str = "source"

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, i: int, size_hint: int | None = None) -> Any:
        """Item ``i``: an RGB ``PIL.Image`` (images) or a ``str`` (text).

        ``size_hint`` lets a JPEG decode at a reduced scale whose shorter side is still
        at least that many pixels (PIL's ``draft``): the pipeline resizes to it anyway.
        """

    def fingerprint(self, index: np.ndarray) -> str | None:
        """A hash of the items at ``index`` (what feature caches key on), or None."""
        return None

    def describe(self) -> str:
        return self.kind


class Joined(Source):
    """Items of several sources, each at its own index, one after another."""

    kind = "joined"

    def __init__(self, parts: list[tuple[Source, np.ndarray]]) -> None:
        self.parts = parts
        self.modality = parts[0][0].modality
        self._ends = np.cumsum([len(index) for _, index in parts])

    def __len__(self) -> int:
        return int(self._ends[-1])

    def load(self, i: int, size_hint: int | None = None) -> Any:
        part = int(np.searchsorted(self._ends, i, side="right"))
        start = 0 if part == 0 else int(self._ends[part - 1])
        source, index = self.parts[part]
        return source.load(int(index[i - start]), size_hint)

    def fingerprint(self, index: np.ndarray) -> str | None:
        prints = [source.fingerprint(idx) for source, idx in self.parts]
        if any(p is None for p in prints) or len(index) != len(self):
            return None
        return hashlib.sha1("|".join(prints).encode()).hexdigest()[:16] if \
            np.array_equal(index, np.arange(len(self))) else None

    def describe(self) -> str:
        return " + ".join(source.describe() for source, _ in self.parts)


class _InMemoryImages(Source):
    kind = "arrays"

    def __init__(self, images: Any) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int, size_hint: int | None = None) -> Any:
        return to_pil(self.images[i])


class TensorImages(_InMemoryImages):
    """uint8 images ``(N, 3, H, W)`` held in memory (arrays, the digits demo)."""

    def fingerprint(self, index: np.ndarray) -> str:
        h = hashlib.sha1(b"tensor")
        h.update(self.images[torch.from_numpy(index)].contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


class ImageList(_InMemoryImages):
    """uint8 ``(3, H, W)`` images of varied sizes held in memory."""

    def fingerprint(self, index: np.ndarray) -> str:
        h = hashlib.sha1(b"list")
        for i in index:
            h.update(str(tuple(self.images[i].shape)).encode())
            h.update(self.images[i].contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


class ImageFiles(Source):
    """Image files by path, decoded (EXIF orientation applied) when an item is read."""

    kind = "files"

    def __init__(self, paths: Sequence[str], where: str = "files") -> None:
        self.paths = np.asarray([str(p) for p in paths], dtype=object)
        self.where = where

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int, size_hint: int | None = None) -> Any:
        return open_image(self.paths[i], size_hint)

    def fingerprint(self, index: np.ndarray) -> str:
        # Path, size and modification time: a rewritten file is new data.
        h = hashlib.sha1(b"files")
        for i in index:
            p = self.paths[i]
            try:
                st = Path(p).stat()
                h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\0".encode())
            except OSError:
                h.update(f"{p}|missing\0".encode())
        return h.hexdigest()[:16]

    def describe(self) -> str:
        return self.where


class Texts(Source):
    """Strings held in memory."""

    modality = "text"
    kind = "texts"

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def __len__(self) -> int:
        return len(self.texts)

    def load(self, i: int, size_hint: int | None = None) -> str:
        return self.texts[i]

    def fingerprint(self, index: np.ndarray) -> str:
        h = hashlib.sha1(b"texts")
        for i in index:
            h.update(self.texts[i].encode() + b"\0")
        return h.hexdigest()[:16]


class TextFiles(ImageFiles):
    """``.txt`` files by path, read when an item is read."""

    modality = "text"

    def load(self, i: int, size_hint: int | None = None) -> str:
        return Path(self.paths[i]).read_text(encoding="utf-8", errors="replace")


class HFColumn(Source):
    """One column of a Hugging Face ``datasets.Dataset`` (images decode to PIL)."""

    kind = "hf"

    def __init__(self, ds: Any, column: str, modality: str) -> None:
        self.ds = ds.select_columns([column])  # decode only the input column
        self.column, self.modality = column, modality

    def __len__(self) -> int:
        return len(self.ds)

    def load(self, i: int, size_hint: int | None = None) -> Any:
        where = f"row {i} of column {self.column!r}"
        try:
            value = self.ds[int(i)][self.column]
        except Exception as exc:  # the dataset decodes its Image column when read
            raise DataError(f"Cannot read {where} of the Hugging Face dataset: "
                            f"{type(exc).__name__}: {exc}.") from exc
        return value if self.modality == "text" else as_pil(value, where)

    def fingerprint(self, index: np.ndarray) -> str | None:
        fp = getattr(self.ds, "_fingerprint", None)
        if not fp:
            return None
        h = hashlib.sha1(f"hf|{fp}|{self.column}".encode())
        h.update(np.asarray(index, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> str:
        return f"hf column {self.column!r}"


class TorchItems(Source):
    """Inputs of a torch ``Dataset`` whose items are ``(input, label)``."""

    kind = "torch"

    def __init__(self, ds: Any, modality: str) -> None:
        self.ds, self.modality = ds, modality

    def __len__(self) -> int:
        return len(self.ds)

    def load(self, i: int, size_hint: int | None = None) -> Any:
        x = self.ds[int(i)][0]
        return x if self.modality == "text" else as_pil(x, f"item {i}")

    def describe(self) -> str:
        return f"torch {type(self.ds).__name__}"


# --- decoding helpers ---

def open_image(path: str, size_hint: int | None = None) -> Any:
    """An RGB image from a file, EXIF orientation applied; a bad file names itself."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            if size_hint and im.format == "JPEG":
                im.draft("RGB", (size_hint, size_hint))  # decode at 1/2, 1/4 or 1/8 scale
            return rgb(ImageOps.exif_transpose(im))
    except (OSError, ValueError, SyntaxError) as exc:
        # on_error="skip" checks headers when the data set is built; this file's header
        # was fine and its pixels are not, so only fixing or removing it helps.
        raise DataError(f"Cannot read image {path!r}: {type(exc).__name__}: {exc}. Its "
                        f"header is valid but its data is not: fix or remove the file.") from exc


def rgb(im: Any) -> Any:
    """An RGB image; 16-bit and float images are scaled to 8 bits, not clipped."""
    from PIL import Image

    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        arr = np.asarray(im, dtype=np.float64)
        top = 1.0 if im.mode == "F" and arr.max(initial=0) <= 1 else \
            255.0 if arr.max(initial=0) <= 255 else 65535.0
        im = Image.fromarray(np.clip(arr / top * 255, 0, 255).round().astype(np.uint8))
    return im.convert("RGB")


def pil_tensor(im: Any) -> torch.Tensor:
    """A PIL image -> uint8 ``(3, H, W)`` (its layout is known: no guessing)."""
    return torch.from_numpy(np.array(rgb(im))).permute(2, 0, 1).contiguous()


def check_image_file(path: str) -> str | None:
    """Why ``path`` is not a readable image (header only, no decode), or None."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format not in ("JPEG", "PNG"):  # their headers are checked by open
                im.verify()
        return None
    except Exception as exc:  # PIL raises many kinds for garbage
        return f"{type(exc).__name__}: {exc}"


def to_pil(chw: torch.Tensor) -> Any:
    from PIL import Image

    return Image.fromarray(chw.permute(1, 2, 0).contiguous().numpy())


def as_pil(x: Any, where: str) -> Any:
    """A PIL image, a ``(C, H, W)``/``(H, W, C)``/``(H, W)`` array or tensor -> RGB PIL."""
    from PIL import Image

    if isinstance(x, Image.Image):
        return rgb(x)
    if isinstance(x, (str, Path)):
        return open_image(str(x))
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return to_pil(image_tensor(x, where))
    raise DataError(f"{where}: expected an image (PIL image, array or tensor, or a file path), "
                    f"but got {type(x).__name__}.")


def image_tensor(x: Any, where: str = "image") -> torch.Tensor:
    """One image (HW, CHW or HWC array; uint8 or float in [0, 1]; or PIL) -> uint8 (3, H, W)."""
    from PIL import Image

    if isinstance(x, Image.Image):
        return pil_tensor(x)
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise DataError(f"{where}: an image must be (H, W), (C, H, W) or (H, W, C), but got "
                        f"shape {tuple(t.shape)}.")
    if t.shape[0] not in CHANNELS and t.shape[-1] in CHANNELS:
        t = t.permute(2, 0, 1)
    if t.shape[0] not in CHANNELS:
        raise DataError(f"{where}: images must have 1, 3 or 4 channels, but got shape "
                        f"{tuple(t.shape)}.")
    return to_uint8(t[None], where)[0]


def to_uint8(t: torch.Tensor, where: str = "images") -> torch.Tensor:
    """``(N, C, H, W)`` numeric, C in 1/3/4 -> uint8 ``(N, 3, H, W)``.

    Floats are taken as [0, 1] when the finite maximum is <= 1, else as [0, 255]; a NaN
    or infinite pixel is an error, not a silent change of scale.
    """
    if t.dtype.is_complex or t.dtype == torch.bool or not (
            t.dtype.is_floating_point or t.dtype in (torch.uint8, torch.int8, torch.int16,
                                                     torch.int32, torch.int64)):
        raise DataError(f"{where}: images must be numeric arrays, but got dtype {t.dtype}.")
    if t.shape[1] == 4:
        t = t[:, :3]  # drop alpha
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    if t.dtype.is_floating_point:
        t = t.float()
        if not torch.isfinite(t).all():
            raise DataError(f"{where}: {int((~torch.isfinite(t)).sum())} pixel value(s) are NaN "
                            f"or infinite; images must be finite.")
        if t.numel() and t.max() <= 1.0:
            t = t * 255
        t = t.round()
    return t.clamp(0, 255).to(torch.uint8).contiguous()
