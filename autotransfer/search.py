"""search(): the main job. Check everything, open or resume the study, run, report."""

from __future__ import annotations

import os
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from . import checks, inputs, plugins
from . import storage as st
from .backends import Backend, as_backend
from .backends._job import SearchJob, TrialContext
from .backends._lifecycle import close_run
from .backends._policy import check as check_policy
from .data import Dataset
from .errors import (
    AutotransferError,
    ConfigError,
    OptimisticValidation,
    UnknownNameError,
    check_choice,
)
from .heads.multitask import resolve_task
from .log import get_logger
from .strategy.space import SearchSpace, check_frozen_range
from .study import prior, trackers
from .study.opening import open_search
from .study.study import Study
from .techniques import fit_space as techniques_fit
from .techniques.adapters import fit_space
from .training.cache import DEFAULT_BYTES

logger = get_logger(__name__)


def search(data: Dataset, *, task: str | dict[str, str] = "classification",
           backbones: list[str] | str | None = None, n_trials: int | None = None,
           timeout: float | None = None, backend: str | Backend = "optuna",
           storage: str | os.PathLike | None = None, name: str | None = None, seed: int = 0,
           space: SearchSpace | None = None, valid: Dataset | None = None,
           test: Dataset | None = None, unlabeled: Any = None, valid_fraction: float = 0.2,
           baselines: bool = True, warm_start: bool | str | os.PathLike = True,
           rank: bool = True, pruner: str | optuna.pruners.BasePruner = "hyperband",
           sampler: str | optuna.samplers.BaseSampler = "tpe", patience: int | None = 5,
           keep_checkpoints: int = 3, final: str = "ensemble", feature_cache: bool | int = True,
           progress: bool = True, root: str | os.PathLike | None = None,
           callbacks: list | None = None, **unknown: Any) -> Study:
    """Search backbones x transfer strategies, every argument and the data checked first;
    return the stored, resumable :class:`Study` (:class:`SearchFailed`: every trial failed).

    Args:
        data: Training data, a lazy :class:`~autotransfer.data.Dataset` (``at.data.from_*``).
        task: "classification", "regression", "multilabel" (a registered head), or
            ``{label column: task}``, first one primary (:mod:`autotransfer.heads.multitask`).
        backbones: Registry names and globs; default every available one for the modality.
        n_trials, timeout: Trials in all (at most half reference trials) and seconds the
            whole call may take, whichever ends first (``docs/searching.md#budgets``).
        backend: "optuna" (worker processes here), "ray", or a Backend object such as
            ``at.OptunaBackend(devices=2)`` or ``at.RayBackend(address=...)``.
        storage, name: Default ``studies/<name>.db`` (SQLite); a ``.db`` or journal ``.log``
            path, or any Optuna URL; the study's name, any string. Rerunning resumes.
        seed, space: Seeds the split, the sampler and every trial; the :class:`SearchSpace`.
        valid: Validation data; default a seeded (stratified) ``valid_fraction`` of ``data``.
        test: Held-out data, never chosen on: the kept models are scored on it after the
            search (``test_<metric>`` columns; a warning if validation overstates).
        unlabeled: Target-domain inputs, as ``predict`` takes them (a folder, paths, ...):
            trials may adapt to them (``adabn``, ``dann``); ``valid`` then holds target data.
        baselines: Run linear-probe, default fine-tune and scratch reference trials.
        warm_start: Begin a new study with settings that usually work (True), nothing
            (False), or the best strategies of the closest earlier studies in this storage
            ("prior") or a folder or file (a path): :mod:`autotransfer.study.prior`.
        rank: With several backbones, rank them first (:func:`~autotransfer.rank_backbones`):
            the best get the warm start, and trials race in rank order (False: no ranking).
        pruner, sampler: "hyperband", "median", "none" or an Optuna pruner; "tpe", "gp"
            (Gaussian process; TPE for conditional fields), "random" or an Optuna sampler.
        patience: Early-stop a trial after this many epochs without improvement (None: off).
        keep_checkpoints, final: Keep the best k trials' weights; the study's model: a
            greedy "ensemble" or "soup" of the kept ones (on ``valid``), or the "best" trial.
        feature_cache: Share frozen-prefix outputs: True, False, or bytes per worker.
        progress, root: Show progress bars; the folder holding ``studies/`` (default cwd).
        callbacks: Optuna callbacks ``cb(study, trial)`` (``MLflowCallback``, ...) called
            here as each trial ends (:mod:`autotransfer.study.trackers`).
    """
    _refuse(unknown)
    name = _study_name(name)
    budget = Budget.checked(n_trials, timeout, patience, keep_checkpoints, time.time())
    backend, seed, warm_start = _checked(backend, seed, warm_start, pruner, sampler, final,
                                         baselines=baselines, rank=rank, progress=progress)
    given = _inputs(data, task, backbones, space, valid=valid, test=test, unlabeled=unlabeled,
                    valid_fraction=valid_fraction, seed=seed, progress=progress)
    job, ctx = _job(given, budget, st.resolve(storage, name, root=Path(root) if root else None),
                    name, seed=seed, pruner=pruner, sampler=sampler, baselines=baselines,
                    feature_cache=feature_cache, progress=progress)
    study = _run(backend, job, ctx, warm_start, rank, trackers.checked(callbacks))
    return _finish(study, given, job.progress, budget.ends(given.test is not None)[1], final)


