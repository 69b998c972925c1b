"""search(): the main job. Check everything, open or resume the study, run, report."""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import optuna

from . import checks, identity, plugins, prior
from . import storage as st
from .adapters import fit_space
from .backends import Backend, as_backend
from .backends._job import SearchJob, TrialContext, counted_trials
from .backends._lifecycle import close_run, fail_stale_trials
from .backends._policy import check as check_policy
from .baselines import enqueue_due_baselines, enqueue_portfolio
from .cache import DEFAULT_BYTES, FeatureCache
from .data import Dataset
from .errors import ConfigError, OptimisticValidation, UnknownNameError
from .multitask import resolve_task
from .ranking import as_records, order, rank_backbones
from .space import SearchSpace, check_frozen_range
from .study import Study


def search(data: Dataset, *, task: str | dict[str, str] = "classification",
           backbones: list[str] | str | None = None, n_trials: int | None = None,
           timeout: float | None = None, backend: str | Backend = "optuna",
           storage: str | os.PathLike | None = None, name: str | None = None, seed: int = 0,
           space: SearchSpace | None = None, valid: Dataset | None = None,
           test: Dataset | None = None, unlabeled: Any = None,
           valid_fraction: float = 0.2, baselines: bool = True,
           warm_start: bool | str | os.PathLike = True, rank: bool = True,
           pruner: str | optuna.pruners.BasePruner = "hyperband",
           sampler: str | optuna.samplers.BaseSampler = "tpe", patience: int | None = 5,
           keep_checkpoints: int = 3, feature_cache: bool | int = True, progress: bool = True,
           root: str | os.PathLike | None = None, **unknown: Any) -> Study:
    """Search backbones x transfer strategies; return the stored, resumable study. Every
    argument and the data are checked against the task and backbones before it exists.

    Args:
        data: Training data, a lazy :class:`~autotransfer.data.Dataset` (``at.data.from_*``).
        task: "classification", "regression", "multilabel" (a registered head), or
            ``{label column: task}``, first one primary (:mod:`autotransfer.multitask`).
        backbones: Registry names and globs; default every available one for the modality.
        n_trials: Trials in the study in all (baselines included); with ``timeout``,
            whichever comes first. Rerunning a finished study runs nothing more.
        timeout: Seconds after which no new trial starts.
        backend: "optuna" (worker processes here), "ray", or a Backend object:
            ``at.OptunaBackend(devices=2, trials_per_device=1)``,
            ``at.RayBackend(address=..., max_retries=1, resources={"gpu": 0.5})``.
        storage: Default ``studies/<name>.db`` (SQLite); a ``.db`` or journal ``.log``
            path, or any Optuna URL. Rerunning with the same name and storage resumes.
        name: Study name; any string (its files go in a folder derived from it safely).
        seed: Seeds the split, the sampler and every trial.
        space: The :class:`SearchSpace`; fix or narrow fields there.
        valid: Validation data; default a seeded (stratified) ``valid_fraction`` of ``data``.
        test: Held-out labelled data, never chosen on: the kept models are scored on it
            after the search (``test_<metric>`` columns; a warning if validation overstates).
        unlabeled: Target-domain inputs, as ``predict`` takes them (a folder, paths, ...):
            trials may adapt to them (``adabn``, ``dann``); ``valid`` then holds target data.
        baselines: Run scratch, linear-probe and default fine-tune trials per backbone.
        warm_start: Begin a new study with settings that usually work (True), nothing
            (False), or the best strategies of the closest earlier studies
            (:mod:`autotransfer.prior`) in this storage ("prior") or a folder or file (a path).
        rank: With several backbones, score each one's frozen features first (LogME,
            :func:`rank_backbones`); the best-ranked get the warm-start points and the
            searched trials race the backbones in rank order (False: the sampler picks).
        pruner, sampler: "hyperband", "median", "none" or an Optuna pruner; "tpe",
            "random" or an Optuna sampler.
        patience: Early-stop a trial after this many epochs without improvement (None: off).
        keep_checkpoints: Keep the best k trials' weights (the others are deleted).
        feature_cache: Share frozen-prefix outputs: True, False, or bytes per worker.
        progress, root: Show progress bars; the folder holding ``studies/`` (default cwd).

    Returns the :class:`Study`; :class:`SearchFailed` if every trial of this call failed.
    """
    _refuse(unknown)
    (backend := as_backend(backend)).check()
    job, ctx, test = _plan(locals())
    study = _open(job, ctx, prior.check(warm_start), rank)
    backend.run(job, ctx.train, ctx.valid)
    close_run(study, job.run)
    prior.record(study, ctx)
    return _score_test(Study(study, job.storage, Path(job.workdir)), test)


