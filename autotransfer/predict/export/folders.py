"""timm and transformers exports: a folder each library loads by itself.

The folder is written under a temporary name beside its target, rebuilt from there as a
user would and compared with the model, and only then swapped into place
(:func:`autotransfer.files.replacing`): a failed check or a killed process leaves an
earlier export as it was.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...backbones import HFEncoder, TimmBackbone
from ...data.preprocessing import load_tokenizer
from ...errors import ConfigError, ExportError
from ...files import replacing
from . import common
from .common import Trained

# --- timm ---

def export_timm(predictor: Trained, backbone: TimmBackbone, folder: Path) -> dict:
    import timm
    from safetensors.torch import load_file

    linear = common.plain_linear(predictor, "timm")
    n = linear.out_features
    target = timm.create_model(backbone.timm_name, num_classes=n, **backbone.model_kwargs)
    try:
        target.load_state_dict(_timm_state(predictor, target, linear), strict=True)
    except RuntimeError as exc:  # missing, unexpected or other-shaped weights
        raise ExportError(f"The model's weights do not map onto timm's "
                          f"{backbone.timm_name!r}: {common.reason(exc)}; formats that work "
                          f"for it: onnx, torchscript.") from exc
    with replacing(folder, what="the timm export") as tmp:
        tmp.mkdir()
        _save_timm(predictor, target, tmp)
        # Rebuild as a user would: the architecture by name, the weights strictly from the file.
        rebuilt = timm.create_model(backbone.timm_name, num_classes=n, **backbone.model_kwargs)
        rebuilt.load_state_dict(load_file(str(tmp / "model.safetensors")), strict=True)
        sample = common.samples(predictor, 3)
        with torch.no_grad():
            got = rebuilt.eval()(predictor.preprocessing.normalize(sample["images"]))
        check = common.compare(got, common.reference(predictor, sample),
                               "timm model rebuilt from the export")
        names = sorted(f.name for f in tmp.iterdir())
    return {"files": [str(folder / name) for name in names], **check,
            "inputs": common.input_specs(sample, ["images"]),
            "outputs": [common.output_spec(predictor, n)]}


def _timm_state(predictor: Trained, target: nn.Module, linear: nn.Linear) -> dict:
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


def _save_timm(predictor: Trained, target: nn.Module, folder: Path) -> None:
    """timm's own ``save_for_hf`` (safetensors and its hub-style config.json)."""
    from timm.models import save_for_hf

    pre = predictor.preprocessing
    data = {"input_size": (3, pre.size, pre.size), "mean": pre.mean, "std": pre.std,
            "crop_pct": pre.crop_pct, "interpolation": pre.interpolation}
    extra = {"autotransfer": common.jsonable({"task": predictor.task, "info": predictor.info,
                                              "strategy": predictor.strategy.to_dict()})}
    if predictor.classes is not None:
        extra["label_names"] = common.jsonable(predictor.classes)
    kwargs = {"data_config": data} \
        if "data_config" in inspect.signature(save_for_hf).parameters else {}
    save_for_hf(target, str(folder), model_config=extra, safe_serialization=True, **kwargs)
    if not kwargs:  # an older timm: the preprocessing goes into pretrained_cfg here
        config = json.loads((folder / "config.json").read_text())
        config["pretrained_cfg"] = {k: v for k, v in config["pretrained_cfg"].items()
                                    if not k.startswith("test_")} | common.jsonable(data)
        (folder / "config.json").write_text(json.dumps(config, indent=2))


# --- transformers ---

def export_transformers(predictor: Trained, backbone: Any, folder: Path) -> dict:
    from safetensors.torch import save_file

    body: HFEncoder = predictor.model.body
    linear = common.plain_linear(predictor, "transformers")
    with replacing(folder, what="the transformers export") as tmp:
        tmp.mkdir()
        body.model.save_pretrained(str(tmp))
        load_tokenizer(predictor.preprocessing.tokenizer).save_pretrained(str(tmp))
        bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
        save_file({"weight": linear.weight.detach().cpu().float().contiguous(),
                   "bias": bias.detach().cpu().float().contiguous()},
                  str(tmp / "head.safetensors"))
        (tmp / "autotransfer_head.json").write_text(json.dumps(_head_description(
            predictor, body, linear), indent=2))
        # The predictor tokenizes with its own tokenizer, the reloaded model with the saved one.
        sample = common.samples(predictor, len(common.SAMPLE_TEXTS))
        got = _rerun_transformers(tmp, body.pooling, predictor.preprocessing.max_length)
        check = common.compare(got, common.reference(predictor, sample),
                               "transformers model reloaded from the export")
        names = sorted(f.name for f in tmp.iterdir())
    return {"files": [str(folder / name) for name in names], **check,
            "inputs": common.input_specs(sample, list(sample)),
            "outputs": [common.output_spec(predictor, linear.out_features)]}


_POOLING = {
    "mean": "sum(last_hidden_state * attention_mask[..., None], 1) / "
            "clamp(sum(attention_mask, 1)[..., None], min=1e-9)",
    "cls": "last_hidden_state[:, 0]",
}


def _head_description(predictor: Trained, body: HFEncoder, linear: nn.Linear) -> dict:
    return common.describe(
        predictor, "transformers", pooling=body.pooling, features=_POOLING[body.pooling],
        head={"file": "head.safetensors", "in_features": linear.in_features,
              "out_features": linear.out_features, "outputs": "features @ weight.T + bias"},
        outputs=common.output_spec(predictor, linear.out_features),
        tokenizer={"max_length": predictor.preprocessing.max_length, "truncation": True,
                   "padding": "longest"})


@torch.no_grad()
def _rerun_transformers(folder: Path, pooling: str, max_length: int) -> torch.Tensor:
    """Outputs of the folder loaded as a user would: AutoModel, AutoTokenizer, head file."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from ...backbones._hf import _quiet_transformers

    with _quiet_transformers():  # its unused pooler is reported as newly initialised
        model = AutoModel.from_pretrained(str(folder)).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    batch = dict(tokenizer(common.SAMPLE_TEXTS, padding=True, truncation=True,
                           max_length=max_length, return_tensors="pt"))
    features = HFEncoder(model, pooling)(batch)  # last_hidden_state, pooled as described
    head = load_file(str(folder / "head.safetensors"))
    return features @ head["weight"].T + head["bias"]
