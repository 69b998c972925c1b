"""A search job (what every worker needs to run trials of one study) and its per-process
context: data prepared once per preprocessing, group counts, define-by-run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from .. import plugins
from .. import storage as st
from ..data import Dataset
from ..storage import FINISHED
from ..strategy.baselines import baseline_strategy, planned
from ..strategy.space import SearchSpace
from ..strategy.strategy import Strategy
from ..techniques import domain
from ..training.cache import DEFAULT_BYTES, FeatureCache
from ..training.runner import Prepared, TrialResult, TrialSetup, prepare, run_trial


@dataclass
class SearchJob:
    """Everything a worker needs to run trials of one study (sent to worker processes)."""

    storage: st.StorageSpec
    study_name: str
    task: str
    modality: str
    backbones: list[str]
    space: SearchSpace
    n_trials: int | None
    timeout: float | None
    seed: int
    workdir: str
    direction: str
    run: str  # this search() call: its trials are told apart from a previous run's
    pruner: Any = "hyperband"  # a name in policy.PRUNERS, or an optuna pruner
    sampler: Any = "tpe"  # a name in policy.SAMPLERS, or an optuna sampler
    patience: int | None = 5
    keep_checkpoints: int = 3
    baselines: bool = True
    feature_cache: bool = True
    cache_bytes: int = DEFAULT_BYTES
    progress: bool = True
    plugins: list[tuple[str, Any]] = field(default_factory=list)  # PluginHost.portable()
    deadline: float | None = None
    race: list[str] = field(default_factory=list)  # backbones best-ranked first: race them
    unlabeled: Dataset | None = None  # target inputs for domain adaptation (adabn, dann)
    launch: int = 0  # how many search() calls began on this study before this one
    context: type[TrialContext] | None = None  # what defines and trains its trials
    extra: Any = None  # what that context needs beyond the data (distillation's targets)

    def sampler_seed(self, worker: int) -> int:
        """Distinct for every worker of every search() call on the study: two processes
        started together, or a resume, never replay the same sampled strategies."""
        return (self.seed + 7919 * worker + 104729 * self.launch) % 2**32

    def make_context(self, train: Dataset, valid: Dataset) -> TrialContext:
        """This process's context for the job's trials: a search's, or the one the job
        names (a distillation sub-study's)."""
        return (self.context or TrialContext)(self, train, valid)

    def __post_init__(self) -> None:
        if self.deadline is None and self.timeout is not None:
            self.deadline = time.time() + self.timeout

    def budget_left(self, study: optuna.Study) -> bool:
        """Trials still to start: n_trials counts finished and running, not uncounted ones."""
        if self.deadline is not None and time.time() >= self.deadline:
            return False
        if self.n_trials is None:
            return True
        return counted_trials(study) < self.n_trials


def counted_trials(study: optuna.Study) -> int:
    trials = study.get_trials(deepcopy=False, states=FINISHED + (optuna.trial.TrialState.RUNNING,))
    left_out = st.excluded(study)
    return sum(1 for t in trials if not st.uncounted(t, left_out))


class TrialContext:
    """Per-process state of a search: data prepared once per preprocessing, group counts."""

    def __init__(self, job: SearchJob, train: Dataset, valid: Dataset) -> None:
        self.job, self.train, self.valid = job, train, valid
        self._prepared: dict[tuple, Prepared] = {}
        self._groups: dict[str, int] = {}
        self._domain: dict[str, tuple[str, ...]] = {}
        self.cache: FeatureCache | bool = (
            FeatureCache(Path(job.workdir) / "cache", job.cache_bytes)
            if job.feature_cache else False)

    def n_groups(self, backbone: str) -> int:
        if backbone not in self._groups:
            b = plugins.get_backbone(backbone)
            body = b.build(pretrained=False)
            self._groups[backbone] = len(b.layer_groups(body))
            self._domain[backbone] = domain.applicable(body)
        return self._groups[backbone]

    def domain(self, backbone: str) -> tuple[str, ...]:
        """The domain-adaptation fields a trial on ``backbone`` may search: none without
        unlabeled target inputs."""
        if self.job.unlabeled is None:
            return ()
        self.n_groups(backbone)
        return self._domain[backbone]

    def params_for(self, backbone: str, values: dict[str, Any]) -> dict[str, Any]:
        """The entries of ``values`` that the search space samples for ``backbone``."""
        b = plugins.get_backbone(backbone)
        return self.job.space.params_for(
            values, self.n_groups(b.name), modality=self.job.modality, task=self.job.task,
            supports_drop_path=b.supports_drop_path, adapters=b.adapters,
            domain=self.domain(b.name))

    def baseline_trials(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(params, user_attrs) to enqueue for each reference trial the budget plans
        (:func:`~autotransfer.strategy.baselines.planned`)."""
        out = []
        for kind, name in self.reference_plan():
            s = baseline_strategy(kind, self.job.space, name, self.n_groups(name))
            params = {} if kind == "scratch" else {
                "backbone": name, **self.params_for(name, s.to_dict())}
            out.append((params, {"baseline": kind, "backbone": name}))
        return out

    def reference_plan(self) -> list[tuple[str, str]]:
        """(kind, backbone) of this job's reference trials, best-ranked backbone first."""
        if not self.job.baselines:
            return []
        return planned(self.job.race or self.job.backbones, self.job.n_trials)

    def define(self, trial: optuna.Trial) -> tuple[Strategy, str]:
        """The trial's strategy, define-by-run; baselines keep their fixed definition."""
        kind = trial.user_attrs.get("baseline", "")
        if kind:
            name = trial.user_attrs["backbone"]
            strategy = baseline_strategy(kind, self.job.space, name, self.n_groups(name))
            if kind != "scratch":  # list the (enqueued) params so the sampler learns from them
                trial.suggest_categorical("backbone", self.job.backbones)
                self.job.space.record(trial, self.params_for(name, strategy.to_dict()),
                                      self.n_groups(name))
            return strategy, kind
        name = trial.suggest_categorical("backbone", self.job.backbones)
        b = plugins.get_backbone(name)
        strategy = self.job.space.sample(
            trial, name, self.n_groups(name), modality=self.job.modality, task=self.job.task,
            supports_drop_path=b.supports_drop_path, adapters=b.adapters,
            domain=self.domain(name))
        return strategy, ""

    def prepared(self, strategy: Strategy) -> Prepared:
        pre = plugins.get_backbone(strategy.backbone).preprocessing(
            image_size=strategy.image_size, max_length=strategy.max_length)
        key = (strategy.backbone, pre)
        if key not in self._prepared:
            self._prepared[key] = prepare(strategy, self.train, self.valid, self.job.task)
        return self._prepared[key]

    def run(self, strategy: Strategy, report: Callable[[float, int], None], *, device: str,
            seed: int, timings: dict[str, float] | None = None,
            params: dict[str, Any] | None = None) -> TrialResult:
        """Train one defined trial (``params``: its sampled values, for contexts that read
        more than the strategy from them)."""
        return run_trial(strategy, self.train, self.valid,
                         self.setup(strategy, report, device=device, seed=seed, timings=timings))

    def setup(self, strategy: Strategy, report: Callable[[float, int], None], *, device: str,
              seed: int, timings: dict[str, float] | None) -> TrialSetup:
        """How a trial of this job runs: its task, patience, prepared data and cache."""
        return TrialSetup(task=self.job.task, device=device, report=report,
                          patience=self.job.patience, seed=seed,
                          prepared=self.prepared(strategy), cache=self.cache, timings=timings,
                          unlabeled=self.job.unlabeled, deadline=self.job.deadline)
