"""ONNX and TorchScript exports: one graph file and its JSON description (and, for text,
the tokenizer folder; for ONNX weights over 2 GB, ``<path>.data``).

Every file is first written under a temporary name beside its target, the graph is loaded
back and run there, and only then are the files renamed into place, the description
first: a failed check or a killed process leaves an earlier export byte for byte as it was.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...data.preprocessing import ImagePreprocessing, load_tokenizer
from ...errors import ExportError
from ...files import replacing
from . import common
from .common import Trained
from .targets import graph_files

OPSET = 18


def export_graph(predictor: Trained, path: Path, format: str) -> dict:
    """Write, check and put in place an ``"onnx"`` or ``"torchscript"`` export at ``path``
    (its targets already checked by :func:`.targets.check_graph`)."""
    final = graph_files(path)
    text = not isinstance(predictor.preprocessing, ImagePreprocessing)
    roles = ["graph"] + (["tokenizer"] if text else []) + ["description"]
    with contextlib.ExitStack() as stack:  # on leaving: renamed last entered first
        tmp = {r: stack.enter_context(replacing(final[r], what=f"the {format} export's {r}"))
               for r in roles}
        writer = _onnx if format == "onnx" else _torchscript
        check, names, n_out = writer(predictor, tmp, final, stack)
        sample = common.samples(predictor, 3)
        specs = common.input_specs(sample, names)
        output = common.output_spec(predictor, n_out)
        desc = common.describe(predictor, format, inputs=specs, outputs=[output],
                               preprocessing=common.preprocessing(predictor))
        if text:
            load_tokenizer(predictor.preprocessing.tokenizer).save_pretrained(
                str(tmp["tokenizer"]))
            desc["preprocessing"]["tokenizer_folder"] = final["tokenizer"].name
        tmp["description"].write_text(json.dumps(desc, indent=2))
    files = [str(final[r]) for r in ["graph", "external weights", "description", "tokenizer"]
             if r in tmp]
    return {"files": files, **check, "inputs": specs, "outputs": [output]}


# --- ONNX ---

def _onnx(predictor: Trained, tmp: dict[str, Path], final: dict[str, Path],
          stack: contextlib.ExitStack) -> tuple[dict, list[str], int]:
    model, example = common.wrapped(predictor), common.samples(predictor, 2)
    sample = common.samples(predictor, 3)
    data = tmp["graph"].with_name(tmp["graph"].name + ".data")
    try:
        _to_onnx(model, example, tmp["graph"])
    except BaseException:
        data.unlink(missing_ok=True)  # weights the failed exporter may have written
        raise
    role = "external weights"
    if data.exists():  # over 2 GB: the exporter named the weights after the temporary graph
        tmp[role] = stack.enter_context(replacing(final[role], what="the onnx export's weights"))
        data.replace(tmp[role])
        _relocate(tmp["graph"], tmp[role].name)
    got, names = _run_onnx(tmp["graph"], sample)
    check = common.compare(got, common.reference(predictor, sample), "ONNX graph (onnxruntime)")
    if role in tmp:  # checked: now the graph names the weights file it will sit beside
        _relocate(tmp["graph"], final[role].name)
    return check, names, got.shape[1]


def _to_onnx(model: nn.Module, example: dict[str, torch.Tensor], path: Path) -> None:
    """torch.export-based exporter; the TorchScript-based one if that fails."""
    names, args = list(example), tuple(example.values())
    kwargs = dict(input_names=names, output_names=["outputs"], opset_version=OPSET)
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("length")}
    axes = {0: "batch", 1: "length"}
    if names == ["images"]:  # images: only the batch varies
        dims, axes = {0: dims[0]}, {0: "batch"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, args, str(path), dynamo=True, external_data=False,
                              dynamic_shapes=tuple(dims for _ in names), verbose=False, **kwargs)
        return
    except Exception as exc:
        first = common.reason(exc)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, args, str(path), dynamo=False,
                              dynamic_axes={n: axes for n in names + ["outputs"]}, **kwargs)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed with both exporters: torch.export: "
                          f"{first}; TorchScript-based: {common.reason(exc)}; "
                          f"format='torchscript' may still work.") from exc


def _relocate(graph: Path, location: str) -> None:
    """Point the graph's external tensors at ``location`` (a file beside it)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    proto = onnx.load(str(graph), load_external_data=False)
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
    onnx.save(proto, str(graph))


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

def _torchscript(predictor: Trained, tmp: dict[str, Path], final: dict[str, Any],
                 stack: contextlib.ExitStack) -> tuple[dict, list[str], int]:
    model, example = common.wrapped(predictor), common.samples(predictor, 2)
    sample = common.samples(predictor, 3)
    with warnings.catch_warnings():  # jit is deprecated; the user asked for it by name
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, tuple(example.values()), check_trace=False)
        torch.jit.save(traced, str(tmp["graph"]))
        loaded = torch.jit.load(str(tmp["graph"]), map_location="cpu")
        with torch.no_grad():
            got = loaded(*sample.values())
    check = common.compare(got, common.reference(predictor, sample),
                           "reloaded TorchScript module")
    return check, list(sample), got.shape[1]
