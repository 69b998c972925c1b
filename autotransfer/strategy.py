"""Strategy: one point of the transfer space, and how it is applied to a model."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .adapters import ADAPTERS, attach
from .errors import StrategyError, known_fields
from .model import TransferModel
from .preprocessing import AUGMENTS

OPTIMIZERS = ("adamw", "sgd")


# Upper bounds of the integer fields: far beyond any real use, small enough that a typo
# (epochs=10**9) is refused at once instead of running for years or exhausting memory.
MAX_IMAGE_SIZE = 4096  # pixels a side
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 65536
MAX_FROZEN_GROUPS = 1000  # layer groups; each backbone has its own, smaller, limit
MAX_LENGTH = 65536  # tokens per text input
MAX_LORA_RANK = 256
_FLOATS = ("lr", "layer_decay", "weight_decay", "dropout", "drop_path", "label_smoothing",
           "mixup", "cutmix", "l2sp", "warmup", "grad_clip", "dann")
_INTS = ("frozen_groups", "batch_size", "epochs", "image_size", "max_length", "lora_rank")


@known_fields
@dataclass(frozen=True)
class Strategy:
    """How to transfer a backbone to a task.

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
        adapter: What trains in the trainable groups (:mod:`autotransfer.adapters`):
            ``"none"`` (every weight), ``"lora"`` (low-rank adapters on the linear layers,
            via peft), ``"bitfit"`` (biases) or ``"norm"`` (normalization layers).
        lora_rank: The rank of the LoRA adapters (``adapter="lora"``), 1 to 256.
        adabn: Re-estimate BatchNorm statistics on the unlabeled target inputs before
            every validation and in the kept model (AdaBN, Li et al. 2016;
            :mod:`autotransfer.domain`). Needs ``search(..., unlabeled=...)``.
        dann: Weight of the domain-adversarial loss (DANN, Ganin et al. 2016): a domain
            classifier on the body's features, trained through a gradient-reversal layer
            on source and unlabeled target batches; 0 = off.
        loss_weights: Loss weight per task of a multi-task study (:mod:`autotransfer.multitask`),
            ``{"age": 0.5}``; a task left out weighs 1 (the primary's is never searched).
            Stored as sorted ``(task, weight)`` pairs so a Strategy stays hashable.

    Example:
        >>> s = Strategy("efficientnet_lite0", frozen_groups=4, layer_decay=0.8)
        >>> s.replace(lr=1e-4).lr
        0.0001
    """

    backbone: str
    frozen_groups: int = 0
    pretrained: bool = True
    lr: float = 1e-3
    layer_decay: float = 1.0
    weight_decay: float = 0.05
    dropout: float = 0.0
    drop_path: float = 0.0
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    augment: str = "none"
    l2sp: float = 0.0
    optimizer: str = "adamw"
    batch_size: int = 32
    epochs: int = 10
    warmup: float = 0.1
    grad_clip: float = 1.0
    image_size: int | None = None
    max_length: int | None = None
    adapter: str = "none"
    lora_rank: int = 8
    adabn: bool = False
    dann: float = 0.0
    loss_weights: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        def need(ok: bool, what: str, value: Any, accepted: str) -> None:
            if not ok:
                raise StrategyError(f"{what} must be {accepted}, but got {what}={value!r}.")

        need(isinstance(self.backbone, str) and bool(self.backbone), "backbone", self.backbone,
             "a backbone's registry name (a non-empty string)")
        need(isinstance(self.pretrained, bool), "pretrained", self.pretrained, "True or False")
        self._coerce()
        object.__setattr__(self, "loss_weights", _loss_weights(self.loss_weights))

        need(0 <= self.frozen_groups <= MAX_FROZEN_GROUPS, "frozen_groups",
             self.frozen_groups, f"an integer >= 0 (at most {MAX_FROZEN_GROUPS})")
        need(self.lr > 0 and math.isfinite(self.lr), "lr", self.lr, "a finite number > 0")
        need(0 < self.layer_decay <= 1, "layer_decay", self.layer_decay, "in (0, 1]")
        need(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        need(0 <= self.dropout < 1, "dropout", self.dropout, "in [0, 1)")
        need(0 <= self.drop_path < 1, "drop_path", self.drop_path, "in [0, 1)")
        need(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "in [0, 1)")
        need(self.mixup >= 0, "mixup", self.mixup, ">= 0 (a Beta alpha; 0 = off)")
        need(self.cutmix >= 0, "cutmix", self.cutmix, ">= 0 (a Beta alpha; 0 = off)")
        need(self.augment in AUGMENTS, "augment", self.augment, f"one of {AUGMENTS}")
        need(self.l2sp >= 0, "l2sp", self.l2sp, ">= 0")
        need(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {OPTIMIZERS}")
        need(1 <= self.batch_size <= MAX_BATCH_SIZE, "batch_size", self.batch_size,
             f"an integer >= 1 (at most {MAX_BATCH_SIZE})")
        need(1 <= self.epochs <= MAX_EPOCHS, "epochs", self.epochs,
             f"an integer >= 1 (at most {MAX_EPOCHS})")
        need(0 <= self.warmup < 1, "warmup", self.warmup, "in [0, 1)")
        need(self.grad_clip >= 0, "grad_clip", self.grad_clip, ">= 0 (0 = off)")
        need(self.image_size is None or 8 <= self.image_size <= MAX_IMAGE_SIZE,
             "image_size", self.image_size, f"None or 8 to {MAX_IMAGE_SIZE} pixels")
        need(self.max_length is None or 2 <= self.max_length <= MAX_LENGTH,
             "max_length", self.max_length, f"None or 2 to {MAX_LENGTH} tokens")
        need(self.adapter in ADAPTERS, "adapter", self.adapter, f"one of {ADAPTERS}")
        need(1 <= self.lora_rank <= MAX_LORA_RANK, "lora_rank", self.lora_rank,
             f"an integer in [1, {MAX_LORA_RANK}]")
        need(isinstance(self.adabn, bool), "adabn", self.adabn, "True or False")
        need(self.dann >= 0, "dann", self.dann, ">= 0 (the adversarial loss weight; 0 = off)")
        need(self.pretrained or self.l2sp == 0, "l2sp", self.l2sp,
             "0 with pretrained=False (it pulls toward pretrained weights)")

    def _coerce(self) -> None:
        """Numbers of any numeric type (numpy too) become float/int; other types are refused."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in _FLOATS or f.name in _INTS:
                whole = f.name in _INTS
                kind = numbers.Integral if whole else numbers.Real
                if v is None and f.name in ("image_size", "max_length"):
                    continue
                if isinstance(v, bool) or not isinstance(v, kind):
                    raise StrategyError(f"{f.name} must be {'an integer' if whole else 'a number'}"
                                        f", but got {f.name}={v!r} ({type(v).__name__}).")
                if not whole and not math.isfinite(v):
                    raise StrategyError(f"{f.name} must be a finite number, but got "
                                        f"{f.name}={v!r}.")
                object.__setattr__(self, f.name, int(v) if whole else float(v))

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (mixup or CutMix)."""
        return self.mixup > 0 or self.cutmix > 0

    def replace(self, **changes: Any) -> Strategy:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON): ``loss_weights`` as a ``{task: weight}`` dict."""
        return {**dataclasses.asdict(self), "loss_weights": dict(self.loss_weights)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Strategy:
        """Build from a dict, naming any key that is not a Strategy field."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise StrategyError(f"Unknown strategy field(s) {unknown}; accepted: {names}.")
        return cls(**values)

    def apply(self, model: TransferModel, steps_per_epoch: int) -> Applied:
        """Freeze, build per-group parameter groups, the optimizer, schedule and penalty."""
        model.freeze(self.frozen_groups)
        attach(model, self.adapter, self.lora_rank)
        params = dict(model.body.named_parameters())
        n = model.n_groups
        sp = self.l2sp > 0 and self.pretrained
        groups: list[dict[str, Any]] = []
        group_lrs: list[float | None] = []
        for i, names in enumerate(model.groups):
            trainable = [params[k] for k in names if params[k].requires_grad]
            lr = self.lr * self.layer_decay ** (n - 1 - i)
            group_lrs.append(lr if trainable else None)
            groups += _decay_split(trainable, lr, 0.0 if sp else self.weight_decay, f"group{i}")
        groups += _decay_split(list(model.head.parameters()), self.lr, self.weight_decay, "head")
        groups = [g for g in groups if g["params"]]
        if self.optimizer == "adamw":
            opt: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=self.lr)
        else:
            opt = torch.optim.SGD(groups, lr=self.lr, momentum=0.9, nesterov=True)
        total = max(1, self.epochs * steps_per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, _warmup_cosine(round(self.warmup * total), total))
        penalty = _l2sp_penalty(model, self.l2sp) if sp else None
        return Applied(opt, sched, penalty, group_lrs)


def check_field(name: str, value: Any) -> Any:
    """``value`` checked (and coerced: numpy numbers) as Strategy field ``name`` would be,
    for arguments that set one field elsewhere (``study.refit(epochs=...)``); raises
    :class:`StrategyError` naming the value and the accepted range."""
    names = [f.name for f in dataclasses.fields(Strategy)]
    if name not in names or name == "backbone":
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


@dataclass
class Applied:
    """What :meth:`Strategy.apply` returns: the optimizer, its schedule, the extra loss."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    penalty: Callable[[], torch.Tensor] | None
    group_lrs: list[float | None] = field(default_factory=list)  # None: frozen group


def _decay_split(params: list[torch.nn.Parameter], lr: float, wd: float,
                 name: str) -> list[dict[str, Any]]:
    # No decay on norms and biases (1-D tensors), as in timm's param_groups_weight_decay.
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "lr": lr, "weight_decay": wd, "name": name},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}_no_decay"}]


def _warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _l2sp_penalty(model: TransferModel, alpha: float) -> Callable[[], torch.Tensor]:
    """alpha/2 * ||w - w0||^2 over the trainable backbone weights (Li et al., 2018)."""
    pairs = [(p, p.detach().clone()) for p in model.body.parameters() if p.requires_grad]

    def penalty() -> torch.Tensor:
        return 0.5 * alpha * sum(((p - p0) ** 2).sum() for p, p0 in pairs)

    return penalty
