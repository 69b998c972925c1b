"""The model file: safetensors weights with the model's JSON config in the file's header.

One file, no pickle: reading it runs no code, whatever it holds. The header's metadata
carries ``format`` and ``config`` (strategy, task, labels, preprocessing, the study's id),
so a file is a plain safetensors file to every other tool (``safetensors.torch.load_file``
reads its weights) and a whole model to :func:`autotransfer.load`.

Reading is in two steps so that a crafted file costs nothing: :func:`read_header` gives
the config and each tensor's name, shape and dtype from the header alone (no tensor is
read), which the caller checks against the architecture; only then :func:`read_state`
reads the weights. Writing goes through :mod:`autotransfer.files`: never over a file that
is not a model file, never a half-written file under the real name.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import StorageError
from ..files import check_target, replacing
from ..training.cache import unshared

FORMAT = "autotransfer-model/2"
SUFFIX = ".safetensors"
MAX_CONFIG_BYTES = 16 * 2**20  # a model's JSON config; labels of 100k classes fit
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip, a raw pickle
_GIVE = "give a file written by Predictor.save or kept by a study"
_GIVE_ = "Give a file written by Predictor.save or kept by a study"


@dataclass(frozen=True)
class Header:
    """What a model file's header says: its JSON config (parsed, not yet checked) and
    ``{tensor name: (shape, dtype)}``."""

    config: Any
    tensors: dict[str, tuple[tuple[int, ...], str]]


def write(path: Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write weights + config atomically, and only where no other file would be lost.

    Raises:
        StorageError: ``path`` is a study's storage or a file that is not a model file.
    """
    from safetensors.torch import save_file

    target = check_target(path, what="the model file", ours=is_ours)
    text = json.dumps(config, default=_plain)
    with replacing(target, what="the model file") as tmp:
        save_file(unshared(state_dict), str(tmp), metadata={"format": FORMAT, "config": text})
        written = read_header(tmp)  # what a reader will see, before it takes the name
        if set(written.tensors) != set(state_dict):
            raise StorageError(f"The model file written to {str(target)!r} does not hold the "
                               f"model's weights; it was not kept. Try again; check the disk.")
    return Path(path)


def is_ours(path: Path) -> bool:
    """Whether ``path`` is a model file autotransfer wrote (its header names our format).

    The header is parsed by hand so that a file truncated after it is still recognised
    (it may be replaced); nothing but the header is read.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if not 2 <= n <= min(MAX_HEADER_BYTES, os.fstat(f.fileno()).st_size - 8):
                return False
            header = json.loads(f.read(n))
        return header.get("__metadata__", {}).get("format") == FORMAT
    except (OSError, ValueError, struct.error, AttributeError, RecursionError):
        return False


def read_header(path: Path) -> Header:
    """The config and the tensors' names, shapes and dtypes; no tensor is read.

    Raises:
        StorageError: not a regular file, a pickle, not safetensors, not a model file, or
            a config that is not JSON (too deep, too large).
    """
    from safetensors import safe_open

    path = _regular_file(Path(path))
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: (tuple(f.get_slice(k).get_shape()), str(f.get_slice(k).get_dtype()))
                       for k in f.keys()}
    except Exception as exc:  # truncated, not safetensors: SafetensorError, OSError, ...
        raise StorageError(f"{str(path)!r} is not a readable model file ({FORMAT}): "
                           f"{type(exc).__name__}: {str(exc)[:200]} (not a safetensors file, or "
                           f"a truncated one). {_GIVE_}.") from exc
    if meta.get("format") != FORMAT:
        raise StorageError(f"{str(path)!r} is a safetensors file but not an autotransfer "
                           f"model file ({FORMAT}: its header has no model config); {_GIVE}.")
    return Header(_parse_config(path, meta.get("config")), tensors)


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The weights (call after the header has been checked against the architecture)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # changed on disk since its header was read
        raise StorageError(f"{str(path)!r} could not be read: {type(exc).__name__}: "
                           f"{str(exc)[:200]}; {_GIVE}.") from exc


def read(path: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    """The config and weights of a model file (unchecked against any architecture)."""
    return read_header(path).config, read_state(path)


def _regular_file(path: Path) -> Path:
    """``path`` if it is a regular file (through links): a device, a FIFO or a folder is
    refused before it is opened, since reading one may never end."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise StorageError(f"Model file {str(path)!r} cannot be read: {exc}; {_GIVE}.") from exc
    if mode is None:
        raise StorageError(f"Model file {str(path)!r} does not exist; {_GIVE}.")
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)"
                if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or
                stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")
        link = f" (a link to {os.path.realpath(path)!r})" if path.is_symlink() else ""
        raise StorageError(f"Model file {str(path)!r}{link} is {kind}, not a regular file; "
                           f"it was not read. {_GIVE_}.")
    with open(path, "rb") as f:
        head = f.read(9)  # safetensors: an 8-byte header length, then the JSON header
    if head[8:9] != b"{" and head.startswith(_PICKLE_MAGIC):
        raise StorageError(
            f"{str(path)!r} is a pickle (a torch.save file, e.g. an autotransfer 0.1 model "
            f"file, autotransfer-model/1); it was not loaded, since loading a pickle can run "
            f"code. Give a file written by Predictor.save or kept by a study "
            f"({FORMAT}: safetensors + JSON); a 0.1 model can be trained again with "
            f"study.refit(...) or at.run_trial and saved.")
    return path


def _parse_config(path: Path, text: Any) -> Any:
    """The header's JSON config, parsed; its shape is checked by :mod:`.modelconfig`."""
    if not isinstance(text, str):
        raise StorageError(f"{str(path)!r} has no model config in its header (metadata "
                           f"'config' is missing); {_GIVE}.")
    if len(text) > MAX_CONFIG_BYTES:
        raise StorageError(f"{str(path)!r} has a model config of {len(text):,} characters; "
                           f"at most {MAX_CONFIG_BYTES:,} are accepted. {_GIVE_}.")
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise StorageError(f"{str(path)!r} has a model config nested too deeply to read; a "
                           f"model config is a few levels deep. {_GIVE_}.") from exc
    except ValueError as exc:
        raise StorageError(f"{str(path)!r} has a damaged model config: {exc}; it must be "
                           f"JSON. {_GIVE_}.") from exc


def _plain(value: Any) -> Any:
    """numpy scalars and arrays in labels become JSON numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} {value!r:.60} cannot be stored in a model file")
