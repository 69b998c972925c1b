"""The reference trials every study runs, and the warm-start portfolio a new study begins
with: what they are. :mod:`autotransfer.backends._enqueue` enqueues them."""

from __future__ import annotations

from . import fields
from .space import SearchSpace
from .strategy import Strategy

# Cheapest first: a linear probe runs on cached features and fills the first rungs fast.
BASELINES = ("linear_probe", "default_finetune", "scratch")
CHEAP_BASELINES = ("linear_probe",)

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
