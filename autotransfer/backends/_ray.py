"""The Ray Tune backend: the same define-by-run space through ``OptunaSearch`` + ASHA.

Trials run wherever the Ray cluster has room (``tune.with_resources``); every trial is a
trial of the study's own Optuna storage, so ``Study.load``, the leaderboard and the CLI
work unchanged. A trial whose worker is lost is retried (``FailureConfig``).
"""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .. import storage as st
from ..errors import AutotransferError, DeviceError
from ._optuna import first_rung, make_sampler, max_epochs
from ._trial import (
    SearchJob,
    TrialContext,
    counted_trials,
    enqueue_due_baselines,
    fail_reason,
    prune_checkpoints,
    result_attrs,
    save_if_top,
    set_attrs,
)


class RayBackend:
    name = "ray"

    def run(self, job: SearchJob, train: Any, valid: Any, *, devices: Any = "auto",
            trials_per_device: int = 1, address: str | None = None, max_retries: int = 1,
            **_: Any) -> None:
        try:
            import ray
            from ray import tune
        except ImportError as exc:
            raise AutotransferError(
                f"backend='ray' needs Ray Tune ({exc}); install it with "
                f"`pip install 'ray[tune]'`, or use backend='optuna'.") from exc
        started = _init(ray, address)
        try:
            self._fit(ray, tune, job, train, valid, devices, trials_per_device, address,
                      max_retries)
        finally:
            if started:
                ray.shutdown()

    def _fit(self, ray, tune, job, train, valid, devices, trials_per_device, address,
             max_retries) -> None:
        storage = job.storage.open()
        study = optuna.load_study(study_name=job.study_name, storage=storage)
        remaining = -1 if job.n_trials is None else job.n_trials - counted_trials(study)
        if remaining == 0:
            return
        concurrency, resources = _resources(ray, devices, trials_per_device, address)
        ctx = TrialContext(job, train, valid)

        def define(trial):  # runs in the driver, on the Optuna trial OptunaSearch asked
            strategy, kind = ctx.define(trial)
            set_attrs(storage, trial._trial_id,
                      user={"backbone": strategy.backbone, "baseline": kind,
                            "n_groups": ctx.n_groups(strategy.backbone)},
                      system={st.STRATEGY: strategy.to_dict()})
            return {"strategy": strategy.to_dict(), "baseline": kind,
                    "trial_id": trial._trial_id, "trial_number": trial.number}

        mode = "max" if job.direction == "maximize" else "min"
        search = _StudySearch(job, storage, ctx, space=define, metric="value", mode=mode,
                              sampler=make_sampler(job, 0), study_name=job.study_name,
                              storage=storage)
        scheduler = None
        if job.pruner != "none":
            # Epochs are the resource. max_t is one past the last epoch so that a trial
            # which trains every epoch ends by returning (and records its result), never
            # by being stopped at max_t.
            scheduler = _BaselineSafeASHA(time_attr="training_iteration", metric="value",
                                          mode=mode, max_t=max_epochs(job) + 1,
                                          grace_period=min(first_rung(job), max_epochs(job)),
                                          reduction_factor=3)
        trainable = tune.with_resources(
            tune.with_parameters(_ray_trial, job=job, train=train, valid=valid), resources)
        time_budget = None if job.deadline is None else max(1.0, job.deadline - time.time())
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler,
                                        num_samples=remaining,
                                        max_concurrent_trials=concurrency,
                                        time_budget_s=time_budget,
                                        # one worker process runs many trials: no
                                        # interpreter + torch import per trial
                                        reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"{job.study_name}-{int(time.time())}",
                storage_path=str((Path(job.workdir) / "ray").resolve()),
                failure_config=tune.FailureConfig(max_failures=max_retries),
                verbose=1 if job.progress else 0),
        )
        tuner.fit()
        prune_checkpoints(study, Path(job.workdir), job.keep_checkpoints)


def _init(ray, address: str | None) -> bool:
    """Join ``address`` or start a local Ray; True if this call started it."""
    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in ("AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD", "HF_HUB_OFFLINE")
           if k in os.environ}
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                  runtime_env={"env_vars": env} if env else None)
    if address:
        def unreachable(reason: str) -> DeviceError:
            return DeviceError(
                f"Cannot reach a Ray cluster at address={address!r} ({reason}). Start one "
                f"with `ray start --head` and pass the address it prints (e.g. "
                f"'127.0.0.1:6379'), or leave address unset for a local Ray.")

        # ray.init retries an unreachable address for minutes; a socket says so at once.
        host, _, port = address.split("://", 1)[-1].rpartition(":")
        if address != "auto" and port.isdigit():
            try:
                socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
            except OSError as exc:
                raise unreachable(f"{type(exc).__name__}: {exc}") from exc
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:
            raise unreachable(f"{type(exc).__name__}: {exc}") from exc
    else:
        ray.init(**kwargs)
    return True


