"""How a Strategy is applied to a model: freezing, the active techniques' ``build`` and
``param_groups`` (adapters, layer decay, L2-SP and any plugin's:
:mod:`autotransfer.techniques`), the optimizer and the warm-up cosine schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from timm.scheduler import CosineLRScheduler

from ..strategy import Strategy
from ..techniques import Started, Trial
from .model import TransferModel


def apply(strategy: Strategy, model: TransferModel, steps_per_epoch: int,
          techniques: Started | None = None) -> Applied:
    """Freeze, let the techniques build, then the parameter groups (the body's by layer
    group, then the head's), the optimizer and its schedule. ``techniques``: those the
    trial started (by default the active ones, started on what is known here)."""
    total = max(1, strategy.epochs * steps_per_epoch)
    if techniques is None:
        techniques = Started(Trial(strategy, model, steps=total))
    model.freeze(strategy.frozen_groups)
    techniques.build(model)
    params = dict(model.body.named_parameters())
    groups: list[dict[str, Any]] = []
    for i, names in enumerate(model.groups):
        trainable = [params[k] for k in names if params[k].requires_grad]
        groups += _decay_split(trainable, strategy.lr, strategy.weight_decay, f"group{i}",
                               layer=i, layers=model.n_groups)
    groups += _decay_split(list(model.head.parameters()), strategy.lr, strategy.weight_decay,
                           "head")
    groups = [g for g in techniques.param_groups(groups, model) if g["params"]]
    lrs = {g["layer"]: g["lr"] for g in groups if "layer" in g}
    if strategy.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=strategy.lr)
    else:
        opt = torch.optim.SGD(groups, lr=strategy.lr, momentum=0.9, nesterov=True)
    sched = _warmup_cosine(opt, strategy.warmup, total)
    return Applied(opt, sched, [lrs.get(i) for i in range(model.n_groups)], techniques)


@dataclass
class Applied:
    """What :func:`apply` returns: the optimizer, its schedule, the techniques acting."""

    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    group_lrs: list[float | None] = field(default_factory=list)  # None: frozen group
    techniques: Started | None = None
    updates: int = 0  # optimizer updates done

    def advance(self) -> None:
        """After an optimizer update: set the learning rates of the next one."""
        self.updates += 1
        self.scheduler.step_update(self.updates + 1)


def _decay_split(params: list[torch.nn.Parameter], lr: float, wd: float, name: str,
                 **where: int) -> list[dict[str, Any]]:
    # No decay on norms and biases (1-D tensors), as in timm's param_groups_weight_decay.
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "lr": lr, "weight_decay": wd, "name": name, **where},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}_no_decay",
             **where}]


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

