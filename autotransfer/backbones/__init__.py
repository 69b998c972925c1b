"""Backbones: the interface and the timm and transformers implementations."""

from ._base import ADAPTERS, NONE_ONLY, TRANSFORMER_LIKE, Backbone, Stage, check_stages
from ._hf import HFBackbone, HFEncoder
from ._timm import TimmBackbone
from ._weights import PackageWeights

__all__ = ["ADAPTERS", "NONE_ONLY", "TRANSFORMER_LIKE", "Backbone", "HFBackbone", "HFEncoder",
           "PackageWeights", "Stage", "TimmBackbone", "check_stages"]
