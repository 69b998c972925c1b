"""What every backend shares: defining a trial (define-by-run, baselines), running it,
and recording it in the study's Optuna storage."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .. import plugins
from .. import storage as st
from ..cache import DEFAULT_BYTES, FeatureCache
from ..data import Dataset
from ..errors import AutotransferError
from ..predictor import save_checkpoint
from ..runner import Prepared, TrialResult, prepare, run_trial
from ..space import SearchSpace
from ..strategy import Strategy

# Cheapest first: a linear probe runs on cached features and fills the first rungs fast.
BASELINES = ("linear_probe", "default_finetune", "scratch")
CHEAP_BASELINES = ("linear_probe",)
DEFER_AFTER = 3  # searched trials to finish before the full-training baselines run
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class SearchJob:
    """Everything a worker needs to run trials of one study (picklable)."""

    storage: st.StorageSpec
    study_name: str
    task: str
    modality: str
    backbones: list[str]
    space: SearchSpace
    n_trials: int | None
    deadline: float | None
    seed: int
    pruner: Any  # a name in search.PRUNERS, or an optuna pruner
    keep_checkpoints: int
    patience: int | None
    workdir: str
    direction: str
    plugin_modules: list[str] = field(default_factory=list)
    progress: bool = True
    sampler: Any = "tpe"  # "tpe", "random", or an optuna sampler
    feature_cache: bool = True
    cache_bytes: int = DEFAULT_BYTES
    baselines: bool = True
    timeout: float | None = None

    def budget_left(self, study: optuna.Study) -> bool:
        """Trials still to start: n_trials counts finished and running, not interrupted."""
        if self.deadline is not None and time.time() >= self.deadline:
            return False
        if self.n_trials is None:
            return True
        return counted_trials(study) < self.n_trials


def counted_trials(study: optuna.Study) -> int:
    trials = study.get_trials(deepcopy=False, states=FINISHED + (TrialState.RUNNING,))
    return sum(1 for t in trials if not t.system_attrs.get(st.INTERRUPTED))


def enqueue_due_baselines(study: optuna.Study, ctx: TrialContext) -> None:
    """Enqueue the baselines that are due and not yet run, running or waiting.

    The linear probe is due at once. The two full-training references (default fine-tune,
    scratch) cost as much as the slowest searched trials and do not help find the best
    one, so they wait until DEFER_AFTER searched trials have finished, unless the trials
    left in ``n_trials`` are only enough for them.
    """
    if not ctx.job.baselines:
        return
    trials = study.get_trials(deepcopy=False)
    have = {(t.user_attrs["baseline"], t.user_attrs.get("backbone")) for t in trials
            if t.user_attrs.get("baseline") and not t.system_attrs.get(st.INTERRUPTED)}
    missing = [(p, a) for p, a in ctx.baseline_trials()
               if (a["baseline"], a["backbone"]) not in have]
    if not missing:
        return
    searched = sum(1 for t in trials if t.state in FINISHED and not t.user_attrs.get("baseline"))
    left = None if ctx.job.n_trials is None else ctx.job.n_trials - counted_trials(study)
    expensive_due = searched >= DEFER_AFTER or (left is not None and left <= len(missing))
    for params, attrs in missing:
        if expensive_due or attrs["baseline"] in CHEAP_BASELINES:
            study.enqueue_trial(params, user_attrs=attrs)


def baseline_strategy(kind: str, space: SearchSpace, backbone: str, n_groups: int) -> Strategy:
    """The reference trials every study runs (same epochs, batch size and input size)."""
    neutral = dict(layer_decay=1.0, weight_decay=0.01, dropout=0.0, drop_path=0.0,
                   label_smoothing=0.0, mixup=0.0, cutmix=0.0, augment="none", l2sp=0.0,
                   optimizer="adamw")
    base = space.base_strategy(backbone)
    if kind == "scratch":
        return base.replace(pretrained=False, frozen_groups=0, lr=1e-3, **neutral)
    if kind == "linear_probe":
        return base.replace(frozen_groups=n_groups, lr=1e-2, **neutral)
    if kind == "default_finetune":
        return base.replace(frozen_groups=0, lr=1e-4, **neutral)
    raise ValueError(kind)


class TrialContext:
    """Per-process state of a search: data prepared once per preprocessing, group counts."""

    def __init__(self, job: SearchJob, train: Dataset, valid: Dataset) -> None:
        self.job, self.train, self.valid = job, train, valid
        self._prepared: dict[tuple, Prepared] = {}
        self._groups: dict[str, int] = {}
        self.cache: FeatureCache | bool = (
            FeatureCache(Path(job.workdir) / "cache", job.cache_bytes)
            if job.feature_cache else False)

    def n_groups(self, backbone: str) -> int:
        if backbone not in self._groups:
            b = plugins.get_backbone(backbone)
            self._groups[backbone] = len(b.layer_groups(b.build(pretrained=False)))
        return self._groups[backbone]

    def params_for(self, backbone: str, values: dict[str, Any]) -> dict[str, Any]:
        """The entries of ``values`` that the search space samples for ``backbone``."""
        b = plugins.get_backbone(backbone)
        return self.job.space.params_for(
            values, self.n_groups(b.name), modality=self.job.modality, task=self.job.task,
            supports_drop_path=b.supports_drop_path)

    def _params_for(self, strategy: Strategy) -> dict[str, Any]:
        return self.params_for(strategy.backbone, strategy.to_dict())

    def baseline_trials(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(params, user_attrs) to enqueue for each baseline of each backbone."""
        out = []
        for name in self.job.backbones:
            for kind in BASELINES:
                s = baseline_strategy(kind, self.job.space, name, self.n_groups(name))
                params = {} if kind == "scratch" else {"backbone": name, **self._params_for(s)}
                out.append((params, {"baseline": kind, "backbone": name}))
        return out

    def define(self, trial: optuna.Trial) -> tuple[Strategy, str]:
        """The trial's strategy, define-by-run; baselines keep their fixed definition."""
        kind = trial.user_attrs.get("baseline", "")
        if kind:
            name = trial.user_attrs["backbone"]
            strategy = baseline_strategy(kind, self.job.space, name, self.n_groups(name))
            if kind != "scratch":  # list the (enqueued) params so the sampler learns from them
                trial.suggest_categorical("backbone", self.job.backbones)
                self.job.space.record(trial, self._params_for(strategy), self.n_groups(name))
            return strategy, kind
        name = trial.suggest_categorical("backbone", self.job.backbones)
        b = plugins.get_backbone(name)
        strategy = self.job.space.sample(
            trial, name, self.n_groups(name), modality=self.job.modality, task=self.job.task,
            supports_drop_path=b.supports_drop_path)
        return strategy, ""

    def prepared(self, strategy: Strategy) -> Prepared:
        pre = plugins.get_backbone(strategy.backbone).preprocessing(
            image_size=strategy.image_size, max_length=strategy.max_length)
        key = (strategy.backbone, pre)
        if key not in self._prepared:
            self._prepared[key] = prepare(strategy, self.train, self.valid, self.job.task)
        return self._prepared[key]

    def run(self, strategy: Strategy, report: Callable[[float, int], None], *, device: str,
            seed: int, timings: dict[str, float] | None = None) -> TrialResult:
        return run_trial(strategy, self.train, self.valid, task=self.job.task, device=device,
                         report=report, patience=self.job.patience, seed=seed,
                         prepared=self.prepared(strategy), cache=self.cache, timings=timings)


