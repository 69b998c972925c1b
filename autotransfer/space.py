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

import numbers
from dataclasses import dataclass, field
from typing import Any

from .adapters import ADAPTERS, NONE_ONLY
from .errors import ConfigError, StrategyError, known_fields
from .strategy import Strategy


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Int:
    low: int
    high: int


@dataclass(frozen=True)
class Categorical:
    choices: tuple


Dim = Any  # Float | Int | Categorical | a fixed value
MAX_CHOICES = 1000  # values in one categorical field: each trial stores the whole list

# Defaults after Quick-Tune's space (Arango et al., 2024), kept small enough for small budgets.
_DEFAULTS: dict[str, Dim] = {
    "frozen_groups": None,  # Int(0, G) for the trial's backbone
    "lr": Float(1e-5, 1e-2, log=True),
    "layer_decay": Float(0.65, 1.0),
    "weight_decay": Float(0.0, 0.1),
    "dropout": Float(0.0, 0.4),
    "drop_path": Float(0.0, 0.2),
    "label_smoothing": Float(0.0, 0.1),
    "mixup": Categorical((0.0, 0.2, 0.4, 1.0)),  # Beta alpha; 0 keeps the prefix cacheable
    "cutmix": Categorical((0.0, 0.25, 1.0)),
    "augment": Categorical(("none", "flip", "trivial", "randaugment")),
    "l2sp": Float(0.0, 0.1),
    "optimizer": "adamw",
    "batch_size": 32,
    "epochs": 10,
    "warmup": 0.1,
    "grad_clip": 1.0,
    "image_size": None,
    "max_length": None,
    "adapter": Categorical(ADAPTERS),  # backbones they apply to; see autotransfer.adapters
    "lora_rank": Categorical((4, 8, 16, 32)),  # with adapter="lora"
    "adabn": Categorical((False, True)),  # with unlabeled target data and BatchNorm
    "dann": Categorical((0.0, 0.03, 0.1, 0.3, 1.0)),  # with unlabeled target data
    "loss_weight": Float(0.1, 10.0, log=True),  # per non-primary task: autotransfer.multitask
}
PER_TASK = ("loss_weight",)  # sampled once per non-primary task into Strategy.loss_weights
FIELDS = tuple(n for n in _DEFAULTS if n not in PER_TASK)  # the Strategy fields


def _default(name: str) -> Any:
    return field(default=_DEFAULTS[name])


@known_fields
@dataclass(frozen=True)
class SearchSpace:
    """The ranges searched for each Strategy field (all but ``backbone`` and ``pretrained``).

    Give a field a value to fix it, a ``(low, high)`` tuple to narrow it (log scale kept for
    ``lr``), a list for a categorical choice, or a :class:`Float`/:class:`Int`/
    :class:`Categorical`. Every bound is checked against what a Strategy accepts.
    """

    frozen_groups: Dim = _default("frozen_groups")
    lr: Dim = _default("lr")
    layer_decay: Dim = _default("layer_decay")
    weight_decay: Dim = _default("weight_decay")
    dropout: Dim = _default("dropout")
    drop_path: Dim = _default("drop_path")
    label_smoothing: Dim = _default("label_smoothing")
    mixup: Dim = _default("mixup")
    cutmix: Dim = _default("cutmix")
    augment: Dim = _default("augment")
    l2sp: Dim = _default("l2sp")
    optimizer: Dim = _default("optimizer")
    batch_size: Dim = _default("batch_size")
    epochs: Dim = _default("epochs")
    warmup: Dim = _default("warmup")
    grad_clip: Dim = _default("grad_clip")
    image_size: Dim = _default("image_size")
    max_length: Dim = _default("max_length")
    adapter: Dim = _default("adapter")
    lora_rank: Dim = _default("lora_rank")
    adabn: Dim = _default("adabn")
    dann: Dim = _default("dann")
    loss_weight: Dim = _default("loss_weight")

    def __post_init__(self) -> None:
        for name in FIELDS + PER_TASK:
            dim = _normalize(name, getattr(self, name))
            object.__setattr__(self, name, dim)
            for value in _endpoints(dim):
                if name == "frozen_groups" and dim is None:
                    continue  # the trial's backbone decides: Int(0, its groups)
                try:
                    Strategy("_", **_as_fields(name, value))
                except StrategyError as exc:
                    raise ConfigError(f"SearchSpace {name}={_show(dim)} is out of range: {exc}") \
                        from None
            if isinstance(dim, Float) and dim.log and dim.low <= 0:
                raise ConfigError(f"SearchSpace {name}={_show(dim)}: a log range needs low > 0.")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SearchSpace:
        """From plain data (a TOML table): ``[lo, hi]`` narrows, ``{choices=[...]}`` chooses."""
        unknown = sorted(set(values) - set(FIELDS + PER_TASK))
        if unknown:
            raise ConfigError(f"Unknown search space field(s) {unknown}; accepted: "
                              f"{list(FIELDS + PER_TASK)}.")
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
        return [n for n in FIELDS + PER_TASK if n == "frozen_groups" and getattr(self, n) is None
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
        values["loss_weights"] = _loss_weights(trial, self.loss_weight, task)
        return Strategy(backbone=backbone, **values)

    def base_strategy(self, backbone: str) -> Strategy:
        """The fixed fields of this space, Strategy defaults for the searched ones."""
        fixed = {n: getattr(self, n) for n in FIELDS if n not in self.searched()}
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
        return {n: _show(getattr(self, n)) for n in FIELDS + PER_TASK}


def check_frozen_range(dim: Dim, backbone: str, n_groups: int) -> None:
    lo, hi = (dim.low, dim.high) if isinstance(dim, Int) else (
        (min(dim.choices), max(dim.choices)) if isinstance(dim, Categorical) else (dim, dim))
    if hi > n_groups:
        raise ConfigError(
            f"SearchSpace frozen_groups={_show(dim)} reaches {hi}, but backbone {backbone!r} "
            f"has {n_groups} layer groups; accepted: 0..{n_groups}."
        )
    del lo


def _applies(name: str, modality: str, task: str, supports_drop_path: bool,
             adapters: tuple[str, ...], values: dict[str, Any],
             domain: tuple[str, ...] = ()) -> bool:
    """Whether field ``name`` means anything for such a trial (``values``: those chosen
    so far, in FIELDS order)."""
    if name in ("adabn", "dann"):
        return name in domain
    if name == "adapter":
        return adapters != NONE_ONLY
    if name == "lora_rank":
        return values.get("adapter") == "lora"
    if name in ("mixup", "cutmix"):  # timm's Mixup mixes class targets
        return modality == "image" and task in ("classification", "multilabel")
    if name == "augment":
        return modality == "image"
    if name == "drop_path":
        return supports_drop_path
    if name == "label_smoothing":
        return task in ("classification", "multilabel")
    if name == "image_size":
        return modality == "image"
    if name == "max_length":
        return modality == "text"
    return True


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
    if name in ("augment", "adapter"):
        return "none"
    if name == "adabn":
        return False
    if name == "lora_rank":
        return 8  # the Strategy default: unused without LoRA
    return None if name in ("image_size", "max_length") else 0.0


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
        default = _DEFAULTS[name]
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