def _score_test(study: Study, test: Dataset | None) -> Study:
    """Score the kept models on the test set once the search has made every choice."""
    from .results import evaluate, kept_models, optimism

    if test is None or not kept_models(study):
        return study
    evaluate(study, test, record=True)
    warning = optimism(study)
    if warning:
        warnings.warn(warning, OptimisticValidation, stacklevel=3)
    return study


MOVED = ("devices", "trials_per_device", "address", "max_retries", "resources")


def _refuse(unknown: dict[str, Any]) -> None:
    """A misspelt or moved keyword gets a message, not Python's bare TypeError."""
    import inspect

    for key in unknown:
        if key in MOVED:
            raise ConfigError(f"search() takes {key}= through the backend: "
                              f"backend=at.OptunaBackend(devices=..., trials_per_device=...) "
                              f"or at.RayBackend(address=..., max_retries=..., resources=...); "
                              f"got {key}={unknown[key]!r}.")
        accepted = [p for p in inspect.signature(search).parameters if p != "unknown"]
        raise UnknownNameError("search() argument", key, accepted)


def _plan(a: dict[str, Any]) -> tuple[SearchJob, TrialContext, Dataset | None]:
    """Check every argument and the data; the job to run, its context (the split data,
    group counts) and the test set. Touches no storage."""
    name = a["name"] if a["name"] is not None else "autotransfer"
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise ConfigError(f"name must be a non-empty string of printable characters, but got "
                          f"name={name!r}.")
    n_trials, timeout = a["n_trials"], a["timeout"]
    if n_trials is None and timeout is None:
        raise ConfigError("Give n_trials (how many trials) or timeout (seconds), or both; "
                          "neither was given.")
    n_trials = None if n_trials is None else checks.integer("n_trials", n_trials, low=1)
    timeout = None if timeout is None else checks.number("timeout", timeout, low=0,
                                                         open_low=True)
    patience = None if a["patience"] is None else checks.integer("patience", a["patience"],
                                                                 low=1)
    seed = checks.integer("seed", a["seed"], low=0, high=2**32 - 1)
    prior.check(a["warm_start"])
    for flag in ("baselines", "rank", "progress"):
        checks.flag(flag, a[flag])
    check_policy(a["pruner"], a["sampler"])
    space = SearchSpace() if a["space"] is None else a["space"]
    if not isinstance(space, SearchSpace):
        raise ConfigError(f"space must be an autotransfer.SearchSpace, but got space={space!r}.")
    data = checks.dataset("data", a["data"])
    task = resolve_task(a["task"], data.labels)  # {column: task} for a table of labels
    head = plugins.get_head(task)
    names = plugins.resolve_backbones(checks.backbone_patterns(a["backbones"]), data.modality)
    space = fit_space(space, names, a["progress"])
    train, valid = _split(data, a["valid"], a["valid_fraction"], seed)
    checks.data_fits(task, train, valid, names)
    test = None if a["test"] is None else checks.held_out(
        "test", a["test"], task, data.modality, head.encode(train.labels)[1])
    spec = st.resolve(a["storage"], name, root=Path(a["root"]) if a["root"] else None)
    job = SearchJob(
        storage=spec, study_name=name, task=task, modality=data.modality, backbones=names,
        space=space, n_trials=n_trials, timeout=timeout, seed=seed,
        workdir=str(st.workdir_for(spec, name)), direction=head.direction,
        run=uuid.uuid4().hex, pruner=a["pruner"], sampler=a["sampler"], patience=patience,
        keep_checkpoints=checks.integer("keep_checkpoints", a["keep_checkpoints"], low=0),
        baselines=a["baselines"], progress=a["progress"], **_cache(a["feature_cache"]),
        plugins=plugins.current().portable(),
        unlabeled=checks.unlabeled(a["unlabeled"], data.modality))
    ctx = TrialContext(job, train, valid)
    for n in names:  # a frozen_groups range beyond a backbone fails now, not mid-search
        if space.frozen_groups is not None:
            check_frozen_range(space.frozen_groups, n, ctx.n_groups(n))
    return job, ctx, test


