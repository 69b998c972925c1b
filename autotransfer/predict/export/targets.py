"""Where an export writes, and which existing files there it may replace.

An export replaces only what an earlier export wrote: a graph file whose ``<path>.json``
is an autotransfer export description, a timm folder whose ``config.json`` carries the
``autotransfer`` entry, a transformers folder holding ``autotransfer_head.json``, or an
empty folder. A study's storage or any other file is refused by
:func:`autotransfer.files.check_target` before any work.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from ...files import check_target
from .common import SIDECAR_FORMAT

MAX_JSON_BYTES = 16 * 2**20  # an export's description; larger is not ours


def graph_files(path: Path) -> dict[str, Path]:
    """The files of an ONNX or TorchScript export at ``path``, by role."""
    return {"graph": path, "external weights": path.with_name(path.name + ".data"),
            "tokenizer": path.with_name(path.name + ".tokenizer"),
            "description": path.with_name(path.name + ".json")}


def check_graph(path: Path, format: str) -> dict[str, Path]:
    """The checked targets of a graph export; refuses one that would replace a file an
    earlier export did not write."""
    files = graph_files(path)
    sidecar = files["description"]

    def with_ours_sidecar(target: Path) -> bool:
        return sidecar_ours(sidecar) and (not target.is_dir() or _folder_ok(target))

    return {role: check_target(p, what=f"the {format} export's {role}",
                               ours=sidecar_ours if role == "description" else with_ours_sidecar)
            for role, p in files.items()}


def check_folder(path: Path, format: str) -> Path:
    """The checked target of a timm or transformers folder export."""
    ours = timm_folder_ours if format == "timm" else transformers_folder_ours
    return check_target(path, what=f"the {format} export", ours=ours)


def sidecar_ours(path: Path) -> bool:
    """Whether ``path`` is an export description autotransfer wrote."""
    data = _json_file(path)
    return isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT


def timm_folder_ours(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    config = _json_file(folder / "config.json")
    return _empty(folder) or (isinstance(config, dict)
                              and isinstance(config.get("autotransfer"), dict))


def transformers_folder_ours(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    return _empty(folder) or sidecar_ours(folder / "autotransfer_head.json")


def _folder_ok(folder: Path) -> bool:
    """A tokenizer folder beside an export of ours: only files, no subfolders."""
    try:
        return all(not p.is_dir() or p.is_symlink() for p in folder.iterdir())
    except OSError:
        return False


def _empty(folder: Path) -> bool:
    try:
        return not any(folder.iterdir())
    except OSError:
        return False


def _json_file(path: Path) -> Any:
    """The JSON in a small regular file, or None (missing, a device, too large, not JSON)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_JSON_BYTES:
            return None
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):
        return None