def set_attrs(storage: optuna.storages.BaseStorage, trial_id: int, *,
              user: dict[str, Any] | None = None, system: dict[str, Any] | None = None) -> None:
    for k, v in (user or {}).items():
        storage.set_trial_user_attr(trial_id, k, _jsonable(v))
    for k, v in (system or {}).items():
        storage.set_trial_system_attr(trial_id, k, _jsonable(v))


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item") and not isinstance(v, (list, dict)):
        return v.item()
    return v


def result_attrs(result: TrialResult) -> dict[str, Any]:
    """The user attributes a finished trial shows (optuna-dashboard lists them)."""
    return {
        **{k: round(v, 6) for k, v in result.metrics.items()},
        "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
        "n_groups": result.n_groups, "trainable_params": result.trainable_params,
        "total_params": result.total_params, "duration_s": round(result.duration_s, 2),
        "compute_s": round(result.compute_s, 2), "cached": result.cache_source,
        "first_step_s": round(result.first_step_s, 2),
    }


def _top(study: optuna.Study, k: int, extra: tuple[int, float] | None = None) -> set[int]:
    """Numbers of the k best completed trials (plus a candidate not yet told)."""
    scored = [(t.number, t.value) for t in
              study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.value is not None]
    if extra is not None:
        scored.append(extra)
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    return {n for n, v in sorted(scored, key=lambda nv: (sign * nv[1], nv[0]))[:k]}


def save_if_top(study: optuna.Study, trial_id: int, number: int, result: TrialResult,
                workdir: Path, k: int) -> None:
    """Before telling a finished trial: keep its weights if it ranks in the top k."""
    if k <= 0 or number not in _top(study, k, (number, result.value)):
        return
    path = workdir / "checkpoints" / f"trial_{number}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, result.state_dict, result.strategy, result.task, result.info,
                    result.preprocessing)
    study._storage.set_trial_system_attr(trial_id, st.CHECKPOINT, str(path))


def prune_checkpoints(study: optuna.Study, workdir: Path, k: int) -> None:
    """Delete checkpoints of finished trials outside the top k (no unbounded disk use).

    Files of running trials are left alone, so a worker never removes a checkpoint that
    another has just written for a trial it has not told yet.
    """
    folder = workdir / "checkpoints"
    if not folder.is_dir():
        return
    top = _top(study, k)
    finished = {t.number for t in study.get_trials(deepcopy=False, states=FINISHED)}
    for f in folder.glob("trial_*.pt"):
        number = int(f.stem.split("_")[1])
        if number in finished and number not in top:
            f.unlink(missing_ok=True)


def fail_reason(exc: BaseException) -> str:
    if isinstance(exc, AutotransferError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
