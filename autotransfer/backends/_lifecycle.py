"""One trial lifecycle for every backend: how a trial's definition, start, result, failure
and interruption are recorded in the study's storage, and the weights it keeps.

The Optuna backend then tells the study itself; on Ray the trial's result is recorded by
the worker and told by the driver's searcher. Either way the same attributes land in the
same storage, so the leaderboard cannot tell the backends apart.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .. import storage as st
from ..errors import AutotransferError
from ..log import get_logger
from ..predict.modelfile import SUFFIX
from ..predict.predictor import save_checkpoint
from ..storage import FINISHED
from ..strategy.strategy import Strategy
from ..training.runner import TrialResult
from ._job import SearchJob

FAIL_FAST = 3  # finished trials of one run, all failed and none better: stop and say why

logger = get_logger(__name__)


class TrialRecord:
    """One trial's record: a thin writer over the storage, used by every backend."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int, number: int,
                 job: SearchJob) -> None:
        self.storage, self.trial_id, self.number, self.job = storage, trial_id, number, job
        self.workdir = Path(job.workdir)
        self.epochs, self.t0 = 0, time.perf_counter()
        self.timings: dict[str, float] = {}

    def set(self, *, user: dict[str, Any] | None = None,
            system: dict[str, Any] | None = None) -> None:
        for k, v in (user or {}).items():
            self.storage.set_trial_user_attr(self.trial_id, k, _jsonable(v))
        for k, v in (system or {}).items():
            self.storage.set_trial_system_attr(self.trial_id, k, _jsonable(v))

    def defined(self, strategy: Strategy, kind: str, n_groups: int) -> None:
        # Every field as a user attribute too: optuna-dashboard shows user attributes (not
        # system ones), so epochs, batch size, image size and optimizer are visible there.
        fields = {f"strategy.{k}": v for k, v in strategy.to_dict().items() if v is not None}
        self.set(user={"backbone": strategy.backbone, "baseline": kind, "n_groups": n_groups,
                       **fields},
                 system={st.STRATEGY: strategy.to_dict(), st.RUN: self.job.run})

    def started(self, worker: Any, device: str) -> None:
        self.set(user={"worker": worker, "device": device},
                 system={st.HOST: socket.gethostname(), st.PID: os.getpid()})

    def epoch(self, epoch: int) -> None:
        self.epochs = epoch

    def completed(self, result: TrialResult) -> None:
        """Record a finished trial and keep its weights if it ranks in the top k."""
        self.set(user=result_attrs(result),
                 system={st.HISTORY: result.history, st.RESULT: result.value})
        _save_if_top(self, result)

    def pruned(self) -> None:
        self.set(user=self._partial())

    def failed(self, exc: BaseException) -> str:
        reason = fail_reason(exc)
        self.set(user={"fail_reason": reason, **self._partial()})
        # an unexpected error carries its traceback; ours say all in their message
        logger.warning(f"trial {self.number} failed: {reason}",
                       exc_info=None if isinstance(exc, AutotransferError) else exc)
        return reason

    def interrupted(self, reason: str = "interrupted (Ctrl-C)") -> None:
        self.set(user={"fail_reason": reason, **self._partial()},
                 system={st.INTERRUPTED: True})

    def _partial(self) -> dict[str, Any]:
        """What a trial that ends early still tells: epochs, time, compute time."""
        return {"epochs_run": self.epochs,
                "duration_s": round(time.perf_counter() - self.t0, 2),
                "compute_s": round(self.timings.get("compute_s", 0.0), 2)}


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item") and not isinstance(v, (list, dict)):
        return v.item()
    return v


def result_attrs(result: TrialResult) -> dict[str, Any]:
    """The user attributes a finished trial shows (optuna-dashboard lists them): the best
    epoch's metrics, and each metric's value per epoch (``history.<metric>``)."""
    names = [k for k in (result.history[0] if result.history else {}) if k != "epoch"]
    return {
        **{f"history.{k}": [_jsonable(round(h[k], 6)) for h in result.history] for k in names},
        **{k: round(v, 6) for k, v in result.metrics.items()},
        "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
        "n_groups": result.n_groups, "trainable_params": result.trainable_params,
        "total_params": result.total_params, "duration_s": round(result.duration_s, 2),
        "compute_s": round(result.compute_s, 2), "cached": result.cache_source,
        "first_step_s": round(result.first_step_s, 2),
        **({"cut": result.cut} if result.cut else {}),
    }


