"""Export a trained model to other runtimes: ONNX, TorchScript, timm and transformers.

Every export is checked: its files are written under temporary names beside the target,
loaded back as a user would load them, run on a sample batch and compared with the
predictor (the largest difference is reported; above the tolerance it raises), and only
then renamed into place: a failed check or a killed process leaves an earlier export byte
for byte as it was. An export replaces only an earlier export (never a study's storage or
another file; :mod:`autotransfer.predict.export.targets`). Nothing a user loads needs pickle,
but TorchScript (code by nature). What each format writes (``path`` is a file for the
first two, else a folder):

- ``"onnx"``: ``path`` (an ONNX graph, opset 18, dynamic batch; weights over 2 GB go to
  ``<path>.data``) and ``<path>.json`` describing inputs, outputs, preprocessing, task and
  classes. Image graphs take the loader's batch: ``images``, uint8 ``(N, 3, S, S)`` RGB,
  resized and center-cropped as the JSON says; normalization (mean/std) is inside the
  graph. Text graphs take the tokenizer's ``input_ids``, ``attention_mask`` (and
  ``token_type_ids`` when it makes them), int64 ``(N, L)``; the tokenizer is saved to
  ``<path>.tokenizer/``.
- ``"torchscript"``: the same model traced (``torch.jit.save``), same inputs and files.
- ``"timm"`` (timm backbones): a folder with ``model.safetensors`` and timm's
  ``config.json``: ``timm.create_model("local-dir:<folder>", pretrained=True)`` or
  ``timm.create_model(arch, num_classes=n)`` + ``load_state_dict`` (strict) rebuild it.
- ``"transformers"`` (transformers backbones): a folder ``AutoModel.from_pretrained``
  loads, its tokenizer, ``head.safetensors`` (``weight``, ``bias``) and
  ``autotransfer_head.json`` (pooling, task, classes).

Example:
    >>> from autotransfer.predict.export import export              # doctest: +SKIP
    >>> export(study.load_best(), "digits.onnx", format="onnx")      # doctest: +SKIP
    {'path': 'digits.onnx', 'format': 'onnx', 'max_abs_diff': 2.4e-07, ...}
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ... import plugins
from ...backbones import HFEncoder, TimmBackbone
from ...errors import ConfigError, ExportError, StorageError, UnknownNameError, check_choice
from . import targets
from .common import SIDECAR_FORMAT, TOLERANCE, Trained
from .folders import export_timm, export_transformers
from .graph import OPSET, export_graph

__all__ = ["EXPORT_EXTRA", "ExportError", "FORMATS", "OPSET", "SIDECAR_FORMAT", "TOLERANCE",
           "export"]

FORMATS = ("onnx", "torchscript", "timm", "transformers")
EXPORT_EXTRA = 'pip install "autotransfer[export]"'


def export(predictor: Trained, path: str | Path, *, format: str) -> dict[str, Any]:
    """Write ``predictor``'s model in ``format`` to ``path``, check it, and report.

    Args:
        predictor: A trained model (``study.load_best()``, ``at.load(...)``).
        path: A file for ``"onnx"`` and ``"torchscript"``, a folder for ``"timm"`` and
            ``"transformers"``; its parent folder must exist. An earlier export there is
            replaced; any other file there is refused.
        format: ``"onnx"``, ``"torchscript"``, ``"timm"`` or ``"transformers"``.

    Returns:
        ``{"path", "format", "files", "max_abs_diff", "tolerance", "inputs", "outputs"}``.

    Raises:
        UnknownNameError: ``format`` is not one of :data:`FORMATS`.
        ConfigError: the format does not apply to this backbone or head.
        StorageError: ``path``'s folder does not exist, ``path`` is the wrong kind, or it
            holds a study's storage or a file that no earlier export wrote.
        ExportError: a missing package, an exporter failure, or outputs that differ.
    """
    if not isinstance(format, str):
        raise ConfigError(f"format must be a format name (a string), but got format="
                          f"{format!r:.80}; accepted: {', '.join(FORMATS)}.")
    check_choice("export format", format, FORMATS)
    folder = format in ("timm", "transformers")
    path = _checked_path(path, folder=folder)
    backbone = _backbone(predictor)
    _check_applies(predictor, backbone, format)
    if folder:
        target = targets.check_folder(path, format)
    else:
        target = targets.check_graph(path, format)["graph"]
    if format == "onnx":
        _require("onnx", "onnxscript", "onnxruntime")
    if format == "timm":
        result = export_timm(predictor, backbone, target)
    elif format == "transformers":
        result = export_transformers(predictor, backbone, target)
    else:
        result = export_graph(predictor, target, format)
    return {"path": str(path), "format": format, **result}


# --- checks, before any work ---

def _checked_path(path: Any, *, folder: bool) -> Path:
    try:
        path = Path(path)
    except TypeError:
        raise ConfigError(f"path must be a file or folder path, but got {path!r:.80}; give a "
                          f"str or pathlib.Path such as 'model.onnx'.") from None
    if not path.parent.is_dir():
        raise StorageError(f"Cannot export to {str(path)!r}: its folder {str(path.parent)!r} "
                           f"does not exist; create it, or give a path in an existing folder.")
    if folder and path.exists() and not path.is_dir():
        raise StorageError(f"Cannot export to {str(path)!r}: it is a file, and this format "
                           f"writes a folder; give a folder path.")
    if not folder and path.is_dir():
        raise StorageError(f"Cannot export to {str(path)!r}: it is a folder, and this format "
                           f"writes one file; give a file path such as 'model.onnx'.")
    return path


def _backbone(predictor: Trained) -> Any:
    """The registered backbone, or None (ONNX and TorchScript do without it)."""
    try:
        return plugins.get_backbone(predictor.strategy.backbone)
    except UnknownNameError:
        return None


def _check_applies(predictor: Trained, backbone: Any, format: str) -> None:
    applicable = ("onnx", "torchscript") + (
        ("transformers",) if isinstance(predictor.model.body, HFEncoder)
        else ("timm",) if isinstance(backbone, TimmBackbone) else ())
    if getattr(predictor, "members", ()) and format not in applicable[:2]:
        raise ConfigError(f"format={format!r} writes one backbone, but this model is an "
                          f"ensemble of {len(predictor.members)}; formats that hold a whole "
                          f"ensemble: onnx, torchscript; or export one member, "
                          f"study.model_path(trial=K) (the CLI's --trial K).")
    if format not in applicable:
        kind = f"a {backbone.family} {backbone.modality} backbone" if backbone else \
            "a backbone that is not registered"
        raise ConfigError(f"format={format!r} does not apply to backbone "
                          f"{predictor.strategy.backbone!r} ({kind}); formats that apply to "
                          f"it: {', '.join(applicable)}.")


def _require(*modules: str) -> None:
    """Import the optional packages an export needs; name the extra that installs them."""
    missing = [name for name in modules if not _importable(name)]
    if missing:
        raise ExportError(f"format='onnx' needs {', '.join(missing)}, not installed here; "
                          f"install with: {EXPORT_EXTRA}")


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True
