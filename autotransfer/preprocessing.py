"""Turn raw inputs into model inputs, as the backbone wants them.

Images are stored resized as uint8 (a quarter of float32's memory) and normalized per
batch on the device; text is tokenized once to fixed-length tensors.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .errors import DataError


@dataclass(frozen=True)
class ImagePreprocessing:
    """Resize (shorter side, then center crop) to ``size`` and normalize with mean/std."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    modality: str = "image"

    def prepare(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """uint8 images (N,3,H,W) or a list of (3,H,W) -> uint8 (N,3,size,size)."""
        if isinstance(images, torch.Tensor):
            return _resize_uint8(images, self.size)
        return torch.cat([_resize_uint8(img[None], self.size) for img in images])

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N,3,S,S) on any device -> normalized float32."""
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1) * 255
        return (batch.float() - mean) / std


def _resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x.contiguous()
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    out = []
    for chunk in x.split(256):  # bound float memory for big sets
        y = F.interpolate(chunk.float(), size=(nh, nw), mode="bilinear", antialias=True,
                          align_corners=False)
        top, left = (nh - size) // 2, (nw - size) // 2
        y = y[..., top : top + size, left : left + size]
        out.append(y.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out).contiguous()


@dataclass(frozen=True)
class TextPreprocessing:
    """Tokenize to ``max_length`` tokens (padded, truncated) with the backbone's tokenizer."""

    tokenizer: str
    max_length: int
    modality: str = "text"

    def prepare(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if not all(isinstance(t, str) for t in texts):
            bad = next(t for t in texts if not isinstance(t, str))
            raise DataError(f"Text inputs must be strings, but got {type(bad).__name__}: {bad!r}.")
        enc = load_tokenizer(self.tokenizer)(
            list(texts), padding="max_length", truncation=True, max_length=self.max_length,
            return_tensors="pt",
        )
        return {k: v for k, v in enc.items()}

    def normalize(self, batch: Any) -> Any:
        return batch


@functools.lru_cache(maxsize=8)
def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


Preprocessing = ImagePreprocessing | TextPreprocessing
