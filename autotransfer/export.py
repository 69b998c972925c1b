"""Export a trained model to other runtimes: ONNX, TorchScript, timm and transformers.

Every export is checked: its files are loaded back as a user would load them, run on a
sample batch and compared with the predictor (the largest difference is reported; above
the tolerance it raises). Nothing a user loads needs pickle, but TorchScript (code by
nature). What each format writes (``path`` is a file for the first two, else a folder):

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
    >>> from autotransfer.export import export                       # doctest: +SKIP
    >>> export(study.load_best(), "digits.onnx", format="onnx")      # doctest: +SKIP
    {'path': 'digits.onnx', 'format': 'onnx', 'max_abs_diff': 2.4e-07, ...}
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import json
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import plugins
from .backbones import HFEncoder, TimmBackbone
from .errors import ConfigError, ExportError, StorageError, UnknownNameError, check_choice
from .multitask import describe_outputs
from .preprocessing import ImagePreprocessing, load_tokenizer

if TYPE_CHECKING:
    from .predictor import Predictor

FORMATS = ("onnx", "torchscript", "timm", "transformers")
EXPORT_EXTRA = 'pip install "autotransfer[export]"'
SIDECAR_FORMAT = "autotransfer-export/1"
OPSET = 18
TOLERANCE = 1e-3  # times the largest |output| when that is above 1
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the forward's order
_SAMPLE_TEXTS = ["autotransfer export check", "x",
                 "a second, rather longer sentence that checks padding and the mask"]
_MEANING = {
    "classification": "logits over classes (softmax gives probabilities)",
    "multilabel": "logits per label (a sigmoid each gives probabilities)",
    "regression": "standardized targets: value = output * info.std + info.mean",
}


def export(predictor: Predictor, path: str | Path, *, format: str) -> dict[str, Any]:
    """Write ``predictor``'s model in ``format`` to ``path``, check it, and report.

    Args:
        predictor: A trained model (``study.load_best()``, ``at.load(...)``).
        path: A file for ``"onnx"`` and ``"torchscript"``, a folder for ``"timm"`` and
            ``"transformers"``; its parent folder must exist.
        format: ``"onnx"``, ``"torchscript"``, ``"timm"`` or ``"transformers"``.

    Returns:
        ``{"path", "format", "files", "max_abs_diff", "tolerance", "inputs", "outputs"}``.

    Raises:
        UnknownNameError: ``format`` is not one of :data:`FORMATS`.
        ConfigError: the format does not apply to this backbone or head.
        StorageError: ``path``'s folder does not exist, or ``path`` is the wrong kind.
        ExportError: a missing package, an exporter failure, or outputs that differ.
    """
    check_choice("export format", format, FORMATS)
    path = _checked_path(Path(path), folder=format in ("timm", "transformers"))
    backbone = _backbone(predictor)
    _check_applies(predictor, backbone, format)
    if format == "onnx":
        _require("onnx", "onnxscript", "onnxruntime")
    writer = {"onnx": _onnx, "torchscript": _torchscript, "timm": _timm,
              "transformers": _transformers}[format]
    return {"path": str(path), "format": format, **writer(predictor, backbone, path)}


# --- checks, before any work ---

def _checked_path(path: Path, *, folder: bool) -> Path:
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


def _backbone(predictor: Predictor) -> Any:
    """The registered backbone, or None (ONNX and TorchScript do without it)."""
    try:
        return plugins.get_backbone(predictor.strategy.backbone)
    except UnknownNameError:
        return None


def _check_applies(predictor: Predictor, backbone: Any, format: str) -> None:
    applicable = ("onnx", "torchscript") + (
        ("transformers",) if isinstance(predictor.model.body, HFEncoder)
        else ("timm",) if isinstance(backbone, TimmBackbone) else ())
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


def _plain_linear(predictor: Predictor, format: str) -> nn.Linear:
    """The head's one Linear layer (dropout and identities around it do nothing in eval)."""
    head = predictor.model.head
    parts = list(head.children()) if isinstance(head, nn.Sequential) else [head]
    linears = [m for m in parts if isinstance(m, nn.Linear)]
    if len(linears) != 1 or any(not isinstance(m, (nn.Linear, nn.Dropout, nn.Identity))
                                for m in parts):
        raise ConfigError(f"format={format!r} holds a head that is one Linear layer (after "
                          f"dropout), but task {predictor.task!r} has {head!r}; formats that "
                          f"work for any head: onnx, torchscript.")
    return linears[0]


