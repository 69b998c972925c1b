"""Held-out accuracy of a linear probe on frozen features: the ranking's score.

Large comparisons of transferability estimates found that a cheap model fitted on the
frozen features and scored on held-out examples ranks candidates as well as the published
metrics or better (Sorkhei et al., 2025: 23 metrics on 16 data sets), and it cannot be
fooled by features that carry nothing: a dead backbone's probe is at chance, while LogME
can score such features highly (its scale moves with the feature width). So each
candidate is scored by a cross-validated logistic regression (ridge regression for a
regression task) on standardized features, with the standard error of that held-out
accuracy; features that are constant, or whose probe is not above chance, are
*degenerate* and rank below every candidate that is not.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import DataError

FOLDS = 5  # at most; fewer when a class has fewer examples
DEGENERATE_SE = 2.0  # not above chance by this many standard errors: degenerate


@dataclass(frozen=True)
class Probe:
    """A probe's held-out score (accuracy, or R² for regression), its standard error,
    the chance level, and whether the features are degenerate."""

    score: float
    se: float
    chance: float
    degenerate: bool


def probe(features: np.ndarray, targets: np.ndarray, *, regression: bool = False,
          seed: int = 0) -> Probe:
    """Cross-validated held-out score of a linear model on ``features`` (N, D)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets)
    spread = f.std(axis=0)
    constant = bool(not np.isfinite(spread).all() or spread.max(initial=0.0) <= 1e-8 * (
        1.0 + np.abs(f).max(initial=0.0)))
    if regression:
        folds = KFold(min(FOLDS, len(y)), shuffle=True, random_state=seed)
    else:
        smallest = np.bincount(y).min(initial=len(y)) if len(y) else 0
        folds = StratifiedKFold(min(FOLDS, smallest), shuffle=True, random_state=seed) \
            if smallest >= 2 else KFold(min(FOLDS, len(y)), shuffle=True, random_state=seed)
    if constant:
        return _scored(np.zeros_like(y, dtype=float) if regression else
                       np.full_like(y, np.bincount(y).argmax()), y, regression, True)
    try:
        with warnings.catch_warnings():
            # a capped fit is still a fair, cheap score (every candidate gets the same cap);
            # sklearn's advice to scale is already followed (StandardScaler)
            warnings.simplefilter("ignore", ConvergenceWarning)
            predicted = cross_val_predict(_model(regression, seed), f, y, cv=folds)
    except ValueError as exc:  # e.g. a training fold left with one class
        raise DataError(f"the linear probe cannot be cross-validated on {len(y)} examples "
                        f"({exc}); give more labelled examples per class.") from exc
    return _scored(predicted, y, regression, False)


def _model(regression: bool, seed: int):
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    last = Ridge(alpha=1.0) if regression else LogisticRegression(C=0.1, max_iter=200,
                                                                   random_state=seed)
    return make_pipeline(StandardScaler(), last)


def _scored(predicted: np.ndarray, y: np.ndarray, regression: bool, constant: bool) -> Probe:
    n = len(y)
    if regression:
        residual = ((y - predicted) ** 2).sum()
        total = ((y - y.mean(axis=0)) ** 2).sum() or 1.0
        score = 1.0 - residual / total
        # a bootstrap-free error: the spread of the per-example share of explained variance
        share = 1.0 - ((y - predicted) ** 2).reshape(n, -1).sum(1) * n / total
        se = float(share.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
        return Probe(float(score), se, 0.0, bool(constant or score <= DEGENERATE_SE * se))
    score = float((predicted == y).mean())
    chance = float(np.bincount(y).max() / n)
    se = math.sqrt(score * (1 - score) / n)
    chance_se = math.sqrt(chance * (1 - chance) / n)
    return Probe(score, se, chance, bool(constant or score <= chance + DEGENERATE_SE * chance_se))
