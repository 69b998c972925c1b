"""The Optuna backend: a worker loop of ask -> train -> tell over a shared storage.

One worker runs in this process; with several device slots, each runs in its own process
(see :mod:`autotransfer.backends._workers`), its device fixed before torch is imported.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from .. import storage as st
from .._interrupt import deferred_sigint, shielded
from ..baselines import enqueue_due_baselines
from ..data import Dataset
from ..devices import Slot, resolve
from ._base import Backend
from ._job import SearchJob, TrialContext
from ._lifecycle import TrialRecord, failing, prune_checkpoints
from ._policy import make_pruner, make_sampler, should_prune
from ._progress import Bars


class OptunaBackend(Backend):
    """Trials on this machine: one worker process per device slot, sharing the storage.

    Args:
        devices: "auto" (every visible GPU, else the CPU), "cpu", a count (GPUs, or CPU
            worker processes on a machine without one), or a list like ``["cuda:0", "cuda:2"]``.
        trials_per_device: Concurrent trials sharing one device.
    """

    name = "optuna"

    def __init__(self, devices: Any = "auto", trials_per_device: int = 1) -> None:
        self.devices, self.trials_per_device = devices, trials_per_device

    def slots(self) -> list[Slot]:
        return resolve(self.devices, self.trials_per_device)

    def check(self) -> None:
        self.slots()

    def run(self, job: SearchJob, train: Dataset, valid: Dataset) -> None:
        from ._workers import launch

        slots = self.slots()
        if len(slots) == 1:  # one slot: train in this process, nothing to send
            run_worker(job, train, valid, worker=0, device=slots[0].device)
        else:
            launch(job, train, valid, slots)


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
    ctx = TrialContext(job, train, valid)
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
                    record = TrialRecord(study._storage, trial._trial_id, trial.number, job)
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
                prune = should_prune(study, study.pruner, trial._trial_id, bool(kind))
            if bars:
                bars.epoch(value)
            if prune:
                raise optuna.TrialPruned()

        result = ctx.run(strategy, report, device=device, seed=ctx.job.seed + trial.number,
                         timings=record.timings)
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
