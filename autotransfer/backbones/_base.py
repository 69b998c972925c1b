"""The Backbone interface: a pretrained body, its layer groups, stages and preprocessing."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data.preprocessing import Preprocessing
from ..errors import StrategyError
from . import _weights
from ._weights import Weights

ADAPTERS = ("none", "lora", "bitfit", "norm")  # Strategy.adapter values; see techniques.adapters
NONE_ONLY = ("none",)
TRANSFORMER_LIKE = ("vit_", "deit", "swin", "eva", "beit", "convnext", "test_vit",
                    "test_convnext")  # timm architectures (name prefixes) adapters suit
ADAPTERS_WHERE = "adapters apply to transformers encoders and timm ViT/ConvNeXt-like models"


def describe_adapters(fits: tuple[str, ...]) -> str:
    """What applies to a backbone whose ``adapters`` are ``fits``, in words."""
    if fits == NONE_ONLY:
        return (f"only adapter='none' (plain fine-tuning) applies to it: {ADAPTERS_WHERE}; "
                f"use one of those for another adapter")
    return f"adapters that apply to it: {', '.join(fits)}"


@dataclass(frozen=True)
class Stage:
    """One step of a body's forward pass and the parameter names it uses.

    Stages composed in order equal the body's forward. The runner runs the leading stages
    whose parameters are all frozen as one no-grad call (the frozen prefix, whose output
    can be cached) and the rest as the trainable tail.
    """

    fn: Callable[[Any], Any]
    params: frozenset[str]


class Backbone(ABC):
    """A pretrained network that maps inputs to a feature vector.

    Subclasses implement :meth:`build`, :meth:`layer_groups` and :meth:`preprocessing`;
    :meth:`stages` is optional (without it the whole body is one stage, which is correct
    but leaves only fully frozen bodies cacheable).
    """

    modality: str = "image"
    family: str = "custom"
    supports_drop_path: bool = False
    adapters: tuple[str, ...] = NONE_ONLY  # the Strategy.adapter values that apply

    def __init__(self, name: str, *, weights: Weights = None) -> None:
        if not isinstance(name, str) or not name:
            raise StrategyError(f"A backbone name must be a non-empty string, but got {name!r}.")
        self.name = name
        self.weights = _weights.absolute(weights)

    @abstractmethod
    def build(self, *, pretrained: bool = True, drop_path: float = 0.0) -> nn.Module:
        """The body: an ``nn.Module`` mapping a batch to features ``(N, num_features)``.

        It has a ``num_features`` attribute. ``pretrained=False`` gives random init.
        """

    @abstractmethod
    def layer_groups(self, model: nn.Module) -> list[list[str]]:
        """Parameter names of ``model`` grouped from the input to the output."""

    @abstractmethod
    def preprocessing(self, *, image_size: int | None = None,
                      max_length: int | None = None) -> Preprocessing:
        """How raw inputs become model inputs for this backbone."""

    def stages(self, model: nn.Module) -> list[Stage]:
        """The forward pass as stages (default: the whole body as one)."""
        return [Stage(model, frozenset(n for n, _ in model.named_parameters()))]

    @property
    def weights_source(self) -> str:
        return _weights.describe(self.weights)

    def available(self) -> bool:
        """Whether pretrained weights can be had here without downloading."""
        if self.weights is None:
            return True
        if self.weights == "hub":
            return self._hub_cached() or _weights.hub_reachable()
        if isinstance(self.weights, _weights.PackageWeights):
            return self.weights.available()
        return _weights.Path(self.weights).exists()

    def _hub_cached(self) -> bool:
        return False

    def describe(self) -> dict[str, Any]:
        """Name, family, modality, layer groups, parameters and weights source."""
        try:
            model = self.build(pretrained=False)
            groups: Any = len(self.layer_groups(model))
            params: Any = sum(p.numel() for p in model.parameters())
        except Exception:  # e.g. a hub config that cannot be fetched offline
            groups = params = None
        return {
            "name": self.name, "family": self.family, "modality": self.modality,
            "groups": groups, "params": params, "weights": self.weights_source,
            "available": self.available(),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, weights={self.weights_source!r})"


def check_stages(model: nn.Module, stages: list[Stage], sample: Any) -> bool:
    """Whether the stages composed reproduce ``model(sample)`` (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            want = model(sample)
            got = sample
            for stage in stages:
                got = stage.fn(got)
        return isinstance(got, torch.Tensor) and got.shape == want.shape and torch.allclose(
            got, want, rtol=1e-4, atol=1e-5
        )
    except Exception:
        return False
    finally:
        model.train(was_training)
