"""An example autotransfer plugin: registers timm's ResNet-10t as ``example_resnet10t``.

Point ``weights=`` at a local ``.pth``/``.safetensors`` file to make it pretrained; with
``weights=None`` it starts from random weights (still searchable, and the scratch baseline
shows what pretraining would add).
"""

import os

import autotransfer as at


@at.hookimpl
def register_backbones(register):
    register(at.TimmBackbone(
        "example_resnet10t",
        timm_name="resnet10t",
        weights=os.environ.get("EXAMPLE_RESNET10T_WEIGHTS"),  # None: random init
        image_size=64,
    ))
