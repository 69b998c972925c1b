"""Backends turn a search job into trials: Optuna worker processes, or Ray Tune."""

from ._base import Backend, as_backend
from ._optuna import OptunaBackend
from ._ray import RayBackend

__all__ = ["Backend", "OptunaBackend", "RayBackend", "as_backend"]