def _resources(ray, devices: Any, trials_per_device: int, address: str | None):
    """(max concurrent trials, resources of one trial) from the cluster and the request."""
    if not isinstance(trials_per_device, int) or trials_per_device < 1:
        raise DeviceError(f"trials_per_device must be an integer >= 1, but got "
                          f"{trials_per_device!r}.")
    total = ray.cluster_resources()
    gpus, cpus = int(total.get("GPU", 0)), max(1, int(total.get("CPU", 1)))
    if gpus:
        n = gpus if devices in ("auto", None) else (
            devices if isinstance(devices, int) else len(devices))
        if n > gpus:
            raise DeviceError(f"Asked for {n} GPUs, but the Ray cluster has {gpus}.")
        return n * trials_per_device, {"cpu": 1, "gpu": 1 / trials_per_device}
    if isinstance(devices, int) and not isinstance(devices, bool):
        n = devices
    else:
        n = cpus if address else 1  # a cluster: one trial per CPU; locally: one at a time
    return n * trials_per_device, {"cpu": max(1, cpus // (n * trials_per_device))
                                   if not address else 1}


def _ray_trial(config: dict, job: SearchJob | None = None, train: Any = None,
               valid: Any = None) -> None:
    """One trial inside a Ray worker: train, report each epoch, record in the storage."""
    import ray
    import torch
    from ray import tune

    from .. import plugins
    from ..strategy import Strategy

    for module in job.plugin_modules:
        plugins.register_plugin(module)
    gpu_ids = ray.get_gpu_ids()  # Ray sets CUDA_VISIBLE_DEVICES for the trial
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    storage = job.storage.open()
    tid, number = config["trial_id"], config["trial_number"]
    node = ray.get_runtime_context().get_node_id()[:8]
    set_attrs(storage, tid, user={"worker": f"ray:{node}",
                                  "device": f"cuda:{gpu_ids[0]}" if gpu_ids else "cpu"},
              system={st.HOST: socket.gethostname(), st.PID: os.getpid()})
    strategy = Strategy.from_dict(config["strategy"])
    ctx = _context(job, train, valid)

    def report(value: float, epoch: int) -> None:
        set_attrs(storage, tid, user={"epochs_run": epoch})
        tune.report({"value": value, "epoch": epoch})

    try:
        result = ctx.run(strategy, report, device="cuda:0" if gpu_ids else "cpu",
                         seed=job.seed + number)
    except AutotransferError as exc:  # NaN loss, OOM: failed for a reason, not retried
        set_attrs(storage, tid, user={"fail_reason": fail_reason(exc)})
        worst = -math.inf if job.direction == "maximize" else math.inf
        tune.report({"value": worst, "fail_reason": fail_reason(exc)})
        return
    set_attrs(storage, tid, user=result_attrs(result),
              system={st.HISTORY: result.history, st.RESULT: result.value})
    study = optuna.load_study(study_name=job.study_name, storage=storage)
    save_if_top(study, tid, number, result, Path(job.workdir), job.keep_checkpoints)


_contexts: dict[tuple[str, str], TrialContext] = {}


def _context(job: SearchJob, train: Any, valid: Any) -> TrialContext:
    """One TrialContext per study in a reused worker: data prepared once, not per trial."""
    key = (job.storage.url, job.study_name)
    if key not in _contexts:
        _contexts.clear()
        _contexts[key] = TrialContext(job, train, valid)
    return _contexts[key]


def _study_search_class():
    from ray.tune.search.optuna import OptunaSearch

    class StudySearch(OptunaSearch):
        """OptunaSearch that tells the study what really happened to each trial."""

        def __init__(self, job: SearchJob, study_storage: Any, ctx: TrialContext,
                     **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._job, self._study_storage, self._ctx = job, study_storage, ctx

        def suggest(self, trial_id: str):
            # the deferred baselines join the queue before Optuna is asked
            enqueue_due_baselines(self._ot_study, self._ctx)
            return super().suggest(trial_id)

        # The study's Optuna storage is the record (and how a search resumes); Tune's own
        # searcher snapshots would pickle the storage connection and the space closure.
        def save(self, checkpoint_path: str) -> None:
            pass

        def restore(self, checkpoint_path: str) -> None:
            pass

        def on_trial_complete(self, trial_id: str, result: dict | None = None,
                              error: bool = False) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            ot_trial = self._ot_trials[trial_id]
            frozen = self._study_storage.get_trial(ot_trial._trial_id)
            value = frozen.system_attrs.get(st.RESULT)
            if value is not None:
                state = TrialState.COMPLETE
            elif "fail_reason" in frozen.user_attrs:
                state = TrialState.FAIL
            elif error:
                self._study_storage.set_trial_user_attr(
                    ot_trial._trial_id, "fail_reason",
                    "its Ray worker failed (retries exhausted); see the Ray logs")
                state = TrialState.FAIL
            else:
                state = TrialState.PRUNED  # stopped early by ASHA
                # Tune hands the result that triggered the stop to on_trial_complete only.
                step = (result or {}).get("training_iteration")
                if step and step not in frozen.intermediate_values and "value" in result:
                    ot_trial.report(result["value"], step)
            self._ot_study.tell(ot_trial, value if state == TrialState.COMPLETE else None,
                                state=state)
            self._completed_trials.add(trial_id)
            prune_checkpoints(self._ot_study, Path(self._job.workdir),
                              self._job.keep_checkpoints)

    return StudySearch


def _StudySearch(job, study_storage, ctx, **kwargs):  # noqa: N802 (a class factory)
    return _study_search_class()(job, study_storage, ctx, **kwargs)


def _BaselineSafeASHA(**kwargs):  # noqa: N802
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class BaselineSafeASHA(ASHAScheduler):
        """ASHA that never stops a baseline: they are the study's references."""

        def on_trial_result(self, tune_controller, trial, result):
            if trial.config.get("baseline"):
                return TrialScheduler.CONTINUE
            return super().on_trial_result(tune_controller, trial, result)

    return BaselineSafeASHA(**kwargs)
