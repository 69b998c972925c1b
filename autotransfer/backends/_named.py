"""A backend given by name ("optuna", "ray") or as an object."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ._base import Backend
from ._optuna import OptunaBackend
from ._ray import RayBackend


def as_backend(backend: Any) -> Backend:
    """A Backend from an instance or a name ("optuna", "ray")."""
    if isinstance(backend, Backend):
        return backend
    names = {"optuna": OptunaBackend, "ray": RayBackend}
    if isinstance(backend, str) and backend in names:
        return names[backend]()
    raise ConfigError(f"backend must be 'optuna', 'ray', or a Backend such as "
                      f"at.OptunaBackend(devices=2) or at.RayBackend(address=...), but got "
                      f"backend={backend!r}.")
