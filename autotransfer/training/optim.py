"""How a Strategy is applied to a model: freezing, adapters, the active technique plugins'
``build``, per-group learning rates (layer-wise decay) and their ``param_groups``, the
optimizer, the warm-up cosine schedule and the L2-SP penalty."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.scheduler import CosineLRScheduler

from ..strategy import Strategy
from ..techniques import Technique
from ..techniques import active as active_techniques
from ..techniques.adapters import attach
from .model import TransferModel


def apply(strategy: Strategy, model: TransferModel, steps_per_epoch: int) -> Applied:
    """Freeze, build per-group parameter groups, the optimizer, schedule and penalty."""
    model.freeze(strategy.frozen_groups)
    attach(model, strategy.adapter, strategy.lora_rank)
    techniques = active_techniques(strategy)
    for t in techniques:
        t.build(model, strategy)
    if techniques:
        model.mark_frozen()  # a technique may have changed what trains
    params = dict(model.body.named_parameters())
    n = model.n_groups
    sp = strategy.l2sp > 0 and strategy.pretrained
    groups: list[dict[str, Any]] = []
    group_lrs: list[float | None] = []
    for i, names in enumerate(model.groups):
        trainable = [params[k] for k in names if params[k].requires_grad]
        lr = strategy.lr * strategy.layer_decay ** (n - 1 - i)
        group_lrs.append(lr if trainable else None)
        groups += _decay_split(trainable, lr, 0.0 if sp else strategy.weight_decay, f"group{i}")
    groups += _decay_split(list(model.head.parameters()), strategy.lr, strategy.weight_decay,
                           "head")
    for t in techniques:
        groups = t.param_groups(groups, model, strategy) or groups
    groups = [g for g in groups if g["params"]]
    if strategy.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=strategy.lr)
    else:
        opt = torch.optim.SGD(groups, lr=strategy.lr, momentum=0.9, nesterov=True)
    sched = _warmup_cosine(opt, strategy.warmup, max(1, strategy.epochs * steps_per_epoch))
    penalty = _l2sp_penalty(model, strategy.l2sp) if sp else None
    return Applied(opt, sched, penalty, group_lrs, techniques)


@dataclass
class Applied:
    """What :func:`apply` returns: the optimizer, its schedule, the extra loss."""

    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    penalty: Callable[[], torch.Tensor] | None
    group_lrs: list[float | None] = field(default_factory=list)  # None: frozen group
    techniques: list[Technique] = field(default_factory=list)  # the active plugins'
    updates: int = 0  # optimizer updates done

    def advance(self) -> None:
        """After an optimizer update: set the learning rates of the next one."""
        self.updates += 1
        self.scheduler.step_update(self.updates + 1)


def _decay_split(params: list[torch.nn.Parameter], lr: float, wd: float,
                 name: str) -> list[dict[str, Any]]:
    # No decay on norms and biases (1-D tensors), as in timm's param_groups_weight_decay.
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "lr": lr, "weight_decay": wd, "name": name},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}_no_decay"}]


def _warmup_cosine(opt: torch.optim.Optimizer, warmup: float,
                   total: int) -> CosineLRScheduler:
    """timm's warm-up cosine schedule over ``total`` updates, read at each update's 1-based
    number k: k/w of each group's lr while k < w (so the first update is not at lr 0), the
    full lr at k = w, then a cosine that ends near 0 after k = total (w: the warm-up
    updates, at least 1, which is no warm-up: the first update has the full lr)."""
    w = max(1, round(warmup * total))
    # t_initial >= 2 only quiets timm's "no effect" warning when warm-up covers every update
    sched = CosineLRScheduler(opt, t_initial=max(2, total + 1 - w), lr_min=0.0, warmup_t=w,
                              warmup_prefix=True, t_in_epochs=False)
    sched.step_update(1)  # the first update's rates
    return sched


def _l2sp_penalty(model: TransferModel, alpha: float) -> Callable[[], torch.Tensor]:
    """alpha/2 * ||w - w0||^2 over the trainable backbone weights (Li et al., 2018)."""
    pairs = [(p, p.detach().clone()) for p in model.body.parameters() if p.requires_grad]

    def penalty() -> torch.Tensor:
        return 0.5 * alpha * sum(((p - p0) ** 2).sum() for p, p0 in pairs)

    return penalty
