"""The sampler and pruner policy, in one place for every backend.

Both backends judge trials with the same Optuna pruner: the Optuna backend through
``trial.should_prune()``, Ray Tune through :func:`ray_scheduler`, a Tune scheduler that
records each epoch's value in the study and asks that very pruner. So ``pruner="median"``
or any ``optuna.pruners`` instance means the same on a laptop and on a cluster.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna

from .. import storage as st
from ..errors import ConfigError, check_choice
from ._job import SearchJob

PRUNERS = ("hyperband", "median", "none")
SAMPLERS = ("tpe", "gp", "random")


def check(pruner: Any, sampler: Any) -> None:
    """Refuse a pruner or sampler by name before anything runs."""
    for kind, value, names, base in (("pruner", pruner, PRUNERS, optuna.pruners.BasePruner),
                                     ("sampler", sampler, SAMPLERS,
                                      optuna.samplers.BaseSampler)):
        if isinstance(value, base):
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{kind} must be one of {', '.join(map(repr, names))} or an "
                              f"{base.__module__}.{base.__name__} instance, but got "
                              f"{kind}={value!r}.")
        check_choice(kind, value, names)


def make_sampler(job: SearchJob, worker: int) -> optuna.samplers.BaseSampler:
    """The study's sampler; with ranked backbones, wrapped in the backbone race."""
    sampler = _base_sampler(job, worker)
    if len(job.race) > 1:
        from ._race import BackboneRace

        return BackboneRace(sampler, job.race)
    return sampler


def _base_sampler(job: SearchJob, worker: int) -> optuna.samplers.BaseSampler:
    if isinstance(job.sampler, optuna.samplers.BaseSampler):
        return job.sampler
    if job.sampler == "random":
        return optuna.samplers.RandomSampler(seed=job.sampler_seed(worker))
    startup = 10 if job.n_trials is None else max(3, min(10, job.n_trials // 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # multivariate + group: TPE models each conditional sub-space (per backbone,
        # with/without mixup) jointly; constant_liar keeps parallel workers apart.
        tpe = optuna.samplers.TPESampler(
            n_startup_trials=startup, seed=job.sampler_seed(worker), multivariate=True,
            group=True, constant_liar=True)
        if job.sampler == "tpe":
            return tpe
        # "gp": a Gaussian process over the fields every trial has; the conditional ones
        # (a backbone's groups, mixup's alpha when on) go to TPE.
        return optuna.samplers.GPSampler(
            seed=job.sampler_seed(worker), n_startup_trials=startup, independent_sampler=tpe,
            warn_independent_sampling=False)


def max_epochs(job: SearchJob) -> int:
    from ..strategy.space import Categorical, Float, Int

    e = job.space.epochs
    if isinstance(e, (Int, Float)):
        return int(e.high)
    if isinstance(e, Categorical):
        return int(max(e.choices))
    return int(e)


def first_rung(job: SearchJob) -> int:
    """The first epoch after the learning-rate warm-up: the earliest fair judgement."""
    warm = job.space.warmup if isinstance(job.space.warmup, (int, float)) else 0.3
    return max(1, math.ceil(warm * max_epochs(job)) + 1)


def make_pruner(job: SearchJob) -> optuna.pruners.BasePruner:
    """The pruner, sized from the budget rather than hand-tuned.

    Epochs are the resource. The first rung is the first epoch after the learning-rate
    warm-up (during warm-up every trial is still near chance, so judging there is a coin
    toss), and no trial is judged past half its epochs (by then stopping saves little).
    Hyperband's brackets each need about eight trials to compare: a small study (fewer
    trials than that, or a timeout of an hour or less) gets successive halving that keeps
    the better half at each rung, a larger one Hyperband's hedge over how early to judge.
    """
    if isinstance(job.pruner, optuna.pruners.BasePruner):
        return job.pruner
    if job.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    epochs, first = max_epochs(job), first_rung(job)
    last = epochs // 2
    if job.pruner == "none" or last < first:  # none asked, or trials too short to judge
        return optuna.pruners.NopPruner()
    brackets = math.floor(math.log(epochs / first, 3)) + 1
    short = job.n_trials is None and job.timeout is not None and job.timeout <= 3600
    if short or (job.n_trials is not None and job.n_trials < 8 * brackets):
        inner: optuna.pruners.BasePruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=first, reduction_factor=2, min_early_stopping_rate=0)
    else:
        inner = optuna.pruners.HyperbandPruner(min_resource=first, max_resource=epochs,
                                               reduction_factor=3)
    return EarlyRungs(inner, last=last)


class EarlyRungs(optuna.pruners.BasePruner):
    """Judge trials only in their first half: a trial pruned at epoch 9 of 10 has already
    cost what finishing would, so late rungs save nothing and lose the result."""

    def __init__(self, inner: optuna.pruners.BasePruner, last: int) -> None:
        self.inner, self.last = inner, last

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        return step is not None and step <= self.last and self.inner.prune(study, trial)


def should_prune(study: optuna.Study, pruner: optuna.pruners.BasePruner, trial_id: int,
                 baseline: bool) -> bool:
    """The one pruning decision. Baselines are references for the whole study: never pruned."""
    if baseline:
        return False
    return pruner.prune(study, st.frozen_trial(study, trial_id))


def ray_scheduler(job: SearchJob) -> Any:
    """A Ray Tune scheduler that records each epoch in the study and asks the study's pruner."""
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class StudyPruner(FIFOScheduler):
        def __init__(self) -> None:
            super().__init__()
            self.pruner = make_pruner(job)
            self.study = optuna.load_study(study_name=job.study_name,
                                           storage=job.storage.open(), pruner=self.pruner)

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            tid, value = trial.config.get("trial_id"), result.get("value")
            step = result.get("training_iteration")
            if tid is None or value is None or "fail_reason" in result:
                return TrialScheduler.CONTINUE
            st.report_value(self.study, tid, step, float(value))
            prune = should_prune(self.study, self.pruner, tid, bool(trial.config["baseline"]))
            return TrialScheduler.STOP if prune else TrialScheduler.CONTINUE

    return StudyPruner()
