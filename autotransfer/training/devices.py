"""Device slots: which devices trials run on, and how many at a time on each."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

from ..errors import DeviceError


@dataclass(frozen=True)
class Slot:
    """One concurrent trial: its device as the study records it, and how to pin it.

    ``gpu`` is the physical GPU index (None for the CPU); a worker process for the slot
    sets ``CUDA_VISIBLE_DEVICES`` to it before importing torch and then uses ``cuda:0``.
    """

    device: str
    gpu: int | None
    threads: int


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def usable_cpus() -> int:
    """The cores this process may use: its CPU affinity (``taskset``) and its cgroup quota
    (containers, ``cpu.max``), not the machine's count (joblib's ``cpu_count``)."""
    from joblib import cpu_count

    return max(1, cpu_count())


def resolve(devices: Any = "auto", trials_per_device: int = 1, *,
            gpus: int | None = None, cpus: int | None = None) -> list[Slot]:
    """Slots for ``devices`` ("auto", "cpu", an int, or a list like ["cuda:0", "cuda:2"]).

    On a CPU-only machine ``devices=N`` means N worker processes sharing the cores.
    """
    if isinstance(trials_per_device, bool) or not isinstance(
            trials_per_device, numbers.Integral) or trials_per_device < 1:
        raise DeviceError(f"trials_per_device must be an integer >= 1, but got "
                          f"trials_per_device={trials_per_device!r}.")
    gpus = gpu_count() if gpus is None else gpus
    cpus = cpus or usable_cpus()
    if isinstance(devices, numbers.Integral) and not isinstance(devices, bool):
        devices = int(devices)
    names = [f"cuda:{i}" for i in range(gpus)]
    if devices == "auto":
        chosen = names or ["cpu"]
    elif devices == "cpu":
        chosen = ["cpu"]
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if devices < 1:
            raise DeviceError(f"devices must be >= 1, but got devices={devices}.")
        if gpus:
            if devices > gpus:
                raise DeviceError(f"Asked for {devices} GPUs, but this machine has {gpus} "
                                  f"({', '.join(names)}).")
            chosen = names[:devices]
        elif devices * trials_per_device > cpus:
            raise DeviceError(f"Asked for {devices * trials_per_device} CPU worker processes "
                              f"(devices={devices}, trials_per_device={trials_per_device}), "
                              f"but this process may use {cpus} core(s) (its CPU affinity and "
                              f"quota) and there is no GPU; give at most {cpus}.")
        else:
            chosen = ["cpu"] * devices
    elif isinstance(devices, (list, tuple)) and devices:
        chosen = []
        for d in devices:
            if not isinstance(d, str) or (d != "cpu" and d not in names):
                raise DeviceError(
                    f"Device {d!r} does not exist here; this machine has "
                    f"{', '.join(names + ['cpu']) if names else 'no GPU (only cpu)'}.")
            chosen.append(d)
    else:
        raise DeviceError(f"devices must be 'auto', 'cpu', a count, or a list like "
                          f"['cuda:0', 'cuda:1'], but got {devices!r}.")
    slots = [d for d in chosen for _ in range(trials_per_device)]
    cpu_slots = sum(d == "cpu" for d in slots)
    threads = max(1, cpus // max(1, cpu_slots))  # CPU workers split the cores
    return [Slot(d, None if d == "cpu" else int(d.split(":")[1]),
                 threads if d == "cpu" else max(1, cpus // len(slots))) for d in slots]


def torch_device(device: Any) -> Any:
    """``device`` as a ``torch.device`` that exists here ("cpu", "cuda", "cuda:1", ...)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"device must be 'cpu', 'cuda' or 'cuda:<index>', but got "
                          f"device={device!r}.") from exc
    if dev.type == "cuda" and (dev.index or 0) >= gpu_count():
        have = gpu_count()
        raise DeviceError(f"device={device!r} does not exist here; this machine has "
                          f"{f'{have} GPU(s): cuda:0..cuda:{have - 1}' if have else 'no GPU'}"
                          f"; use 'cpu'{' or one of those' if have else ''}.")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device must be 'cpu' or a CUDA device, but got device={device!r}.")
    return dev
