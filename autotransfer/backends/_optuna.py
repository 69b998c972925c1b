"""The Optuna backend: a worker loop of ask -> train -> tell over a shared storage.

One worker runs in this process; with several device slots, each runs in its own process
(see :mod:`autotransfer.backends._workers`), its device fixed before torch is imported.
"""

from __future__ import annotations

from typing import Any

from ..data import Dataset
from ..training.devices import Slot, resolve
from ._base import Backend
from ._job import SearchJob
from ._loop import run_worker
from ._workers import launch


class OptunaBackend(Backend):
    """Trials on this machine: one worker process per device slot, sharing the storage.

    Args:
        devices: "auto" (every visible GPU, else the CPU), "cpu", a count (GPUs, or CPU
            worker processes on a machine without one), or a list like ``["cuda:0", "cuda:2"]``.
        trials_per_device: Concurrent trials sharing one device.
    """

    name = "optuna"

    def __init__(self, devices: Any = "auto", trials_per_device: int = 1) -> None:
        self.devices, self.trials_per_device = devices, trials_per_device

    def slots(self) -> list[Slot]:
        return resolve(self.devices, self.trials_per_device)

    def check(self) -> None:
        self.slots()

    def run(self, job: SearchJob, train: Dataset, valid: Dataset) -> None:
        slots = self.slots()
        if len(slots) == 1:  # one slot: train in this process, nothing to send
            run_worker(job, train, valid, worker=0, device=slots[0].device)
        else:
            launch(job, train, valid, slots)
