"""LogME: how well a backbone's frozen features fit the labels, before any fine-tuning.

You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning", ICML 2021 (http://proceedings.mlr.press/v139/you21b.html), with the fixed-point
iteration of You et al., "Ranking and Tuning Pre-trained Models: A New Paradigm for
Exploiting Model Hubs", JMLR 2022 (arXiv:2110.10545), as in thuml/LogME's ``LogME.py``.

For each target column y (a one-vs-rest indicator per class, or a regression target), a
Bayesian linear model y = F w + noise with prior w ~ N(0, 1/alpha) and noise precision beta
has a marginal likelihood (evidence) p(y | F, alpha, beta); LogME maximises it over alpha
and beta and reports the mean log evidence per example, averaged over the columns. Higher
is better; scores of different backbones on the same data are comparable. One SVD of the
features serves every column, so a score costs a forward pass and milliseconds of algebra.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError

MAX_STEPS = 11  # the fixed point converges in two or three steps, at most ten
TOLERANCE = 1e-3  # relative change of alpha / beta that counts as converged
EPSILON = 1e-5


def logme(features: np.ndarray, targets: np.ndarray, *, regression: bool = False) -> float:
    """The LogME score of ``features`` (N, D) for ``targets``: class ids (N,) in
    ``0..C-1``, or regression targets (N,) or (N, T)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise DataError(f"LogME needs features of shape (N, D) with N >= 2, but got shape "
                        f"{f.shape}.")
    if not np.isfinite(f).all():
        bad = int((~np.isfinite(f)).any(axis=1).sum())
        raise DataError(f"LogME needs finite features, but the features of {bad} of {len(f)} "
                        f"examples hold NaN or inf: the backbone's outputs are not usable "
                        f"(check its weights, and that its inputs are finite).")
    y = _columns(np.asarray(targets), len(f), regression)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)  # k = min(N, D) singular values
    keep = s > 1e-10 * max(1.0, s.max(initial=0.0))  # the rank of the features
    if not keep.any():  # the evidence would be -inf: a zero body says nothing, not "worst"
        raise DataError(f"LogME needs features that are not all zero, but the {d} features "
                        f"of all {n} examples are (numerically) zero: the backbone's outputs "
                        f"carry nothing (check its weights and pooling).")
    u, sigma = u[:, keep], s[keep] ** 2
    x = u.T @ y  # (k, columns): the targets in the features' singular basis
    x2 = x ** 2
    rest = (y ** 2).sum(0) - x2.sum(0)  # what lies outside the features' span
    return float(np.mean([_evidence(sigma, x2[:, j], rest[j], n, d)
                          for j in range(y.shape[1])]))


def _columns(y: np.ndarray, n: int, regression: bool) -> np.ndarray:
    if len(y) != n:
        raise DataError(f"LogME got {n} feature rows but {len(y)} targets; they must match.")
    if regression:
        y = y.astype(np.float64)
        return y.reshape(n, -1)
    if y.ndim != 1 or y.dtype.kind not in "iu" or (y < 0).any():
        raise DataError("LogME classification targets must be class ids 0..C-1, one per "
                        "example.")
    classes = int(y.max()) + 1
    return (y[:, None] == np.arange(classes)[None, :]).astype(np.float64)


def _evidence(sigma: np.ndarray, x2: np.ndarray, rest: float, n: int, d: int) -> float:
    """Maximise the evidence of one target column over alpha and beta (fixed point)."""
    alpha = beta = 1.0
    for _ in range(MAX_STEPS):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum()  # effective number of parameters
        m2 = (sigma * x2 / (t + sigma) ** 2).sum()  # |posterior mean|^2
        res2 = (x2 / (1 + sigma / t) ** 2).sum() + rest  # squared residual
        alpha = gamma / (m2 + EPSILON)
        beta = (n - gamma) / (res2 + EPSILON)
        if abs(alpha / beta - t) / t <= TOLERANCE:
            break
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta)
                - 0.5 * np.log(alpha + beta * sigma).sum()
                - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))
    return float(evidence / n)
