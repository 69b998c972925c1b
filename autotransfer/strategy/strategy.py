"""Strategy: one point of the transfer space. Its class body is the field table
(:mod:`autotransfer.strategy.fields`); :mod:`autotransfer.training` applies it to a model."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from ..backbones import ADAPTERS
from ..data.preprocessing import AUGMENTS
from ..errors import StrategyError
from . import declared, fields
from .fields import NOT_SEARCHED, Categorical, Float, spec

OPTIMIZERS = ("adamw", "sgd")


# Upper bounds of the integer fields: far beyond any real use, small enough that a typo
# (epochs=10**9) is refused at once instead of running for years or exhausting memory.
MAX_IMAGE_SIZE = 4096  # pixels a side
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 65536
MAX_FROZEN_GROUPS = 1000  # layer groups; each backbone has its own, smaller, limit
MAX_LENGTH = 65536  # tokens per text input
MAX_LORA_RANK = 256


@declared.routes(lambda: fields.plugin_fields(), StrategyError)
@dataclass(frozen=True)
class Strategy:
    """How to transfer a backbone to a task.

    Technique plugins add fields of their own (:mod:`autotransfer.techniques`): given by
    keyword (``Strategy("b", bss=0.001)``) and read as attributes like the built-in ones;
    they are kept in ``extra``, sorted ``(name, value)`` pairs of the values that differ
    from their defaults.

    Attributes:
        backbone: Registry name of the backbone.
        frozen_groups: Freeze the first k layer groups (0 = full fine-tune, all = linear
            probe; at most the backbone's groups, and 1000).
        pretrained: Start from the pretrained weights; ``False`` is the scratch baseline.
        lr: Learning rate of the head and of the last layer group.
        layer_decay: Group i of G learns at ``lr * layer_decay ** (G - 1 - i)``.
        weight_decay: Decoupled weight decay; never on norms and biases.
        dropout: Dropout before the head's linear layer.
        drop_path: Stochastic depth in the trainable groups (backbones that support it).
        label_smoothing: Label smoothing of the classification loss.
        mixup: Mixup of input images, Beta(alpha, alpha) (timm's ``Mixup``); 0 = off.
        cutmix: CutMix of input images, Beta(alpha, alpha); 0 = off. With both on, each
            batch takes one of the two at random.
        augment: Train-time augmentation: ``"none"``, ``"flip"`` (random resized crop and
            horizontal flip), ``"trivial"`` (that plus TrivialAugmentWide) or
            ``"randaugment"`` (that plus RandAugment). Anything but ``"none"`` runs the
            frozen prefix on every batch instead of reading it from the feature cache.
        l2sp: L2-SP strength, pulling trainable pretrained weights toward their start (it
            replaces weight decay on those weights).
        optimizer: ``"adamw"`` or ``"sgd"`` (Nesterov momentum 0.9).
        batch_size: Training batch size (1 to 65536).
        epochs: Maximum epochs, 1 to 1000 (early stopping may end sooner).
        warmup: Fraction of steps with linear warm-up before the cosine decay.
        grad_clip: Gradient-norm clipping; 0 = off.
        image_size: Input side in pixels (8 to 4096); ``None`` = the backbone's default.
        max_length: Tokens per text input (2 to 65536); ``None`` = the backbone's default.
        adapter: What trains in the trainable groups (:mod:`autotransfer.techniques.adapters`):
            ``"none"`` (every weight), ``"lora"`` (low-rank adapters on the linear layers,
            via peft), ``"bitfit"`` (biases) or ``"norm"`` (normalization layers).
        lora_rank: The rank of the LoRA adapters (``adapter="lora"``), 1 to 256.
        adabn: Re-estimate BatchNorm statistics on the unlabeled target inputs before
            every validation and in the kept model (AdaBN, Li et al. 2016;
            :mod:`autotransfer.techniques.domain`). Needs ``search(..., unlabeled=...)``.
        dann: Weight of the domain-adversarial loss (DANN, Ganin et al. 2016): a domain
            classifier on the body's features, trained through a gradient-reversal layer
            on source and unlabeled target batches; 0 = off.
        loss_weights: Loss weight per task of a multi-task study
            (:mod:`autotransfer.heads.multitask`),
            ``{"age": 0.5}``; a task left out weighs 1 (the primary's is never searched).
            Stored as sorted ``(task, weight)`` pairs so a Strategy stays hashable.

    Example:
        >>> s = Strategy("efficientnet_lite0", frozen_groups=4, layer_decay=0.8)
        >>> s.replace(lr=1e-4).lr
        0.0001
    """

    backbone: str
    frozen_groups: int = spec(0, accepts=lambda v: 0 <= v <= MAX_FROZEN_GROUPS,
                              accepted=f"an integer >= 0 (at most {MAX_FROZEN_GROUPS})",
                              search=None, column=True)
    pretrained: bool = spec(True, search=NOT_SEARCHED)
    lr: float = spec(1e-3, accepts=lambda v: v > 0, accepted="a finite number > 0",
                     search=Float(1e-5, 1e-2, log=True), column=True)
    layer_decay: float = spec(1.0, accepts=lambda v: 0 < v <= 1, accepted="in (0, 1]",
                              search=Float(0.65, 1.0), column=True, baseline=1.0,
                              technique="layer_decay")
    weight_decay: float = spec(0.05, accepts=lambda v: v >= 0, accepted=">= 0",
                               search=Float(0.0, 0.1), column=True, baseline=0.01)
    dropout: float = spec(0.0, accepts=lambda v: 0 <= v < 1, accepted="in [0, 1)",
                          search=Float(0.0, 0.4), column=True, baseline=0.0)
    drop_path: float = spec(0.0, accepts=lambda v: 0 <= v < 1, accepted="in [0, 1)",
                            search=Float(0.0, 0.2), off=0.0, when=fields.drop_path,
                            column=True, baseline=0.0)
    label_smoothing: float = spec(0.0, accepts=lambda v: 0 <= v < 1, accepted="in [0, 1)",
                                  search=Float(0.0, 0.1), off=0.0, when=fields.classes,
                                  column=True, baseline=0.0, off_in=("student",),
                                  technique="label_smoothing")
    # Beta alphas; 0 keeps the frozen prefix cacheable
    mixup: float = spec(0.0, accepts=lambda v: v >= 0, accepted=">= 0 (a Beta alpha; 0 = off)",
                        search=Categorical((0.0, 0.2, 0.4, 1.0)), off=0.0,
                        when=fields.mixed_images, column=True, baseline=0.0,
                        off_in=("portfolio", "student"), technique="mixing")
    cutmix: float = spec(0.0, accepts=lambda v: v >= 0, accepted=">= 0 (a Beta alpha; 0 = off)",
                         search=Categorical((0.0, 0.25, 1.0)), off=0.0,
                         when=fields.mixed_images, column=True, baseline=0.0,
                         off_in=("portfolio", "student"), technique="mixing")
    augment: str = spec("none", accepts=lambda v: v in AUGMENTS, accepted=f"one of {AUGMENTS}",
                        search=Categorical(("none", "flip", "trivial", "randaugment")),
                        off="none", when=fields.images, column=True, baseline="none",
                        off_in=("portfolio", "student"))
    l2sp: float = spec(0.0, accepts=lambda v: v >= 0, accepted=">= 0",
                       search=Float(0.0, 0.1), column=True, baseline=0.0,
                       technique="l2sp")
    optimizer: str = spec("adamw", accepts=lambda v: v in OPTIMIZERS, column=True,
                          accepted=f"one of {OPTIMIZERS}", search="adamw", baseline="adamw")
    batch_size: int = spec(32, accepts=lambda v: 1 <= v <= MAX_BATCH_SIZE,
                           accepted=f"an integer >= 1 (at most {MAX_BATCH_SIZE})", search=32,
                           column=True)
    epochs: int = spec(10, accepts=lambda v: 1 <= v <= MAX_EPOCHS,
                       accepted=f"an integer >= 1 (at most {MAX_EPOCHS})", search=10)
    warmup: float = spec(0.1, accepts=lambda v: 0 <= v < 1, accepted="in [0, 1)", search=0.1)
    grad_clip: float = spec(1.0, accepts=lambda v: v >= 0, accepted=">= 0 (0 = off)",
                            search=1.0)
    image_size: int | None = spec(None, accepts=lambda v: v is None or 8 <= v <= MAX_IMAGE_SIZE,
                                  accepted=f"None or 8 to {MAX_IMAGE_SIZE} pixels",
                                  search=None, off=None, when=fields.images)
    max_length: int | None = spec(None, accepts=lambda v: v is None or 2 <= v <= MAX_LENGTH,
                                  accepted=f"None or 2 to {MAX_LENGTH} tokens",
                                  search=None, off=None, when=fields.texts)
    adapter: str = spec("none", accepts=lambda v: v in ADAPTERS, accepted=f"one of {ADAPTERS}",
                        search=Categorical(ADAPTERS), off="none", when=fields.adapters,
                        column=True, off_in=("portfolio",), technique="adapters")
    lora_rank: int = spec(8, accepts=lambda v: 1 <= v <= MAX_LORA_RANK,
                          accepted=f"an integer in [1, {MAX_LORA_RANK}]",
                          search=Categorical((4, 8, 16, 32)), off=8, when=fields.lora,
                          column=True, technique="adapters")
    adabn: bool = spec(False, search=Categorical((False, True)), off=False,
                       when=fields.domain("adabn"), column=True,
                       off_in=("portfolio", "student"), technique="adabn")
    dann: float = spec(0.0, accepts=lambda v: v >= 0,
                       accepted=">= 0 (the adversarial loss weight; 0 = off)",
                       search=Categorical((0.0, 0.03, 0.1, 0.3, 1.0)), off=0.0,
                       when=fields.domain("dann"), column=True,
                       off_in=("portfolio", "student"), technique="dann")
    loss_weights: tuple[tuple[str, float], ...] = spec((), search=NOT_SEARCHED)
    extra: tuple[tuple[str, Any], ...] = ()  # technique plugins' fields, not in the table

    def __post_init__(self) -> None:
        if not (isinstance(self.backbone, str) and self.backbone):
            raise StrategyError(f"backbone must be a backbone's registry name (a non-empty "
                                f"string), but got backbone={self.backbone!r}.")
        self._coerce()
        object.__setattr__(self, "extra", declared.checked(
            self.extra, [f.name for f in fields.table(type(self))]))
        object.__setattr__(self, "loss_weights", _loss_weights(self.loss_weights))
        for f in fields.table(type(self)):
            check = f.metadata["accepts"]
            if check is not None and not check(getattr(self, f.name)):
                raise StrategyError(f"{f.name} must be {f.metadata['accepted']}, but got "
                                    f"{f.name}={getattr(self, f.name)!r}.")
        if not self.pretrained and self.l2sp != 0:
            raise StrategyError(f"l2sp must be 0 with pretrained=False (it pulls toward "
                                f"pretrained weights), but got l2sp={self.l2sp!r}.")

    def _coerce(self) -> None:
        """Numbers of any numeric type (numpy too) become float/int; other types are refused."""
        for f in fields.table(type(self)):
            object.__setattr__(self, f.name, declared.coerce(f.name, f.type,
                                                             getattr(self, f.name)))

    def __getattr__(self, name: str) -> Any:
        """A technique plugin's field: its value here, else its default."""
        if name.startswith("_") or name == "extra":  # not one (pickle, copy, ...)
            raise AttributeError(name)
        given = dict(self.__dict__.get("extra", ()))
        if name in given:
            return given[name]
        f = fields.plugin_fields().get(name)
        if f is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return f.default

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (mixup or CutMix)."""
        return self.mixup > 0 or self.cutmix > 0

    def replace(self, **changes: Any) -> Strategy:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON): ``loss_weights`` as a ``{task: weight}`` dict, then every
        registered technique field (at its default too), flat, by name."""
        out = {**dataclasses.asdict(self), "loss_weights": dict(self.loss_weights)}
        del out["extra"]
        return {**out, **{n: f.default for n, f in sorted(fields.plugin_fields().items())},
                **dict(self.extra)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Strategy:
        """Build from a dict, naming any key that is not a Strategy field (a technique
        field counts when its plugin is registered)."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
        plugin = list(fields.plugin_fields())
        unknown = sorted(set(values) - set(names) - set(plugin) - {"extra"})
        if unknown:
            raise StrategyError(f"Unknown strategy field(s) {unknown}; accepted: "
                                f"{names + plugin} (a technique plugin's field needs that "
                                f"plugin registered).")
        return cls(**values)


def check_field(name: str, value: Any) -> Any:
    """``value`` checked (and coerced: numpy numbers) as Strategy field ``name`` would be,
    for arguments that set one field elsewhere (``study.refit(epochs=...)``); raises
    :class:`StrategyError` naming the value and the accepted range."""
    names = [f.name for f in fields.table(Strategy)] + list(fields.plugin_fields())
    if name not in names:
        raise ValueError(f"check_field: {name!r} is not a Strategy field")  # a caller's bug
    return getattr(Strategy("_", **{name: value}), name)


def _loss_weights(value: Any) -> tuple[tuple[str, float], ...]:
    """A ``{task: weight}`` mapping (or its pairs) -> sorted ``(task, weight)`` pairs."""
    accepted = "a {task: weight} dict of finite numbers >= 0, e.g. {'age': 0.5}"
    try:
        pairs = list(value.items()) if hasattr(value, "items") else [tuple(p) for p in value]
        if any(len(p) != 2 for p in pairs):
            raise ValueError
    except (TypeError, ValueError):
        raise StrategyError(f"loss_weights must be {accepted}, but got "
                            f"loss_weights={value!r}.") from None
    for task, w in pairs:
        if not isinstance(task, str) or isinstance(w, bool) or not isinstance(w, numbers.Real) \
                or not math.isfinite(w) or w < 0:
            raise StrategyError(f"loss_weights must be {accepted}, but got {task!r}: {w!r} in "
                                f"loss_weights={value!r}.")
    if len({t for t, _ in pairs}) != len(pairs):
        raise StrategyError(f"loss_weights names a task twice: {value!r}.")
    return tuple(sorted((t, float(w)) for t, w in pairs))
