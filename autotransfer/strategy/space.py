"""SearchSpace: typed ranges for every Strategy field, sampled define-by-run.

Each field is a :class:`Float`, :class:`Int`, :class:`Categorical` or a fixed value. The
range of ``frozen_groups`` depends on the backbone a trial picked, and some fields only
apply to some trials (augmentation to images, mixup and CutMix to image classification,
drop-path to backbones that support it, label smoothing to classification), which is
why sampling is define-by-run. ``loss_weight`` is drawn once per non-primary task of a
multi-task study (Optuna params ``loss_weight.<column>``) into ``Strategy.loss_weights``.

Example:
    >>> space = SearchSpace(frozen_groups=0, lr=(1e-4, 1e-2))  # fix one, narrow another
    >>> space.lr
    Float(low=0.0001, high=0.01, log=True)
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import field, make_dataclass
from typing import Any

from ..backbones import NONE_ONLY
from ..errors import ConfigError, StrategyError, UnknownNameError
from . import declared, fields
from .fields import Categorical, Dim, Float, Int, Where
from .strategy import Strategy

MAX_CHOICES = 1000  # values in one categorical field: each trial stores the whole list

# The search defaults are the field table's (after Quick-Tune's space, Arango et al., 2024,
# kept small enough for small budgets), plus a loss weight per non-primary task.
FIELDS = tuple(fields.searchable(Strategy))  # the Strategy fields a space holds
PER_TASK = ("loss_weight",)  # sampled once per non-primary task into Strategy.loss_weights
_DEFAULTS: dict[str, Dim] = {
    **{n: fields.entry(Strategy, n).metadata["search"] for n in FIELDS},
    "loss_weight": Float(0.1, 10.0, log=True),  # see autotransfer.heads.multitask
}


class _Space:
    """The ranges searched for each Strategy field (all but ``backbone`` and ``pretrained``).

    Give a field a value to fix it, a ``(low, high)`` tuple to narrow it (log scale kept for
    ``lr``), a list for a categorical choice, or a :class:`Float`/:class:`Int`/
    :class:`Categorical`. Every bound is checked against what a Strategy accepts. The
    fields and their defaults come from the field table (:mod:`autotransfer.strategy.fields`).
    A registered technique's fields are searched too, over their ``spec`` search range
    unless given here (``SearchSpace(bss=[0.0, 0.01])``); ``extra`` keeps the given ones.
    """

    def __post_init__(self) -> None:
        for name in FIELDS + PER_TASK:
            object.__setattr__(self, name, _checked(name, getattr(self, name)))
        given = declared.as_pairs(self.extra, ConfigError, "SearchSpace")
        known = fields.plugin_fields() if given else {}
        for name in given:
            if name not in known or known[name].metadata["search"] is fields.NOT_SEARCHED:
                raise UnknownNameError("SearchSpace field", str(name),
                                       list(FIELDS + PER_TASK) + _plugin_searched())
        object.__setattr__(self, "extra", tuple(sorted(
            (n, _checked(n, d)) for n, d in given.items())))

    def __getattr__(self, name: str) -> Dim:
        """A technique field's range: given here, else its ``spec`` search range."""
        if name.startswith("_") or name == "extra":  # not one (pickle, copy, ...)
            raise AttributeError(name)
        dims = self.plugin_dims()
        if name not in dims:
            raise AttributeError(f"'SearchSpace' object has no attribute {name!r}")
        return dims[name]

    def plugin_dims(self) -> dict[str, Dim]:
        """``{field: range}`` of the registered techniques' searched fields, by name."""
        given = dict(self.__dict__.get("extra", ()))
        return {n: given.get(n, fields.entry(Strategy, n).metadata["search"])
                for n in _plugin_searched()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SearchSpace:
        """From plain data (a TOML table): ``[lo, hi]`` narrows, ``{choices=[...]}`` chooses."""
        accepted = list(FIELDS + PER_TASK) + _plugin_searched()
        unknown = sorted(set(values) - set(accepted))
        if unknown:
            raise ConfigError(f"Unknown search space field(s) {unknown}; accepted: "
                              f"{accepted}.")
        out = {}
        for k, v in values.items():
            if isinstance(v, dict):
                if set(v) != {"choices"} or not isinstance(v["choices"], list):
                    raise ConfigError(f"Search space {k}={v!r}: a table must be "
                                      f"{{choices = [...]}}, a list of values to choose from.")
                v = Categorical(tuple(v["choices"]))
            elif isinstance(v, list) and len(v) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in v
            ):
                v = tuple(v)
            out[k] = v
        return cls(**out)

    def searched(self) -> list[str]:
        """The fields that are sampled rather than fixed."""
        return [n for n in FIELDS + PER_TASK + tuple(self.plugin_dims())
                if n == "frozen_groups" and getattr(self, n) is None
                or isinstance(getattr(self, n), (Float, Int, Categorical))]

    def sample(self, trial: Any, backbone: str, n_groups: int, *, modality: str, task: str,
               supports_drop_path: bool, adapters: tuple[str, ...] = NONE_ONLY,
               domain: tuple[str, ...] = ()) -> Strategy:
        """Ask ``trial`` (an ``optuna.Trial``) for one Strategy on ``backbone``; ``domain``
        names the domain-adaptation fields that apply (``search(..., unlabeled=)``)."""
        values: dict[str, Any] = {}
        for name in FIELDS:
            dim = getattr(self, name)
            if name == "frozen_groups":
                dim = Int(0, n_groups) if dim is None else dim
                check_frozen_range(dim, backbone, n_groups)
            if not _applies(name, modality, task, supports_drop_path, adapters, values,
                            domain):
                values[name] = _neutral(name, dim)
                continue
            values[name] = _suggest(trial, name, dim)
        for name, dim in self.plugin_dims().items():  # technique fields, after the table's
            applies = _applies(name, modality, task, supports_drop_path, adapters, values,
                               domain)
            values[name] = _suggest(trial, name, dim) if applies else _neutral(name, dim)
        values["loss_weights"] = _loss_weights(trial, self.loss_weight, task)
        return Strategy(backbone=backbone, **values)

    def base_strategy(self, backbone: str) -> Strategy:
        """The fixed fields of this space, Strategy defaults for the searched ones."""
        searched = self.searched()
        fixed = {n: getattr(self, n) for n in FIELDS + tuple(self.plugin_dims())
                 if n not in searched}
        return Strategy(backbone=backbone, **fixed)

    def params_for(self, values: dict[str, Any], n_groups: int, *, modality: str, task: str,
                   supports_drop_path: bool, adapters: tuple[str, ...] = NONE_ONLY,
                   domain: tuple[str, ...] = ()) -> dict[str, Any]:
        """The entries of ``values`` this space searches for such a trial, in range, as params.

        Enqueuing them makes :meth:`sample` return those values, so a baseline or a
        portfolio point is also a point the sampler learns from; the rest are sampled.
        """
        out = {}
        for name in self.searched():
            if name not in values or not _applies(name, modality, task, supports_drop_path,
                                                  adapters, values, domain):
                continue
            dim = getattr(self, name)
            dim = Int(0, n_groups) if name == "frozen_groups" and dim is None else dim
            if _contains(dim, values[name]):
                out[name] = values[name]
        if "loss_weights" in values and "loss_weight" in self.searched():  # 1: equal weights
            given = dict(Strategy("_", loss_weights=values["loss_weights"]).loss_weights)
            for param, t in _weight_params(task):
                if _contains(self.loss_weight, given.get(t, 1.0)):
                    out[param] = given.get(t, 1.0)
        return out

    def record(self, trial: Any, params: dict[str, Any], n_groups: int) -> None:
        """Suggest exactly ``params`` (enqueued values) so the trial lists them."""
        for name in params:
            dim = self.loss_weight if name.startswith("loss_weight.") else getattr(self, name)
            dim = Int(0, n_groups) if name == "frozen_groups" and dim is None else dim
            _suggest(trial, name, dim)

    def to_dict(self) -> dict[str, Any]:
        return {**{n: _show(getattr(self, n)) for n in FIELDS + PER_TASK},
                **{n: _show(d) for n, d in self.plugin_dims().items()}}


