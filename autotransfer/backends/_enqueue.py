"""Enqueueing the reference trials every study runs and the warm-start portfolio a new
study begins with (what they are: :mod:`autotransfer.strategy.baselines`).

Both are enqueued under the study's lock (see :func:`autotransfer.storage.lock`), and
what is already recorded or waiting is never enqueued again, so any number of processes
starting on one study enqueue each point exactly once.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from .. import storage as st
from ..storage import FINISHED
from ..strategy import baselines
from ..strategy.baselines import CHEAP_BASELINES, PORTFOLIO
from ._job import TrialContext, counted_trials

DEFER_AFTER = 3  # searched trials to finish before the full-training baselines run
PORTFOLIO_DONE = "autotransfer:portfolio"


def enqueue_due_baselines(study: optuna.Study, ctx: TrialContext) -> None:
    """Enqueue the baselines that are due and not yet run, running or waiting.

    The linear probe is due at once. The two full-training references (default fine-tune,
    scratch) cost as much as the slowest searched trials and do not help find the best
    one, so they wait until DEFER_AFTER searched trials have finished, unless the trials
    left in ``n_trials`` are only enough for them.
    """
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
    done = st.study_attrs(study).get(PORTFOLIO_DONE)
    begun = study.get_trials(deepcopy=False, states=FINISHED + (TrialState.RUNNING,))
    if done or begun:
        return False
    st.set_study_attr(study, PORTFOLIO_DONE, True)
    return True


def portfolio_points(ctx: TrialContext, names: list[str]) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for name in names:
        g = ctx.n_groups(name)
        for fraction, values in baselines.portfolio():
            params = ctx.params_for(name, {"frozen_groups": int(g * fraction + 0.5), **values})
            point = {"backbone": name, **params}
            if params and point not in points:
                points.append(point)
    return points
