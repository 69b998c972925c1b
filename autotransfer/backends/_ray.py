"""The Ray Tune backend: the same define-by-run space through ``OptunaSearch``.

Trials run wherever the Ray cluster has room (``tune.with_resources``); every trial is a
trial of the study's own Optuna storage, so ``Study.load``, the leaderboard and the CLI
work unchanged. The study's own pruner judges them (see ``_policy.ray_scheduler``). A
trial whose worker is lost is retried (``FailureConfig``); a trial that raises is failed
with its reason and never retried.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import optuna

from ..errors import AutotransferError, DeviceError
from ._base import Backend
from ._interrupt import shielded
from ._job import SearchJob, TrialContext, counted_trials
from ._lifecycle import TrialRecord, prune_checkpoints
from ._policy import make_sampler, ray_scheduler
from ._ray_parts import init, quiet, resources, search_alg, stopper


class RayBackend(Backend):
    """Trials on a Ray cluster (a local Ray when ``address`` is None).

    Args:
        address: A Ray cluster address such as ``"127.0.0.1:6379"``; default a local Ray.
        max_retries: Retries of a trial whose worker was lost (not of one that raised).
        resources: Resources of one trial, e.g. ``{"cpu": 4, "gpu": 0.5}``; default from
            ``devices`` and the cluster.
        devices: "auto" (every GPU of the cluster, else the CPUs), "cpu", or a count of
            concurrent trials.
        trials_per_device: Concurrent trials sharing one GPU.
    """

    name = "ray"

    def __init__(self, address: str | None = None, max_retries: int = 1,
                 resources: dict[str, float] | None = None, devices: Any = "auto",
                 trials_per_device: int = 1) -> None:
        self.address, self.max_retries, self.resources = address, max_retries, resources
        self.devices, self.trials_per_device = devices, trials_per_device

    def check(self) -> None:
        from ..checks import integer

        integer("max_retries", self.max_retries, low=0)
        integer("trials_per_device", self.trials_per_device, low=1)
        if self.address is not None and not isinstance(self.address, str):
            raise DeviceError(f"address must be a Ray address like '127.0.0.1:6379', but got "
                              f"address={self.address!r}.")
        resources(None, self, check_only=True)
        try:
            import ray  # noqa: F401
            from ray import tune  # noqa: F401
        except ImportError as exc:
            raise AutotransferError(
                f"backend='ray' needs Ray Tune ({exc}); install it with "
                f"`pip install 'ray[tune]'`, or use backend='optuna'.") from exc

    def run(self, job: SearchJob, train: Any, valid: Any) -> None:
        import ray

        started = init(ray, self.address, job.progress)
        try:
            with quiet(job.progress):
                self._fit(job, train, valid)
        finally:
            if started:
                ray.shutdown()

    def _fit(self, job: SearchJob, train: Any, valid: Any) -> None:
        import ray
        from ray import tune

        study = optuna.load_study(study_name=job.study_name, storage=job.storage.open())
        remaining = -1 if job.n_trials is None else job.n_trials - counted_trials(study)
        if remaining == 0:
            return
        concurrency, per_trial = resources(ray, self)
        trainable = tune.with_resources(
            tune.with_parameters(ray_trial, job=job, train=train, valid=valid), per_trial)
        # Trials stop themselves at the deadline, keeping their best epoch; Ray's own
        # budget, a little later, only stops one that cannot (a hung worker).
        time_budget = (None if job.deadline is None
                       else max(1.0, job.deadline - time.time()) + RAY_GRACE_S)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=search_alg(job, job.make_context(train, valid),
                                      make_sampler(job, 0)),
                scheduler=ray_scheduler(job), num_samples=remaining,
                max_concurrent_trials=concurrency, time_budget_s=time_budget,
                reuse_actors=True),  # one worker process runs many trials
            run_config=tune.RunConfig(
                name=f"{job.study_name}-{int(time.time())}",
                storage_path=str((Path(job.workdir) / "ray").resolve()),
                failure_config=tune.FailureConfig(max_failures=self.max_retries),
                stop=stopper(job), verbose=1 if job.progress else 0),
        )
        tuner.fit()
        prune_checkpoints(study, Path(job.workdir), job.keep_checkpoints)


RAY_GRACE_S = 15.0  # after the deadline, for a cut trial to record its best epoch


def ray_trial(config: dict, job: SearchJob | None = None, train: Any = None,
              valid: Any = None) -> None:
    """One trial inside a Ray worker: train, report each epoch, record in the storage."""
    import ray
    import torch
    from ray import tune

    from ..strategy.strategy import Strategy

    gpu_ids = ray.get_gpu_ids()  # Ray sets CUDA_VISIBLE_DEVICES for the trial
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    ctx = _context(job, train, valid)
    record = TrialRecord(job.storage.open(), config["trial_id"], config["trial_number"], job)
    node = ray.get_runtime_context().get_node_id()[:8]
    record.started(f"ray:{node}", f"cuda:{gpu_ids[0]}" if gpu_ids else "cpu")

    def report(value: float, epoch: int) -> None:
        record.epoch(epoch)
        record.set(user={"epochs_run": epoch})
        tune.report({"value": value, "epoch": epoch})

    try:
        result = ctx.run(Strategy.from_dict(config["strategy"]), report,
                         device="cuda:0" if gpu_ids else "cpu",
                         seed=job.seed + record.number, timings=record.timings,
                         params=config.get("params"))
    except Exception as exc:  # failed for a reason (NaN, OOM, a plugin bug): not retried
        with shielded():
            reason = record.failed(exc)
        worst = -math.inf if job.direction == "maximize" else math.inf
        tune.report({"value": worst, "fail_reason": reason})
        return
    with shielded():
        record.completed(result)


_contexts: dict[tuple[str, str], TrialContext] = {}


def _context(job: SearchJob, train: Any, valid: Any) -> TrialContext:
    """One TrialContext per study in a reused worker (data prepared once, not per trial),
    and the parent's plugins (objects too) registered in this worker."""
    from .. import plugins

    key = (job.storage.url, job.study_name)
    if key not in _contexts:
        _contexts.clear()
        plugins.set_current(plugins.PluginHost.from_portable(job.plugins))
        _contexts[key] = job.make_context(train, valid)
    return _contexts[key]
