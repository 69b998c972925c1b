"""The reference trials every study runs, and the warm-start portfolio a new study begins with.

Both are enqueued under the study's lock (see :func:`autotransfer.storage.lock`), and
what is already recorded or waiting is never enqueued again, so any number of processes
starting on one study enqueue each point exactly once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from . import storage as st
from .space import SearchSpace
from .strategy import Strategy

if TYPE_CHECKING:
    from .backends._job import TrialContext

# Cheapest first: a linear probe runs on cached features and fills the first rungs fast.
BASELINES = ("linear_probe", "default_finetune", "scratch")
CHEAP_BASELINES = ("linear_probe",)
DEFER_AFTER = 3  # searched trials to finish before the full-training baselines run
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
PORTFOLIO_DONE = "autotransfer:portfolio"

# Fractions of the layer groups to freeze, cheapest first, and what each trains with: a
# prior from common practice (freeze the generic early layers, fine-tune the rest with a
# learning rate that shrinks toward the input), not a result on any one dataset.
_STILL = {"mixup": 0.0, "cutmix": 0.0, "augment": "none", "adapter": "none"}
PORTFOLIO = (
    (3 / 4, {"lr": 3e-3, "layer_decay": 0.8, **_STILL}),
    (1 / 2, {"lr": 3e-3, "layer_decay": 0.8, **_STILL}),
    (1 / 4, {"lr": 1e-3, "layer_decay": 0.8, **_STILL}),
)


def baseline_strategy(kind: str, space: SearchSpace, backbone: str, n_groups: int) -> Strategy:
    """The reference trials every study runs (same epochs, batch size and input size)."""
    neutral = dict(layer_decay=1.0, weight_decay=0.01, dropout=0.0, drop_path=0.0,
                   label_smoothing=0.0, mixup=0.0, cutmix=0.0, augment="none", l2sp=0.0,
                   optimizer="adamw")
    base = space.base_strategy(backbone)
    if kind == "scratch":
        return base.replace(pretrained=False, frozen_groups=0, lr=1e-3, **neutral)
    if kind == "linear_probe":
        return base.replace(frozen_groups=n_groups, lr=1e-2, **neutral)
    if kind == "default_finetune":
        return base.replace(frozen_groups=0, lr=1e-4, **neutral)
    raise ValueError(kind)


def enqueue_due_baselines(study: optuna.Study, ctx: TrialContext) -> None:
    """Enqueue the baselines that are due and not yet run, running or waiting.

    The linear probe is due at once. The two full-training references (default fine-tune,
    scratch) cost as much as the slowest searched trials and do not help find the best
    one, so they wait until DEFER_AFTER searched trials have finished, unless the trials
    left in ``n_trials`` are only enough for them.
    """
    from .backends._job import counted_trials

    if not ctx.job.baselines:
        return
    trials, left_out = study.get_trials(deepcopy=False), st.excluded(study)
    have = {(t.user_attrs["baseline"], t.user_attrs.get("backbone")) for t in trials
            if t.user_attrs.get("baseline") and not st.uncounted(t, left_out)}
    missing = [(p, a) for p, a in ctx.baseline_trials()
               if (a["baseline"], a["backbone"]) not in have]
    if not missing:
        return
    searched = sum(1 for t in trials if t.state in FINISHED and not t.user_attrs.get("baseline"))
    left = None if ctx.job.n_trials is None else ctx.job.n_trials - counted_trials(study)
    expensive_due = searched >= DEFER_AFTER or (left is not None and left <= len(missing))
    for params, attrs in missing:
        if expensive_due or attrs["baseline"] in CHEAP_BASELINES:
            study.enqueue_trial(params, user_attrs=attrs)


def enqueue_portfolio(study: optuna.Study, ctx: TrialContext,
                      names: list[str] | None = None) -> None:
    """Start a new study with the PORTFOLIO points for its first two backbones (of
    ``names``: best-ranked first when the backbones were ranked), once; for the first one
    only in a study too short for two.

    Heavily frozen points come first: they run on cached features in a fraction of a full
    trial's time, so the pruner's first rungs fill fast and the sampler starts from real
    numbers. Values outside the user's space are left to the sampler; a study too short
    for the portfolio to leave room for search (fewer than 4 trials per point) skips it.
    """
    if claim_warm_start(study):
        portfolio(study, ctx, names)


def portfolio(study: optuna.Study, ctx: TrialContext, names: list[str] | None = None) -> None:
    """Enqueue the portfolio now (see :func:`enqueue_portfolio`)."""
    names = (names or ctx.job.backbones)[:2]
    if ctx.job.n_trials is not None:  # as many backbones as leave room for search
        names = names[:ctx.job.n_trials // (4 * len(PORTFOLIO))]
    for params in portfolio_points(ctx, names):
        study.enqueue_trial(params)


def claim_warm_start(study: optuna.Study) -> bool:
    """True the first time a new study asks (its warm start is then due), False after, and
    for a study that began without one."""
    storage, sid = study._storage, study._study_id
    done = storage.get_study_system_attrs(sid).get(PORTFOLIO_DONE)
    begun = study.get_trials(deepcopy=False, states=FINISHED + (TrialState.RUNNING,))
    if done or begun:
        return False
    storage.set_study_system_attr(sid, PORTFOLIO_DONE, True)
    return True


def portfolio_points(ctx: TrialContext, names: list[str]) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for name in names:
        g = ctx.n_groups(name)
        for fraction, values in PORTFOLIO:
            params = ctx.params_for(name, {"frozen_groups": int(g * fraction + 0.5), **values})
            point = {"backbone": name, **params}
            if params and point not in points:
                points.append(point)
    return points
