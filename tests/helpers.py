"""Shared by tests that watch a search running in another process."""

import time

import optuna


def wait_mid_trial(storage: str, name: str, proc, *, min_done: int = 2, min_running: int = 1,
                   need_pid: bool = False, timeout: float = 120):
    """Block until >= min_done trials finished and >= min_running are mid-way (an epoch in).

    Returns ({number: value} of the finished trials, the mid-way trials).
    """
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            trials = optuna.load_study(study_name=name, storage=storage).trials
        except Exception:  # not created yet, or a write in progress
            time.sleep(0.2)
            continue
        done = [t for t in trials if t.state.is_finished()]
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING
                   and t.intermediate_values
                   and (not need_pid or "autotransfer:pid" in t.system_attrs)]
        if len(done) >= min_done and len(running) >= min_running:
            return {t.number: t.value for t in done}, running
        time.sleep(0.02)
    raise AssertionError(f"the search never had {min_done} trials done and {min_running} "
                         f"mid-way")
