"""Any timm model as a backbone; layer groups come from timm's own ``group_matcher``."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from ..data.preprocessing import ImagePreprocessing
from ..errors import StrategyError, UnknownNameError
from . import _weights
from ._base import ADAPTERS, TRANSFORMER_LIKE, Backbone, Stage, check_stages
from ._weights import Weights

# Children that belong to timm's forward_head rather than forward_features: the first set
# for most families, the second adds MobileNetV3's head convolution.
_HEAD_CHILDREN = {"global_pool", "fc", "classifier", "head", "head_drop", "fc_norm",
                  "head_dist", "pre_logits", "attn_pool"}
_HEAD_CHOICES = (_HEAD_CHILDREN, _HEAD_CHILDREN | {"conv_head", "norm_head", "act2", "flatten"})
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class TimmBackbone(Backbone):
    """A timm model without its classifier.

    Args:
        name: The registry name users select it by.
        timm_name: The timm architecture (``timm.list_models()``), default ``name``.
        weights: ``None`` (random init), ``"hub"`` (timm's pretrained weights, downloaded),
            a path to a ``.pth``/``.safetensors`` state dict, or a :class:`PackageWeights`.
            A state dict with other key names loads if its tensors match in order and shape.
        coarse: Coarse layer groups (stages) rather than one group per block.
        image_size: Default input size; default timm's pretrained input size.
        **model_kwargs: Passed to ``timm.create_model``.

    Example:
        >>> import autotransfer as at
        >>> b = at.TimmBackbone("tiny_resnet", timm_name="test_resnet")
        >>> len(b.layer_groups(b.build()))
        5
    """

    family = "timm"
    modality = "image"
    supports_drop_path = True

    def __init__(self, name: str, *, timm_name: str | None = None, weights: Weights = None,
                 coarse: bool = True, image_size: int | None = None,
                 family: str | None = None, **model_kwargs: Any) -> None:
        import timm

        super().__init__(name, weights=weights)
        self.timm_name = timm_name or name
        arch = self.timm_name.split(".", 1)[0]
        if not timm.is_model(arch):
            raise UnknownNameError("timm model", arch, timm.list_models())
        self.coarse = coarse
        self.image_size = image_size
        self.model_kwargs = model_kwargs
        if family:
            self.family = family
        if arch.startswith(TRANSFORMER_LIKE):
            self.adapters = ADAPTERS
        self._head_choice: int | None = None  # index into _HEAD_CHOICES, -1: no chain

    def _cfg(self) -> Any:
        import timm

        try:
            return timm.models.get_pretrained_cfg(self.timm_name)
        except Exception:
            return None

    def build(self, *, pretrained: bool = True, drop_path: float = 0.0) -> nn.Module:
        import timm

        kwargs = dict(num_classes=0, **self.model_kwargs)
        if drop_path:
            kwargs["drop_path_rate"] = drop_path
        hub = pretrained and self.weights == "hub"
        try:
            model = self._from_hub(kwargs) if hub else timm.create_model(self.timm_name, **kwargs)
        except TypeError as exc:
            if "drop_path_rate" in str(exc):
                raise StrategyError(
                    f"Backbone {self.name!r} does not support drop_path; use drop_path=0."
                ) from exc
            raise
        if pretrained and self.weights not in (None, "hub"):
            path = _weights.local_path(self.weights, self.name)
            _weights.load_into(model, _weights.read_state_dict(path), str(path))
        return model

    def _hub_file(self) -> str | None:
        cfg = self._cfg()
        hub_id = getattr(cfg, "hf_hub_id", None)
        if not hub_id:
            return None
        return _weights.cached_hub_file(hub_id, ("model.safetensors", "pytorch_model.bin"))

    def _hub_cached(self) -> bool:
        return self._hub_file() is not None

    def _from_hub(self, kwargs: dict) -> nn.Module:
        import timm

        cached = self._hub_file()
        if cached:
            return timm.create_model(self.timm_name, pretrained=True,
                                     pretrained_cfg_overlay={"file": cached}, **kwargs)
        if not _weights.hub_reachable():
            raise _weights.hub_error(self.name, "pretrained weights",
                                     "the hub cannot be reached from this machine")
        try:
            return timm.create_model(self.timm_name, pretrained=True, **kwargs)
        except Exception as exc:
            raise _weights.hub_error(self.name, "pretrained weights",
                                     f"{type(exc).__name__}: {exc}") from exc

    def layer_groups(self, model: nn.Module) -> list[list[str]]:
        from timm.models import group_parameters

        groups = group_parameters(model, model.group_matcher(coarse=self.coarse))
        return [list(names) for _, names in sorted(groups.items())]

    def preprocessing(self, *, image_size: int | None = None,
                      max_length: int | None = None) -> ImagePreprocessing:
        """timm's data config for the pretrained weights (size, crop_pct, interpolation,
        mean/std), at ``image_size`` when given."""
        from timm.data import resolve_data_config

        cfg = self._cfg()
        size = image_size or self.image_size
        args = {"input_size": (3, int(size), int(size))} if size else {}
        dc = resolve_data_config(args, pretrained_cfg=cfg.to_dict() if cfg else None)
        mean, std = (tuple(dc["mean"]), tuple(dc["std"])) if cfg else _IMAGENET
        return ImagePreprocessing(int(dc["input_size"][-1]), mean, std,
                                  crop_pct=float(dc.get("crop_pct") or 1.0),
                                  interpolation=dc.get("interpolation") or "bilinear")

    def stages(self, model: nn.Module) -> list[Stage]:
        """Top-level children (sequential stages expanded) then timm's ``forward_head``.

        Checked once against the model's own forward; a model whose forward is not such a
        chain (ViT's position embedding) falls back to one stage.
        """
        if self._head_choice is None:
            size = self.preprocessing().size
            sample = torch.randn(2, 3, size, size)
            self._head_choice = next(
                (i for i, head in enumerate(_HEAD_CHOICES)
                 if check_stages(model, _timm_stages(model, head), sample)),
                -1,
            )
        if self._head_choice < 0:
            return super().stages(model)
        return _timm_stages(model, _HEAD_CHOICES[self._head_choice])


def _timm_stages(model: nn.Module, head_children: set[str]) -> list[Stage]:
    stages: list[Stage] = []
    for name, child in model.named_children():
        if name in head_children:
            continue
        parts = child.named_children() if isinstance(child, nn.Sequential) else [("", child)]
        for sub, module in parts:
            prefix = f"{name}.{sub}." if sub else f"{name}."
            names = frozenset(prefix + n for n, _ in module.named_parameters())
            stages.append(Stage(module, names))
    covered = set().union(*(s.params for s in stages)) if stages else set()
    rest = frozenset(n for n, _ in model.named_parameters() if n not in covered)
    stages.append(Stage(functools.partial(model.forward_head, pre_logits=True), rest))
    return stages
