"""Study: a stored search, reopened by storage and name, reviewed as a leaderboard, and
acted on: scored on test data, refit, distilled, reported."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..predict.predictor import Predictor
from ..report.page import write_report
from .distill import distill
from .ensemble import ensemble
from .record import StudyRecord
from .results import evaluate, refit
from .soup import soup


class Study(StudyRecord):
    """A search's stored record.

    Example:
        >>> study = at.Study.load("studies/quickstart.db")   # doctest: +SKIP
        >>> study.leaderboard().head()                       # doctest: +SKIP
    """

    def evaluate(self, data: Any, *, record: bool = False, batch_size: int = 64) -> Any:
        """Score the kept models (best checkpoints, refits) on labelled data: a DataFrame,
        best first. ``record=True`` stores them as the test scores the leaderboard shows."""
        return evaluate(self, data, record=record, batch_size=batch_size)

    def refit(self, train: Any, valid: Any = None, *, trial: int | None = None,
              epochs: int | str = "best", device: str = "cpu",
              seed: int | None = None, unlabeled: Any = None) -> Predictor:
        """Retrain the best strategy (or ``trial``'s) on train + valid, for the epochs its
        best epoch needed (``epochs="best"``) or ``epochs``, as AutoGluon's ``refit_full``.

        A strategy that adapts to the target domain (``adabn``, ``dann``) needs the same
        ``unlabeled`` inputs again. No data is left to validate on, so the model has no
        validation score: it is kept
        in the study (a ``refit`` row on the leaderboard) and scored by :meth:`evaluate`.
        """
        return refit(self, train, valid, trial=trial, epochs=epochs, device=device, seed=seed,
                     unlabeled=unlabeled)

    def soup(self, k: int | None = None, *, valid: Any = None, method: str = "greedy",
             device: str = "cpu") -> Predictor:
        """Average the weights of the best ``k`` kept trials of the best one's backbone into
        one model (a model soup, Wortsman et al. 2022): ``"greedy"`` keeps each trial,
        best first, whose addition does not lower the score on ``valid``; ``"uniform"``
        averages them all. Kept in the study (a ``soup`` row; scored by :meth:`evaluate`);
        see :mod:`autotransfer.study.soup`."""
        return soup(self, k, valid=valid, method=method, device=device)

    def ensemble(self, k: int | None = None, *, valid: Any = None, method: str = "greedy",
                 device: str = "cpu") -> Predictor:
        """Average the predictions of the best ``k`` kept trials, of any backbones that
        take the same prepared inputs, into one model: ``"greedy"`` keeps each trial,
        best first, whose addition does not lower the score on ``valid``; ``"uniform"``
        keeps them all. Kept in the study (an ``ensemble`` row; scored by
        :meth:`evaluate`); it saves, loads and exports to ONNX as one model. See
        :mod:`autotransfer.study.ensemble`."""
        return ensemble(self, k, valid=valid, method=method, device=device)

    def distill(self, student: Any, data: Any, unlabeled: Any = None, *, valid: Any = None,
                test: Any = None, top_k: int = 1, n_trials: int = 8, name: str | None = None,
                device: str = "cpu", seed: int | None = None, progress: bool = True,
                backend: Any = None) -> Any:
        """Train ``student`` (a backbone name or a Strategy) on the soft targets of the best
        kept model (or the ``top_k`` averaged), searching temperature, hard-label weight and
        lr in a sub-study stored next to this one, on ``backend`` like a search; see
        :func:`autotransfer.study.distill.distill`.

        Returns a :class:`~autotransfer.study.distill.Distillation`: ``.student`` (a Predictor),
        ``.compare`` (teacher vs student: params, accuracy, images/s), ``.study``, ``.path``.
        """
        return distill(self, student, data, unlabeled, valid=valid, test=test, top_k=top_k,
                       n_trials=n_trials, name=name, device=device, seed=seed,
                       progress=progress, backend=backend)

    def report(self, path: str | os.PathLike) -> Path:
        """Write one self-contained HTML page (works offline) that reviews the study."""
        return write_report(self, path)