def _run(backend: Backend, job: SearchJob, ctx: TrialContext, warm_start: bool | str | Path,
         rank: bool, callbacks: list) -> Study:
    """Open (or resume) the study, run its trials on the backend (the trackers told as each
    ends), record the run."""
    study = open_search(job, ctx, warm_start, rank)
    with trackers.Trackers(callbacks, optuna.load_study(study_name=job.study_name,
                                                        storage=job.storage.open()), job.run):
        backend.run(job, ctx.train, ctx.valid)
    close_run(study, job.run, job.timeout)
    prior.record(study, ctx)
    return Study(study, job.storage, Path(job.workdir))


def _checked(backend: Any, seed: Any, warm_start: Any, pruner: Any, sampler: Any,
             final: Any, *, baselines: Any, rank: Any,
             progress: Any) -> tuple[Backend, int, bool | str | Path]:
    """The backend, the seed and the warm start as search() uses them, once the flags and
    the pruner and sampler are known to be sound."""
    (backend := as_backend(backend)).check()
    seed = checks.integer("seed", seed, low=0, high=2**32 - 1)
    warm_start = prior.check(warm_start)
    for flag, value in (("baselines", baselines), ("rank", rank), ("progress", progress)):
        checks.flag(flag, value)
    check_policy(pruner, sampler)
    check_choice("final", final, FINALS)
    return backend, seed, warm_start


def _finish(study: Study, given: Inputs, progress: bool, until: float | None,
            final: str) -> Study:
    """Make the ``final`` model, score the test set (until the budget ends); then, with
    ``progress``, log the summary ``autotransfer run`` prints (its optimism warning is a
    Python warning)."""
    from .study import summary

    _make_final(study, final, given.valid, until)
    study = _score_test(study, given.test, until)
    if progress:
        for line in summary.lines(study):
            if not line.startswith("warning: "):
                summary.logger.info(line)
    return study


FINALS = ("best", "ensemble", "soup")


