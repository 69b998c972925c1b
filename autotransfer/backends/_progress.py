"""Progress bars of a search: trials of the study, and epochs of the running trial."""

from __future__ import annotations

import time

import optuna

from ._job import SearchJob, counted_trials

# With a timeout, the trials bar shows the time left in place of an ETA from n_trials.
TIMED = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


class Bars:
    """tqdm bars: trials of the study, and epochs of the running trial."""

    def __init__(self, job: SearchJob, study: optuna.Study) -> None:
        from tqdm import tqdm

        self._tqdm, self.deadline = tqdm, job.deadline
        self.trials = tqdm(total=job.n_trials, initial=counted_trials(study), desc="trials",
                           unit="trial", position=0, dynamic_ncols=True,
                           bar_format=TIMED if job.deadline else None)
        self.epochs = None
        self.started = time.time()
        self.left()

    def left(self) -> None:
        """Say the time left in the budget on the trials bar."""
        if self.deadline is not None:
            s = max(0, int(self.deadline - time.time()))
            self.trials.set_postfix_str(f"{s // 60}:{s % 60:02d} left", refresh=True)

    def start_trial(self, number: int, epochs: int, kind: str) -> None:
        label = f"trial {number}" + (f" ({kind})" if kind else "")
        self.epochs = self._tqdm(total=epochs, desc=label, unit="epoch", position=1,
                                 leave=False, dynamic_ncols=True)

    def epoch(self, value: float) -> None:
        if self.epochs is not None:
            self.epochs.set_postfix(val=f"{value:.4f}")
            self.epochs.update(1)
        self.left()

    def end_trial(self) -> None:
        if self.epochs is not None:
            self.epochs.close()
            self.epochs = None
        self.trials.update(1)
        self.left()

    def close(self) -> None:
        if self.epochs is not None:
            self.epochs.close()
        self.trials.close()


def trials_bar(job: SearchJob, initial: int):
    """The parent's bar while worker processes run the trials (None without progress)."""
    if not job.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=job.n_trials, initial=initial, desc="trials", unit="trial",
                bar_format=TIMED if job.deadline else None)
