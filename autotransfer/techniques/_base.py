"""Technique: what a trial does beyond plain fine-tuning, as a plugin.

A technique acts on Strategy fields: those it declares itself (:attr:`Technique.fields`,
each made with the same :func:`~autotransfer.strategy.fields.spec` as the built-in ones),
or built-in ones whose table entry names it (``spec(..., technique="mixing")``). It acts
at named points of a trial where it is :meth:`~Technique.active`. A plugin registers it
through the ``register_techniques`` hook; the built-in techniques (adapters, layer decay,
L2-SP, label smoothing, mixup and CutMix, AdaBN, DANN) are such a plugin
(``autotransfer_plugins.techniques``).

The points, in the order a trial reaches them (:mod:`autotransfer.training`):

1. :meth:`~Technique.start` once, with the :class:`~autotransfer.techniques.Trial` it acts in;
2. :meth:`~Technique.build` the model, after freezing;
3. :meth:`~Technique.param_groups` the optimizer's parameter groups;
4. on each training batch: :meth:`~Technique.batch` (inputs and targets, when the inputs
   run through the whole model), :meth:`~Technique.embed` (the body's forward),
   :meth:`~Technique.criterion` (once: the training loss) and :meth:`~Technique.loss`
   (an extra term), then :meth:`~Technique.step` beside the optimizer's;
5. :meth:`~Technique.epoch_end` after each epoch's training steps, and
   :meth:`~Technique.validation` around each validation.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

from ..strategy import fields as table
from ..strategy.fields import off_of
from ..strategy.strategy import Strategy


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
    #: ``{field name: spec(...)}``: the Strategy fields it declares.
    fields: dict[str, Any] = {}
    #: Runs before techniques of a higher order (the built-in adapters: -10; default 0).
    order: int = 0
    #: Training batches must be an even size (mixing pairs a batch with its flip).
    even_batches: bool = False

    def off_values(self) -> dict[str, Any]:
        """``{field: the value that switches it off}``: its own fields, and the built-in
        ones whose table entry names it (its default without an off value)."""
        own = {n: off_of(f) for n, f in self.fields.items()}
        return {**{f.name: off_of(f) for f in table.table(Strategy)
                   if f.metadata.get("technique") == self.name}, **own}

    def active(self, strategy: Any) -> bool:
        """Whether it acts in a trial of ``strategy``: one of its fields is not at its off
        value (a technique without fields always acts)."""
        off = self.off_values()
        return not off or any(getattr(strategy, n) != v for n, v in off.items())

    def start(self, trial: Any) -> Technique:
        """Once per trial, before anything is built: the object whose hooks act in it.
        A technique that keeps per-trial state returns a copy holding it (:meth:`copy`);
        it may raise :class:`~autotransfer.StrategyError` if the trial lacks what it needs."""
        return self

    def live(self, strategy: Any) -> str | None:
        """Why the inputs must pass through the whole model on every batch (the frozen
        prefix's outputs cannot be read from the feature cache), or None. By default: when
        it overrides :meth:`batch` or :meth:`embed`."""
        mine = type(self)
        if mine.batch is not Technique.batch or mine.embed is not Technique.embed:
            return f"no ({self.name})"
        return None

    def build(self, model: Any, strategy: Any) -> None:
        """Change the model (a :class:`~autotransfer.TransferModel`) after freezing and the
        techniques of a lower :attr:`order`: add modules, change what trains
        (``requires_grad``)."""

    def param_groups(self, groups: list[dict[str, Any]], model: Any,
                     strategy: Any) -> list[dict[str, Any]] | None:
        """The optimizer's parameter groups (dicts with ``params``, ``lr``,
        ``weight_decay``, ``name``; the body's also ``layer``, its layer group's index,
        and ``layers``, their count), changed; None keeps them."""
        return None

    def batch(self, inputs: Any, targets: Any, strategy: Any) -> tuple[Any, Any] | None:
        """A training batch's model inputs and targets, changed (e.g. mixed), or None."""
        return None

    def embed(self, model: Any, inputs: Any, strategy: Any) -> tuple[Any, Any] | None:
        """The body's features for a training batch and an extra loss term, in place of
        ``model.embed(inputs)``, or None (the first technique to answer wins)."""
        return None

    def criterion(self, criterion: Callable, strategy: Any) -> Callable | None:
        """The training loss ``f(outputs, targets)`` in place of ``criterion``, or None."""
        return None

    def loss(self, model: Any, features: Any, outputs: Any, targets: Any,
             strategy: Any) -> Any:
        """An extra loss term for a training batch, or None. ``features`` are the body's
        pooled output (what the head reads), ``outputs`` the head's, ``targets`` the
        batch's (soft ones under mixup or CutMix). It runs under the trial's autocast."""
        return None

    def step(self, scaler: Any) -> None:
        """After the backward pass, beside the optimizer's step: step optimizers of its own
        through ``scaler`` (``torch.amp.GradScaler``) and zero their gradients."""

    def epoch_end(self, model: Any, epoch: int, strategy: Any) -> None:
        """After epoch ``epoch``'s training steps (1-based), before it is validated."""

    def validation(self, model: Any, strategy: Any) -> contextlib.AbstractContextManager:
        """A context each validation runs in (and the kept weights are read in)."""
        return contextlib.nullcontext()

    def copy(self) -> Technique:
        """A shallow copy, for :meth:`start` to keep one trial's state on."""
        return copy.copy(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

