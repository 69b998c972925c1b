"""Backends turn a search job into trials: Optuna worker processes, or Ray Tune."""

from ._base import Backend
from ._job import SearchJob, TrialContext
from ._named import as_backend
from ._optuna import OptunaBackend
from ._ray import RayBackend

__all__ = ["Backend", "OptunaBackend", "RayBackend", "SearchJob", "TrialContext", "as_backend"]
