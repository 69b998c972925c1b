"""search(): the main job. Validate, open or resume the study, enqueue baselines, run."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from . import plugins
from . import storage as st
from .backends._trial import SearchJob, TrialContext, counted_trials, enqueue_due_baselines
from .cache import DEFAULT_BYTES
from .data import Dataset
from .errors import ConfigError, DataError, ModalityError, StorageError, check_choice
from .space import SearchSpace, check_frozen_range
from .study import Study

BACKENDS = ("optuna", "ray")
PRUNERS = ("hyperband", "median", "none")
SAMPLERS = ("tpe", "random")


def search(data: Dataset, *, task: str = "classification",
           backbones: list[str] | str | None = None, n_trials: int | None = None,
           timeout: float | None = None, backend: str = "optuna", devices: Any = "auto",
           storage: str | os.PathLike | None = None, name: str | None = None, seed: int = 0,
           space: SearchSpace | None = None, baselines: bool = True,
           valid: Dataset | None = None, valid_fraction: float = 0.2,
           pruner: str | optuna.pruners.BasePruner = "hyperband",
           keep_checkpoints: int = 3, patience: int | None = 5,
           trials_per_device: int = 1, address: str | None = None,
           max_retries: int = 1, progress: bool = True, root: str | os.PathLike | None = None,
           sampler: str | optuna.samplers.BaseSampler = "tpe", feature_cache: bool = True,
           cache_bytes: int = DEFAULT_BYTES, warm_start: bool = True) -> Study:
    """Search backbones x transfer strategies; return the stored, resumable study.

    Args:
        data: Training data, a lazy :class:`~autotransfer.data.Dataset` (``at.data.from_folder``,
            ``from_pandas``/``from_csv`` with an image-path or text column, ``from_hf``,
            ``from_torch``, ``from_arrays``); decoded in loader workers as trials read it.
        task: A registered head: "classification", "regression" or "multilabel".
        backbones: Registry names and globs; default every available one for the data's
            modality.
        n_trials: Trials in the study in all (baselines included); with ``timeout``,
            whichever comes first. Rerunning a finished study runs nothing more.
        timeout: Seconds after which no new trial starts.
        backend: "optuna" (worker processes on this machine) or "ray" (Ray Tune).
        devices: "auto" (every visible GPU, else the CPU), "cpu", a count, or a list such
            as ``["cuda:0", "cuda:2"]``.
        storage: Optuna storage: default ``studies/<name>.db`` (SQLite); a ``.db`` or
            journal ``.log`` path, or any Optuna URL.
        name: Study name; rerunning with the same name and storage resumes it.
        seed: Seeds the split, the sampler and every trial.
        space: The :class:`SearchSpace`; fix or narrow fields there.
        baselines: Run scratch, linear-probe and default fine-tune trials per backbone (the
            linear probe first; the two full-training ones once a few searched trials
            have finished, or when only they fit in ``n_trials``).
        valid: Validation data; default a seeded (stratified) split of ``data``.
        pruner: "hyperband" (epochs as the resource), "median", "none", or any Optuna
            pruner instance.
        keep_checkpoints: Keep the best k trials' weights (older ones are deleted).
        patience: Early-stop a trial after this many epochs without improvement.
        trials_per_device: Concurrent trials sharing one device.
        address: Ray cluster address (backend="ray"); default a local Ray.
        max_retries: Ray: retries of a trial whose worker was lost.
        progress: Show progress bars.
        root: Folder that holds ``studies/`` when ``storage`` is None (default: cwd).
        sampler: "tpe" (multivariate, grouped for the conditional space), "random", or
            any Optuna sampler.
        feature_cache: Share frozen-prefix outputs across trials (memory, then disk under
            the study's folder). False runs every frozen prefix on every batch.
        cache_bytes: Memory budget of the feature cache per worker process.
        warm_start: Begin a new study with a short portfolio of transfer settings that
            usually work (most, half, then a quarter of the groups frozen, with a
            fine-tuning learning rate and layer decay; other fields sampled), cheapest
            first, before the sampler takes over. False leaves every trial to the sampler.

    Returns:
        The :class:`Study`; ``study.leaderboard()``, ``study.load_best()``.
    """
    from .backends import get_backend

    # --- check every argument before touching storage ---
    check_choice("backend", backend, BACKENDS)
    if not isinstance(pruner, optuna.pruners.BasePruner):
        check_choice("pruner", pruner, PRUNERS)
    if not isinstance(sampler, optuna.samplers.BaseSampler):
        check_choice("sampler", sampler, SAMPLERS)
    head = plugins.get_head(task)
    if n_trials is None and timeout is None:
        raise ConfigError("Give n_trials (how many trials) or timeout (seconds), or both; "
                          "neither was given.")
    if n_trials is not None and (not isinstance(n_trials, int) or n_trials < 1):
        raise ConfigError(f"n_trials must be an integer >= 1, but got n_trials={n_trials!r}.")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout must be > 0 seconds, but got timeout={timeout!r}.")
    if not isinstance(keep_checkpoints, int) or keep_checkpoints < 0:
        raise ConfigError(
            f"keep_checkpoints must be an integer >= 0, but got {keep_checkpoints!r}.")
    for what, ds in (("data", data), ("valid", valid)):
        if ds is not None and not isinstance(ds, Dataset):
            raise DataError(f"{what} must be an autotransfer Dataset (at.data.from_folder, "
                            f"from_pandas, from_csv, from_hf, from_torch, from_arrays), but "
                            f"got {type(ds).__name__}.")
    if valid is not None and valid.modality != data.modality:
        raise ModalityError(f"valid holds {valid.modality} but data holds {data.modality}; "
                            f"give both of one modality.")
    space = space or SearchSpace()
    if not isinstance(space, SearchSpace):
        raise ConfigError(f"space must be an autotransfer.SearchSpace, got {type(space).__name__}.")
    names = plugins.resolve_backbones(backbones, data.modality)
    for n in names:
        b = plugins.get_backbone(n)
        if b.modality != data.modality:
            fits = plugins.list_backbones(modality=data.modality)
            raise ModalityError(f"Backbone {n!r} takes {b.modality} inputs, but the data holds "
                                f"{data.modality}; {data.modality} backbones: {', '.join(fits)}.")
    train, valid = (data, valid) if valid is not None else data.split(valid_fraction, seed=seed)
    name = name or "autotransfer"

    spec = st.resolve(storage, name, root=Path(root) if root else None)
    workdir = st.workdir_for(spec, name)
    workdir.mkdir(parents=True, exist_ok=True)
    job = SearchJob(
        storage=spec, study_name=name, task=task, modality=data.modality, backbones=names,
        space=space, n_trials=n_trials,
        deadline=None if timeout is None else time.time() + timeout, seed=seed,
        pruner=pruner, keep_checkpoints=keep_checkpoints, patience=patience,
        workdir=str(workdir), direction=head.direction,
        plugin_modules=plugins.plugin_modules(), progress=progress, sampler=sampler,
        feature_cache=feature_cache, cache_bytes=cache_bytes, baselines=baselines,
        timeout=timeout)
    ctx = TrialContext(job, train, valid)
    for n in names:  # a frozen_groups range beyond a backbone fails now, not mid-search
        if space.frozen_groups is not None:
            check_frozen_range(space.frozen_groups, n, ctx.n_groups(n))

    study = _open_study(job, head.metric)
    stale = fail_stale_trials(study)
    if stale:
        print(f"[autotransfer] marked {len(stale)} trial(s) left running by a dead process as "
              f"failed: {stale}")
    new = not study.get_trials(deepcopy=False)
    enqueue_due_baselines(study, ctx)
    if new and warm_start:
        _enqueue_portfolio(study, ctx)
    done = counted_trials(study)
    if progress and done:
        print(f"[autotransfer] resuming study {name!r}: {done} trial(s) already recorded")
    get_backend(backend).run(job, train, valid, devices=devices,
                             trials_per_device=trials_per_device, address=address,
                             max_retries=max_retries)
    return Study(study, spec, workdir)


def _open_study(job: SearchJob, metric: str) -> optuna.Study:
    storage = job.storage.open()
    meta = {"task": job.task, "metric": metric, "modality": job.modality,
            "backbones": job.backbones, "space": job.space.to_dict(), "seed": job.seed}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(storage=storage, study_name=job.study_name,
                                    direction=job.direction, load_if_exists=True)
    except Exception as exc:
        raise StorageError(f"Cannot create or load study {job.study_name!r} in "
                           f"{job.storage.url!r}: {type(exc).__name__}: {exc}") from exc
    attrs = storage.get_study_system_attrs(study._study_id)
    old = attrs.get(st.META)
    if old is None:
        storage.set_study_system_attr(study._study_id, st.META, meta)
        study.set_user_attr("task", job.task)
        study.set_user_attr("metric", metric)
    else:
        for key in ("task", "backbones"):
            if old.get(key) != meta[key]:
                raise ConfigError(
                    f"Study {job.study_name!r} was created with {key}={old.get(key)!r}, not "
                    f"{meta[key]!r}; resume it with the same {key}, or use a new name."
                )
    return study


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Mark trials left RUNNING by a dead process of this machine as failed (interrupted)."""
    import socket

    host = socket.gethostname()
    stale = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.system_attrs.get(st.PID)
        if t.system_attrs.get(st.HOST) == host and pid and not st.pid_alive(int(pid)):
            study._storage.set_trial_user_attr(
                t._trial_id, "fail_reason", f"interrupted: its process {pid} died")
            study._storage.set_trial_system_attr(t._trial_id, st.INTERRUPTED, True)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            stale.append(t.number)
    return stale


# Fractions of the layer groups to freeze, cheapest first, and what each trains with: a
# prior from common practice (freeze the generic early layers, fine-tune the rest with a
# learning rate that shrinks toward the input), not a result on any one dataset.
PORTFOLIO = (
    (3 / 4, {"lr": 3e-3, "layer_decay": 0.8, "mixup": 0.0, "cutmix": 0.0, "augment": "none"}),
    (1 / 2, {"lr": 3e-3, "layer_decay": 0.8, "mixup": 0.0, "cutmix": 0.0, "augment": "none"}),
    (1 / 4, {"lr": 1e-3, "layer_decay": 0.8, "mixup": 0.0, "cutmix": 0.0, "augment": "none"}),
)


def _enqueue_portfolio(study: optuna.Study, ctx: TrialContext) -> None:
    """Start a new study with the PORTFOLIO points for its first two backbones.

    Heavily frozen points come first: they run on cached features in a fraction of a full
    trial's time, so the pruner's first rungs fill fast and the sampler starts from real
    numbers. Values outside the user's space are left to the sampler; a study too short
    for the portfolio to leave room for search (fewer than 4 trials per point) skips it.
    """
    job = ctx.job
    names = job.backbones[:2]
    if job.n_trials is not None and job.n_trials < 4 * len(PORTFOLIO) * len(names):
        return
    for name in names:
        g = ctx.n_groups(name)
        seen = set()
        for fraction, values in PORTFOLIO:
            params = ctx.params_for(name, {"frozen_groups": int(g * fraction + 0.5), **values})
            key = tuple(sorted(params.items()))
            if params and key not in seen:
                seen.add(key)
                study.enqueue_trial({"backbone": name, **params})