def _split(data: Dataset, valid: Any, fraction: Any, seed: int) -> tuple[Dataset, Dataset]:
    if valid is not None:
        return data, checks.dataset("valid", valid)
    fraction = checks.number("valid_fraction", fraction, low=0, high=0.9, open_low=True)
    return data.split(fraction, seed=seed)


def _cache(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"feature_cache": value, "cache_bytes": DEFAULT_BYTES}
    return {"feature_cache": True,
            "cache_bytes": checks.integer("feature_cache (bytes)", value, low=0)}


def _open(job: SearchJob, ctx: TrialContext, warm_start: bool | str | Path,
          rank: bool) -> optuna.Study:
    """Create or load the study under its lock: once, however many processes start it."""
    if job.storage.path is None:  # a server: reach it before any local file is made
        job.storage.open()
    st.make_room(job.storage, job.study_name)
    with st.lock(job.storage, job.study_name):
        study = _create(job, ctx)
        job.launch = st.next_launch(study)
        stale = fail_stale_trials(study)
        if stale:
            print(f"[autotransfer] marked {len(stale)} trial(s) left running by a dead "
                  f"process as failed: {stale}")
        ranking = _ranking(study, ctx) if rank and len(job.backbones) > 1 else {}
        if ranking:  # searched trials race the backbones, best-ranked first
            job.race = order(job.backbones, ranking)
        enqueue_due_baselines(study, ctx)
        if warm_start is True:
            enqueue_portfolio(study, ctx, order(job.backbones, ranking))
        elif warm_start:
            prior.enqueue(study, ctx, warm_start, order(job.backbones, ranking))
        done = counted_trials(study)
    if job.progress and done:
        print(f"[autotransfer] resuming study {job.study_name!r}: {done} trial(s) already "
              f"recorded")
    return study


def _ranking(study: optuna.Study, ctx: TrialContext) -> dict[str, dict]:
    """The backbones' LogME ranking, computed once per study and recorded in it."""
    attrs = study._storage.get_study_system_attrs(study._study_id)
    if st.RANKING in attrs:
        return attrs[st.RANKING]
    job = ctx.job
    if job.progress:
        print(f"[autotransfer] ranking {len(job.backbones)} backbones by LogME on frozen "
              f"features")
    df = rank_backbones(ctx.train, backbones=job.backbones, task=job.task,
                        image_size=job.space.base_strategy(job.backbones[0]).image_size,
                        cache=ctx.cache if isinstance(ctx.cache, FeatureCache) else None,
                        seed=job.seed, errors="skip")
    for row in df[df["reason"] != ""].to_dict("records"):
        print(f"[autotransfer] could not rank {row['backbone']!r} ({row['reason']}); its "
              f"trials run as usual")
    ranking = as_records(df)
    study._storage.set_study_system_attr(study._study_id, st.RANKING, ranking)
    return ranking


def _create(job: SearchJob, ctx: TrialContext) -> optuna.Study:
    """Create the study with its record, or load it when it was made for this same job."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = job.storage.open()
    head = plugins.get_head(job.task)
    made = identity.of(job, ctx.train, ctx.valid, head.encode(ctx.train.labels)[1])
    meta = {**made, "metric": head.metric, "seed": job.seed, "uid": uuid.uuid4().hex,
            "n_train": len(ctx.train), "n_valid": len(ctx.valid),
            "n_unlabeled": len(job.unlabeled or ())}
    study, old = st.create_or_load(job.storage, storage, job.study_name,
                                   direction=job.direction, kind="search", meta=meta)
    if old is None:
        study.set_user_attr("task", job.task)
        study.set_user_attr("metric", meta["metric"])
        with warnings.catch_warnings():  # experimental in Optuna; dashboards read it
            warnings.simplefilter("ignore")
            study.set_metric_names([meta["metric"]])
        return study
    if differ := identity.differences(old, made):
        raise ConfigError(f"Study {job.study_name!r} in {job.storage.url!r} was made for "
                          f"other data or settings: {'; '.join(differ)}. Resume it with "
                          f"what it was made with, or pass name= a new name to start a new "
                          f"study.")
    return study
