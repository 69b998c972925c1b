"""Knowledge distillation: a study's best model (or its top k, averaged) teaches a student.

The student trains on the teacher's softened outputs (:mod:`autotransfer.study.soft_targets`).
Temperature, alpha and the learning rate are searched in a short sub-study kept in the
parent's storage (``<parent>:distill:<student>``), run by a backend like any search (so on
several devices or on Ray too): resumable and reviewable like any study.

The teacher's outputs are computed once, on unaugmented inputs, before the trials: the
student therefore trains without augmentation or mixing (an augmented view would not
match the targets), which also lets its frozen prefix, if any, be cached across trials.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import checks, inputs, plugins
from .. import storage as st
from ..backends import Backend, OptunaBackend, SearchJob, as_backend
from ..backends._lifecycle import close_run, fail_stale_trials, prune_checkpoints
from ..data import Dataset
from ..errors import ConfigError, ModalityError, StrategyError
from ..log import get_logger
from ..predict.modelfile import SUFFIX
from ..predict.predictor import Predictor
from ..strategy import SearchSpace, Strategy, fields
from ..training.devices import torch_device
from .record import StudyRecord
from .results import KeptModel, kept_models
from .soft_targets import (
    FIRST,
    SEARCHED,
    TASK,
    DistillContext,
    soft_targets,
    teacher_outputs,
)


def _off() -> dict[str, Any]:
    """The fields a student has off: the teacher's targets are fixed outputs."""
    return fields.off_in(Strategy, "student")
TIMED, REPEATS = 256, 3  # inputs/s at prediction: best of 3 passes over 256 valid inputs

logger = get_logger(__name__)


@dataclass(frozen=True)
class Teacher:
    """The teacher: the parent's kept trials it averages, best first, and their files."""

    trials: tuple[int, ...]
    backbones: tuple[str, ...]
    paths: tuple[Path, ...]
    params: int


@dataclass
class Distillation:
    """What :func:`distill` returns.

    Attributes:
        study: The sub-study (an autotransfer :class:`Study`; ``leaderboard()`` shows each
            trial's ``temperature``, ``alpha`` and ``lr``).
        student: The best student, ready to ``predict``.
        teacher: Which trials taught it.
        compare: One row each for the teacher and the student: backbone, params,
            validation (and test) metric, ``inputs_per_s`` (images or texts per second
            through ``predict`` on this machine's CPU, best of 3).
        path: The best student's model file (``at.load(path)``).
    """

    study: StudyRecord  # an autotransfer.Study
    student: Predictor
    teacher: Teacher
    compare: Any
    path: Path


@dataclass
class _Plan:
    """A distillation, every argument and the data checked; nothing stored yet."""

    parent: StudyRecord
    name: str
    strategy: Strategy
    train: Dataset
    valid: Dataset
    test: Dataset | None
    unlabeled: Dataset | None
    kept: list[KeptModel]
    members: list[Predictor]
    n_trials: int
    seed: int
    device: str
    progress: bool
    workdir: Path


