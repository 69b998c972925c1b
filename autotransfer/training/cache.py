"""The frozen-prefix feature cache: boundary activations computed once, reused by trials.

A trial that freezes its backbone's first k layer groups and mixes nothing into the raw
inputs feeds the same inputs through the same frozen, eval-mode prefix in every epoch and
in every such trial. Its output depends only on the key below, so it is computed once,
kept in memory up to a byte budget (least recently used first out), and spilled to disk
under the study's folder, where other worker processes find it too. Files carry a
checksum: a corrupted one is detected, deleted and rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import batch as _batch

DEFAULT_BYTES = 1 << 30  # 1 GiB in memory per process
DISK_FACTOR = 8  # the folder on disk may hold 8x the memory budget
LOCAL = "local:"  # a CacheKey.data with this prefix names data of this process: memory only
SUFFIX = ".features"  # a JSON line (the nesting), then safetensors bytes: no pickle


@dataclass(frozen=True)
class CacheKey:
    """Everything the prefix output depends on."""

    backbone: str
    weights: str  # weights source, plus size and mtime for a file
    pretrained: bool
    frozen_groups: int
    n_prefix: int
    preprocessing: str
    data: str  # fingerprint of the inputs
    dtype: str  # autocast dtype the prefix ran under ("float32" on the CPU)
    views: str = ""  # augmented views ("flip x4"); "" for the plain inputs

    def digest(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()[:24]


def weights_id(backbone: Any) -> str:
    """The weights source, with size and mtime for local files (a changed file is new)."""
    from ..backbones._weights import PackageWeights

    w = backbone.weights
    path = None
    try:
        if isinstance(w, PackageWeights):
            path = w.path()
        elif w not in (None, "hub"):
            path = Path(w)
    except Exception:
        path = None
    if path is not None and path.exists():
        st = path.stat()
        # nanoseconds: weights rewritten within a second (same size: same architecture) differ
        return f"{backbone.weights_source}|{st.st_size}|{st.st_mtime_ns}"
    return backbone.weights_source


class FeatureCache:
    """An LRU of prefix outputs in memory, backed by checksummed files on disk.

    Args:
        directory: Where spilled features go (None: memory only).
        max_bytes: Memory budget of this process's cache.
        disk_bytes: Budget of the folder (oldest files go first); default 8x max_bytes.
    """

    def __init__(self, directory: str | os.PathLike | None = None,
                 max_bytes: int = DEFAULT_BYTES, disk_bytes: int | None = None) -> None:
        self.directory = Path(directory) if directory else None
        self.max_bytes = int(max_bytes)
        self.disk_bytes = int(disk_bytes if disk_bytes is not None else DISK_FACTOR * max_bytes)
        self._memory: OrderedDict[str, Any] = OrderedDict()
        self._bytes = 0
        self.hits = {"memory": 0, "disk": 0, "computed": 0, "rebuilt": 0}

    def get(self, key: CacheKey) -> tuple[Any, str | None]:
        """The features for ``key`` and where they were found (memory, disk), or (None, None)."""
        name = key.digest()
        if name in self._memory:
            self._memory.move_to_end(name)
            self.hits["memory"] += 1
            return self._memory[name], "memory"
        value = self._read(name) if not key.data.startswith(LOCAL) else None
        if value is None:
            return None, None
        self.hits["disk"] += 1
        self._remember(name, value)
        return value, "disk"

    def put(self, key: CacheKey, value: Any) -> None:
        """Keep freshly computed features (in memory, and on disk unless process-local)."""
        name = key.digest()
        self.hits["computed"] += 1
        self._write(name, value, persist=not key.data.startswith(LOCAL))
        self._remember(name, value)

    def get_or_compute(self, key: CacheKey, compute: Callable[[], Any]) -> tuple[Any, str]:
        """The features for ``key`` and where they came from: memory, disk, computed."""
        value, source = self.get(key)
        if value is None:
            value, source = compute(), "computed"
            self.put(key, value)
        return value, source

    def _remember(self, name: str, value: Any) -> None:
        size = _batch.nbytes(value)
        if size > self.max_bytes:
            return  # larger than the whole budget: disk only
        self._memory[name] = value
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._memory.popitem(last=False)
            self._bytes -= _batch.nbytes(old)

    def _path(self, name: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{name}{SUFFIX}"

    def _write(self, name: str, value: Any, persist: bool = True) -> None:
        path = self._path(name)
        if path is None or not persist:
            return
        payload = _encode(value)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
        tmp.replace(path)  # atomic: readers never see half a file
        self._trim_disk()

    def _trim_disk(self) -> None:
        files = []
        for f in self.directory.glob(f"*{SUFFIX}"):
            try:  # another worker may delete files while this one looks
                st = f.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, f))
        files.sort(key=lambda x: x[0])
        total = sum(size for _, size, _ in files)
        for _, size, f in files[:-1]:  # never the one just written
            if total <= self.disk_bytes:
                break
            total -= size
            f.unlink(missing_ok=True)

    def _read(self, name: str) -> Any:
        path = self._path(name)
        if path is None or not path.is_file():
            return None
        try:
            raw = path.read_bytes()
            digest, payload = raw.split(b"\n", 1)
            if hashlib.sha256(payload).hexdigest().encode() != digest:
                raise ValueError("checksum mismatch")
            value = _decode(payload)
            os.utime(path)  # recently used: last to be trimmed
            return value
        except Exception:  # corrupted or truncated: rebuild, never trust
            path.unlink(missing_ok=True)
            self.hits["rebuilt"] += 1
            return None

    def clear_memory(self) -> None:
        self._memory.clear()
        self._bytes = 0

    @property
    def memory_bytes(self) -> int:
        return self._bytes


def _encode(value: Any) -> bytes:
    """Features (tensors nested in tuples, lists, dicts) as a JSON line of their nesting and
    safetensors bytes: reading a cache file back runs no code."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    layout = json.dumps(_flatten(value, tensors)).encode()
    return layout + b"\n" + save(unshared(tensors))


def _decode(payload: bytes) -> Any:
    from safetensors.torch import load

    layout, data = payload.split(b"\n", 1)
    return _unflatten(json.loads(layout), load(data))


def _flatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value
        return {"tensor": key}
    if isinstance(value, (list, tuple)):
        return {"list" if isinstance(value, list) else "tuple":
                [_flatten(v, tensors) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[k, _flatten(v, tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"cannot keep a {type(value).__name__} in the feature cache")


def _unflatten(layout: dict, tensors: dict[str, torch.Tensor]) -> Any:
    (kind, item), = layout.items()
    if kind == "tensor":
        return tensors[item]
    if kind in ("list", "tuple"):
        items = [_unflatten(v, tensors) for v in item]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {k: _unflatten(v, tensors) for k, v in item}
    return item


def unshared(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, each with its own memory (safetensors refuses shared ones)."""
    seen: set[int] = set()
    out = {}
    for k, v in state_dict.items():
        v = v.detach().to("cpu").contiguous()
        if v.numel() and v.untyped_storage().data_ptr() in seen:
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    return out