# --- the model as one module on the CPU ---

class _ImageModel(nn.Module):
    """uint8 images ``(N, 3, S, S)`` -> outputs: ``normalize``, body and head in one."""

    def __init__(self, body: nn.Module, head: nn.Module, pre: ImagePreprocessing) -> None:
        super().__init__()
        self.body, self.head = body, head
        # As ImagePreprocessing.normalize computes them, so the results match bit for bit.
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1) * 255)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body((images.float() - self.mean) / self.std))


class _TextModel(nn.Module):
    """Token tensors -> outputs: the encoder, its pooling and the head in one."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body, self.head = body, head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        given = (input_ids, attention_mask, token_type_ids)
        batch = {k: v for k, v in zip(TEXT_INPUTS, given) if v is not None}
        return self.head(self.body(batch))


def _on_cpu(module: nn.Module) -> nn.Module:
    """The module if float32 on the CPU, else such a copy: the predictor stays as it is."""
    if all(p.device.type == "cpu" and p.dtype == torch.float32 for p in module.parameters()):
        return module
    return copy.deepcopy(module).cpu().float()


def _wrapped(predictor: Predictor) -> nn.Module:
    body, head = _on_cpu(predictor.model.body), _on_cpu(predictor.model.head)
    pre = predictor.preprocessing
    model = _ImageModel(body, head, pre) if isinstance(pre, ImagePreprocessing) \
        else _TextModel(body, head)
    return model.eval()


def _samples(predictor: Predictor, n: int) -> dict[str, torch.Tensor]:
    """A batch of ``n`` inputs as the loader gives them, by input name."""
    pre = predictor.preprocessing
    if isinstance(pre, ImagePreprocessing):
        g = torch.Generator().manual_seed(n)
        return {"images": torch.randint(0, 256, (n, 3, pre.size, pre.size), generator=g,
                                        dtype=torch.uint8)}
    batch = pre.prepare(_SAMPLE_TEXTS[:n])
    unknown = sorted(set(batch) - set(TEXT_INPUTS))
    if unknown:
        raise ExportError(f"The tokenizer makes inputs {unknown} that this export does not "
                          f"know; accepted inputs: {', '.join(TEXT_INPUTS)}.")
    return {k: batch[k] for k in TEXT_INPUTS if k in batch}


@torch.no_grad()
def _reference(predictor: Predictor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the predictor itself outputs for the inputs."""
    device = next(predictor.model.parameters()).device
    batch = {k: v.to(device) for k, v in inputs.items()}
    x = batch["images"] if "images" in batch else batch
    return predictor.model(predictor.preprocessing.normalize(x)).float().cpu()


def _compare(got: torch.Tensor, want: torch.Tensor, what: str) -> dict[str, float]:
    """Max abs difference; raises above the tolerance (relative for large outputs)."""
    if got.shape != want.shape:
        raise ExportError(f"The {what} gives outputs of shape {tuple(got.shape)}, but the "
                          f"model gives {tuple(want.shape)}; the export is wrong.")
    diff = float((got.float() - want).abs().max())
    tol = TOLERANCE * max(1.0, float(want.abs().max()))
    if not diff <= tol:  # also catches NaN
        raise ExportError(f"The {what} differs from the model by up to {diff:.3g} on a sample "
                          f"batch (tolerance {tol:.3g}); the export is not faithful.")
    return {"max_abs_diff": diff, "tolerance": tol}


