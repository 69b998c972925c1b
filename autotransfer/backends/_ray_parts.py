"""The Ray pieces the Ray backend assembles: joining a cluster, sizing trials, the searcher
that tells the study what happened, and the stopper that ends a run whose trials all fail."""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .. import storage as st
from ..errors import DeviceError
from ._enqueue import enqueue_due_baselines
from ._job import SearchJob, TrialContext
from ._lifecycle import TrialRecord, failing, prune_checkpoints


def init(ray: Any, address: str | None, progress: bool = True) -> bool:
    """Join ``address`` or start a local Ray; True if this call started it. Without
    ``progress`` Ray logs errors only (not its token notice or "Started a local Ray")."""
    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in ("AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD", "HF_HUB_OFFLINE")
           if k in os.environ}
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                  runtime_env={"env_vars": env} if env else None,
                                  logging_level=logging.INFO if progress else logging.ERROR)
    if not address:  # local workers import what this process can (plugin objects' modules)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        kwargs["runtime_env"] = {"env_vars": env}
        ray.init(**kwargs)
        return True

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
    return True


# Without progress, Tune's legacy reporter at verbose=0 prints nothing; the newer one prints
# its configuration box and a TensorBoard hint whatever the verbosity.
_SILENT_ENV = {"RAY_AIR_NEW_OUTPUT": "0"}


@contextlib.contextmanager
def quiet(progress: bool):
    """Ray Tune as quiet as the search around it (``progress``), restored after."""
    env = {} if progress else _SILENT_ENV
    saved = {k: os.environ.get(k) for k in env}
    tune_log = logging.getLogger("ray.tune")
    level = tune_log.level
    os.environ.update(env)
    if not progress:
        tune_log.setLevel(logging.WARNING)  # "Wrote the latest version of all result files"
    try:
        yield
    finally:
        tune_log.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def resources(ray: Any, backend: Any, *, check_only: bool = False) -> Any:
    """(max concurrent trials, resources of one trial) from the cluster and the request.

    ``devices="cpu"`` never asks for a GPU, even on a GPU cluster; an explicit
    ``resources`` dict is used as given, and Ray packs as many trials as fit.
    """
    devices, tpd, given = backend.devices, backend.trials_per_device, backend.resources
    count = isinstance(devices, numbers.Integral) and not isinstance(devices, bool)
    if not (devices in ("auto", "cpu") or (count and devices >= 1)):
        raise DeviceError(f"RayBackend devices must be 'auto', 'cpu' or a count >= 1 (Ray "
                          f"places trials on devices itself), but got devices={devices!r}.")
    if given is not None and (not isinstance(given, dict) or not all(
            isinstance(k, str) and isinstance(v, numbers.Real) and v >= 0
            for k, v in given.items())):
        raise DeviceError(f"resources must be a dict of one trial's resources like "
                          f"{{'cpu': 4, 'gpu': 0.5}}, but got resources={given!r}.")
    if check_only:
        return None
    total = ray.cluster_resources()
    gpus, cpus = int(total.get("GPU", 0)), max(1, int(total.get("CPU", 1)))
    if given is not None:
        return (int(devices) * tpd if count else None), dict(given)
    if gpus and devices != "cpu":
        n = gpus if devices == "auto" else int(devices)
        if n > gpus:
            raise DeviceError(f"Asked for {n} GPUs, but the Ray cluster has {gpus}.")
        return n * tpd, {"cpu": 1, "gpu": 1 / tpd}
    n = int(devices) if count else (cpus if backend.address else 1)
    if n * tpd > cpus:
        raise DeviceError(f"Asked for {n * tpd} concurrent CPU trials, but the Ray cluster has "
                          f"{cpus} CPUs.")
    return n * tpd, {"cpu": max(1, cpus // (n * tpd)) if not backend.address else 1, "gpu": 0}


def search_alg(job: SearchJob, ctx: TrialContext, sampler: optuna.samplers.BaseSampler) -> Any:
    """OptunaSearch over the study's own storage; each asked trial is defined and recorded."""
    storage = job.storage.open()

    def define(trial: optuna.Trial) -> dict:  # runs in the driver, on the asked trial
        strategy, kind = ctx.define(trial)
        TrialRecord(storage, st.trial_id(trial), trial.number, job).defined(
            strategy, kind, ctx.n_groups(strategy.backbone))
        return {"strategy": strategy.to_dict(), "baseline": kind, "params": dict(trial.params),
                "trial_id": st.trial_id(trial), "trial_number": trial.number}

    mode = "max" if job.direction == "maximize" else "min"
    return _study_search_class()(job, storage, ctx, space=define, metric="value", mode=mode,
                                 sampler=sampler, study_name=job.study_name, storage=storage)


def _study_search_class() -> type:
    from ray.tune.search.optuna import OptunaSearch

    class StudySearch(OptunaSearch):
        """OptunaSearch that tells the study what really happened to each trial."""

        def __init__(self, job: SearchJob, study_storage: Any, ctx: TrialContext,
                     **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._job, self._study_storage, self._ctx = job, study_storage, ctx

        def suggest(self, trial_id: str):
            if self._job.deadline is not None and time.time() >= self._job.deadline:
                return self.FINISHED  # the time budget is spent: start nothing more
            with st.lock(self._job.storage, self._job.study_name):  # due baselines first
                enqueue_due_baselines(self._ot_study, self._ctx)
            return super().suggest(trial_id)

        # The study's storage is the record (and how a search resumes); Tune's snapshots
        # would pickle the storage connection and the space closure.
        def save(self, checkpoint_path: str) -> None:
            pass

        def restore(self, checkpoint_path: str) -> None:
            pass

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            pass  # the scheduler (policy.ray_scheduler) records every epoch

        def on_trial_complete(self, trial_id: str, result: dict | None = None,
                              error: bool = False) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            ot_trial = self._ot_trials[trial_id]
            state, value = _ending(self._study_storage, st.trial_id(ot_trial), error)
            self._ot_study.tell(ot_trial, value, state=state)
            self._completed_trials.add(trial_id)
            prune_checkpoints(self._ot_study, Path(self._job.workdir),
                              self._job.keep_checkpoints)

    return StudySearch


def _ending(storage: Any, trial_id: int, error: bool) -> tuple[TrialState, float | None]:
    """How a Ray trial ended, from what its worker recorded in the storage."""
    frozen = storage.get_trial(trial_id)
    value = frozen.system_attrs.get(st.RESULT)
    if value is not None:
        return TrialState.COMPLETE, value
    if "fail_reason" in frozen.user_attrs:
        return TrialState.FAIL, None
    if error:
        storage.set_trial_user_attr(trial_id, "fail_reason",
                                    "its Ray worker was lost (retries exhausted); see the Ray logs")
        return TrialState.FAIL, None
    return TrialState.PRUNED, None  # stopped by the study's pruner


def stopper(job: SearchJob) -> Any:
    """Stop the whole run once its first trials have all failed (see ``_lifecycle.failing``)."""
    from ray.tune import Stopper

    class FailFast(Stopper):
        def __init__(self) -> None:
            self.study = optuna.load_study(study_name=job.study_name, storage=job.storage.open())

        def __call__(self, trial_id: str, result: dict) -> bool:
            return False

        def stop_all(self) -> bool:
            return failing(self.study, job.run)

    return FailFast()
