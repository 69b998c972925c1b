"""The Backend base: what turns a search job into trials (optuna's ``BaseSampler`` style)."""

from __future__ import annotations

import abc
from typing import Any


class Backend(abc.ABC):
    """Runs the trials of a search job; ``search(backend=...)`` takes an instance or a name.

    A backend only schedules: :mod:`autotransfer.backends._lifecycle` records every trial
    and :mod:`autotransfer.backends._policy` decides sampling and pruning, the same for all.
    Subclasses implement :meth:`check` (refuse bad settings before the study exists) and
    :meth:`run` (trials until ``job.budget_left`` says stop).
    """

    name: str = ""

    def check(self) -> None:
        """Refuse what this machine or cluster cannot do; runs before any storage is touched."""
        return None

    @abc.abstractmethod
    def run(self, job: Any, train: Any, valid: Any) -> None:
        """Run trials of ``job`` on ``train``/``valid`` until its budget is spent."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