def check_frozen_range(dim: Dim, backbone: str, n_groups: int) -> None:
    lo, hi = (dim.low, dim.high) if isinstance(dim, Int) else (
        (min(dim.choices), max(dim.choices)) if isinstance(dim, Categorical) else (dim, dim))
    if hi > n_groups:
        raise ConfigError(
            f"SearchSpace frozen_groups={_show(dim)} reaches {hi}, but backbone {backbone!r} "
            f"has {n_groups} layer groups; accepted: 0..{n_groups}."
        )
    del lo


def _plugin_searched() -> list[str]:
    """The registered technique fields a space searches, by name."""
    return sorted(n for n, f in fields.plugin_fields().items()
                  if f.metadata["search"] is not fields.NOT_SEARCHED)


def _checked(name: str, value: Any) -> Dim:
    """A space field's value as a range or fixed value, each point one a Strategy takes."""
    dim = _normalize(name, value)
    for point in _endpoints(dim):
        if name == "frozen_groups" and dim is None:
            continue  # the trial's backbone decides: Int(0, its groups)
        try:
            Strategy("_", **_as_fields(name, point))
        except StrategyError as exc:
            raise ConfigError(f"SearchSpace {name}={_show(dim)} is out of range: {exc}") \
                from None
    if isinstance(dim, Float) and dim.log and dim.low <= 0:
        raise ConfigError(f"SearchSpace {name}={_show(dim)}: a log range needs low > 0.")
    return dim