def fail_reason(exc: BaseException) -> str:
    if isinstance(exc, AutotransferError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _top(study: optuna.Study, k: int,
         extra: tuple[float, Any, Any, int] | None = None) -> set[int]:
    """Numbers of the k best completed trials (plus a candidate not yet told:
    ``(value, val_loss, seconds, number)``), ranked as the leaderboard ranks them."""
    scored = [(t.value, t.user_attrs.get("val_loss"), t.user_attrs.get("duration_s"), t.number)
              for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.value is not None]
    if extra is not None:
        scored.append(extra)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return {s[3] for s in sorted(scored, key=lambda s: st.rank_key(s[0], maximize, *s[1:]))[:k]}


def _save_if_top(record: TrialRecord, result: TrialResult) -> None:
    """Before the trial is told: keep its weights, tagged with the study, if in the top k."""
    job = record.job
    study = optuna.load_study(study_name=job.study_name, storage=record.storage)
    k = job.keep_checkpoints
    if k <= 0 or record.number not in _top(study, k, (result.value, result.metrics.get("val_loss"),
                                                     round(result.duration_s, 2), record.number)):
        return
    path = record.workdir / "checkpoints" / f"trial_{record.number}{SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, result.state_dict, result.strategy, result.task, result.info,
                    result.preprocessing, study=study_uid(study))
    record.set(system={st.CHECKPOINT: str(path)})


def study_uid(study: optuna.Study) -> str:
    """The id a study's checkpoints carry, so a file is never taken for another study's."""
    meta = st.study_attrs(study).get(st.META, {})
    return meta.get("uid", "")


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
    for f in [*folder.glob(f"trial_*{SUFFIX}"), *folder.glob("trial_*.pt")]:  # .pt: 0.1
        number = int(f.stem.split("_")[1])
        if number in finished and number not in top:
            f.unlink(missing_ok=True)


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Mark trials left RUNNING by a dead process of this machine as failed (interrupted)."""
    host = socket.gethostname()
    stale = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.system_attrs.get(st.PID)
        if t.system_attrs.get(st.HOST) == host and pid and not st.pid_alive(int(pid)):
            reason = f"interrupted: its process {pid} died"
            st.set_trial_attrs(study, st.trial_id(t), user={"fail_reason": reason},
                               system={st.INTERRUPTED: True})
            st.set_trial_state(study, st.trial_id(t), TrialState.FAIL)
            stale.append(t.number)
    return stale


def _ended(study: optuna.Study, run: str) -> list[optuna.trial.FrozenTrial]:
    """The finished, counted trials of one search() call."""
    left_out = st.excluded(study)
    return [t for t in study.get_trials(deepcopy=False, states=FINISHED)
            if t.system_attrs.get(st.RUN) == run and not st.uncounted(t, left_out)]


def failing(study: optuna.Study, run: str) -> bool:
    """True when this run's first FAIL_FAST finished trials all failed (none completed):
    the cause is the data, the space or the setup, not bad luck; stop and say so."""
    ended = _ended(study, run)
    return len(ended) >= FAIL_FAST and all(t.state == TrialState.FAIL for t in ended)


def close_run(study: optuna.Study, run: str, timeout: float | None = None) -> None:
    """After a run: if every trial it finished failed, take them out of ``n_trials`` and
    raise with their reason, so the corrected rerun under the same name runs its trials.
    Raise too when the time budget (``timeout``) ended before the study had any result."""
    from ..errors import SearchFailed

    ended = _ended(study, run)
    if not ended and timeout is not None and not study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)):
        raise SearchFailed(
            f"No trial finished within the time budget (timeout={timeout:g} s), so the "
            f"study has no result yet. It is stored: rerun with a larger timeout, and the "
            f"same name and storage, to go on from where it stopped.")
    if not ended or any(t.state != TrialState.FAIL for t in ended):
        return
    st.exclude(study, [t.number for t in ended])
    counts = Counter(t.user_attrs.get("fail_reason", "unknown") for t in ended).most_common()
    (reason, n), others = counts[0], [r for r, _ in counts[1:3]]
    also = f"; also: {'; '.join(others)}" if others else ""
    raise SearchFailed(
        f"All {len(ended)} trial(s) of this search failed, {n} of them with: {reason}{also}. "
        f"They do not count toward n_trials: fix the cause and rerun with the same name and "
        f"storage to run them (the failures stay on the leaderboard).")