# --- the JSON description of a graph (ONNX, TorchScript) ---

def _input_specs(inputs: dict[str, torch.Tensor], names: list[str]) -> list[dict]:
    return [{"name": n, "shape": ["batch", *inputs[n].shape[1:]] if n == "images"
             else ["batch", "length"], "dtype": str(inputs[n].dtype).split(".")[-1]}
            for n in names]


def _output_spec(predictor: Predictor, n_outputs: int) -> dict:
    return {"name": "outputs", "shape": ["batch", n_outputs], "dtype": "float32",
            "meaning": describe_outputs(predictor.task, predictor.info, _MEANING)}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item")
                                 else str(o)))


def _preprocessing(predictor: Predictor) -> dict:
    pre = predictor.preprocessing
    out = dataclasses.asdict(pre)
    if isinstance(pre, ImagePreprocessing):
        out.update(resize_shorter_side=pre.resize, normalized_in_graph=True,
                   layout="NCHW, RGB, uint8 0..255: resize the shorter side to "
                          "resize_shorter_side, center-crop size x size")
    return out


def _describe(predictor: Predictor, format: str, **more: Any) -> dict:
    """What every export's JSON says: the task, its labels, the strategy, and ``more``."""
    return _jsonable({
        "format": SIDECAR_FORMAT, "export_format": format, "task": predictor.task,
        "classes": predictor.classes, "info": predictor.info,
        "backbone": predictor.strategy.backbone, "strategy": predictor.strategy.to_dict(),
        **more})


def _write_description(predictor: Predictor, path: Path, format: str,
                       inputs: dict[str, torch.Tensor], names: list[str],
                       n_outputs: int) -> tuple[list[str], dict]:
    """``<path>.json`` (and the tokenizer for text); the files and the report's specs."""
    specs, output = _input_specs(inputs, names), _output_spec(predictor, n_outputs)
    sidecar = path.with_name(path.name + ".json")
    desc = _describe(predictor, format, inputs=specs, outputs=[output],
                     preprocessing=_preprocessing(predictor))
    files = [str(sidecar)]
    if not isinstance(predictor.preprocessing, ImagePreprocessing):
        folder = path.with_name(path.name + ".tokenizer")
        load_tokenizer(predictor.preprocessing.tokenizer).save_pretrained(str(folder))
        desc["preprocessing"]["tokenizer_folder"] = folder.name
        files.append(str(folder))
    sidecar.write_text(json.dumps(desc, indent=2))
    return files, {"inputs": specs, "outputs": [output]}


# --- ONNX ---

def _onnx(predictor: Predictor, backbone: Any, path: Path) -> dict:
    model, example, sample = _wrapped(predictor), _samples(predictor, 2), _samples(predictor, 3)
    _to_onnx(model, example, path)
    got, names = _run_onnx(path, sample)
    check = _compare(got, _reference(predictor, sample), "ONNX graph (onnxruntime)")
    files = [str(path)] + [str(p) for p in [path.with_name(path.name + ".data")] if p.exists()]
    more, specs = _write_description(predictor, path, "onnx", sample, names, got.shape[1])
    return {"files": files + more, **check, **specs}


def _to_onnx(model: nn.Module, example: dict[str, torch.Tensor], path: Path) -> None:
    """torch.export-based exporter; the TorchScript-based one if that fails."""
    names, args = list(example), tuple(example.values())
    common = dict(input_names=names, output_names=["outputs"], opset_version=OPSET)
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("length")}
    axes = {0: "batch", 1: "length"}
    if names == ["images"]:  # images: only the batch varies
        dims, axes = {0: dims[0]}, {0: "batch"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, args, str(path), dynamo=True, external_data=False,
                              dynamic_shapes=tuple(dims for _ in names), verbose=False, **common)
        return
    except Exception as exc:
        first = _reason(exc)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, args, str(path), dynamo=False,
                              dynamic_axes={n: axes for n in names + ["outputs"]}, **common)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed with both exporters: torch.export: "
                          f"{first}; TorchScript-based: {_reason(exc)}; "
                          f"format='torchscript' may still work.") from exc


