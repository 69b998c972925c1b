"""Experiment trackers: ``search(callbacks=[...])`` takes Optuna callbacks
(``callback(study, frozen_trial)``, e.g. optuna-integration's ``MLflowCallback`` or
``WeightsAndBiasesCallback``) and calls each once per trial of the call as it finishes.

They run in the process that called ``search``, whichever backend ran the trial (worker
processes, a Ray cluster): a thread reads the study's storage, so nothing is sent to
workers and a slow or broken tracker never holds up or fails a trial. Each trial carries
its per-epoch metrics (:func:`epoch_metrics`), so a tracker logs a training curve too.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Iterable
from typing import Any

import optuna

from .. import storage as st
from ..errors import ConfigError
from ..log import get_logger
from ..storage import FINISHED

logger = get_logger(__name__)

POLL_S = 1.0  # how often the storage is read for newly finished trials

_NEVER = datetime.datetime.max

Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def checked(callbacks: Any) -> list[Callback]:
    """The callbacks as a list, each one callable."""
    if callbacks is None:
        return []
    if callable(callbacks) or isinstance(callbacks, (str, bytes)) or not isinstance(
            callbacks, Iterable):
        raise ConfigError(f"callbacks must be a list of callables callback(study, trial) "
                          f"(Optuna's callback contract), but got callbacks={callbacks!r}.")
    out = list(callbacks)
    for cb in out:
        if not callable(cb):
            raise ConfigError(f"each callback must be callable as callback(study, trial), "
                              f"but got {cb!r} in callbacks.")
    return out


def epoch_metrics(trial: optuna.trial.FrozenTrial) -> list[tuple[int, dict[str, float]]]:
    """``(epoch, {metric: value})`` for each epoch the trial validated, from its recorded
    history (``history.<metric>`` user attributes); the primary metric alone, as
    ``value``, for a trial that ended before its history was written (pruned, failed)."""
    history = {k.removeprefix("history."): v for k, v in trial.user_attrs.items()
               if k.startswith("history.")}
    if history:
        n = max(len(v) for v in history.values())
        return [(e + 1, {k: v[e] for k, v in history.items() if e < len(v) and v[e] is not None})
                for e in range(n)]
    return [(int(e), {"value": v}) for e, v in sorted(trial.intermediate_values.items())]


class Trackers:
    """Calls ``callbacks`` for each trial of one ``search`` call (``run``) once it has
    finished: while the trials run (every :data:`POLL_S` seconds) and at the end."""

    def __init__(self, callbacks: list[Callback], study: optuna.Study, run: str) -> None:
        self.callbacks, self.study, self.run = callbacks, study, run
        self.told: set[int] = set()
        self.broken: set[int] = set()  # callbacks that raised once: warned about, skipped
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Trackers:
        if self.callbacks:
            self._thread = threading.Thread(target=self._watch, name="autotransfer-trackers",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.tell_finished()  # every trial that finished, even in the last second

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            self.tell_finished()

    def tell_finished(self) -> None:
        trials = self.study.get_trials(states=FINISHED)  # copies: a callback may change them
        for t in sorted(trials, key=lambda t: (t.datetime_complete or _NEVER, t.number)):
            if t.number in self.told or t.system_attrs.get(st.RUN) != self.run:
                continue
            self.told.add(t.number)
            for i, cb in enumerate(self.callbacks):
                if i not in self.broken:
                    self._call(i, cb, t)

    def _call(self, i: int, cb: Callback, trial: optuna.trial.FrozenTrial) -> None:
        try:
            cb(self.study, trial)
        except Exception as exc:  # a tracker's fault never touches the search
            self.broken.add(i)
            logger.warning(f"callback {cb!r} failed on trial {trial.number} and is not "
                           f"called again in this search: {type(exc).__name__}: {exc}")