def _make_final(study: Study, final: str, valid: Dataset, until: float | None) -> None:
    """The greedy ensemble or soup of the kept trials, chosen on ``valid``, as the study's
    model, when the budget has time left and the walk keeps more than the best trial (else
    the best trial stays the study's model, and the log says why)."""
    if study.system_attrs().get(st.FINAL):  # an earlier run's: made before these trials
        study.set_system_attr(st.FINAL, None)
    if final == "best":
        return
    if until is not None and time.time() >= until:
        logger.info(f"final={final!r}: the time budget ended before the {final} was made; "
                    f"study.{final}(valid=...) makes it. The best trial is the study's model.")
        return
    from .study.results import kept_models

    kept = [m.trial for m in kept_models(study) if m.kind == "trial"]
    made = study.system_attrs().get(st.COMBINED[final]) or {}
    if made.get("kept") == kept and Path(made["path"]).is_file():  # a resume with no new kept
        study.set_system_attr(st.FINAL, final)
        return
    try:
        getattr(study, final)(valid=valid)
    except AutotransferError as exc:
        logger.info(f"final={final!r}: no {final}: {exc} The best trial is the study's model.")
        return
    made = study.system_attrs()[st.COMBINED[final]]
    if len(made["members"]) < 2:  # the same model as the best trial: no second copy
        Path(made["path"]).unlink(missing_ok=True)
        study.set_system_attr(st.COMBINED[final], None)
        logger.info(f"final={final!r}: adding any other kept trial lowered the validation "
                    f"score, so the best trial (trial {made['best']}) is the study's model.")
        return
    study.set_system_attr(st.COMBINED[final], {**made, "kept": kept})
    study.set_system_attr(st.FINAL, final)


def _score_test(study: Study, test: Dataset | None, until: float | None) -> Study:
    """Score the kept models on the test set once the search has made every choice: best
    first, the best always, the others while the budget lasts."""
    from .study.results import evaluate, kept_models, optimism

    kept = len(kept_models(study)) if test is not None else 0
    if not kept:
        return study
    df = evaluate(study, test, record=True, until=until)
    left = kept - len(df)
    if left:
        logger.info(f"the time budget ended before {left} kept model(s) were scored on the "
                    f"test set; study.evaluate(test, record=True) scores them")
    warning = optimism(study)
    if warning:
        warnings.warn(warning, OptimisticValidation, stacklevel=4)
    return study


MOVED = ("devices", "trials_per_device", "address", "max_retries", "resources")


def _refuse(unknown: dict[str, Any]) -> None:
    """A misspelt or moved keyword gets a message, not Python's bare TypeError."""
    import inspect

    for key in unknown:
        if key == "time_limit":
            raise ConfigError(f"search() takes the time budget as timeout= (seconds; like "
                              f"AutoGluon's time_limit it bounds the whole call), got "
                              f"time_limit={unknown[key]!r}.")
        if key in MOVED:
            raise ConfigError(f"search() takes {key}= through the backend: "
                              f"backend=at.OptunaBackend(devices=..., trials_per_device=...) "
                              f"or at.RayBackend(address=..., max_retries=..., resources=...); "
                              f"got {key}={unknown[key]!r}.")
        accepted = [p for p in inspect.signature(search).parameters if p != "unknown"]
        raise UnknownNameError("search() argument", key, accepted)


@dataclass(frozen=True)
class Budget:
    """How much a search may spend: trials in all, seconds from ``started``, epochs
    without improvement before a trial stops, and the trials whose weights are kept."""

    n_trials: int | None
    timeout: float | None
    patience: int | None
    keep_checkpoints: int
    started: float

    @classmethod
    def checked(cls, n_trials: Any, timeout: Any, patience: Any, keep: Any,
                started: float) -> Budget:
        if n_trials is None and timeout is None:
            raise ConfigError("Give n_trials (how many trials) or timeout (seconds), or "
                              "both; neither was given.")
        return cls(None if n_trials is None else checks.integer("n_trials", n_trials, low=1),
                   None if timeout is None else checks.number("timeout", timeout, low=0,
                                                              open_low=True),
                   None if patience is None else checks.integer("patience", patience, low=1),
                   checks.integer("keep_checkpoints", keep, low=0), started)

    def ends(self, test: bool) -> tuple[float | None, float | None]:
        """(when trials stop, when the call ends): with a test set, the last tenth of
        the timeout (at most TEST_SHARE_MAX s) is left to score the kept models."""
        if self.timeout is None:
            return None, None
        end = self.started + self.timeout
        return end - (min(TEST_SHARE * self.timeout, TEST_SHARE_MAX) if test else 0.0), end


