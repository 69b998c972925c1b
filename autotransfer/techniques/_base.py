"""Technique: what a trial does beyond plain fine-tuning, as a plugin.

A technique declares Strategy fields (:attr:`Technique.fields`, each made with the same
:func:`~autotransfer.strategy.fields.spec` as the built-in ones) and acts at named points of
a trial where it is :meth:`~Technique.active`. A plugin registers it through the
``register_techniques`` hook; the search then samples its fields, records them with each
trial, and the leaderboard and report show those declared with ``column=True``.

The points, in the order a trial reaches them (:mod:`autotransfer.training`):

1. :meth:`~Technique.build` the model, after freezing and adapters;
2. :meth:`~Technique.param_groups` the optimizer's parameter groups;
3. :meth:`~Technique.loss` an extra loss term on every training batch;
4. :meth:`~Technique.epoch_end` after each epoch's training steps, before validation.
"""

from __future__ import annotations

from typing import Any

from .. import plugins
from ..strategy.fields import off_of


class Technique:
    """A technique: subclass it, set :attr:`name` and :attr:`fields`, override the hooks
    it needs (each defaults to doing nothing).

    Example:
        >>> from autotransfer.techniques import Categorical, Technique, spec
        >>> class Sharpen(Technique):
        ...     name = "sharpen"
        ...     fields = {"sharpen": spec(0.0, accepts=lambda v: v >= 0, accepted=">= 0",
        ...                               search=Categorical((0.0, 0.1)), off=0.0)}
        >>> Sharpen().off_values()
        {'sharpen': 0.0}
    """

    name: str = ""
    #: ``{field name: spec(...)}``: the Strategy fields it declares (none: always active).
    fields: dict[str, Any] = {}

    def off_values(self) -> dict[str, Any]:
        """``{field: the value that switches it off}`` (its default without an off value)."""
        return {n: off_of(f) for n, f in self.fields.items()}

    def active(self, strategy: Any) -> bool:
        """Whether it acts in a trial of ``strategy``: some field is not at its off value."""
        off = self.off_values()
        return not off or any(getattr(strategy, n) != v for n, v in off.items())

    def build(self, model: Any, strategy: Any) -> None:
        """Change the model (a :class:`~autotransfer.TransferModel`) after freezing and
        adapters: add modules, change what trains (``requires_grad``)."""

    def param_groups(self, groups: list[dict[str, Any]], model: Any,
                     strategy: Any) -> list[dict[str, Any]] | None:
        """The optimizer's parameter groups (dicts with ``params``, ``lr``,
        ``weight_decay``, ``name``), changed; None keeps them."""
        return None

    def loss(self, model: Any, features: Any, outputs: Any, targets: Any,
             strategy: Any) -> Any:
        """An extra loss term for a training batch, or None. ``features`` are the body's
        pooled output (what the head reads), ``outputs`` the head's, ``targets`` the
        batch's (soft ones under mixup or CutMix). It runs under the trial's autocast."""
        return None

    def epoch_end(self, model: Any, epoch: int, strategy: Any) -> None:
        """After epoch ``epoch``'s training steps (1-based), before it is validated."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def active(strategy: Any) -> list[Technique]:
    """The registered techniques active in a trial of ``strategy``, in registration order."""
    return [t for t in plugins.technique_registry().values() if t.active(strategy)]
