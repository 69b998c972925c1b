"""Inputs are a tensor (images, features), a dict of tensors (tokenized text) or a tuple
of those (a text encoder's frozen-prefix output: hidden states and attention mask).

These helpers treat them alike so the runner never branches on modality. A DataLoader
collates a tuple into a list; :func:`to` makes it a tuple again.
"""

from __future__ import annotations

from typing import Union

import torch

Batch = Union[torch.Tensor, dict[str, torch.Tensor], tuple]


def length(x: Batch) -> int:
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    if isinstance(x, (tuple, list)):
        return length(x[0])
    return len(x)


def take(x: Batch, idx) -> Batch:
    if isinstance(x, dict):
        return {k: v[idx] for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(take(v, idx) for v in x)
    return x[idx]


def to(x: Batch, device: torch.device | str, non_blocking: bool = False) -> Batch:
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=non_blocking) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(to(v, device, non_blocking) for v in x)
    return x.to(device, non_blocking=non_blocking)


def cat(parts: list[Batch]) -> Batch:
    """Concatenate batches; tensors of varied length (padded text) are zero-padded on dim 1."""
    first = parts[0]
    if isinstance(first, dict):
        return {k: cat([p[k] for p in parts]) for k in first}
    if isinstance(first, (tuple, list)):
        return tuple(cat([p[i] for p in parts]) for i in range(len(first)))
    if first.ndim >= 2 and len({p.shape[1] for p in parts}) > 1:
        longest = max(p.shape[1] for p in parts)
        parts = [torch.nn.functional.pad(p, (0, 0) * (p.ndim - 2) + (0, longest - p.shape[1]))
                 for p in parts]
    return torch.cat(parts)


def nbytes(x: Batch) -> int:
    if isinstance(x, dict):
        return sum(v.nbytes for v in x.values())
    if isinstance(x, (tuple, list)):
        return sum(nbytes(v) for v in x)
    return x.nbytes