def _reason(exc: Exception) -> str:
    """The cause in torch.onnx's long messages: after its summary heading, no colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split("## Exception summary")[-1]
    return f"{type(exc).__name__}: {' '.join(text.split())[:300]}"


def _run_onnx(path: Path, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[str]]:
    """onnxruntime's outputs on the CPU, and the graph's input names."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feed = {name: inputs[name].numpy() for name in names}
    return torch.from_numpy(session.run(None, feed)[0]), names


# --- TorchScript ---

def _torchscript(predictor: Predictor, backbone: Any, path: Path) -> dict:
    model, example, sample = _wrapped(predictor), _samples(predictor, 2), _samples(predictor, 3)
    with warnings.catch_warnings():  # jit is deprecated; the user asked for it by name
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, tuple(example.values()), check_trace=False)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            got = loaded(*sample.values())
    check = _compare(got, _reference(predictor, sample), "reloaded TorchScript module")
    more, specs = _write_description(predictor, path, "torchscript", sample, list(sample),
                                     got.shape[1])
    return {"files": [str(path)] + more, **check, **specs}


# --- timm ---

def _timm(predictor: Predictor, backbone: TimmBackbone, folder: Path) -> dict:
    import timm
    from safetensors.torch import load_file

    linear = _plain_linear(predictor, "timm")
    n = linear.out_features
    target = timm.create_model(backbone.timm_name, num_classes=n, **backbone.model_kwargs)
    try:
        target.load_state_dict(_timm_state(predictor, target, linear), strict=True)
    except RuntimeError as exc:  # missing, unexpected or other-shaped weights
        raise ExportError(f"The model's weights do not map onto timm's "
                          f"{backbone.timm_name!r}: {_reason(exc)}; formats that work for it: "
                          f"onnx, torchscript.") from exc
    folder.mkdir(exist_ok=True)
    _save_timm(predictor, target, folder)
    # Rebuild as a user would: the architecture by name, the weights strictly from the file.
    rebuilt = timm.create_model(backbone.timm_name, num_classes=n, **backbone.model_kwargs)
    rebuilt.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    sample = _samples(predictor, 3)
    with torch.no_grad():
        got = rebuilt.eval()(predictor.preprocessing.normalize(sample["images"]))
    check = _compare(got, _reference(predictor, sample), "timm model rebuilt from the export")
    return {"files": sorted(str(f) for f in folder.iterdir()), **check,
            "inputs": _input_specs(sample, ["images"]), "outputs": [_output_spec(predictor, n)]}


def _timm_state(predictor: Predictor, target: nn.Module, linear: nn.Linear) -> dict:
    """The body's state dict as it is, and the head's Linear under timm's classifier."""
    key = target.pretrained_cfg.get("classifier")
    if not isinstance(key, str):
        raise ConfigError(f"format='timm' maps the head to one classifier, but "
                          f"{predictor.strategy.backbone!r} has classifiers {key!r}; formats "
                          f"that work for it: onnx, torchscript.")
    state = {k: v.detach().cpu() for k, v in predictor.model.body.state_dict().items()}
    weight = linear.weight.detach().cpu()
    bias = linear.bias.detach().cpu() if linear.bias is not None \
        else torch.zeros(linear.out_features)
    want = target.state_dict().get(f"{key}.weight")
    if want is not None and want.numel() == weight.numel():
        weight = weight.reshape(want.shape)  # timm heads that are 1x1 convolutions
    state[f"{key}.weight"], state[f"{key}.bias"] = weight, bias
    return {k: v.float().contiguous().clone() for k, v in state.items()}


