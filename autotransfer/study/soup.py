"""Weight soups of a study's kept models (Wortsman et al. 2022, "Model soups: averaging
weights of multiple fine-tuned models improves accuracy without increasing inference
time"): the weights of trials fine-tuned from the same pretrained backbone, averaged into
one model that predicts, saves and exports like any other.

``uniform`` averages the best ``k`` compatible kept trials. ``greedy`` (the paper's
recipe) walks them best first on validation and keeps each one whose addition does not
lower the soup's validation score. Compatible means the best trial's backbone, input
preprocessing, classes and weight shapes (adapters are folded in when a trial is kept).
The soup is kept in the study (a ``soup`` row on the leaderboard, scored by
``study.evaluate``), like a refit.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .. import checks, inputs
from .. import storage as st
from ..errors import ConfigError, StorageError, check_choice
from ..predict.modelfile import SUFFIX
from ..predict.predictor import Predictor, save_checkpoint
from .record import StudyRecord
from .results import KeptModel, kept_models

METHODS = ("greedy", "uniform")


def soup(study: StudyRecord, k: int | None = None, *, valid: Any = None,
         method: str = "greedy", device: str = "cpu") -> Predictor:
    """Average the weights of the best ``k`` (default all) compatible kept trials; with
    ``method="greedy"`` only those that do not lower the score on ``valid`` (labelled data,
    the search's validation set or another held-out set, never the test set)."""
    check_choice("soup method", method, METHODS)
    if k is not None:
        k = checks.integer("k", k, low=2)
    if method == "greedy" and valid is None:
        raise ConfigError("method='greedy' chooses the soup's members on labelled validation "
                          "data: give valid= (e.g. the search's valid set), or use "
                          "method='uniform'.")
    started = time.perf_counter()
    members = _compatible(study, [m for m in kept_models(study) if m.kind == "trial"][:k],
                          device)
    if method == "greedy":
        valid = inputs.held_out("valid", valid, study.task,
                                study.meta.get("modality", "image"), members[0][1].info)
        chosen, score = _greedy(members, valid, study.metric, study.maximize)
    else:
        chosen, score = members, None
    model = _averaged(members[0][1], [p for _, p in chosen])
    path = study.workdir / "soup" / f"{method}{SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model.model.state_dict(), model.strategy, model.task, model.info,
                    model.preprocessing, study=study.uid)
    study.set_system_attr(st.SOUP, {
        "path": str(path), "method": method, "members": [m.trial for m, _ in chosen],
        "best": members[0][0].trial, "valid": score,
        "duration_s": round(time.perf_counter() - started, 2)})
    return Predictor.load(path, device=device, study=study.uid)


def _compatible(study: StudyRecord, kept: list[KeptModel], device: str
                ) -> list[tuple[KeptModel, Predictor]]:
    """The kept trials that can share weights with the best one, best first."""
    if not kept:
        raise StorageError(f"Study {study.name!r} keeps no trial's model to make a soup of; "
                           f"run the search with keep_checkpoints >= 2.")
    models = [(m, Predictor.load(m.path, device=device, study=study.uid)) for m in kept]
    best = models[0][1]
    shapes = _shapes(best)
    same = [(m, p) for m, p in models
            if p.strategy.backbone == best.strategy.backbone
            and p.preprocessing == best.preprocessing and p.info == best.info
            and _shapes(p) == shapes]
    if len(same) < 2:
        others = ", ".join(f"trial {m.trial} ({p.strategy.backbone})" for m, p in models[1:])
        raise ConfigError(
            f"A soup needs two or more kept trials of the best one's backbone "
            f"({best.strategy.backbone!r}, trial {models[0][0].trial}) with the same input "
            f"size and weight shapes; the others kept are: {others or 'none'}. Keep more "
            f"trials (keep_checkpoints=) or search one backbone.")
    return same


def _shapes(p: Predictor) -> dict[str, tuple]:
    return {k: (tuple(v.shape), v.dtype) for k, v in p.model.state_dict().items()}


def _greedy(members: list[tuple[KeptModel, Predictor]], valid: Any, metric: str,
            maximize: bool) -> tuple[list, float]:
    """Wortsman et al.'s greedy soup: best first, keep an ingredient unless it hurts."""
    sign = 1 if maximize else -1
    chosen = [members[0]]
    best = members[0][1].evaluate(valid)[metric]
    for candidate in members[1:]:
        trial = _averaged(members[0][1], [p for _, p in chosen + [candidate]])
        score = trial.evaluate(valid)[metric]
        if sign * score >= sign * best:
            chosen, best = chosen + [candidate], score
    return chosen, float(best)


def _averaged(like: Predictor, models: list[Predictor]) -> Predictor:
    """A copy of ``like`` holding the mean of ``models``' floating-point weights (counters,
    such as BatchNorm's batches seen, are the first model's)."""
    import copy

    states = [m.model.state_dict() for m in models]
    mean = {k: (torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
                if v.is_floating_point() else v)
            for k, v in states[0].items()}
    out = copy.copy(like)
    out.model = copy.deepcopy(like.model)
    out.model.load_state_dict(mean)
    return out
