"""A study's stored record: reopened by storage and name, read as trials, the best
strategy and model, and a leaderboard. :class:`autotransfer.Study` adds what acts on it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .. import storage as st
from ..backbones import ADAPTERS
from ..errors import StorageError
from ..predict.predictor import Predictor
from ..storage import TIE_RULE, VAL_LOSS, rank_key
from ..strategy import fields
from ..strategy.fields import Where
from ..strategy.strategy import Strategy

_STATE_ORDER = {"complete": 0, "soup": 1, "ensemble": 1, "refit": 1, "pruned": 2, "running": 3,
                "interrupted": 4, "failed": 5}
PER_EXAMPLE = ("accuracy",)  # metrics that move by exactly 1/n_valid per validation example
def _seconds(t: FrozenTrial) -> float | None:
    """A trial's recorded duration, else its start-to-end wall time, else None."""
    duration = t.user_attrs.get("duration_s")
    if duration is None and t.datetime_start and t.datetime_complete:
        duration = round((t.datetime_complete - t.datetime_start).total_seconds(), 2)
    return duration


def _strategy_columns() -> list[str]:
    """The Strategy fields the leaderboard shows: the table's ``column=True`` ones, then
    those of the registered technique plugins."""
    return fields.columns(Strategy)


class StudyRecord:
    """A search's stored record, read-only but for its attributes (see :class:`Study`)."""

    def __init__(self, study: optuna.Study, spec: st.StorageSpec, workdir: Path | None = None):
        self.optuna = study
        self.spec = spec
        self.workdir = workdir or st.workdir_for(spec, study.study_name)

    @classmethod
    def load(cls, storage: str | os.PathLike, name: str | None = None) -> StudyRecord:
        """Reopen a study; ``name`` may be left out when the storage holds only one search
        (its distillation sub-studies aside)."""
        spec = st.existing(storage)
        backend = spec.open()
        names = st.study_names(backend)
        if name is None:
            names = st.study_names(backend, searches=True) or names
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

    def system_attrs(self) -> dict[str, Any]:
        return st.study_attrs(self.optuna)

    def set_system_attr(self, key: str, value: Any) -> None:
        st.set_study_attr(self.optuna, key, value)

    @property
    def meta(self) -> dict[str, Any]:
        return self.system_attrs().get(st.META, {})

    @property
    def uid(self) -> str:
        """The id this study's model files carry."""
        return self.meta.get("uid", "")

    @property
    def task(self) -> str | dict[str, str]:
        """The task name, or ``{label column: task}`` (primary first) for a multi-task study."""
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
        return min(complete, key=lambda t: rank_key(t.value, self.maximize,
                                                    t.user_attrs.get(VAL_LOSS), _seconds(t),
                                                    t.number))

    @property
    def best_strategy(self) -> Strategy:
        return Strategy.from_dict(self.best_trial.system_attrs[st.STRATEGY])

    def load_best(self, *, device: str = "cpu") -> Predictor:
        """The study's model (:meth:`model_path`), ready to ``predict``.

        The file must carry this study's id: a checkpoint of another study is never used.
        """
        return Predictor.load(self.model_path(), device=device, study=self.uid)

    def model_path(self, trial: int | None = None) -> Path:
        """The model file of trial ``trial``; None: the study's model, the ensemble or soup
        ``search(final=)`` made, else the best trial that kept one. What ``autotransfer
        predict`` and ``export`` take, and ``at.load`` loads."""
        final = self.final_path() if trial is None else None
        if final is not None:
            return final
        ranked = self.leaderboard()
        done = [int(n) for n in ranked.loc[ranked["state"] == "complete", "trial"]]
        def kept(number: int) -> bool:
            path = self.optuna.trials[number].system_attrs.get(st.CHECKPOINT)
            return bool(path) and Path(path).is_file()

        if trial is not None:
            if trial not in done:
                raise StorageError(f"Study {self.name!r} has no completed trial {trial!r}; "
                                   f"completed: {sorted(done)[:20] or 'none'}.")
            if not kept(trial):
                raise StorageError(
                    f"Trial {trial} of study {self.name!r} kept no model file (only the top "
                    f"keep_checkpoints trials do); give one that kept one: "
                    f"{sorted(n for n in done if kept(n))[:20] or 'none'}.")
            done = [trial]
        for number in done:
            if kept(number):
                return Path(self.optuna.trials[number].system_attrs[st.CHECKPOINT])
        raise StorageError(
            f"Study {self.name!r} kept no checkpoint of a completed trial "
            f"(keep_checkpoints=0, or the files under {self.workdir} were removed); use "
            f"study.best_strategy with at.run_trial to train it again."
        )

    def final_path(self) -> Path | None:
        """The file of the ensemble or soup ``search(final=...)`` made the study's model
        (None: the best trial is, or the file is gone)."""
        attrs = self.system_attrs()
        kind = attrs.get(st.FINAL)
        record = attrs.get(st.COMBINED.get(kind, "")) or {}
        path = record.get("path")
        return Path(path) if path and Path(path).is_file() else None

    def leaderboard(self) -> Any:
        """A pandas DataFrame, best first: one row per trial, with the transfer gain; test
        scores (``test_<metric>``) and refits when the study has them.

        Ties on the validation score are ranked by :data:`TIE_RULE`; ``tied`` marks the
        trials tied with the best (when there are several). A strategy field that does not
        apply to a trial (``lora_rank`` without LoRA, ``augment`` on texts) is blank.
        ``df.attrs`` holds ``n_valid`` (validation examples), ``resolution`` (what one
        example moves the metric, for accuracy) and ``note`` (those in words).
        """
        import pandas as pd

        attrs = self.system_attrs()  # one read for refits, test scores and the ranking
        where = self._where(attrs.get(st.META, {}))
        rows = [self._row(t, where) for t in self.trials() if t.state != TrialState.WAITING]
        rows += [self._refit_row(int(n), r, where) for n, r in attrs.get(st.REFIT, {}).items()]
        rows += [self._combined_row(kind, attrs[key], where)
                 for kind, key in st.COMBINED.items() if attrs.get(key)]
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
        df = self._ranked(df, metric)
        df.insert(0, "rank", range(1, len(df) + 1))
        _add_test_scores(df, attrs.get(st.TEST, {}), metric)
        _add_loss_weights(df, attrs.get(st.META, {}).get("task"))
        ranking = attrs.get(st.RANKING)
        if ranking:
            df["transferability"] = df["backbone"].map(
                {b: r["score"] for b, r in ranking.items()})
        df = df[_column_order(df, metric)]
        n_valid = attrs.get(st.META, {}).get("n_valid")
        df.attrs.update(n_valid=n_valid, resolution=_resolution(metric, n_valid))
        df.attrs["note"] = validation_note(df, metric)
        return df

    def _ranked(self, df: Any, metric: str) -> Any:
        """The rows in :func:`rank_key` order (complete trials, refits, then the rest), with
        ``tied``: the complete trials whose score ties the best's, when there are several."""
        cells = df.get(VAL_LOSS, [None] * len(df))
        keys = [(_STATE_ORDER[state], rank_key(v, self.maximize, loss, sec, n))
                for state, v, loss, sec, n in zip(df["state"], df[metric], cells,
                                                  df["duration_s"], df["trial"])]
        order = sorted(range(len(df)), key=keys.__getitem__)
        df = df.iloc[order].reset_index(drop=True)
        scores = [keys[i][1][0] for i in order]
        complete = (df["state"] == "complete").tolist()
        best = scores[0] if complete[0] else None
        tied = [c and s == best for c, s in zip(complete, scores)]
        df["tied"] = tied if sum(tied) > 1 else [False] * len(df)
        return df

    def ranking(self) -> Any:
        """The backbones' transferability (a held-out linear probe on frozen features,
        LogME beside it) computed before the search, best first: a DataFrame (empty when
        there was one backbone or ``rank=False``)."""
        import pandas as pd

        from ..selection.ranking import COLUMNS

        ranking = self.system_attrs().get(st.RANKING, {})
        rows = [{"backbone": b, **r} for b, r in ranking.items()]
        df = pd.DataFrame(rows, columns=["backbone", *COLUMNS[1:], "rank"])
        return df.sort_values("rank").reset_index(drop=True)

    def _combined_row(self, kind: str, record: dict, where: Where) -> dict[str, Any]:
        """A weight soup or an ensemble: the best member's strategy, the validation score
        of the greedy walk (it chose on that set, so the test score is the one to trust)."""
        row = self._row(self.optuna.trials[int(record["best"])], where)
        members = ", ".join(map(str, record["members"]))
        backbones = sorted(set(record.get("backbones", ())))
        of = f" ({', '.join(backbones)})" if len(backbones) > 1 else ""
        row.update({"state": kind, self.metric: record.get("valid"), "baseline": "",
                    "duration_s": record.get("duration_s"), "device": None, "worker": None,
                    "cached": None,
                    "reason": f"{record['method']} {kind} of trials {members}{of}"})
        return row

    def _refit_row(self, number: int, record: dict, where: Where) -> dict[str, Any]:
        """A refit: the trial's strategy retrained on all labelled data, no validation."""
        t = self.optuna.trials[number]
        row = self._row(t, where)
        row.update({"state": "refit", self.metric: None, "epochs": record["epochs"],
                    "epochs_run": record["epochs"], "duration_s": record["duration_s"],
                    "trainable_params": record.get("trainable_params"),
                    "device": None, "worker": None, "cached": None, "reason": ""})
        for k in list(row):
            if k in t.user_attrs and k not in _NOT_METRICS and k in _metric_names(t):
                row[k] = None
        return row

    def _where(self, meta: dict[str, Any]) -> Where:
        """What the record knows of where its trials ran, for the field table's ``when``:
        the data's modality and task, and whether target inputs made domain adaptation
        available. What depends on a backbone (drop path, adapters) is taken to apply: a
        field is blank only where the study's data or the trial's other values rule it out."""
        every = tuple(f.name for f in fields.every(Strategy))
        unlabeled = meta.get("n_unlabeled")
        return Where(modality=meta.get("modality", "image"),
                     task=meta.get("task", "classification"),
                     supports_drop_path=True, adapters=ADAPTERS,
                     domain=every if unlabeled is None or unlabeled else ())

    def _row(self, t: FrozenTrial, where: Where) -> dict[str, Any]:
        s = t.system_attrs.get(st.STRATEGY, {})
        ua = t.user_attrs
        state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
                 TrialState.FAIL: "failed", TrialState.RUNNING: "running"}[t.state]
        if t.state == TrialState.FAIL and t.system_attrs.get(st.INTERRUPTED):
            state = "interrupted"  # Ctrl-C or a killed process: the rerun runs it again
        if t.state == TrialState.COMPLETE:
            value = t.value
        elif t.intermediate_values:
            vals = list(t.intermediate_values.values())
            value = max(vals) if self.maximize else min(vals)
        else:
            value = None
        row: dict[str, Any] = {
            "trial": t.number, "state": state, "baseline": ua.get("baseline", ""),
            "prior": ua.get("prior", ""),
            "backbone": s.get("backbone", ua.get("backbone")),
            "pretrained": s.get("pretrained", True),
        }
        plugin = fields.plugin_fields()  # a trial recorded before a technique's plugin
        row.update({k: s.get(k, fields.off_value(Strategy, k) if k in plugin else None)
                    for k in _strategy_columns()})  # was installed ran with it off
        trial_where = dataclasses.replace(where, values=s)
        row.update({k: None for k in _strategy_columns()  # blank: it did not apply
                    if not fields.applies(Strategy, k, trial_where)})
        row.update({f"loss_weight.{k}": w for k, w in (s.get("loss_weights") or {}).items()})
        row["n_groups"] = ua.get("n_groups")
        row["epochs"] = s.get("epochs")
        row["epochs_run"] = ua.get("epochs_run")
        row[self.metric] = value
        for k, v in ua.items():
            if k not in row and k not in _NOT_METRICS and not k.startswith(_NOT_PREFIXES):
                row[k] = v
        for k in ("trainable_params", "total_params", "device", "worker", "cached"):
            row[k] = ua.get(k)
        row["duration_s"] = _seconds(t)
        row["reason"] = ua.get("fail_reason") or ua.get("cut", "")
        return row

    def __repr__(self) -> str:
        return f"Study({self.name!r}, storage={self.spec.url!r}, trials={len(self.trials())})"


