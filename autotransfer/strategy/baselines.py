"""The reference trials every study runs, and the warm-start portfolio a new study begins
with: what they are. :mod:`autotransfer.backends._enqueue` enqueues them."""

from __future__ import annotations

from . import fields
from .space import SearchSpace
from .strategy import Strategy

# Cheapest first: a linear probe runs on cached features and fills the first rungs fast.
BASELINES = ("linear_probe", "default_finetune", "scratch")
CHEAP_BASELINES = ("linear_probe",)
REFERENCE_SHARE = 0.5  # of n_trials, at most, for the reference trials

# Fractions of the layer groups to freeze, cheapest first, and what each trains with: a
# prior from common practice (freeze the generic early layers, fine-tune the rest with a
# learning rate that shrinks toward the input), not a result on any one dataset.
# The fields switched off for the portfolio (off_in) join each point where it is read.
PORTFOLIO = (
    (3 / 4, {"lr": 3e-3, "layer_decay": 0.8}),
    (1 / 2, {"lr": 3e-3, "layer_decay": 0.8}),
    (1 / 4, {"lr": 1e-3, "layer_decay": 0.8}),
)


def portfolio() -> list[tuple[float, dict]]:
    """The :data:`PORTFOLIO` points with the fields kept cheap (``off_in=("portfolio",)``,
    technique plugins' included) switched off."""
    still = fields.off_in(Strategy, "portfolio")
    return [(fraction, {**values, **still}) for fraction, values in PORTFOLIO]


def planned(backbones: list[str], n_trials: int | None) -> list[tuple[str, str]]:
    """(kind, backbone) of the reference trials a study runs, most useful first: every
    backbone's linear probe, then each backbone's default fine-tune and scratch trials,
    best-ranked backbone first (``backbones`` in rank order). They take at most
    :data:`REFERENCE_SHARE` of ``n_trials``, so a small budget is mostly searched."""
    plan = [("linear_probe", b) for b in backbones]
    plan += [(kind, b) for b in backbones for kind in BASELINES if kind != "linear_probe"]
    return plan if n_trials is None else plan[:int(n_trials * REFERENCE_SHARE)]


def split(plan: list[tuple[str, str]], n_trials: int | None) -> str:
    """How a search's trials divide, said at its start: "8 trials: 4 reference (...), 4
    searched"."""
    kinds = {kind: [b for k, b in plan if k == kind] for kind in BASELINES}
    parts = [f"{_SAID[kind]} of {', '.join(names)}" for kind, names in kinds.items() if names]
    what = f"{len(plan)} reference ({'; '.join(parts)})" if plan else "no reference trials"
    if n_trials is None:
        return f"trials until the time budget ends: {what} first, the rest searched"
    return f"{n_trials} trial{'s' * (n_trials != 1)}: {what}, {n_trials - len(plan)} searched"


_SAID = {"linear_probe": "linear probe", "default_finetune": "default fine-tune",
         "scratch": "scratch"}


def baseline_strategy(kind: str, space: SearchSpace, backbone: str, n_groups: int) -> Strategy:
    """The reference trials every study runs (same epochs, batch size and input size)."""
    neutral = fields.baseline_values(Strategy)
    base = space.base_strategy(backbone)
    if kind == "scratch":
        return base.replace(pretrained=False, frozen_groups=0, lr=1e-3, **neutral)
    if kind == "linear_probe":
        return base.replace(frozen_groups=n_groups, lr=1e-2, **neutral)
    if kind == "default_finetune":
        return base.replace(frozen_groups=0, lr=1e-4, **neutral)
    raise ValueError(kind)
