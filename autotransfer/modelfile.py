"""The model file: safetensors weights with the model's JSON config in the file's header.

One file, no pickle: reading it runs no code, whatever it holds. The header's metadata
carries ``format`` and ``config`` (strategy, task, labels, preprocessing, the study's id),
so a file is a plain safetensors file to every other tool (``safetensors.torch.load_file``
reads its weights) and a whole model to :func:`autotransfer.load`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .errors import StorageError

FORMAT = "autotransfer-model/2"
SUFFIX = ".safetensors"
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip, a raw pickle


def write(path: Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write weights + config atomically: never a half-written file under the real name."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file(unshared(state_dict), str(tmp),
              metadata={"format": FORMAT, "config": json.dumps(config, default=_plain)})
    tmp.replace(path)
    return path


def read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The config and weights of a model file; a clear error for anything else."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise StorageError(f"Model file {str(path)!r} does not exist; give a file written "
                           f"by Predictor.save or kept by a study.")
    with open(path, "rb") as f:
        head = f.read(9)  # safetensors: an 8-byte header length, then the JSON header
    if head[8:9] != b"{" and head.startswith(_PICKLE_MAGIC):
        raise StorageError(
            f"{str(path)!r} is a pickle (a torch.save file, e.g. an autotransfer 0.1 model "
            f"file, autotransfer-model/1); it was not loaded, since loading a pickle can run "
            f"code. Give a file written by Predictor.save or kept by a study "
            f"({FORMAT}: safetensors + JSON); a 0.1 model can be trained again with "
            f"study.refit(...) or at.run_trial and saved.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # truncated, not safetensors: SafetensorError, OSError, ...
        raise StorageError(f"{str(path)!r} is not a readable model file ({FORMAT}): "
                           f"{type(exc).__name__}: {str(exc)[:200]} (not a safetensors file, or "
                           f"a truncated one). Give a file written by Predictor.save or kept by "
                           f"a study.") from exc
    if meta.get("format") != FORMAT:
        raise StorageError(f"{str(path)!r} is a safetensors file but not an autotransfer "
                           f"model file ({FORMAT}: its header has no model config); give a "
                           f"file written by Predictor.save or kept by a study.")
    try:
        config = json.loads(meta["config"])
    except (KeyError, ValueError) as exc:
        raise StorageError(f"{str(path)!r} has a damaged model config: {exc}.") from exc
    return config, state


def _plain(value: Any) -> Any:
    """numpy scalars and arrays in labels become JSON numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} {value!r:.60} cannot be stored in a model file")


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