def _metric_names(t: FrozenTrial) -> set[str]:
    history = t.system_attrs.get(st.HISTORY) or [{}]
    return set(history[-1]) - {"epoch"}


def _add_test_scores(df: Any, scores: dict[str, dict], metric: str) -> None:
    """``test_<metric>`` columns from the recorded test scores (trials and refits)."""
    if not scores:
        return
    keys = [f"refit:{t}" if s == "refit" else s if s in ("soup", "ensemble") else str(t)
            for t, s in zip(df["trial"], df["state"])]
    names = sorted({k for v in scores.values() for k in v if k not in ("se", "n")},
                   key=lambda k: (k != metric, k))
    for name in names:
        df[f"test_{name}"] = [scores.get(k, {}).get(name) for k in keys]
    df[f"test_{metric}_se"] = [scores.get(k, {}).get("se") for k in keys]


def _add_loss_weights(df: Any, task: Any) -> None:
    """A ``loss_weight.<column>`` per non-primary task of a multi-task study; a trial whose
    strategy left a task out (a baseline) weighs it 1, as the primary always does."""
    if isinstance(task, dict):
        for col in list(task)[1:]:
            name = f"loss_weight.{col}"
            df[name] = df[name].fillna(1.0) if name in df else 1.0


_NOT_PREFIXES = ("strategy.", "history.")
_NOT_METRICS = {"baseline", "prior", "backbone", "fail_reason", "cut", "epochs_run", "best_epoch",
                "n_groups", "trainable_params", "total_params", "duration_s", "compute_s",
                "device", "worker", "cached"}


