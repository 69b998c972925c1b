"""timm backbones whose weights come from the Hugging Face Hub (they need a network)."""

from __future__ import annotations

import autotransfer as at

HUB_MODELS = {
    "resnet18": "resnet18.a1_in1k",
    "resnet50": "resnet50.a1_in1k",
    "efficientnet_b0": "efficientnet_b0.ra_in1k",
    "mobilenetv3_large_100": "mobilenetv3_large_100.ra_in1k",
    "convnext_tiny": "convnext_tiny.in12k_ft_in1k",
    "vit_small_patch16_224": "vit_small_patch16_224.augreg_in21k_ft_in1k",
}


@at.hookimpl
def register_backbones(register):
    for name, timm_name in HUB_MODELS.items():
        register(at.TimmBackbone(name, timm_name=timm_name, weights="hub"))
