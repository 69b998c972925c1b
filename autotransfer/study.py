"""Study: a stored search, reopened by storage and name, reviewed as a leaderboard."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import storage as st
from .errors import StorageError
from .predictor import Predictor
from .strategy import Strategy

_STATE_ORDER = {"complete": 0, "pruned": 1, "running": 2, "failed": 3}
_STRATEGY_COLUMNS = ("frozen_groups", "lr", "layer_decay", "weight_decay", "dropout",
                     "drop_path", "label_smoothing", "mixup", "cutmix", "augment", "l2sp",
                     "optimizer", "batch_size")


class Study:
    """A search's stored record.

    Example:
        >>> study = at.Study.load("studies/quickstart.db")   # doctest: +SKIP
        >>> study.leaderboard().head()                       # doctest: +SKIP
    """

    def __init__(self, study: optuna.Study, spec: st.StorageSpec, workdir: Path | None = None):
        self.optuna = study
        self.spec = spec
        self.workdir = workdir or st.workdir_for(spec, study.study_name)

    @classmethod
    def load(cls, storage: str | os.PathLike, name: str | None = None) -> Study:
        """Reopen a study; ``name`` may be left out when the storage holds only one."""
        spec = st.existing(storage)
        backend = spec.open()
        names = st.study_names(backend)
        if name is None:
            if len(names) != 1:
                raise StorageError(
                    f"Storage {spec.url!r} holds {len(names)} studies; pass name= one of "
                    f"{names}." if names else f"Storage {spec.url!r} holds no study."
                )
            name = names[0]
        elif name not in names:
            raise StorageError(f"No study named {name!r} in {spec.url!r}; studies there: {names}.")
        return cls(optuna.load_study(study_name=name, storage=backend), spec)

    @property
    def name(self) -> str:
        return self.optuna.study_name

    @property
    def meta(self) -> dict[str, Any]:
        attrs = self.optuna._storage.get_study_system_attrs(self.optuna._study_id)
        return attrs.get(st.META, {})

    @property
    def task(self) -> str:
        return self.meta.get("task", "classification")

    @property
    def metric(self) -> str:
        return self.meta.get("metric", "value")

    @property
    def maximize(self) -> bool:
        return self.optuna.direction == optuna.study.StudyDirection.MAXIMIZE

    def trials(self) -> list[FrozenTrial]:
        return self.optuna.get_trials(deepcopy=False)

    @property
    def best_trial(self) -> FrozenTrial:
        complete = [t for t in self.trials() if t.state == TrialState.COMPLETE]
        if not complete:
            raise StorageError(f"Study {self.name!r} has no completed trial yet.")
        return max(complete, key=lambda t: (t.value if self.maximize else -t.value, -t.number))

    @property
    def best_strategy(self) -> Strategy:
        return Strategy.from_dict(self.best_trial.system_attrs[st.STRATEGY])

    def load_best(self, *, device: str = "cpu") -> Predictor:
        """The best trial that kept a checkpoint, ready to ``predict``.

        The file must carry this study's id: a checkpoint of another study is never used.
        """
        ranked = self.leaderboard()
        for number in ranked.loc[ranked["state"] == "complete", "trial"]:
            path = self.optuna.trials[int(number)].system_attrs.get(st.CHECKPOINT)
            if path and Path(path).is_file():
                return Predictor.load(path, device=device, study=self.meta.get("uid"))
        raise StorageError(
            f"Study {self.name!r} kept no checkpoint of a completed trial "
            f"(keep_checkpoints=0, or the files under {self.workdir} were removed); use "
            f"study.best_strategy with at.run_trial to train it again."
        )

    def leaderboard(self) -> Any:
        """A pandas DataFrame, best first: one row per trial, with the transfer gain."""
        import pandas as pd

        rows = [self._row(t) for t in self.trials() if t.state != TrialState.WAITING]
        metric = self.metric
        df = pd.DataFrame(rows)
        if df.empty:
            return pd.DataFrame(columns=["rank", "trial", "state", metric])
        sign = 1 if self.maximize else -1
        scratch = (df[(df["baseline"] == "scratch") & (df["state"] == "complete")]
                   .set_index("backbone")[metric])
        base = df["backbone"].map(scratch)
        # Gains compare finished trials only: a pruned trial's value is from fewer epochs.
        done = df["state"] == "complete"
        df["transfer_gain"] = (sign * (df[metric] - base)).where(done)
        pretrained = (df["baseline"] != "scratch") & done & base.notna()
        df["negative_transfer"] = pretrained & (df["transfer_gain"] < 0)
        df["_order"] = df["state"].map(_STATE_ORDER)
        df["_value"] = -sign * df[metric]
        df = df.sort_values(["_order", "_value", "trial"], na_position="last")
        df = df.drop(columns=["_order", "_value"]).reset_index(drop=True)
        df.insert(0, "rank", range(1, len(df) + 1))
        return df[_column_order(df, metric)]

    def _row(self, t: FrozenTrial) -> dict[str, Any]:
        s = t.system_attrs.get(st.STRATEGY, {})
        ua = t.user_attrs
        state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
                 TrialState.FAIL: "failed", TrialState.RUNNING: "running"}[t.state]
        if t.state == TrialState.COMPLETE:
            value = t.value
        elif t.intermediate_values:
            vals = list(t.intermediate_values.values())
            value = max(vals) if self.maximize else min(vals)
        else:
            value = None
        row: dict[str, Any] = {
            "trial": t.number, "state": state, "baseline": ua.get("baseline", ""),
            "backbone": s.get("backbone", ua.get("backbone")),
            "pretrained": s.get("pretrained", True),
        }
        row.update({k: s.get(k) for k in _STRATEGY_COLUMNS})
        row["n_groups"] = ua.get("n_groups")
        row["epochs"] = s.get("epochs")
        row["epochs_run"] = ua.get("epochs_run")
        row[self.metric] = value
        for k, v in ua.items():
            if k not in row and k not in _NOT_METRICS:
                row[k] = v
        for k in ("trainable_params", "total_params", "device", "worker", "cached"):
            row[k] = ua.get(k)
        duration = ua.get("duration_s")
        if duration is None and t.datetime_start and t.datetime_complete:
            duration = round((t.datetime_complete - t.datetime_start).total_seconds(), 2)
        row["duration_s"] = duration
        row["reason"] = ua.get("fail_reason", "")
        return row

    def __repr__(self) -> str:
        return f"Study({self.name!r}, storage={self.spec.url!r}, trials={len(self.trials())})"


_NOT_METRICS = {"baseline", "backbone", "fail_reason", "epochs_run", "best_epoch", "n_groups",
                "trainable_params", "total_params", "duration_s", "compute_s", "device",
                "worker", "cached"}


def _column_order(df: Any, metric: str) -> list[str]:
    first = ["rank", "trial", "state", "baseline", "backbone", "pretrained",
             *_STRATEGY_COLUMNS, "n_groups", "epochs", "epochs_run", metric]
    last = ["transfer_gain", "negative_transfer", "trainable_params", "total_params",
            "duration_s", "device", "worker", "cached", "reason"]
    middle = [c for c in df.columns if c not in first and c not in last]
    return [c for c in first + middle + last if c in df.columns]
