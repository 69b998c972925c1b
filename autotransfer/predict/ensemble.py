"""An ensemble as one model: several trained models on the same inputs, their outputs
combined by the task's head (:meth:`autotransfer.Head.combine`: the mean probability for
classification, returned as logits whose softmax is that mean).

The members may be of different backbones and normalizations, but take the same prepared
inputs: images of one size (each member's own mean and std are applied inside the model;
all take the first member's resize, crop and interpolation, which timm's families vary
only slightly: e.g. a 0.875 or 0.95 center crop, bilinear or bicubic), or texts through
one tokenizer. So an ensemble predicts,
saves to one model file and exports to ONNX or TorchScript like a single model: its
graph takes what the first member's does and holds every member.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..data.preprocessing import ImagePreprocessing, Preprocessing

MAX_MEMBERS = 32
_SHARED = {"image": ("size",), "text": ("tokenizer", "max_length")}


class Members(nn.Module):
    """The members side by side: each gets the input as its own preprocessing normalizes
    it (the input comes normalized as the first member's says), and ``combine`` makes one
    output of theirs."""

    def __init__(self, members: Sequence[nn.Module], pres: Sequence[Preprocessing],
                 combine: Callable[[list[torch.Tensor]], torch.Tensor]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self._combine = combine
        self._image = isinstance(pres[0], ImagePreprocessing)
        for i, pre in enumerate(pres):
            scale, shift = _renormalization(pres[0], pre) if self._image else (1.0, 0.0)
            # computed from the model file's config, never stored as weights
            self.register_buffer(f"scale{i}", torch.as_tensor(scale), persistent=False)
            self.register_buffer(f"shift{i}", torch.as_tensor(shift), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for i, member in enumerate(self.members):
            xi = x * getattr(self, f"scale{i}") + getattr(self, f"shift{i}") if self._image \
                else x
            outs.append(member(xi).float())
        return self._combine(outs)


class EnsembleModel(nn.Module):
    """``head(body(x))`` as a single model has it: the body is :class:`Members`, the head
    an identity (the members' heads are inside), so exports treat it as any model."""

    def __init__(self, members: Members) -> None:
        super().__init__()
        self.body = members
        self.head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _renormalization(first: ImagePreprocessing, pre: ImagePreprocessing
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``scale, shift`` with ``x * scale + shift`` = the input normalized by ``pre`` when
    ``x`` is normalized by ``first``; exactly ``1, 0`` when they normalize alike."""
    if (first.mean, first.std) == (pre.mean, pre.std):
        return torch.ones(1, 3, 1, 1), torch.zeros(1, 3, 1, 1)
    m0, s0 = torch.tensor(first.mean), torch.tensor(first.std)
    m, s = torch.tensor(pre.mean), torch.tensor(pre.std)
    return (s0 / s).view(1, 3, 1, 1), ((m0 - m) / s).view(1, 3, 1, 1)


def mismatch(first: Preprocessing, other: Preprocessing) -> str | None:
    """Why a model with preprocessing ``other`` cannot join an ensemble whose first
    member's is ``first`` (another modality, image size, tokenizer); None if it can."""
    if first.modality != other.modality:
        return f"it takes {other.modality} inputs, not {first.modality}"
    for key in _SHARED[first.modality]:
        a, b = getattr(first, key), getattr(other, key)
        if a != b:
            return f"its {key} is {b!r}, not {a!r}"
    return None
