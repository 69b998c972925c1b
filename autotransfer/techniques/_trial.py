"""A trial's techniques: the registered ones active for its strategy, started on the
:class:`Trial`, and each point of the trial calling their hooks in order
(:class:`Started`)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import plugins
from ..errors import ConfigError, StrategyError
from ..log import get_logger
from ..strategy import fields
from ..strategy.space import _DEFAULTS, Categorical, Float, Int
from ..strategy.strategy import Strategy
from ._base import Technique

BUILT_IN = "autotransfer_plugins.techniques"  # the plugin registering the built-in ones
logger = get_logger(__name__)


@dataclass
class Trial:
    """What a technique sees of the trial it acts in (:meth:`Technique.start`).

    Attributes:
        strategy, model: The trial's Strategy and :class:`~autotransfer.TransferModel`.
        head, info: The task's head and the label encoding (classes, scales).
        device: The ``torch.device`` it trains on.
        steps: The optimizer updates it plans (epochs x steps per epoch).
        batch_size: Its training batch size.
        unlabeled: Unlabeled target inputs (``search(..., unlabeled=)``), or None.
        preprocessing: How raw inputs become model inputs (the backbone's).
        generator: The trial's seeded random generator (shuffling).
        inputs: A raw batch (as a loader yields it) made model inputs on the device.
        forward: The whole model's forward on such a raw batch, under the trial's autocast.
        data: The trial's readied data (:class:`~autotransfer.data.pipeline.Prepared`):
            its training inputs are the source domain (AdaBN's source statistics), or None.
    """

    strategy: Any
    model: Any
    head: Any = None
    info: dict | None = None
    device: Any = "cpu"
    steps: int = 1
    batch_size: int = 32
    unlabeled: Any = None
    preprocessing: Any = None
    generator: Any = None
    inputs: Callable[[Any], Any] | None = None
    forward: Callable[[Any], Any] | None = None
    data: Any = None


def active(strategy: Any) -> list[Technique]:
    """The registered techniques active in a trial of ``strategy``, by
    :attr:`~Technique.order`, then registration order. A built-in field that is on while
    no registered technique acts on it is refused (its plugin did not load)."""
    registry = plugins.technique_registry()
    for f in fields.table(Strategy):
        name = f.metadata.get("technique")
        if name and name not in registry and getattr(strategy, f.name) != fields.off_of(f):
            raise StrategyError(
                f"{f.name}={getattr(strategy, f.name)!r} needs the technique {name!r}, which "
                f"no loaded plugin registers (the built-in techniques are the plugin "
                f"{BUILT_IN!r}: at.register_plugin({BUILT_IN!r}), or unset "
                f"AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD); or use "
                f"{f.name}={fields.off_of(f)!r}.")
    return sorted((t for t in registry.values() if t.active(strategy)), key=lambda t: t.order)


class Started:
    """The techniques acting in one trial, started; each method is a point of the trial."""

    def __init__(self, trial: Trial, techniques: list[Technique] | None = None) -> None:
        self.strategy: Strategy = trial.strategy
        chosen = active(trial.strategy) if techniques is None else techniques
        self.techniques = [t.start(trial) for t in chosen]

    def __iter__(self) -> Iterator[Technique]:
        return iter(self.techniques)

    def live(self) -> str | None:
        """Why the inputs must run through the whole model on every batch, or None."""
        return next((r for t in self.techniques if (r := t.live(self.strategy))), None)

    def build(self, model: Any) -> None:
        for t in self.techniques:
            t.build(model, self.strategy)
        if self.techniques:
            model.mark_frozen()  # a technique may have changed what trains

    def param_groups(self, groups: list[dict[str, Any]], model: Any) -> list[dict[str, Any]]:
        for t in self.techniques:
            groups = t.param_groups(groups, model, self.strategy) or groups
        return groups

    def batch(self, inputs: Any, targets: Any) -> tuple[Any, Any]:
        for t in self.techniques:
            inputs, targets = t.batch(inputs, targets, self.strategy) or (inputs, targets)
        return inputs, targets

    def embed(self, model: Any, inputs: Any) -> tuple[Any, Any]:
        """The body's features and an extra loss term (0.0 when no technique adds one)."""
        for t in self.techniques:
            out = t.embed(model, inputs, self.strategy)
            if out is not None:
                return out
        return model.embed(inputs), 0.0

    def criterion(self, base: Callable) -> Callable:
        for t in self.techniques:
            base = t.criterion(base, self.strategy) or base
        return base

    def loss(self, model: Any, features: Any, outputs: Any, targets: Any) -> Any:
        """The techniques' extra loss terms for a batch (0.0: none)."""
        total: Any = 0.0
        for t in self.techniques:
            term = t.loss(model, features, outputs, targets, self.strategy)
            if term is not None:
                total = total + term
        return total

    def step(self, scaler: Any) -> None:
        for t in self.techniques:
            t.step(scaler)

    def epoch_end(self, model: Any, epoch: int) -> None:
        for t in self.techniques:
            t.epoch_end(model, epoch, self.strategy)

    @contextlib.contextmanager
    def validation(self, model: Any) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for t in self.techniques:
                stack.enter_context(t.validation(model, self.strategy))
            yield


def fit_space(space: Any, progress: bool = True) -> Any:
    """The space a search runs when a built-in technique's plugin is not loaded: its
    fields stay off (said once); a space that asks for them explicitly is refused."""
    registry, changes = plugins.technique_registry(), {}
    for f in fields.table(Strategy):
        name, dim = f.metadata.get("technique"), getattr(space, f.name, None)
        if not name or name in registry or f.name not in _DEFAULTS:
            continue
        off = fields.off_of(f)
        values = dim.choices if isinstance(dim, Categorical) else \
            (dim.low, dim.high) if isinstance(dim, (Float, Int)) else (dim,)
        if all(v == off for v in values):
            continue
        if dim != _DEFAULTS[f.name]:
            raise ConfigError(f"SearchSpace {f.name}={dim!r} needs the technique {name!r}, "
                              f"which no loaded plugin registers (the built-in techniques "
                              f"are the plugin {BUILT_IN!r}: at.register_plugin({BUILT_IN!r})"
                              f"); or fix {f.name}={off!r}.")
        changes[f.name] = off
    if changes and progress:
        logger.warning(
            f"the built-in techniques' plugin {BUILT_IN!r} is not loaded, so the search "
            f"leaves {', '.join(changes)} off (at.register_plugin({BUILT_IN!r}) adds them)")
    return dataclasses.replace(space, **changes) if changes else space