def _column_order(df: Any, metric: str) -> list[str]:
    first = ["rank", "trial", "state", "baseline", "prior", "backbone", "transferability",
             "pretrained", *_strategy_columns(),
             *[c for c in df.columns if c.startswith("loss_weight.")],
             "n_groups", "epochs", "epochs_run", metric, "tied", f"test_{metric}",
             f"test_{metric}_se"]
    last = ["transfer_gain", "negative_transfer", "trainable_params", "total_params",
            "duration_s", "device", "worker", "cached", "reason"]
    middle = [c for c in df.columns if c not in first and c not in last]
    return [c for c in first + middle + last if c in df.columns]


def _resolution(metric: str, n_valid: Any) -> float | None:
    """What one validation example moves ``metric`` by (accuracy: 1/n), else None."""
    return 1 / n_valid if n_valid and metric in PER_EXAMPLE else None


def validation_note(lb: Any, metric: str) -> str:
    """The validation set's size and resolution, and the trials tied with the best, in
    words (the CLI's footer line and the report's summary)."""
    n_valid, step = lb.attrs.get("n_valid"), lb.attrs.get("resolution")
    if n_valid:
        note = f"validation: {n_valid} examples"
        note += f", so one example = {step:.3g} {metric}" if step else ""
    else:
        note = "validation: its size was not recorded in this study"
    tied = lb.loc[lb["tied"], "trial"].tolist() if "tied" in lb and metric in lb else []
    if tied:
        best = lb[metric].iloc[0]
        names = ", ".join(str(n) for n in tied[:10]) + (
            f" and {len(tied) - 10} more" if len(tied) > 10 else "")
        note += (f". Trials {names} tie with the best ({metric} "
                 f"{best:.4g}); {TIE_RULE}, so trial {tied[0]} ranks first")
    return note + "."
