"""What every export shares: the model as one module on the CPU, sample batches as the
loader gives them, the faithfulness check, and the JSON description of the outputs."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from typing import Any, Protocol

import torch
from torch import nn

from ...data.preprocessing import ImagePreprocessing
from ...errors import ConfigError, ExportError
from ...heads.multitask import describe_outputs


class Trained(Protocol):
    """What an export reads of a trained model (an :class:`autotransfer.Predictor`), named
    here so that the exporters need not import the predictor that calls them."""

    model: nn.Module
    strategy: Any
    task: Any
    info: dict
    preprocessing: Any


SIDECAR_FORMAT = "autotransfer-export/1"
TOLERANCE = 1e-3  # times the largest |output| when that is above 1
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the forward's order
SAMPLE_TEXTS = ["autotransfer export check", "x",
                "a second, rather longer sentence that checks padding and the mask"]
_MEANING = {
    "classification": "logits over classes (softmax gives probabilities)",
    "multilabel": "logits per label (a sigmoid each gives probabilities)",
    "regression": "standardized targets: value = output * info.std + info.mean",
}


class ImageModel(nn.Module):
    """uint8 images ``(N, 3, S, S)`` -> outputs: ``normalize``, body and head in one."""

    def __init__(self, body: nn.Module, head: nn.Module, pre: ImagePreprocessing) -> None:
        super().__init__()
        self.body, self.head = body, head
        # As ImagePreprocessing.normalize computes them, so the results match bit for bit.
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1) * 255)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body((images.float() - self.mean) / self.std))


class TextModel(nn.Module):
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


def wrapped(predictor: Trained) -> nn.Module:
    body, head = _on_cpu(predictor.model.body), _on_cpu(predictor.model.head)
    pre = predictor.preprocessing
    model = ImageModel(body, head, pre) if isinstance(pre, ImagePreprocessing) \
        else TextModel(body, head)
    return model.eval()


def samples(predictor: Trained, n: int) -> dict[str, torch.Tensor]:
    """A batch of ``n`` inputs as the loader gives them, by input name."""
    pre = predictor.preprocessing
    if isinstance(pre, ImagePreprocessing):
        g = torch.Generator().manual_seed(n)
        return {"images": torch.randint(0, 256, (n, 3, pre.size, pre.size), generator=g,
                                        dtype=torch.uint8)}
    batch = pre.prepare(SAMPLE_TEXTS[:n])
    unknown = sorted(set(batch) - set(TEXT_INPUTS))
    if unknown:
        raise ExportError(f"The tokenizer makes inputs {unknown} that this export does not "
                          f"know; accepted inputs: {', '.join(TEXT_INPUTS)}.")
    return {k: batch[k] for k in TEXT_INPUTS if k in batch}


@torch.no_grad()
def reference(predictor: Trained, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the predictor itself outputs for the inputs."""
    device = next(predictor.model.parameters()).device
    batch = {k: v.to(device) for k, v in inputs.items()}
    x = batch["images"] if "images" in batch else batch
    return predictor.model(predictor.preprocessing.normalize(x)).float().cpu()


def compare(got: torch.Tensor, want: torch.Tensor, what: str) -> dict[str, float]:
    """Max abs difference; raises above the tolerance (relative for large outputs)."""
    if got.shape != want.shape:
        raise ExportError(f"The {what} gives outputs of shape {tuple(got.shape)}, but the "
                          f"model gives {tuple(want.shape)}; the export is wrong.")
    diff = float((got.float() - want).abs().max())
    tol = TOLERANCE * max(1.0, float(want.abs().max()))
    if not diff <= tol:  # also catches NaN
        raise ExportError(f"The {what} differs from the model by up to {diff:.3g} on a sample "
                          f"batch (tolerance {tol:.3g}); the export is not faithful, and was "
                          f"not kept (an earlier export there is as it was). Check the model's "
                          f"weights for NaN or inf, or try another format (onnx, torchscript).")
    return {"max_abs_diff": diff, "tolerance": tol}


def reason(exc: Exception) -> str:
    """The cause in torch.onnx's long messages: after its summary heading, no colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split("## Exception summary")[-1]
    return f"{type(exc).__name__}: {' '.join(text.split())[:300]}"


def plain_linear(predictor: Trained, format: str) -> nn.Linear:
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


# --- the JSON description of an export ---

def input_specs(inputs: dict[str, torch.Tensor], names: list[str]) -> list[dict]:
    return [{"name": n, "shape": ["batch", *inputs[n].shape[1:]] if n == "images"
             else ["batch", "length"], "dtype": str(inputs[n].dtype).split(".")[-1]}
            for n in names]


def output_spec(predictor: Trained, n_outputs: int) -> dict:
    return {"name": "outputs", "shape": ["batch", n_outputs], "dtype": "float32",
            "meaning": describe_outputs(predictor.task, predictor.info, _MEANING)}


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item")
                                 else str(o)))


def preprocessing(predictor: Trained) -> dict:
    pre = predictor.preprocessing
    out = dataclasses.asdict(pre)
    if isinstance(pre, ImagePreprocessing):
        out.update(resize_shorter_side=pre.resize, normalized_in_graph=True,
                   layout="NCHW, RGB, uint8 0..255: resize the shorter side to "
                          "resize_shorter_side, center-crop size x size")
    return out


def describe(predictor: Trained, format: str, **more: Any) -> dict:
    """What every export's JSON says: the task, its labels, the strategy, and ``more``."""
    members = getattr(predictor, "members", ())
    ensemble = {"ensemble": [s.to_dict() for s, _ in members]} if members else {}
    return jsonable({
        "format": SIDECAR_FORMAT, "export_format": format, "task": predictor.task,
        "classes": predictor.classes, "info": predictor.info,
        "backbone": predictor.strategy.backbone, "strategy": predictor.strategy.to_dict(),
        **ensemble, **more})
