"""The Head interface: the task's output layer, its loss, its metrics.

A head sits on top of the backbone's features and is never part of its layer groups, so
freezing every group still trains the head. Concrete heads (classification, regression,
multilabel) are a first-party plugin in ``plugins/``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from torch import nn


class Head(ABC):
    """A task: output layer, loss, metrics, and how labels become targets.

    Attributes:
        name: The task name users pass as ``task=``.
        metric: The primary validation metric (what the search optimizes).
        direction: ``"maximize"`` or ``"minimize"`` for ``metric``.
    """

    name: str
    metric: str
    direction: str = "maximize"

    @abstractmethod
    def encode(self, labels: Any, info: dict | None = None) -> tuple[torch.Tensor, dict]:
        """Check labels fit the task; return targets and ``info`` (classes, scales).

        With ``info`` from the training labels, encode validation labels the same way.
        """

    @abstractmethod
    def n_outputs(self, info: dict) -> int:
        """Size of the output layer."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, *,
             label_smoothing: float = 0.0) -> torch.Tensor:
        """Training loss of a batch."""

    @abstractmethod
    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor, info: dict) -> dict[str, float]:
        """Validation metrics over the whole validation set; includes ``self.metric``."""

    def metric_value(self, outputs: torch.Tensor, targets: torch.Tensor, info: dict) -> float:
        """``self.metric`` alone: a test score's bootstrap computes it hundreds of times, so
        a head whose :meth:`metrics` computes more may override this with the cheap part."""
        return self.metrics(outputs, targets, info)[self.metric]

    def combine(self, outputs: list[torch.Tensor], info: dict) -> torch.Tensor:
        """Several models' outputs on the same inputs as one model's (an ensemble's): the
        mean here (regression's standardized targets); heads whose outputs are logits
        average what the logits mean (probabilities) and return logits of that mean."""
        return torch.stack(outputs).mean(0)

    @abstractmethod
    def decode(self, outputs: torch.Tensor, info: dict) -> np.ndarray:
        """Model outputs -> predictions in the user's label space."""

    def build(self, in_features: int, info: dict, *, dropout: float = 0.0) -> nn.Module:
        """The output module (dropout, then a linear layer)."""
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, self.n_outputs(info)))

    def configured(self, strategy: Any, info: dict) -> Head:
        """The head as one trial trains it (``info`` from its training labels). A head whose
        loss depends on the strategy returns a configured copy (the multi-task head's loss
        weights); a single task has no loss weights to take."""
        if getattr(strategy, "loss_weights", ()):
            from ..errors import StrategyError

            raise StrategyError(f"loss_weights weigh the tasks of a multi-task study, but "
                                f"task {self.name!r} is one task; use loss_weights={{}}.")
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, metric={self.metric!r})"
