"""Progress bars of a search: trials of the study, and epochs of the running trial."""

from __future__ import annotations

import time

import optuna

from ._job import SearchJob, counted_trials


class Bars:
    """tqdm bars: trials of the study, and epochs of the running trial."""

    def __init__(self, job: SearchJob, study: optuna.Study) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.trials = tqdm(total=job.n_trials, initial=counted_trials(study), desc="trials",
                           unit="trial", position=0, dynamic_ncols=True)
        self.epochs = None
        self.started = time.time()

    def start_trial(self, number: int, epochs: int, kind: str) -> None:
        label = f"trial {number}" + (f" ({kind})" if kind else "")
        self.epochs = self._tqdm(total=epochs, desc=label, unit="epoch", position=1,
                                 leave=False, dynamic_ncols=True)

    def epoch(self, value: float) -> None:
        if self.epochs is not None:
            self.epochs.set_postfix(val=f"{value:.4f}")
            self.epochs.update(1)

    def end_trial(self) -> None:
        if self.epochs is not None:
            self.epochs.close()
            self.epochs = None
        self.trials.update(1)

    def close(self) -> None:
        if self.epochs is not None:
            self.epochs.close()
        self.trials.close()


def trials_bar(job: SearchJob, initial: int):
    """The parent's bar while worker processes run the trials (None without progress)."""
    if not job.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=job.n_trials, initial=initial, desc="trials", unit="trial")
