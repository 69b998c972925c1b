"""The Optuna worker loop: load the study, ask, train one trial, tell, until the budget is
spent; one such loop runs per device slot (see :mod:`autotransfer.backends._workers`)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from .. import storage as st
from ..data import Dataset
from ._enqueue import enqueue_due_baselines
from ._interrupt import deferred_sigint, shielded
from ._job import SearchJob, TrialContext
from ._lifecycle import TrialRecord, failing, prune_checkpoints
from ._policy import make_pruner, make_sampler, should_prune
from ._progress import Bars


def load_study(job: SearchJob, worker: int = 0) -> optuna.Study:
    return optuna.load_study(study_name=job.study_name, storage=job.storage.open(),
                             sampler=make_sampler(job, worker), pruner=make_pruner(job))


def run_worker(job: SearchJob, train: Dataset, valid: Dataset, *, worker: int = 0,
               device: str = "cpu", device_label: str | None = None) -> int:
    """Run trials until the budget is spent; returns how many this worker ran.

    ``device`` is what torch uses here; ``device_label`` what the study records (a worker
    pinned to GPU 2 trains on ``cuda:0`` of its own process but records ``cuda:2``).
    Checking the budget, enqueuing due baselines and asking happen under the study's
    lock, so parallel workers (and separate ``search`` processes) never overshoot.
    """
    study = load_study(job, worker)
    ctx = job.make_context(train, valid)
    lock = st.lock(job.storage, job.study_name)
    bars = Bars(job, study) if job.progress else None
    ran = 0
    with deferred_sigint():
        try:
            while True:
                with lock, shielded():
                    if not job.budget_left(study) or failing(study, job.run):
                        break
                    enqueue_due_baselines(study, ctx)
                    trial = study.ask()
                    record = TrialRecord(st.storage_of(study), st.trial_id(trial),
                                         trial.number, job)
                    record.started(worker, device_label or device)
                run_one(study, trial, record, ctx, device=device, bars=bars)
                ran += 1
        finally:
            if bars:
                bars.close()
    return ran


def run_one(study: optuna.Study, trial: optuna.Trial, record: TrialRecord, ctx: TrialContext,
            *, device: str, bars: Bars | None = None) -> TrialState:
    """Train one asked trial and tell the study how it ended. Never loses a told trial.

    Storage calls run shielded from Ctrl-C; an interrupt lands in training, and the
    trial is then recorded as interrupted before the KeyboardInterrupt goes on.
    """
    try:
        with shielded():
            strategy, kind = ctx.define(trial)
            record.defined(strategy, kind, ctx.n_groups(strategy.backbone))
        if bars:
            bars.start_trial(trial.number, strategy.epochs, kind)

        def report(value: float, epoch: int) -> None:
            record.epoch(epoch)
            with shielded():
                trial.report(value, epoch)
                prune = should_prune(study, study.pruner, st.trial_id(trial), bool(kind))
            if bars:
                bars.epoch(value)
            if prune:
                raise optuna.TrialPruned()

        result = ctx.run(strategy, report, device=device, seed=ctx.job.seed + trial.number,
                         timings=record.timings, params=trial.params)
        with shielded():
            record.completed(result)
            study.tell(trial, result.value)
            prune_checkpoints(study, record.workdir, ctx.job.keep_checkpoints)
        state = TrialState.COMPLETE
    except optuna.TrialPruned:
        with shielded():
            record.pruned()
            study.tell(trial, state=TrialState.PRUNED)
        state = TrialState.PRUNED
    except KeyboardInterrupt:
        with shielded():
            record.interrupted()
            study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as exc:  # a crashed trial (NaN, OOM, a plugin bug) is recorded; go on
        with shielded():
            record.failed(exc)
            study.tell(trial, state=TrialState.FAIL)
        state = TrialState.FAIL
    if bars:
        bars.end_trial()
    return state