def distill(study: StudyRecord, student: str | Strategy, data: Dataset,
            unlabeled: Any = None, *, valid: Dataset | None = None,
            test: Dataset | None = None, top_k: int = 1, n_trials: int = 8,
            name: str | None = None, device: str = "cpu", seed: int | None = None,
            progress: bool = True, backend: Any = None) -> Distillation:
    """Distil the study's best model (``top_k`` > 1: its top k, averaged) into ``student``.

    Everything is checked before the sub-study is created or any model trains.

    Args:
        study: A classification study with kept checkpoints (``keep_checkpoints >= top_k``).
        student: A registered backbone of the teacher's modality; it fine-tunes fully
            (``frozen_groups=0``) at the teacher's input size, batch size and epochs (the
            teacher's own strategy if it is the teacher's backbone). Or a :class:`Strategy`
            to start from. ``lr`` is searched either way; augmentation and mixing are off.
        data: Labelled training data; the data given to the search, so that (``valid``
            None) the same seeded split holds out the same validation examples.
        unlabeled: Extra inputs in any form ``predict`` takes (a folder, paths, an image
            batch, a list of strings, a Dataset) that add the teacher's soft targets only.
        valid, test: Validation data (the student is chosen on it); held-out test data,
            scored for the comparison only.
        top_k: Average the softmax of the study's k best kept trials.
        n_trials: Trials of the sub-study in all; a rerun continues it.
        name: The sub-study's name; default ``"<study>:distill:<student backbone>"``.
        device, seed, progress: Where the teacher runs (and the trials, without a
            ``backend``); seeds (default the study's); show progress.
        backend: Runs the trials, as in :func:`autotransfer.search`: ``"optuna"``,
            ``at.OptunaBackend(devices=2)``, ``at.RayBackend()``; default the Optuna
            backend on ``device``.

    Example:
        >>> result = study.distill("tiny_resnet", data, n_trials=4)   # doctest: +SKIP
        >>> result.compare[["model", "params", "accuracy", "inputs_per_s"]]  # doctest: +SKIP
    """
    backend = _backend(backend, device)
    plan = _plan(study, student, data, unlabeled, valid=valid, test=test, top_k=top_k,
                 n_trials=n_trials, name=name, device=device, seed=seed, progress=progress)
    sub = _open(plan)
    job = _job(plan)
    if job.budget_left(sub):
        backend.run(job, plan.train, plan.valid)
        close_run(sub, job.run)
    prune_checkpoints(sub, plan.workdir, 1)
    child = type(plan.parent)(sub, plan.parent.spec, plan.workdir)  # a Study, as its parent
    best = child.load_best(device="cpu")
    path = best.save(plan.workdir / f"student{SUFFIX}")
    teacher = Teacher(tuple(k.trial for k in plan.kept),
                      tuple(m.strategy.backbone for m in plan.members),
                      tuple(k.path for k in plan.kept), _params(plan.members))
    compare = _compare(plan, best, child.best_trial.number)
    best.model.to(plan.device)
    return Distillation(child, best, teacher, compare, path)


def _backend(backend: Any, device: str) -> Backend:
    torch_device(device)
    if backend is None:
        backend = OptunaBackend(devices="cpu" if str(device) == "cpu" else [str(device)])
    backend = as_backend(backend)
    backend.check()
    return backend


def _job(plan: _Plan) -> SearchJob:
    """The sub-study as a job any backend runs: the distillation context defines and
    trains its trials; it keeps the best student's weights only."""
    return SearchJob(
        storage=plan.parent.spec, study_name=plan.name, task=TASK,
        modality=plan.train.modality, backbones=[plan.strategy.backbone],
        space=SearchSpace(), n_trials=plan.n_trials, timeout=None, seed=plan.seed,
        workdir=str(plan.workdir), direction="maximize" if plan.parent.maximize else "minimize",
        run=uuid.uuid4().hex, pruner="median", sampler="tpe", keep_checkpoints=1,
        baselines=False, progress=plan.progress, plugins=plugins.current().portable(),
        context=DistillContext,
        extra=soft_targets(plan.strategy, plan.members, plan.train, plan.unlabeled))


def _plan(parent: StudyRecord, student: Any, data: Any, unlabeled: Any, *, valid: Any, test: Any,
          top_k: Any, n_trials: Any, name: Any, device: Any, seed: Any,
          progress: Any) -> _Plan:
    """Check every argument and the data against the teacher; touch no storage."""
    if parent.task != TASK:
        raise ConfigError(f"distill() applies to task {TASK!r} (soft targets are class "
                          f"probabilities), but study {parent.name!r} is a {parent.task!r} "
                          f"study.")
    n_trials = checks.integer("n_trials", n_trials, low=1)
    top_k = checks.integer("top_k", top_k, low=1)
    seed = parent.meta.get("seed", 0) if seed is None else checks.integer("seed", seed, low=0)
    checks.flag("progress", progress)
    torch_device(device)
    kept = _teachers(parent, top_k)
    modality = parent.meta.get("modality", "image")
    members = [Predictor.load(k.path, device=device, study=parent.uid) for k in kept]
    strategy = _student(student, members[0].strategy, modality)
    info = members[0].info
    data = inputs.held_out("data", data, TASK, modality, info)
    train, valid = _split(parent, data, valid)
    valid = inputs.held_out("valid", valid, TASK, modality, info)
    test = None if test is None else inputs.held_out("test", test, TASK, modality, info)
    extra = inputs.unlabeled(unlabeled, modality)
    default = f"{parent.name}:distill:{strategy.backbone}"
    name = default if name is None else name
    if not isinstance(name, str) or not name.strip() or name == parent.name:
        raise ConfigError(f"name must be a non-empty string other than the study's own "
                          f"name {parent.name!r}, but got name={name!r}.")
    workdir = parent.workdir / "distill" / st.safe_name(strategy.backbone if name == default
                                                        else name)
    return _Plan(parent, name, strategy, train, valid, test, extra, kept, members, n_trials,
                 seed, str(device), progress, workdir)


