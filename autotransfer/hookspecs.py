"""The hooks a plugin can implement. Each receives a ``register`` callable."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("autotransfer")
hookimpl = pluggy.HookimplMarker("autotransfer")


@hookspec
def register_backbones(register):
    """Register backbones by calling ``register(backbone)`` for each."""


@hookspec
def register_heads(register):
    """Register task heads by calling ``register(head)`` for each."""


@hookspec
def register_techniques(register):
    """Register techniques (``autotransfer.techniques.Technique``) by calling ``register(t)``."""