TEST_SHARE, TEST_SHARE_MAX = 0.1, 60.0  # of a timeout, for scoring on the test set


@dataclass(frozen=True)
class Inputs:
    """The data and what it is searched for, checked against each other."""

    task: str | dict[str, str]
    backbones: list[str]
    space: SearchSpace
    train: Dataset
    valid: Dataset
    test: Dataset | None
    unlabeled: Dataset | None
    direction: str


def _study_name(name: Any) -> str:
    name = "autotransfer" if name is None else name
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise ConfigError(f"name must be a non-empty string of printable characters, but got "
                          f"name={name!r}.")
    return name


def _inputs(data: Any, task: Any, backbones: Any, space: Any, *, valid: Any, test: Any,
            unlabeled: Any, valid_fraction: Any, seed: int, progress: bool) -> Inputs:
    """Check the data against the task and the backbones; split off the validation set."""
    space = SearchSpace() if space is None else space
    if not isinstance(space, SearchSpace):
        raise ConfigError(f"space must be an autotransfer.SearchSpace, but got space={space!r}.")
    data = inputs.dataset("data", data)
    # {column: task} for a table of labels
    task = resolve_task(task, data.labels, plugins.head_registry())
    head = plugins.get_head(task)
    names = plugins.resolve_backbones(inputs.backbone_patterns(backbones), data.modality)
    space = fit_space(techniques_fit(space, progress), names, progress)
    train, valid = _split(data, valid, valid_fraction, seed)
    inputs.data_fits(task, train, valid, names)
    test = None if test is None else inputs.held_out(
        "test", test, task, data.modality, head.encode(train.labels)[1])
    return Inputs(task, names, space, train, valid, test,
                  inputs.unlabeled(unlabeled, data.modality), head.direction)


def _job(given: Inputs, budget: Budget, spec: st.StorageSpec, name: str, *, seed: int,
         pruner: Any, sampler: Any, baselines: bool, feature_cache: Any,
         progress: bool) -> tuple[SearchJob, TrialContext]:
    """The job every worker runs, and this process's context for it (group counts)."""
    job = SearchJob(
        storage=spec, study_name=name, task=given.task, modality=given.train.modality,
        backbones=given.backbones, space=given.space, n_trials=budget.n_trials,
        timeout=budget.timeout, seed=seed, workdir=str(st.workdir_for(spec, name)),
        direction=given.direction, run=uuid.uuid4().hex, pruner=pruner, sampler=sampler,
        patience=budget.patience, keep_checkpoints=budget.keep_checkpoints,
        baselines=baselines, progress=progress, **_cache(feature_cache),
        plugins=plugins.current().portable(), unlabeled=given.unlabeled,
        deadline=budget.ends(given.test is not None)[0])
    ctx = TrialContext(job, given.train, given.valid)
    for n in given.backbones:  # a frozen_groups range beyond a backbone fails now
        if given.space.frozen_groups is not None:
            check_frozen_range(given.space.frozen_groups, n, ctx.n_groups(n))
    return job, ctx


def _split(data: Dataset, valid: Any, fraction: Any, seed: int) -> tuple[Dataset, Dataset]:
    if valid is not None:
        return data, inputs.dataset("valid", valid)
    fraction = checks.number("valid_fraction", fraction, low=0, high=0.9, open_low=True)
    return data.split(fraction, seed=seed)


def _cache(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"feature_cache": value, "cache_bytes": DEFAULT_BYTES}
    return {"feature_cache": True,
            "cache_bytes": checks.integer("feature_cache (bytes)", value, low=0)}
