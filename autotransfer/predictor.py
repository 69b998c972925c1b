"""A trained model ready to predict on raw inputs, saved with its strategy."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import plugins
from .data import Dataset, to_uint8_images
from .errors import DataError, StorageError
from .model import TransferModel
from .preprocessing import ImagePreprocessing, Preprocessing, TextPreprocessing
from .runner import build_model
from .strategy import Strategy

FORMAT = "autotransfer-model/1"


class Predictor:
    """The model of one trial with its preprocessing and label decoding.

    Example:
        >>> model = study.load_best()                        # doctest: +SKIP
        >>> model.predict(images[:5])                        # doctest: +SKIP
        array([3, 8, 1, 0, 4])
        >>> model.save("digits.pt"); at.load("digits.pt")    # doctest: +SKIP
    """

    def __init__(self, model: TransferModel, strategy: Strategy, task: str, info: dict,
                 preprocessing: Preprocessing) -> None:
        self.model = model.eval()
        self.strategy, self.task, self.info = strategy, task, info
        self.preprocessing = preprocessing
        self.head = plugins.get_head(task)

    @property
    def classes(self) -> list | None:
        return self.info.get("classes")

    @torch.no_grad()
    def _outputs(self, inputs: Any, batch_size: int) -> torch.Tensor:
        raw = inputs.inputs if isinstance(inputs, Dataset) else inputs
        if isinstance(self.preprocessing, TextPreprocessing):
            raw = [raw] if isinstance(raw, str) else list(raw)
        elif not (isinstance(raw, list) and raw and isinstance(raw[0], torch.Tensor)):
            raw = to_uint8_images(raw)
        if len(raw) == 0:
            raise DataError("Nothing to predict: the inputs are empty.")
        x = self.preprocessing.prepare(raw)
        device = next(self.model.parameters()).device
        outs = []
        n = len(x) if not isinstance(x, dict) else len(next(iter(x.values())))
        for i in range(0, n, batch_size):
            xb = {k: v[i:i + batch_size].to(device) for k, v in x.items()} \
                if isinstance(x, dict) else x[i:i + batch_size].to(device)
            outs.append(self.model(self.preprocessing.normalize(xb)).float().cpu())
        return torch.cat(outs)

    def predict(self, inputs: Any, *, batch_size: int = 256) -> Any:
        """Predictions in the label space of the training data (class names, numbers)."""
        return self.head.decode(self._outputs(inputs, batch_size), self.info)

    def predict_proba(self, inputs: Any, *, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (classification: softmax; multilabel: per-label sigmoid)."""
        out = self._outputs(inputs, batch_size)
        if self.task == "classification":
            return torch.softmax(out, 1).numpy()
        if self.task == "multilabel":
            return torch.sigmoid(out).numpy()
        raise DataError(f"predict_proba applies to classification and multilabel, "
                        f"not {self.task!r}; use predict().")

    def save(self, path: str | Path) -> Path:
        """Save weights, strategy, task, labels and preprocessing to one file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, self.model.state_dict(), self.strategy, self.task, self.info,
                        self.preprocessing)
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> Predictor:
        """Load a file written by :meth:`save` (the backbone must be registered)."""
        path = Path(path)
        if not path.is_file():
            raise StorageError(f"Model file {str(path)!r} does not exist.")
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
            raise StorageError(f"{str(path)!r} is not an autotransfer model file ({FORMAT}).")
        strategy = Strategy.from_dict(ckpt["strategy"])
        # Architecture only: the saved state replaces every weight.
        model = build_model(strategy.replace(pretrained=False, l2sp=0.0), ckpt["task"],
                            ckpt["info"])
        model.freeze(strategy.frozen_groups)
        model.load_state_dict(ckpt["state_dict"])
        pre_cls = ImagePreprocessing if ckpt["preprocessing"]["modality"] == "image" \
            else TextPreprocessing
        pre_args = {k: tuple(v) if isinstance(v, list) else v
                    for k, v in ckpt["preprocessing"].items()}
        return cls(model.to(device), strategy, ckpt["task"], ckpt["info"], pre_cls(**pre_args))

    def __repr__(self) -> str:
        return f"Predictor(task={self.task!r}, strategy={self.strategy!r})"


def save_checkpoint(path: Path, state_dict: dict, strategy: Strategy, task: str, info: dict,
                    preprocessing: Preprocessing) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({
        "format": FORMAT, "strategy": strategy.to_dict(), "task": task, "info": info,
        "preprocessing": dataclasses.asdict(preprocessing), "state_dict": state_dict,
    }, tmp)
    tmp.replace(path)  # never a half-written checkpoint under the real name


def load(path: str | Path, *, device: str = "cpu") -> Predictor:
    """Load a saved model: ``at.load("model.pt").predict(inputs)``."""
    return Predictor.load(path, device=device)