def _save_timm(predictor: Predictor, target: nn.Module, folder: Path) -> None:
    """timm's own ``save_for_hf`` (safetensors and its hub-style config.json)."""
    from timm.models import save_for_hf

    pre = predictor.preprocessing
    data = {"input_size": (3, pre.size, pre.size), "mean": pre.mean, "std": pre.std,
            "crop_pct": pre.crop_pct, "interpolation": pre.interpolation}
    extra = {"autotransfer": _jsonable({"task": predictor.task, "info": predictor.info,
                                        "strategy": predictor.strategy.to_dict()})}
    if predictor.classes is not None:
        extra["label_names"] = _jsonable(predictor.classes)
    kwargs = {"data_config": data} \
        if "data_config" in inspect.signature(save_for_hf).parameters else {}
    save_for_hf(target, str(folder), model_config=extra, safe_serialization=True, **kwargs)
    if not kwargs:  # an older timm: the preprocessing goes into pretrained_cfg here
        config = json.loads((folder / "config.json").read_text())
        config["pretrained_cfg"] = {k: v for k, v in config["pretrained_cfg"].items()
                                    if not k.startswith("test_")} | _jsonable(data)
        (folder / "config.json").write_text(json.dumps(config, indent=2))


# --- transformers ---

def _transformers(predictor: Predictor, backbone: Any, folder: Path) -> dict:
    from safetensors.torch import save_file

    body: HFEncoder = predictor.model.body
    linear = _plain_linear(predictor, "transformers")
    folder.mkdir(exist_ok=True)
    body.model.save_pretrained(str(folder))
    load_tokenizer(predictor.preprocessing.tokenizer).save_pretrained(str(folder))
    bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
    save_file({"weight": linear.weight.detach().cpu().float().contiguous(),
               "bias": bias.detach().cpu().float().contiguous()}, str(folder / "head.safetensors"))
    (folder / "autotransfer_head.json").write_text(json.dumps(_head_description(
        predictor, body, linear), indent=2))
    # The predictor tokenizes with its own tokenizer, the reloaded model with the saved one.
    sample = _samples(predictor, len(_SAMPLE_TEXTS))
    got = _rerun_transformers(folder, body.pooling, predictor.preprocessing.max_length)
    check = _compare(got, _reference(predictor, sample), "transformers model reloaded from "
                     "the export")
    return {"files": sorted(str(f) for f in folder.iterdir()), **check,
            "inputs": _input_specs(sample, list(sample)),
            "outputs": [_output_spec(predictor, linear.out_features)]}


_POOLING = {
    "mean": "sum(last_hidden_state * attention_mask[..., None], 1) / "
            "clamp(sum(attention_mask, 1)[..., None], min=1e-9)",
    "cls": "last_hidden_state[:, 0]",
}


def _head_description(predictor: Predictor, body: HFEncoder, linear: nn.Linear) -> dict:
    return _describe(
        predictor, "transformers", pooling=body.pooling, features=_POOLING[body.pooling],
        head={"file": "head.safetensors", "in_features": linear.in_features,
              "out_features": linear.out_features, "outputs": "features @ weight.T + bias"},
        outputs=_output_spec(predictor, linear.out_features),
        tokenizer={"max_length": predictor.preprocessing.max_length, "truncation": True,
                   "padding": "longest"})


@torch.no_grad()
def _rerun_transformers(folder: Path, pooling: str, max_length: int) -> torch.Tensor:
    """Outputs of the folder loaded as a user would: AutoModel, AutoTokenizer, head file."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from .backbones._hf import _quiet_transformers

    with _quiet_transformers():  # its unused pooler is reported as newly initialised
        model = AutoModel.from_pretrained(str(folder)).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    batch = dict(tokenizer(_SAMPLE_TEXTS, padding=True, truncation=True,
                           max_length=max_length, return_tensors="pt"))
    features = HFEncoder(model, pooling)(batch)  # last_hidden_state, pooled as described
    head = load_file(str(folder / "head.safetensors"))
    return features @ head["weight"].T + head["bias"]
