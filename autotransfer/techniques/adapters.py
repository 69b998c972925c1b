"""Parameter-efficient fine-tuning: what trains inside the trainable layer groups.

``Strategy.adapter`` chooses, for the groups that ``frozen_groups`` leaves trainable:

- ``"none"``: every weight (plain fine-tuning);
- ``"lora"``: low-rank adapters (Hu et al., ICLR 2022) on every linear layer there,
  attention and MLP alike, injected by the ``peft`` library (rank ``lora_rank``,
  alpha = 2 x rank); the linear weights themselves stay fixed;
- ``"bitfit"``: the biases only (Ben Zaken et al., ACL 2022);
- ``"norm"``: the normalization layers only (their scale and shift).

The head always trains. Frozen groups stay frozen whatever the adapter, so an adapter
composes with the frozen-prefix feature cache. Models are saved with the LoRA weights
merged into the linear layers (:func:`merged_state`): a saved model loads, predicts and
exports without ``peft``. Adapters apply to transformers encoders and to timm's
transformer-like models (ViT, DeiT, Swin, EVA, BEiT, ConvNeXt); the search space skips
the field for other backbones, as it does drop-path for those without it.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from ..backbones._base import ADAPTERS_WHERE as WHERE
from ..errors import ConfigError
from ..log import get_logger

INSTALL = "pip install 'autotransfer[adapters]'"
_LORA_PART = re.compile(r"\.base_layer|\.lora_(A|B|embedding_A|embedding_B)\.[^.]+")



logger = get_logger(__name__)


def peft_available() -> bool:
    try:
        import peft  # noqa: F401
    except ImportError:
        return False
    return True


def attach(model: nn.Module, adapter: str, rank: int) -> None:
    """After ``model.freeze`` (a TransferModel): make only ``adapter``'s parameters trainable in the
    trainable groups (``"lora"`` injects them first)."""
    if adapter == "none":
        return
    trainable = {n for n, p in model.body.named_parameters() if p.requires_grad}
    if adapter == "lora":
        _inject_lora(model, trainable, rank)
    else:
        keep = _biases(model.body) if adapter == "bitfit" else _norm_params(model.body)
        for name, p in model.body.named_parameters():
            p.requires_grad_(name in trainable and name in keep)
    model.mark_frozen()


def _biases(body: nn.Module) -> set[str]:
    return {n for n, p in body.named_parameters() if n.endswith("bias") and p.ndim == 1}


def _norm_params(body: nn.Module) -> set[str]:
    norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.RMSNorm)
    out = set()
    for path, m in body.named_modules():
        if isinstance(m, norms) or type(m).__name__.endswith(("Norm", "Norm2d")):
            out |= {f"{path}.{n}" if path else n for n, _ in m.named_parameters(recurse=False)}
    return out


def _inject_lora(model: nn.Module, trainable: set[str], rank: int) -> None:
    """LoRA on the linear layers whose weights are trainable; then the groups list the new
    parameter names (``qkv.weight`` -> ``qkv.base_layer.weight``, ``qkv.lora_A...``)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as exc:
        raise ConfigError(f"adapter='lora' needs the peft library: {INSTALL}.") from exc
    targets = [path for path, m in model.body.named_modules()
               if isinstance(m, nn.Linear) and f"{path}.weight" in trainable]
    if not targets:  # e.g. everything frozen: nothing to adapt, the head still trains
        return
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                        target_modules=targets, bias="none")
    inject_adapter_in_model(config, model.body)  # marks only the adapters trainable
    group_of = {n: i for i, names in enumerate(model.groups) for n in names}
    groups: list[list[str]] = [[] for _ in model.groups]
    for name, _ in model.body.named_parameters():
        groups[group_of[_LORA_PART.sub("", name)]].append(name)
    model.groups = groups


def merged_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s weights on the CPU, LoRA folded into the linear layers it adapts: the
    state dict of the same model without adapters."""
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    layers = {path: m for path, m in model.named_modules()
              if hasattr(m, "get_delta_weight") and hasattr(m, "base_layer")}
    for path, m in layers.items():
        with torch.no_grad():
            delta = sum(m.get_delta_weight(a) for a in m.active_adapters)
        base = f"{path}.base_layer."
        for key in [k for k in state if k.startswith(base)]:
            state[f"{path}.{key[len(base):]}"] = state.pop(key)
        state[f"{path}.weight"] = state[f"{path}.weight"] + delta.detach().cpu()
    return {k: v for k, v in state.items() if not _LORA_PART.search(k)}


def fit_space(space: Any, names: list[str], progress: bool = True) -> Any:
    """The space a search over backbones ``names`` runs: an adapter the user chose must
    apply to one of them, and LoRA needs peft. The default space leaves LoRA out (and
    says so) when peft is missing; a space that asks for it raises."""
    import dataclasses

    from .. import plugins
    from ..strategy.space import _DEFAULTS, Categorical

    dim = space.adapter
    choices = dim.choices if isinstance(dim, Categorical) else (dim,)
    given = list(choices) if isinstance(dim, Categorical) else dim
    explicit = dim != _DEFAULTS["adapter"]
    fits = {n: plugins.get_backbone(n).adapters for n in names}
    wanted = {c for c in choices if c != "none"}
    if explicit and wanted and not any(wanted & set(a) for a in fits.values()):
        takes = "; ".join(f"{n} takes {'/'.join(a)}" for n, a in fits.items())
        raise ConfigError(
            f"SearchSpace adapter={given!r} applies to none of the backbones ({takes}): "
            f"{WHERE}; adapter='none' is plain fine-tuning.")
    if "lora" not in choices or not any("lora" in a for a in fits.values()) \
            or peft_available():
        return space
    if explicit:
        raise ConfigError(f"SearchSpace adapter={given!r} asks for LoRA, which needs the peft "
                          f"library: {INSTALL}.")
    if progress:
        logger.warning(f"peft is not installed, so the search leaves adapter='lora' out "
                       f"({INSTALL} adds it)")
    return dataclasses.replace(space, adapter=Categorical(tuple(c for c in choices
                                                                if c != "lora")))