def _applies(name: str, modality: str, task: str, supports_drop_path: bool,
             adapters: tuple[str, ...], values: dict[str, Any],
             domain: tuple[str, ...] = ()) -> bool:
    """Whether field ``name`` means anything for such a trial (``values``: those chosen
    so far, in FIELDS order): the field table's ``when``."""
    return fields.applies(Strategy, name, Where(modality, task, supports_drop_path, adapters,
                                                values, domain))


def _weight_params(task: Any) -> list[tuple[str, str]]:
    """``(Optuna param, task)`` per loss weight a study searches: one per task of a
    multi-task study but the first (the primary, whose weight stays 1)."""
    from collections.abc import Mapping

    if not isinstance(task, Mapping):
        return []
    return [(f"loss_weight.{t}", t) for t in list(task)[1:]]


def _loss_weights(trial: Any, dim: Dim, task: Any) -> dict[str, float]:
    return {t: _suggest(trial, p, dim) for p, t in _weight_params(task)}


def _as_fields(name: str, value: Any) -> dict[str, Any]:
    """The Strategy fields a space field's value sets (to check it against the Strategy)."""
    return {"loss_weights": {"_": value}} if name == "loss_weight" else {name: value}


def _neutral(name: str, dim: Dim) -> Any:
    """The off value of a field that does not apply to this trial."""
    return fields.off_value(Strategy, name)


def _suggest(trial: Any, name: str, dim: Dim) -> Any:
    if isinstance(dim, Float):
        return trial.suggest_float(name, dim.low, dim.high, log=dim.log)
    if isinstance(dim, Int):
        return trial.suggest_int(name, dim.low, dim.high)
    if isinstance(dim, Categorical):
        return trial.suggest_categorical(name, list(dim.choices))
    return dim


def _contains(dim: Dim, value: Any) -> bool:
    """Whether ``value`` (a recorded strategy's: None for a default image size, say) is a
    point of ``dim`` that Optuna would take as enqueued."""
    if isinstance(dim, (Float, Int)):
        kind = numbers.Integral if isinstance(dim, Int) else numbers.Real
        return isinstance(value, kind) and not isinstance(value, bool) \
            and dim.low <= value <= dim.high
    if isinstance(dim, Categorical):
        return value in dim.choices
    return False


def _normalize(name: str, value: Any) -> Dim:
    if isinstance(value, (Float, Int, Categorical)):
        dim = value
    elif isinstance(value, tuple):
        if len(value) != 2 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                      for v in value):
            raise ConfigError(f"SearchSpace {name}={value!r}: a range must be a (low, high) "
                              f"tuple of numbers; give a value to fix it or a list to choose "
                              f"from.")
        lo, hi = value
        if lo > hi:
            raise ConfigError(f"SearchSpace {name}={value!r}: low must be <= high.")
        default = _DEFAULTS[name] if name in _DEFAULTS else \
            fields.entry(Strategy, name).metadata["search"]  # a technique's field
        if isinstance(lo, int) and isinstance(hi, int) and not isinstance(default, Float):
            dim = Int(lo, hi)
        else:
            dim = Float(float(lo), float(hi), log=isinstance(default, Float) and default.log)
    elif isinstance(value, list):
        if not value:
            raise ConfigError(f"SearchSpace {name}=[]: give at least one choice.")
        dim = Categorical(tuple(value))
    else:
        return value
    if isinstance(dim, (Float, Int)) and dim.low > dim.high:
        raise ConfigError(f"SearchSpace {name}={_show(dim)}: low must be <= high.")
    if isinstance(dim, Categorical) and not 1 <= len(dim.choices) <= MAX_CHOICES:
        raise ConfigError(f"SearchSpace {name} has {len(dim.choices)} choices; give 1 to "
                          f"{MAX_CHOICES} (each trial stores the list), or a (low, high) range.")
    return dim


def _endpoints(dim: Dim) -> list[Any]:
    if isinstance(dim, (Float, Int)):
        return [dim.low, dim.high]
    if isinstance(dim, Categorical):
        return list(dim.choices)
    return [dim]


def _show(dim: Dim) -> Any:
    if isinstance(dim, (Float, Int)):
        return [dim.low, dim.high]
    if isinstance(dim, Categorical):
        return {"choices": list(dim.choices)}
    return dim


SearchSpace = declared.routes(_plugin_searched, ConfigError)(make_dataclass(
    "SearchSpace", [*((n, Dim, field(default=_DEFAULTS[n])) for n in FIELDS + PER_TASK),
                    ("extra", tuple, field(default=()))],
    bases=(_Space,), frozen=True, namespace={"__module__": __name__, "__doc__": _Space.__doc__}))


def reserved() -> set[str]:
    """The names a technique's field may not take: those Strategy and SearchSpace use."""
    return {f.name for f in dataclasses.fields(Strategy)} | set(dir(Strategy)) \
        | {f.name for f in dataclasses.fields(SearchSpace)} | set(dir(SearchSpace))
