"""Results beyond the validation score: held-out test scores, refits on all labelled data,
and whether the best trial's validation score overstates what it does on new data.

The search selects on validation data, so the best validation score is optimistic: it is
the maximum of many noisy estimates. A test set that no choice ever saw is the honest
number (AutoGluon's ``leaderboard(test_data)``: ``score_val`` next to ``score_test``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from optuna.trial import TrialState

from .. import checks, inputs, plugins
from .. import storage as st
from ..data import Dataset
from ..errors import ConfigError, DataError, ModalityError, StorageError
from ..predict.modelfile import SUFFIX
from ..predict.predictor import Predictor, save_checkpoint
from ..strategy.strategy import MAX_EPOCHS, Strategy
from . import identity
from .record import StudyRecord

BOOTSTRAP = 200  # resamples for a score's standard error
MONITOR = 64  # examples a refit reports its fit on each epoch (not used for any choice)


@dataclass(frozen=True)
class KeptModel:
    """A model file a study keeps: a trial's best checkpoint or a refit of a trial."""

    key: str  # "12" for trial 12, "refit:12" for its refit, "soup", "ensemble"
    trial: int  # the trial (a soup's or ensemble's best member)
    kind: str  # "trial" | "refit" | "soup" | "ensemble"
    path: Path


def kept_models(study: StudyRecord) -> list[KeptModel]:
    """The completed trials whose checkpoint is on disk, best first (as the leaderboard
    ranks them), then the refits, then the weight soup and the ensemble."""
    kept = sorted((t for t in study.trials()
                   if t.state == TrialState.COMPLETE and st.CHECKPOINT in t.system_attrs
                   and Path(t.system_attrs[st.CHECKPOINT]).is_file()),
                  key=lambda t: st.rank_key(t.value, study.maximize, t.user_attrs.get(st.VAL_LOSS),
                                            t.user_attrs.get("duration_s"), t.number))
    out = [KeptModel(str(t.number), t.number, "trial", Path(t.system_attrs[st.CHECKPOINT]))
           for t in kept]
    for number, r in sorted(refits(study).items(), key=lambda kv: int(kv[0])):
        if Path(r["path"]).is_file():
            out.append(KeptModel(f"refit:{number}", int(number), "refit", Path(r["path"])))
    attrs = study.system_attrs()
    for kind, key in st.COMBINED.items():
        made = attrs.get(key)
        if made and Path(made["path"]).is_file():
            out.append(KeptModel(kind, int(made["best"]), kind, Path(made["path"])))
    return out


def refits(study: StudyRecord) -> dict[str, dict]:
    return study.system_attrs().get(st.REFIT, {})


def test_scores(study: StudyRecord) -> dict[str, dict]:
    """The recorded test scores: model key -> metrics, ``se`` and ``n``."""
    return study.system_attrs().get(st.TEST, {})


def evaluate(study: StudyRecord, data: Dataset, *, record: bool = False,
             batch_size: int = 64, until: float | None = None) -> Any:
    """Score every kept model on labelled ``data``: a DataFrame, best first.

    ``record=True`` stores the scores as the study's test scores (the leaderboard's
    ``test_<metric>`` columns, the report). ``until`` (``time.time()``): score the best
    model, then the others while one more fits (the rows say which were scored).
    """
    import pandas as pd

    checks.integer("batch_size", batch_size, low=1)
    checks.flag("record", record)
    models = kept_models(study)
    if not models:
        raise StorageError(f"Study {study.name!r} keeps no model to score (no completed trial "
                           f"with a checkpoint, no refit); run the search with "
                           f"keep_checkpoints >= 1, or study.refit(...).")
    first = Predictor.load(models[0].path, study=study.uid)
    data = inputs.held_out("data", data, study.task, study.meta.get("modality", "image"),
                           first.info)
    rows, scores = [], {}
    took = 0.0  # the last model's scoring: another starts only if one more would fit
    for m in models:
        if until is not None and rows and time.time() + took > until:
            break
        started = time.time()
        model = first if m is models[0] else Predictor.load(m.path, study=study.uid)
        metrics, se = score(model, data, batch_size)
        took = time.time() - started
        scores[m.key] = {**metrics, "se": se, "n": len(data)}
        rows.append({"model": m.key, "trial": m.trial, "kind": m.kind,
                     "backbone": model.strategy.backbone, **metrics,
                     f"{study.metric}_se": se, "n": len(data)})
    if record:
        study.set_system_attr(st.TEST, scores)
    df = pd.DataFrame(rows)
    return df.sort_values(study.metric, ascending=not study.maximize,
                          kind="stable").reset_index(drop=True)


def score(model: Predictor, data: Dataset, batch_size: int = 64) -> tuple[dict, float]:
    """A model's metrics on labelled data and the bootstrap standard error of the primary
    one (resampling the examples: how much the score would move on another draw)."""
    targets, _ = model.head.encode(data.labels, model.info)
    out, _, _ = model._outputs(data, batch_size, None)
    metrics = model.head.metrics(out, targets, model.info)

    def primary(idx: np.ndarray) -> float:  # the primary metric on resampled examples
        i = torch.as_tensor(idx)
        return float(model.head.metric_value(out[i], targets[i], model.info))

    n = len(targets)
    se = 0.0  # one example: nothing to resample
    if n > 1:  # percentile: the standard error needs no BCa jackknife (n more scorings)
        from scipy.stats import bootstrap

        se = bootstrap((np.arange(n),), primary, n_resamples=BOOTSTRAP, vectorized=False,
                       method="percentile", rng=np.random.default_rng(0)).standard_error
    return {k: round(float(v), 6) for k, v in metrics.items()}, round(float(se), 6)


