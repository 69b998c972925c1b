"""Knowledge distillation: a study's best model (or its top k, averaged) teaches a student.

The student trains on the teacher's softened outputs (Hinton et al., 2015):
``alpha * CE(student, label) + (1 - alpha) * T**2 * KL(softmax(teacher / T) ||
softmax(student / T))``, the ``T**2`` keeping the soft term's gradients at the scale of
the hard one's. Temperature, alpha and the learning rate are searched in a short Optuna
sub-study kept in the parent's storage (``<parent>:distill:<student>``), so it is
resumable and reviewable like any study. Extra unlabeled inputs add soft targets only: they
carry the teacher's class as a pseudo-label, masked out of the hard term.

The teacher's outputs are computed once, on unaugmented inputs, before the trials: the
student therefore trains without augmentation or mixing (an augmented view would not
match the targets), which also lets its frozen prefix, if any, be cached across trials.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from optuna.trial import TrialState

from . import checks, plugins
from . import storage as st
from .adapters import describe
from .backends._lifecycle import fail_reason, fail_stale_trials, prune_checkpoints, result_attrs
from .cache import FeatureCache
from .data import Dataset
from .devices import torch_device
from .errors import ConfigError, ModalityError, SearchFailed, StrategyError
from .modelfile import SUFFIX
from .predictor import Predictor, save_checkpoint
from .results import KeptModel, kept_models
from .runner import prepare, run_trial
from .space import Float
from .strategy import Strategy
from .study import Study

TASK = "classification"  # soft targets are class probabilities
SEARCHED = {"temperature": Float(1.0, 8.0, log=True), "alpha": Float(0.0, 1.0),
            "lr": Float(1e-4, 1e-2, log=True)}
FIRST = {"temperature": 4.0, "alpha": 0.5}  # the sub-study's first trial (and the lr given)
# Off for a student: its targets are fixed outputs on unaugmented inputs.
OFF = {"mixup": 0.0, "cutmix": 0.0, "augment": "none", "label_smoothing": 0.0,
       "adabn": False, "dann": 0.0}
TIMED, REPEATS = 256, 3  # inputs/s at prediction: best of 3 passes over 256 valid inputs
BATCH = 128  # teacher inference batch


@dataclass(frozen=True)
class DistillLoss:
    """The student's training loss on targets made by :func:`pack`.

    ``alpha`` weighs the hard (label) term over the labelled rows of the batch,
    ``1 - alpha`` the soft term over all rows, at ``temperature``.

    Example:
        >>> y = pack(torch.tensor([0, 1]), torch.tensor([1, 0]), torch.zeros(2, 3))
        >>> round(float(DistillLoss(2.0, 1.0)(torch.zeros(2, 3), y)), 4)  # CE of row 0 only
        1.0986
    """

    temperature: float
    alpha: float

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        out, t = outputs.float(), self.temperature
        hard, labelled, teacher = targets[:, 0].long(), targets[:, 1] > 0, targets[:, 2:]
        soft = F.kl_div(F.log_softmax(out / t, 1), F.log_softmax(teacher / t, 1),
                        log_target=True, reduction="batchmean") * t * t
        if self.alpha == 0 or not bool(labelled.any()):
            return (1 - self.alpha) * soft
        return self.alpha * F.cross_entropy(out[labelled], hard[labelled]) \
            + (1 - self.alpha) * soft


def pack(hard: torch.Tensor, labelled: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-example training targets, one row each: ``[class index, labelled (1/0),
    teacher logits...]`` (what the loaders index and :class:`DistillLoss` reads)."""
    return torch.cat([hard.float()[:, None], labelled.float()[:, None], teacher.float()], 1)


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

    study: Study
    student: Predictor
    teacher: Teacher
    compare: Any
    path: Path


@dataclass
class _Plan:
    """A distillation, every argument and the data checked; nothing stored yet."""

    parent: Study
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


