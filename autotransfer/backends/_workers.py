"""Worker processes for the Optuna backend: one per device slot, sharing the storage.

Each is a fresh interpreter (``python -m autotransfer.backends._workers SLOT DEVICE THREADS``)
whose ``CUDA_VISIBLE_DEVICES`` is set before torch is imported. The job, the data and the
registered plugins (objects too, by value) reach it through its stdin pipe, so no job file
is ever written: nothing is left behind by a killed parent, and nothing on disk is loaded
that could run code. A worker that dies does not stop the others: its running trial is
marked failed and a replacement starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..log import get_logger
from ..training.devices import Slot

MAX_RESTARTS = 3

logger = get_logger(__name__)


def launch(job: Any, train: Any, valid: Any, slots: list[Slot]) -> None:
    """Run one worker process per slot until the budget is spent; restart dead ones."""
    import dataclasses

    import cloudpickle

    from ..storage import FINISHED
    from ._lifecycle import fail_stale_trials
    from ._loop import load_study
    from ._progress import trials_bar

    for old in Path(job.workdir).glob("job-*.pt"):  # left by a killed parent of 0.1
        old.unlink(missing_ok=True)
    child_job = dataclasses.replace(job, progress=False)  # the parent shows progress
    payload = cloudpickle.dumps({"job": child_job, "train": train, "valid": valid})
    study = load_study(job)
    bar = trials_bar(job, len(study.get_trials(deepcopy=False, states=FINISHED)))
    procs = {i: _spawn(payload, i, slot) for i, slot in enumerate(slots)}
    restarts = dict.fromkeys(procs, 0)
    try:
        while procs:
            time.sleep(0.5)
            for i, proc in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del procs[i]
                if code != 0:
                    failed = fail_stale_trials(study)  # its running trial: failed, replaced
                    logger.warning(f"worker {i} ({slots[i].device}) exited with code {code}; "
                                   f"trial(s) {failed} marked failed")
                    if restarts[i] < MAX_RESTARTS and job.budget_left(study):
                        restarts[i] += 1
                        procs[i] = _spawn(payload, i, slots[i])
            if bar is not None:
                bar.n = len(study.get_trials(deepcopy=False, states=FINISHED))
                bar.refresh()
    except KeyboardInterrupt:
        for proc in procs.values():  # workers got the same Ctrl-C; let them record it
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        fail_stale_trials(study)
        raise
    finally:
        if bar is not None:
            bar.close()


def _spawn(payload: bytes, index: int, slot: Slot) -> subprocess.Popen:
    env = dict(os.environ)
    # Fix the device before torch is imported in the worker.
    env["CUDA_VISIBLE_DEVICES"] = "" if slot.gpu is None else str(slot.gpu)
    env["OMP_NUM_THREADS"] = str(slot.threads)
    env["MKL_NUM_THREADS"] = str(slot.threads)
    proc = subprocess.Popen([sys.executable, "-m", "autotransfer.backends._workers",
                             str(index), slot.device, str(slot.threads)],
                            env=env, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    try:  # the parent's import path first (for plugin objects of the user's modules)
        proc.stdin.write(json.dumps(sys.path).encode() + b"\n" + payload)
        proc.stdin.close()
    except BrokenPipeError:  # it died at start; the poll loop reports its exit code
        pass
    return proc


def main(argv: list[str]) -> int:
    index, device, threads = int(argv[0]), argv[1], int(argv[2])
    for p in json.loads(sys.stdin.buffer.readline()):
        if p not in sys.path:
            sys.path.append(p)
    import cloudpickle
    import torch

    from .. import plugins
    from ._loop import run_worker

    torch.set_num_threads(threads)
    state = cloudpickle.loads(sys.stdin.buffer.read())
    job = state["job"]
    plugins.set_current(plugins.PluginHost.from_portable(job.plugins))
    run_worker(job, state["train"], state["valid"], worker=index,
               device="cpu" if device == "cpu" else "cuda:0", device_label=device)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
