"""Ensembles of a study's kept models: the best trials of any backbones on the same
inputs, their predictions averaged (the mean probability; :meth:`autotransfer.Head.combine`)
into one model that predicts, saves and exports like a single one
(:mod:`autotransfer.predict.ensemble`).

``uniform`` averages the best ``k`` kept trials. ``greedy`` walks them best first on
validation and keeps each one whose addition does not lower the ensemble's validation
score (the walk Wortsman et al. 2022 use for soups, on predictions: each member's outputs
are computed once). Members must take the same prepared inputs as the best trial (image
size, or tokenizer) and share its labels; others are left out and logged. The
ensemble is kept in the study (an ``ensemble`` row on the leaderboard, scored by
``study.evaluate``), like a soup or a refit.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from .. import checks, inputs
from .. import storage as st
from ..errors import ConfigError, StorageError, check_choice
from ..log import get_logger
from ..predict.ensemble import MAX_MEMBERS, EnsembleModel, Members, mismatch
from ..predict.modelfile import SUFFIX
from ..predict.predictor import Predictor
from .record import StudyRecord
from .results import KeptModel, kept_models

logger = get_logger(__name__)

METHODS = ("greedy", "uniform")


def ensemble(study: StudyRecord, k: int | None = None, *, valid: Any = None,
             method: str = "greedy", device: str = "cpu") -> Predictor:
    """Average the predictions of the best ``k`` (default all, at most 32) kept trials;
    with ``method="greedy"`` only those that do not lower the score on ``valid`` (labelled
    data: the search's validation set or another held-out set, never the test set)."""
    check_choice("ensemble method", method, METHODS)
    if k is not None:
        k = checks.integer("k", k, low=2, high=MAX_MEMBERS)
    if method == "greedy" and valid is None:
        raise ConfigError("method='greedy' chooses the ensemble's members on labelled "
                          "validation data: give valid= (e.g. the search's valid set), or "
                          "use method='uniform'.")
    started = time.perf_counter()
    kept = [m for m in kept_models(study) if m.kind == "trial"][:k or MAX_MEMBERS]
    members = _compatible(study, kept, device)
    score = None
    if method == "greedy":
        valid = inputs.held_out("valid", valid, study.task,
                                study.meta.get("modality", "image"), members[0][1].info)
        members, score = _greedy(members, valid, study.metric, study.maximize)
    # greedy may keep the best alone: the ensemble is then that model
    model = assembled([p for _, p in members]) if len(members) > 1 else members[0][1]
    path = model.save(study.workdir / "ensemble" / f"{method}{SUFFIX}")
    study.set_system_attr(st.ENSEMBLE, {
        "path": str(path), "method": method, "members": [m.trial for m, _ in members],
        "backbones": [p.strategy.backbone for _, p in members],
        "best": members[0][0].trial, "valid": score,
        "duration_s": round(time.perf_counter() - started, 2)})
    return Predictor.load(path, device=device, study=study.uid)


def assembled(models: list[Predictor]) -> Predictor:
    """One predictor whose output combines ``models``' (the first one's labels and
    preprocessing; each member normalizes its input its own way)."""
    first = models[0]
    combine = functools.partial(first.head.combine, info=first.info)
    net = EnsembleModel(Members([m.model for m in models], [m.preprocessing for m in models],
                                combine))
    out = Predictor(net, first.strategy, first.task, first.info, first.preprocessing)
    out.study = first.study
    out.members = tuple((m.strategy, m.preprocessing) for m in models)
    return out


def _compatible(study: StudyRecord, kept: list[KeptModel], device: str
                ) -> list[tuple[KeptModel, Predictor]]:
    """The kept trials that take the best one's inputs and labels, best first."""
    if len(kept) < 2:
        raise StorageError(f"Study {study.name!r} keeps {len(kept)} trial model(s); an "
                           f"ensemble needs two or more. Run the search with "
                           f"keep_checkpoints >= 2.")
    models = [(m, Predictor.load(m.path, device=device, study=study.uid)) for m in kept]
    best = models[0][1]
    same, left = [models[0]], []
    for m, p in models[1:]:
        why = "its labels differ" if (p.task, p.info) != (best.task, best.info) \
            else mismatch(best.preprocessing, p.preprocessing)
        (left.append(f"trial {m.trial} ({why})") if why else same.append((m, p)))
    if left and len(same) >= 2:
        logger.info("ensemble: %s cannot join, left out", "; ".join(left))
    if len(same) < 2:
        raise ConfigError(
            f"An ensemble needs two or more kept trials that take the best one's inputs "
            f"(trial {models[0][0].trial}); the others cannot join: {'; '.join(left)}. Keep "
            f"more trials (keep_checkpoints=) or search one image size.")
    return same


def _greedy(members: list[tuple[KeptModel, Predictor]], valid: Any, metric: str,
            maximize: bool) -> tuple[list, float]:
    """Best first, keep a member unless it lowers the validation score."""
    first = members[0][1]
    targets, _ = first.head.encode(valid.labels, first.info)
    outputs = [p._outputs(valid, 64, None)[0] for _, p in members]

    def scored(idx: list[int]) -> float:
        combined = first.head.combine([outputs[i] for i in idx], first.info) \
            if len(idx) > 1 else outputs[idx[0]]
        return first.head.metrics(combined, targets, first.info)[metric]

    sign = 1 if maximize else -1
    chosen, best = [0], scored([0])
    for i in range(1, len(members)):
        score = scored(chosen + [i])
        if sign * score >= sign * best:
            chosen, best = chosen + [i], score
    return [members[i] for i in chosen], float(best)