def _teachers(parent: StudyRecord, top_k: int) -> list[KeptModel]:
    """The study's ``top_k`` best kept trial checkpoints, best first (refits are left out:
    they trained on the validation data the student is chosen on)."""
    kept = [k for k in kept_models(parent) if k.kind == "trial"]
    sign = -1 if parent.maximize else 1
    kept.sort(key=lambda k: (sign * parent.optuna.trials[k.trial].value, k.trial))
    if len(kept) < top_k:
        raise ConfigError(f"top_k={top_k}, but study {parent.name!r} keeps {len(kept)} "
                          f"trial checkpoint(s) (search keep_checkpoints= sets how many); "
                          f"accepted: top_k in 1..{len(kept)}." if kept else
                          f"Study {parent.name!r} keeps no checkpoint of a completed trial "
                          f"to teach with; run the search with keep_checkpoints >= 1.")
    return kept[:top_k]


def _student(student: Any, teacher: Strategy, modality: str) -> Strategy:
    """The student's starting strategy, its backbone checked against the teacher's
    modality (and its weights being here)."""
    if not isinstance(student, (str, Strategy)) or student == "":
        raise ConfigError(f"student must be a backbone name (e.g. 'efficientnet_lite0') or "
                          f"an at.Strategy, but got student={student!r:.80}.")
    name = student.backbone if isinstance(student, Strategy) else student
    backbone = plugins.get_backbone(name)  # UnknownNameError with close matches
    if backbone.modality != modality:
        fits = plugins.list_backbones(modality=modality)
        raise ModalityError(f"Student {name!r} takes {backbone.modality} inputs, but the "
                            f"teacher was trained on {modality}; {modality} backbones: "
                            f"{', '.join(fits) or 'none registered'}.")
    inputs.backbone_fits(name, modality)  # its pretrained weights are here
    if isinstance(student, Strategy):
        off = _off()
        for key, value in off.items():
            if getattr(student, key) != value and key != "label_smoothing":
                raise StrategyError(f"{key}={getattr(student, key)!r} does not apply to a "
                                    f"student: the teacher's targets are computed once, on "
                                    f"unaugmented inputs. Use {key}={value!r}.")
        _check_fits(student)
        return student.replace(**off)
    if name == teacher.backbone:
        return teacher.replace(**_off())
    return Strategy(name, epochs=teacher.epochs, batch_size=teacher.batch_size, lr=teacher.lr,
                    image_size=teacher.image_size, max_length=teacher.max_length)


def _check_fits(strategy: Strategy) -> None:
    """A given student strategy's frozen groups and adapter fit its backbone."""
    backbone = plugins.get_backbone(strategy.backbone)
    n = len(backbone.layer_groups(backbone.build(pretrained=False)))
    if (reason := fields.fits(strategy, backbone, n_groups=n)) is not None:
        raise StrategyError(reason)


