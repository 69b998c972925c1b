"""Backends turn a search job into trials: Optuna worker processes, or Ray Tune."""

from __future__ import annotations

from typing import Any

from ..errors import check_choice


class OptunaBackend:
    """Trials on this machine: one worker process per device slot, sharing the storage."""

    name = "optuna"

    def run(self, job: Any, train: Any, valid: Any, *, devices: Any = "auto",
            trials_per_device: int = 1, **_: Any) -> None:
        from ..devices import resolve
        from ._optuna import run_worker
        from ._workers import launch

        slots = resolve(devices, trials_per_device)
        if len(slots) == 1:  # one slot: train in this process, nothing to serialize
            run_worker(job, train, valid, worker=0, device=slots[0].device)
        else:
            launch(job, train, valid, slots)


def get_backend(name: str) -> Any:
    check_choice("backend", name, ("optuna", "ray"))
    if name == "ray":
        from ._ray import RayBackend

        return RayBackend()
    return OptunaBackend()
