"""The Optuna backend: a worker loop of ask -> train -> tell over a shared storage.

One worker runs in this process; with several device slots, each runs in its own process
(see :mod:`autotransfer.backends._workers`), its device fixed before torch is imported.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
import traceback
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .. import storage as st
from .._interrupt import deferred_sigint, shielded
from ..data import Dataset
from ._trial import (
    SearchJob,
    TrialContext,
    enqueue_due_baselines,
    fail_reason,
    prune_checkpoints,
    result_attrs,
    save_if_top,
    set_attrs,
)


def make_sampler(job: SearchJob, worker: int) -> optuna.samplers.BaseSampler:
    if isinstance(job.sampler, optuna.samplers.BaseSampler):
        return job.sampler
    if job.sampler == "random":
        return optuna.samplers.RandomSampler(seed=job.seed + 7919 * worker)
    startup = 10 if job.n_trials is None else max(3, min(10, job.n_trials // 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # multivariate + group: TPE models each conditional sub-space (per backbone,
        # with/without mixup) jointly; constant_liar keeps parallel workers apart.
        return optuna.samplers.TPESampler(
            n_startup_trials=startup, seed=job.seed + 7919 * worker, multivariate=True,
            group=True, constant_liar=True)


def max_epochs(job: SearchJob) -> int:
    from ..space import Categorical, Float, Int

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
    if job.pruner == "hyperband":
        epochs, first = max_epochs(job), first_rung(job)
        last = epochs // 2
        if last < first:
            return optuna.pruners.NopPruner()  # trials too short to judge early
        brackets = math.floor(math.log(epochs / first, 3)) + 1
        short = job.n_trials is None and job.timeout is not None and job.timeout <= 3600
        if short or (job.n_trials is not None and job.n_trials < 8 * brackets):
            inner: optuna.pruners.BasePruner = optuna.pruners.SuccessiveHalvingPruner(
                min_resource=first, reduction_factor=2, min_early_stopping_rate=0)
        else:
            inner = optuna.pruners.HyperbandPruner(min_resource=first, max_resource=epochs,
                                                   reduction_factor=3)
        return EarlyRungs(inner, last=last)
    if job.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def load_study(job: SearchJob, worker: int = 0) -> optuna.Study:
    return optuna.load_study(study_name=job.study_name, storage=job.storage.open(),
                             sampler=make_sampler(job, worker), pruner=make_pruner(job))


def run_worker(job: SearchJob, train: Dataset, valid: Dataset, *, worker: int = 0,
               device: str = "cpu", device_label: str | None = None) -> int:
    """Run trials until the budget is spent; returns how many this worker ran.

    ``device`` is what torch uses here; ``device_label`` what the study records (a worker
    pinned to GPU 2 trains on ``cuda:0`` of its own process but records ``cuda:2``).
    """
    from filelock import FileLock

    study = load_study(job, worker)
    ctx = TrialContext(job, train, valid)
    lock = FileLock(str(Path(job.workdir) / "ask.lock"))
    bars = _Bars(job, study) if job.progress else None
    ran = 0
    with deferred_sigint():
        try:
            while True:
                # Checking the budget and asking happen under one lock, so parallel
                # workers never overshoot n_trials.
                with lock, shielded():
                    if not job.budget_left(study):
                        break
                    enqueue_due_baselines(study, ctx)
                    trial = study.ask()
                    set_attrs(study._storage, trial._trial_id,
                              user={"worker": worker, "device": device_label or device},
                              system={st.HOST: socket.gethostname(), st.PID: os.getpid()})
                run_one(study, trial, ctx, job, device=device, bars=bars)
                ran += 1
        finally:
            if bars:
                bars.close()
    return ran


def run_one(study: optuna.Study, trial: optuna.Trial, ctx: TrialContext, job: SearchJob, *,
            device: str, bars: _Bars | None = None) -> TrialState:
    """Train one asked trial and tell the study how it ended. Never loses a told trial.

    Storage calls run shielded from Ctrl-C; an interrupt lands in training, and the
    trial is then recorded as failed (interrupted) before the KeyboardInterrupt goes on.
    """
    storage, tid = study._storage, trial._trial_id
    seen = {"epoch": 0}
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def partial() -> dict:
        """What a trial that ends early still tells: epochs, time, compute time."""
        return {"epochs_run": seen["epoch"],
                "duration_s": round(time.perf_counter() - started, 2),
                "compute_s": round(timings.get("compute_s", 0.0), 2)}

    try:
        with shielded():
            strategy, kind = ctx.define(trial)
            set_attrs(storage, tid, user={"backbone": strategy.backbone, "baseline": kind,
                                          "n_groups": ctx.n_groups(strategy.backbone)},
                      system={st.STRATEGY: strategy.to_dict()})
        if bars:
            bars.start_trial(trial.number, strategy.epochs, kind)

        def report(value: float, epoch: int) -> None:
            seen["epoch"] = epoch
            with shielded():
                trial.report(value, epoch)
                prune = not kind and trial.should_prune()
            if bars:
                bars.epoch(value)
            # Baselines are references for the whole study, so they always finish.
            if prune:
                raise optuna.TrialPruned()

        result = ctx.run(strategy, report, device=device, seed=job.seed + trial.number,
                         timings=timings)
        with shielded():
            set_attrs(storage, tid, user=result_attrs(result),
                      system={st.HISTORY: result.history})
            save_if_top(study, tid, trial.number, result, Path(job.workdir),
                        job.keep_checkpoints)
            study.tell(trial, result.value)
            prune_checkpoints(study, Path(job.workdir), job.keep_checkpoints)
        state = TrialState.COMPLETE
    except optuna.TrialPruned:
        with shielded():
            set_attrs(storage, tid, user=partial())
            study.tell(trial, state=TrialState.PRUNED)
        state = TrialState.PRUNED
    except KeyboardInterrupt:
        with shielded():
            set_attrs(storage, tid, user={"fail_reason": "interrupted (Ctrl-C)", **partial()},
                      system={st.INTERRUPTED: True})
            study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as exc:  # a crashed trial (NaN, OOM, a plugin bug) is recorded; go on
        with shielded():
            set_attrs(storage, tid, user={"fail_reason": fail_reason(exc), **partial()})
            study.tell(trial, state=TrialState.FAIL)
        print(f"[autotransfer] trial {trial.number} failed: {fail_reason(exc)}",
              file=sys.stderr)
        if not _is_expected(exc):
            traceback.print_exc(file=sys.stderr)
        state = TrialState.FAIL
    if bars:
        bars.end_trial()
    return state


def _is_expected(exc: BaseException) -> bool:
    from ..errors import AutotransferError

    return isinstance(exc, AutotransferError)


class EarlyRungs(optuna.pruners.BasePruner):
    """Judge trials only in their first half: a trial pruned at epoch 9 of 10 has already
    cost what finishing would, so late rungs save nothing and lose the result."""

    def __init__(self, inner: optuna.pruners.BasePruner, last: int) -> None:
        self.inner, self.last = inner, last

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        return step is not None and step <= self.last and self.inner.prune(study, trial)


class _Bars:
    """tqdm bars: trials of the study, and epochs of the running trial."""

    def __init__(self, job: SearchJob, study: optuna.Study) -> None:
        from tqdm import tqdm

        from ._trial import counted_trials

        self._tqdm = tqdm
        self.trials = tqdm(total=job.n_trials, initial=counted_trials(study), desc="trials",
                           unit="trial", position=0, dynamic_ncols=True)
        self.epochs = None
        self.started = time.time()

    def start_trial(self, number: int, epochs: int, kind: str) -> None:
        label = f"trial {number}" + (f" ({kind})" if kind else "")
        self.epochs = self._tqdm(total=epochs, desc=label, unit="epoch", position=1,
                                 leave=False, dynamic_ncols=True)

    def epoch(self, value: float) -> None:
        if self.epochs is not None:
            self.epochs.set_postfix(val=f"{value:.4f}")
            self.epochs.update(1)

    def end_trial(self) -> None:
        if self.epochs is not None:
            self.epochs.close()
            self.epochs = None
        self.trials.update(1)

    def close(self) -> None:
        if self.epochs is not None:
            self.epochs.close()
        self.trials.close()