def optimism(study: StudyRecord) -> str | None:
    """A warning when the best trial's validation score beats its test score by more than
    two standard errors of their difference; None when it does not (or nothing to say)."""
    scores = test_scores(study)
    try:
        best = study.best_trial
    except StorageError:
        return None
    mine = scores.get(str(best.number))
    if mine is None or mine.get("se") is None or best.value is None:
        return None
    metric, sign = study.metric, 1 if study.maximize else -1
    se_test = mine["se"]
    n_valid = study.meta.get("n_valid") or mine["n"]
    se_valid = se_test * math.sqrt(mine["n"] / n_valid)  # same spread, other sample size
    margin = 2 * math.hypot(se_test, se_valid)
    gap = sign * (best.value - mine[metric])
    if gap <= margin:
        return None
    return (f"The best trial ({best.number}) scores {metric}={best.value:.4f} on validation "
            f"but {mine[metric]:.4f} on the test set: {gap:.4f} worse, more than two standard "
            f"errors ({margin:.4f}). Its validation score is optimistic (the search selected "
            f"on it); report the test score, and give a larger validation set to choose on.")


def refit(study: StudyRecord, train: Dataset, valid: Dataset | None = None, *,
          trial: int | None = None, epochs: int | str = "best", device: str = "cpu",
          seed: int | None = None, unlabeled: Any = None) -> Predictor:
    """Retrain a trial's strategy on train + valid for the epochs its best epoch needed
    (``unlabeled``: the target inputs a domain-adapting strategy needs)."""
    from ..training.runner import TrialSetup, run_trial

    source = _refit_source(study, trial)
    n_epochs = _refit_epochs(source, epochs)
    data = inputs.dataset("train", train)
    if valid is not None:
        data = data.concat(inputs.dataset("valid", valid))
    modality = study.meta.get("modality", data.modality)
    if data.modality != modality:
        raise ModalityError(f"train holds {data.modality}, but study {study.name!r} searched "
                            f"{modality}; give {modality} data with labels.")
    _check_classes(study, data)
    inputs.class_ids(study.task, data.labels, "train", data.index)
    inputs.regression_targets(study.task, data.labels, "train", items=data.index)
    seed = study.meta.get("seed", 0) if seed is None else checks.integer("seed", seed, low=0)
    strategy = Strategy.from_dict(source.system_attrs[st.STRATEGY]).replace(epochs=n_epochs)
    if unlabeled is not None and not (strategy.adabn or strategy.dann):
        raise ConfigError(f"unlabeled= was given, but trial {source.number}'s strategy does not "
                          f"adapt to a target domain (adabn=False, dann=0), so it would be "
                          f"ignored; leave unlabeled out, or pass trial= a trial that adapts.")
    monitor = data.subset(np.arange(min(MONITOR, len(data))))
    started = time.perf_counter()
    setup = TrialSetup(task=study.task, device=device, patience=None, seed=seed, keep="last",
                       unlabeled=inputs.unlabeled(unlabeled, data.modality))
    result = run_trial(strategy, data, monitor, setup)
    path = study.workdir / "refit" / f"trial_{source.number}{SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, result.state_dict, result.strategy, result.task, result.info,
                    result.preprocessing, study=study.uid)
    records = dict(refits(study))
    records[str(source.number)] = {
        "path": str(path), "epochs": n_epochs, "n_train": len(data),
        "duration_s": round(time.perf_counter() - started, 2),
        "trainable_params": result.trainable_params, "total_params": result.total_params}
    study.set_system_attr(st.REFIT, records)
    return Predictor.load(path, device=device, study=study.uid)


def _check_classes(study: StudyRecord, data: Dataset) -> None:
    """Refit data with other classes than the study's would give a model (and a refit row)
    that every later evaluate() of the study refuses."""
    known = study.meta.get("classes")
    if known is None or isinstance(study.task, dict):
        return
    info = plugins.get_head(study.task).encode(data.labels)[1]
    got = json.loads(json.dumps(info.get("classes"), default=identity.plain))
    if got != known:
        new = [c for c in got or [] if c not in known]
        missing = [c for c in known if c not in (got or [])]
        raise DataError(f"The refit data's classes differ from those of study {study.name!r}: "
                        f"new {new[:10]}, missing {missing[:10]}; give data labelled with "
                        f"the study's classes {known[:20]}.")


def _refit_source(study: StudyRecord, trial: int | None) -> Any:
    if trial is None:
        try:
            return study.best_trial
        except StorageError as exc:
            raise StorageError(f"Cannot refit: {exc} refit needs a completed trial: run the "
                               f"search until one completes, or pass trial= a completed "
                               f"trial's number.") from None
    trial = checks.integer("trial", trial, low=0)
    done = [t.number for t in study.trials() if t.state == TrialState.COMPLETE]
    if trial not in done:
        raise ConfigError(f"Cannot refit trial {trial}: it is not a completed trial of study "
                          f"{study.name!r}; completed trials: {done[:30] or 'none'}.")
    return study.optuna.trials[trial]


def _refit_epochs(source: Any, epochs: int | str) -> int:
    if epochs == "best":
        best = source.user_attrs.get("best_epoch")
        return int(best) if best else Strategy.from_dict(source.system_attrs[st.STRATEGY]).epochs
    if isinstance(epochs, str):
        raise ConfigError(f"epochs must be 'best' (the epochs trial {source.number}'s best "
                          f"epoch needed) or an integer in [1, {MAX_EPOCHS}], but got "
                          f"epochs={epochs!r}.")
    return checks.integer("epochs", epochs, low=1, high=MAX_EPOCHS)
