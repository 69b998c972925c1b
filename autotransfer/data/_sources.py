"""Where a data set's items live, and how one item is decoded on demand.

A :class:`Source` holds *references* (file paths, rows of a dataset object, an in-memory
array) and decodes item ``i`` when asked: an RGB ``PIL.Image`` for images, a ``str`` for
text. Its memory is O(items), never O(pixels), so DataLoader worker processes (forked)
share it cheaply.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ._pixels import (  # noqa: F401 - decoding helpers, imported from here elsewhere
    CHANNELS,
    as_pil,
    check_image_file,
    image_tensor,
    open_image,
    pil_tensor,
    rgb,
    to_pil,
    to_uint8,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


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
        images = self.images[torch.from_numpy(index)].contiguous()
        h = hashlib.sha1(b"tensor")
        h.update(str(tuple(images.shape)).encode())  # the same bytes in another shape differ
        h.update(images.numpy().tobytes())
        return h.hexdigest()[:16]


class ImageList(_InMemoryImages):
    """uint8 ``(3, H, W)`` images of varied sizes held in memory."""

    def fingerprint(self, index: np.ndarray) -> str:
        h = hashlib.sha1(b"list")
        for i in index:  # each image's shape says where its bytes end
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
        # Absolute path, size and modification time: a rewritten file is new data, and
        # "data/a.png" in two working folders is two files. Fields are length-prefixed.
        h = hashlib.sha1(b"files")
        for i in index:
            p = os.path.abspath(self.paths[i])
            try:
                st = os.stat(p)
                h.update(_field(p) + _field(f"{st.st_size}|{st.st_mtime_ns}"))
            except OSError:
                h.update(_field(p) + _field("missing"))
        return h.hexdigest()[:16]

    def describe(self) -> str:
        return self.where


class Texts(Source):
    """Strings held in memory."""

    modality = "text"
    kind = "texts"

    def __init__(self, texts: list[str]) -> None:
        self.texts = checked_texts(texts)

    def __len__(self) -> int:
        return len(self.texts)

    def load(self, i: int, size_hint: int | None = None) -> str:
        return self.texts[i]

    def fingerprint(self, index: np.ndarray) -> str:
        h = hashlib.sha1(b"texts")
        for i in index:  # length-prefixed: ["a\0b", "c"] and ["a", "b\0c"] differ
            h.update(_field(self.texts[i]))
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
        h = hashlib.sha1(b"hf" + _field(fp) + _field(self.column))
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
        return checked_texts([x], i)[0] if self.modality == "text" else as_pil(x, f"item {i}")

    def describe(self) -> str:
        return f"torch {type(self.ds).__name__}"


def _field(text: str) -> bytes:
    """``text`` as UTF-8 after its length: no two sequences of fields hash alike."""
    data = text.encode("utf-8", "surrogatepass")
    return len(data).to_bytes(8, "little") + data


def checked_texts(texts: list, start: int = 0) -> list:
    """``texts`` if each is a string a tokenizer can read (valid Unicode); else a
    DataError naming the item (``start``: the first one's index)."""
    for i, t in enumerate(texts, start):
        if not isinstance(t, str):
            raise DataError(f"Text {i} is {type(t).__name__} {t!r}; every text input must be "
                            f"a string (drop or fill missing texts first).")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DataError(
                f"Text {i} holds {t[exc.start:exc.end]!r} at character {exc.start}, a lone "
                f"surrogate: it is not valid Unicode and no tokenizer can read it. Give valid "
                f"text, e.g. text.encode('utf-8', 'replace').decode().") from exc
    return texts