def distill(study: Study, student: str | Strategy, data: Dataset, unlabeled: Any = None, *,
            valid: Dataset | None = None, test: Dataset | None = None, top_k: int = 1,
            n_trials: int = 8, name: str | None = None, device: str = "cpu",
            seed: int | None = None, progress: bool = True) -> Distillation:
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
        device, seed, progress: Where to train; seeds (default the study's); print a line
            per trial.

    Example:
        >>> result = study.distill("tiny_resnet", data, n_trials=4)   # doctest: +SKIP
        >>> result.compare[["model", "params", "accuracy", "inputs_per_s"]]  # doctest: +SKIP
    """
    plan = _plan(study, student, data, unlabeled, valid=valid, test=test, top_k=top_k,
                 n_trials=n_trials, name=name, device=device, seed=seed, progress=progress)
    sub = _open(plan)
    done = _counted(sub)
    if done and plan.progress:
        print(f"[autotransfer] resuming {plan.name!r}: {done} of {plan.n_trials} trial(s) "
              f"already recorded")
    if done < plan.n_trials:
        _run(plan, sub, _prepared(plan))
        prune_checkpoints(sub, plan.workdir, 1)
    child = Study(sub, plan.parent.spec, plan.workdir)
    best = child.load_best(device="cpu")
    path = best.save(plan.workdir / f"student{SUFFIX}")
    teacher = Teacher(tuple(k.trial for k in plan.kept),
                      tuple(m.strategy.backbone for m in plan.members),
                      tuple(k.path for k in plan.kept), _params(plan.members))
    compare = _compare(plan, best, child.best_trial.number)
    best.model.to(plan.device)
    return Distillation(child, best, teacher, compare, path)


def _plan(parent: Study, student: Any, data: Any, unlabeled: Any, *, valid: Any, test: Any,
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
    data = checks.held_out("data", data, TASK, modality, info)
    train, valid = _split(parent, data, valid)
    valid = checks.held_out("valid", valid, TASK, modality, info)
    test = None if test is None else checks.held_out("test", test, TASK, modality, info)
    extra = checks.unlabeled(unlabeled, modality)
    default = f"{parent.name}:distill:{strategy.backbone}"
    name = default if name is None else name
    if not isinstance(name, str) or not name.strip() or name == parent.name:
        raise ConfigError(f"name must be a non-empty string other than the study's own "
                          f"name {parent.name!r}, but got name={name!r}.")
    workdir = parent.workdir / "distill" / st.safe_name(strategy.backbone if name == default
                                                        else name)
    return _Plan(parent, name, strategy, train, valid, test, extra, kept, members, n_trials,
                 seed, str(device), progress, workdir)


def _teachers(parent: Study, top_k: int) -> list[KeptModel]:
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
    checks.backbone_fits(name, modality)  # its pretrained weights are here
    off = {k: v for k, v in OFF.items() if k in Strategy.__dataclass_fields__}
    if isinstance(student, Strategy):
        for key, value in off.items():
            if getattr(student, key) != value and key != "label_smoothing":
                raise StrategyError(f"{key}={getattr(student, key)!r} does not apply to a "
                                    f"student: the teacher's targets are computed once, on "
                                    f"unaugmented inputs. Use {key}={value!r}.")
        _check_fits(student)
        return student.replace(**off)
    if name == teacher.backbone:
        return teacher.replace(**off)
    return Strategy(name, epochs=teacher.epochs, batch_size=teacher.batch_size, lr=teacher.lr,
                    image_size=teacher.image_size, max_length=teacher.max_length)


def _check_fits(strategy: Strategy) -> None:
    """A given student strategy's frozen groups and adapter fit its backbone."""
    backbone = plugins.get_backbone(strategy.backbone)
    if strategy.adapter not in backbone.adapters:
        raise StrategyError(f"adapter={strategy.adapter!r} does not apply to backbone "
                            f"{backbone.name!r}; {describe(backbone.adapters)}.")
    n = len(backbone.layer_groups(backbone.build(pretrained=False)))
    if strategy.frozen_groups > n:
        raise StrategyError(f"frozen_groups={strategy.frozen_groups}, but backbone "
                            f"{strategy.backbone!r} has {n} layer groups; accepted: 0..{n}.")


def _split(parent: Study, data: Dataset, valid: Any) -> tuple[Dataset, Dataset]:
    """``data`` and ``valid``; or, without ``valid``, the split the search made of the same
    data (same seed, same sizes), so the teacher never trained on the validation set."""
    if valid is not None:
        return data, checks.dataset("valid", valid)
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


def _open(plan: _Plan) -> optuna.Study:
    """Create or load the sub-study in the parent's storage, under the study lock."""
    parent, storage = plan.parent, plan.parent.optuna._storage
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
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with st.lock(parent.spec, plan.name):
        sub, old = st.create_or_load(parent.spec, storage, plan.name, direction=direction,
                                     kind="distill", meta=meta)
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
        if (stale := fail_stale_trials(sub)) and plan.progress:
            print(f"[autotransfer] marked trial(s) {stale} left running by a dead process failed")
    done = _counted(sub)
    sampler = optuna.samplers.TPESampler(seed=plan.seed + done, n_startup_trials=4)
    return optuna.load_study(study_name=plan.name, storage=storage, sampler=sampler)


def _counted(sub: optuna.Study) -> int:
    """Trials that count toward ``n_trials``: finished or running, not interrupted."""
    left_out = st.excluded(sub)
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    return sum(1 for t in sub.get_trials(deepcopy=False, states=states)
               if not st.uncounted(t, left_out))


def _prepared(plan: _Plan) -> Any:
    """The student's data with the teacher's targets: the labelled rows, then the unlabeled
    ones under the teacher's class (so the head encodes known classes), masked out of the
    hard term."""
    head, info = plugins.get_head(TASK), plan.members[0].info
    train, logits = plan.train, _outputs(plan.members, plan.train)
    labelled = torch.ones(len(train), dtype=torch.bool)
    if plan.unlabeled is not None:
        extra = _outputs(plan.members, plan.unlabeled)
        pseudo = np.asarray(info["classes"])[extra.argmax(1).numpy()]
        u = plan.unlabeled
        train = train.concat(Dataset(u.source, pseudo, u.modality, index=u.index))
        logits = torch.cat([logits, extra])
        labelled = torch.cat([labelled, torch.zeros(len(u), dtype=torch.bool)])
    prepared = prepare(plan.strategy, train, plan.valid, TASK)
    # The student's outputs must line up with the teacher's classes, whichever classes
    # this split happens to hold.
    prepared.info = info
    prepared.y_valid, _ = head.encode(plan.valid.labels, info)
    prepared.y_train = pack(head.encode(train.labels, info)[0], labelled, logits)
    return prepared


def _outputs(models: list[Predictor], data: Dataset) -> torch.Tensor:
    """The log of the models' mean softmax on ``data`` (one model: its log-softmax, which
    gives the same tempered targets as its logits at every temperature)."""
    probs = torch.stack([torch.softmax(m._outputs(data, BATCH, None)[0], 1) for m in models])
    return probs.mean(0).clamp_min(1e-12).log()


def _run(plan: _Plan, sub: optuna.Study, prepared: Any) -> None:
    """The sub-study's remaining trials, one after another in this process."""
    # Every trial starts from the same seed (head init, batch order): trials differ only in
    # the searched values, and the frozen-prefix outputs they share are the same even for a
    # backbone without pretrained weights (weights=None builds a seeded random init).
    cache = FeatureCache()
    ran, reasons = [], []
    while True:
        with st.lock(plan.parent.spec, plan.name):  # parallel calls never overshoot
            if _counted(sub) >= plan.n_trials:
                break
            trial = sub.ask()
        ran.append(trial.number)
        reason = _trial(plan, sub, trial, prepared, cache)
        if reason is not None:
            reasons.append(reason)
    if ran and len(reasons) == len(ran):
        st.exclude(sub, ran)  # a fixed cause: the rerun runs them again
        raise SearchFailed(f"Every distillation trial of {plan.name!r} failed ({len(ran)}); "
                           f"the first: {reasons[0]}")


def _trial(plan: _Plan, sub: optuna.Study, trial: optuna.Trial, prepared: Any,
           cache: FeatureCache) -> str | None:
    """Train one student; record it as the parent's trials are recorded. The fail reason,
    or None when it completed."""
    p = {k: trial.suggest_float(k, d.low, d.high, log=d.log) for k, d in SEARCHED.items()}
    strategy = plan.strategy.replace(lr=p["lr"])
    storage, tid = sub._storage, trial._trial_id
    fields = {f"strategy.{k}": v for k, v in strategy.to_dict().items() if v is not None}
    n_unlabeled = len(prepared.y_train) - len(plan.train)
    for k, v in {"backbone": strategy.backbone, "temperature": p["temperature"],
                 "alpha": p["alpha"], "n_train": len(plan.train), "n_unlabeled": n_unlabeled,
                 "device": plan.device, **fields}.items():
        storage.set_trial_user_attr(tid, k, v)
    for k, v in {st.STRATEGY: strategy.to_dict(), **st.this_process()}.items():
        storage.set_trial_system_attr(tid, k, v)
    try:
        result = run_trial(strategy, plan.train, plan.valid, task=TASK, device=plan.device,
                           report=trial.report, seed=plan.seed,
                           prepared=prepared, cache=cache,
                           loss=DistillLoss(p["temperature"], p["alpha"]))
    except KeyboardInterrupt:
        storage.set_trial_user_attr(tid, "fail_reason", "interrupted (Ctrl-C)")
        storage.set_trial_system_attr(tid, st.INTERRUPTED, True)
        sub.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as exc:  # the trial fails, the sub-study goes on
        reason = fail_reason(exc)
        storage.set_trial_user_attr(tid, "fail_reason", reason)
        sub.tell(trial, state=TrialState.FAIL)
        print(f"[autotransfer] distill trial {trial.number} failed: {reason}", file=sys.stderr)
        return reason
    for k, v in result_attrs(result).items():
        storage.set_trial_user_attr(tid, k, v)
    storage.set_trial_system_attr(tid, st.HISTORY, result.history)
    storage.set_trial_system_attr(tid, st.RESULT, result.value)
    _keep_if_best(plan, sub, trial, result)
    sub.tell(trial, result.value)
    if plan.progress:
        print(f"[autotransfer] distill trial {trial.number}: temperature="
              f"{p['temperature']:.2f} alpha={p['alpha']:.2f} lr={p['lr']:.2e} -> "
              f"{result.metric}={result.value:.4f}")
    return None


def _keep_if_best(plan: _Plan, sub: optuna.Study, trial: optuna.Trial, result: Any) -> None:
    """Before the trial is told: keep its weights if it beats every completed trial."""
    sign = 1 if plan.parent.maximize else -1
    done = [sign * t.value for t in sub.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if done and sign * result.value <= max(done):
        return
    path = plan.workdir / "checkpoints" / f"trial_{trial.number}{SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    uid = sub._storage.get_study_system_attrs(sub._study_id)[st.META]["uid"]
    save_checkpoint(path, result.state_dict, result.strategy, TASK, result.info,
                    result.preprocessing, study=uid)
    sub._storage.set_trial_system_attr(trial._trial_id, st.CHECKPOINT, str(path))


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
                metrics = head.metrics(_outputs(models, data),
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