def _split(parent: StudyRecord, data: Dataset, valid: Any) -> tuple[Dataset, Dataset]:
    """``data`` and ``valid``; or, without ``valid``, the split the search made of the same
    data (same seed, same sizes), so the teacher never trained on the validation set."""
    if valid is not None:
        return data, inputs.dataset("valid", valid)
    meta = parent.meta
    n_train, n_valid = meta.get("n_train", 0), meta.get("n_valid", 0)
    if len(data) == n_train:
        raise ConfigError(f"data has {len(data)} examples, as many as study {parent.name!r} "
                          f"trained on: its validation data was given apart (valid=); pass "
                          f"the same valid= here, so the teacher is scored on data it never "
                          f"trained on.")
    if n_train and n_valid and n_train + n_valid == len(data):
        fraction = (n_valid - 0.5) / len(data)  # sklearn takes ceil(fraction * n): n_valid
    else:
        fraction = 0.2
    return data.split(fraction, seed=meta.get("seed", 0))


def _open(plan: _Plan) -> Any:
    """Create or load the sub-study in the parent's storage, under the study lock; its
    first trial is enqueued at creation."""
    parent = plan.parent
    direction = "maximize" if parent.maximize else "minimize"
    defining = {"parent": parent.name, "teacher": [k.trial for k in plan.kept],
                "backbone": plan.strategy.backbone, "n_train": len(plan.train),
                "n_valid": len(plan.valid),
                "n_unlabeled": len(plan.unlabeled) if plan.unlabeled is not None else 0}
    meta = {"task": TASK, "metric": parent.metric, "uid": uuid.uuid4().hex,
            "modality": parent.meta.get("modality", "image"), "seed": plan.seed,
            "backbones": [plan.strategy.backbone], **defining}
    st.workdir_for(parent.spec, plan.name).parent.mkdir(parents=True, exist_ok=True)
    plan.workdir.mkdir(parents=True, exist_ok=True)
    with st.lock(parent.spec, plan.name):
        sub, old = st.create_or_load(parent.spec, parent.spec.open(), plan.name,
                                     direction=direction, kind="distill", meta=meta)
        if old is None:
            sub.set_user_attr("task", TASK)
            sub.set_user_attr("metric", parent.metric)
            lr = SEARCHED["lr"]
            sub.enqueue_trial({**FIRST, "lr": min(max(plan.strategy.lr, lr.low), lr.high)})
        else:
            for key, value in defining.items():
                if old.get(key) != value:
                    raise ConfigError(f"Study {plan.name!r} was made with {key}={old.get(key)!r}, "
                                      f"not {value!r}; rerun it as it was, or pass name= a new "
                                      f"name.")
        if stale := fail_stale_trials(sub):
            logger.info(f"marked trial(s) {stale} left running by a dead process failed")
    return sub


def _compare(plan: _Plan, student: Predictor, trial: int) -> Any:
    """Teacher and student side by side: size, validation (and test) metrics, speed."""
    import pandas as pd

    head, info = plugins.get_head(TASK), plan.members[0].info
    rows = []
    for role, models, trials in (("teacher", plan.members, [k.trial for k in plan.kept]),
                                 ("student", [student], [trial])):
        row: dict[str, Any] = {"model": role,
                               "backbone": "+".join(m.strategy.backbone for m in models),
                               "trials": trials, "params": _params(models)}
        for prefix, data in (("", plan.valid), ("test_", plan.test)):
            if data is not None:
                metrics = head.metrics(teacher_outputs(models, data),
                                       head.encode(data.labels, info)[0], info)
                row.update({prefix + k: round(float(v), 6) for k, v in metrics.items()})
        row["inputs_per_s"] = _throughput(models, plan.valid)
        rows.append(row)
    return pd.DataFrame(rows)


def _params(models: list[Predictor]) -> int:
    return sum(m.model.param_counts()[1] for m in models)


def _throughput(models: list[Predictor], data: Dataset) -> float:
    """Inputs per second through ``predict`` (every member of an ensemble) on the CPU:
    the best of :data:`REPEATS` passes over up to :data:`TIMED` validation inputs."""
    sample = data.subset(np.arange(min(TIMED, len(data))))
    for m in models:
        m.model.to("cpu")
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        for m in models:
            m.predict(sample)
        best = min(best, time.perf_counter() - started)
    return round(len(sample) / best, 1)
