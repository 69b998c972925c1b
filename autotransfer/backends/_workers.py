"""Worker processes for the Optuna backend: one per device slot, sharing the storage.

Each is a fresh interpreter (``python -m autotransfer.backends._workers JOB SLOT``) whose
``CUDA_VISIBLE_DEVICES`` is set before torch is imported. A worker that dies does not
stop the others: its running trial is marked failed and a replacement starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..devices import Slot

MAX_RESTARTS = 3


def launch(job: Any, train: Any, valid: Any, slots: list[Slot]) -> None:
    import dataclasses

    import torch

    from ..search import fail_stale_trials
    from ._optuna import load_study
    from ._trial import FINISHED

    def finished(study: Any) -> int:
        return len(study.get_trials(deepcopy=False, states=FINISHED))

    workdir = Path(job.workdir)
    payload = workdir / f"job-{os.getpid()}.pt"
    child_job = dataclasses.replace(job, progress=False)  # the parent shows progress
    torch.save({"job": child_job, "train": train, "valid": valid, "sys_path": sys.path}, payload)
    procs: dict[int, subprocess.Popen] = {}
    restarts = {i: 0 for i in range(len(slots))}
    study = load_study(job)
    bar = _bar(job, finished(study))
    try:
        for i in range(len(slots)):
            procs[i] = _spawn(payload, i, slots[i])
        while procs:
            time.sleep(0.5)
            for i, proc in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del procs[i]
                if code != 0:
                    failed = fail_stale_trials(study)  # its running trial: failed, replaced
                    print(f"[autotransfer] worker {i} ({slots[i].device}) exited with code "
                          f"{code}; trial(s) {failed} marked failed", file=sys.stderr)
                    if restarts[i] < MAX_RESTARTS and job.budget_left(study):
                        restarts[i] += 1
                        procs[i] = _spawn(payload, i, slots[i])
            if bar is not None:
                bar.n = finished(study)
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
            bar.n = finished(study)
            bar.close()
        payload.unlink(missing_ok=True)


def _bar(job: Any, initial: int):
    if not job.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=job.n_trials, initial=initial, desc="trials", unit="trial")


def _spawn(payload: Path, index: int, slot: Slot) -> subprocess.Popen:
    env = dict(os.environ)
    # Fix the device before torch is imported in the worker.
    env["CUDA_VISIBLE_DEVICES"] = "" if slot.gpu is None else str(slot.gpu)
    env["OMP_NUM_THREADS"] = str(slot.threads)
    env["MKL_NUM_THREADS"] = str(slot.threads)
    return subprocess.Popen([sys.executable, "-m", "autotransfer.backends._workers",
                             str(payload), str(index), slot.device, str(slot.threads)], env=env)


def main(argv: list[str]) -> int:
    payload, index, device, threads = argv[0], int(argv[1]), argv[2], int(argv[3])
    import torch

    torch.set_num_threads(threads)
    state = torch.load(payload, weights_only=False)
    for p in state["sys_path"]:
        if p not in sys.path:
            sys.path.append(p)
    job = state["job"]
    from .. import plugins
    from ._optuna import run_worker

    for module in job.plugin_modules:
        plugins.register_plugin(module)
    run_worker(job, state["train"], state["valid"], worker=index,
               device="cpu" if device == "cpu" else "cuda:0", device_label=device)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
