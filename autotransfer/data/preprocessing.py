"""How raw inputs become model inputs for one backbone, built on timm and transformers.

Images follow the backbone's pretrained data config (timm's ``resolve_data_config``:
size, interpolation, ``crop_pct``, mean/std): :meth:`ImagePreprocessing.eval_transform`
and :meth:`~ImagePreprocessing.train_transform` are ``timm.data.create_transform``
pipelines that end in uint8 tensors; normalization runs per batch on the device (what
timm's prefetcher does), so worker processes ship a quarter of float32's bytes. Text is
tokenized without padding; :meth:`TextPreprocessing.collate` pads each batch to its
longest input (``DataCollatorWithPadding``), and ``max_length`` only truncates.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import DataError

AUGMENTS = ("none", "flip", "trivial", "randaugment")
# RandomResizedCrop's area range. timm's ImageNet default (0.08, 1) often crops the object
# away on small fine-tuning sets; a quarter of the image keeps it in view.
CROP_SCALE = (0.25, 1.0)


@dataclass(frozen=True)
class ImagePreprocessing:
    """Resize the shorter side to ``size / crop_pct``, center-crop ``size``, normalize."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    modality: str = "image"

    @property
    def resize(self) -> int:
        """The shorter side before the center crop (timm: ``floor(size / crop_pct)``)."""
        return max(self.size, math.floor(self.size / self.crop_pct))

    def eval_transform(self) -> Any:
        """PIL image -> uint8 ``(3, size, size)``: timm's eval pipeline."""
        from timm.data import create_transform

        return create_transform(input_size=self.size, is_training=False, crop_pct=self.crop_pct,
                                interpolation=self.interpolation, mean=self.mean, std=self.std,
                                normalize=False)

    def train_transform(self, augment: str) -> Any:
        """PIL image -> uint8 ``(3, size, size)`` with train-time augmentation.

        ``"none"``: the eval pipeline. ``"flip"``: timm's random resized crop and
        horizontal flip. ``"trivial"``/``"randaugment"``: that plus torchvision's
        TrivialAugmentWide/RandAugment (timm's RandAugment can posterize to 0 bits at full
        magnitude, which Pillow 13 rejects).
        """
        from timm.data.transforms_factory import transforms_imagenet_train
        from torchvision import transforms
        from torchvision.transforms import v2

        if augment not in AUGMENTS:
            raise DataError(f"augment must be one of {AUGMENTS}, but got augment={augment!r}.")
        if augment == "none":
            return self.eval_transform()
        primary, _, final = transforms_imagenet_train(
            img_size=self.size, scale=CROP_SCALE, color_jitter=None,
            interpolation=self.interpolation, mean=self.mean, std=self.std, normalize=False,
            separate=True)
        policy = {"flip": [], "trivial": [v2.TrivialAugmentWide()],
                  "randaugment": [v2.RandAugment()]}[augment]
        return transforms.Compose(list(primary.transforms) + policy + list(final.transforms))

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 3, S, S)`` on any device -> normalized float32."""
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1) * 255
        return (batch.float() - mean) / std


@dataclass(frozen=True)
class TextPreprocessing:
    """Tokenize with the backbone's tokenizer; truncate to ``max_length``, pad per batch."""

    tokenizer: str
    max_length: int
    modality: str = "text"

    def encode(self, texts: list[str]) -> list[dict[str, list[int]]]:
        """Token ids of each text, truncated, unpadded."""
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(f"Text inputs must be strings, but got {type(bad).__name__}: {bad!r}.")
        enc = load_tokenizer(self.tokenizer)(list(texts), truncation=True,
                                             max_length=self.max_length)
        keys = list(enc.keys())
        return [{k: enc[k][i] for k in keys} for i in range(len(texts))]

    def collate(self, encodings: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Pad a batch to its longest input (``DataCollatorWithPadding``)."""
        return dict(_collator(self.tokenizer)(encodings))

    def prepare(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Texts -> one padded batch of tensors."""
        return self.collate(self.encode(texts))

    def normalize(self, batch: Any) -> Any:
        return batch


@functools.lru_cache(maxsize=8)
def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


@functools.lru_cache(maxsize=8)
def _collator(source: str):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(load_tokenizer(source), return_tensors="pt")


Preprocessing = ImagePreprocessing | TextPreprocessing
