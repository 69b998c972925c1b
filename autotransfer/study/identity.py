"""What a study was made for: its task, modality, backbones, classes, data and space.

Recorded when a study is created. A resume that differs is refused, naming each difference,
so one leaderboard never mixes two data sets and ``load_best`` never returns a model made
for other data. Studies made before these were recorded are compared on what they have.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from ..data import Dataset
from ..data._dataset import is_table

KEYS = ("task", "modality", "backbones", "classes", "space", "train", "valid")


def of(job: Any, train: Dataset, valid: Dataset, info: dict) -> dict[str, Any]:
    """The identity of a search job on its split data (``info``: the head's label info)."""
    made = {"task": job.task, "modality": job.modality, "backbones": job.backbones,
            "classes": info.get("classes"), "space": job.space.to_dict(),
            "train": fingerprint(train), "valid": fingerprint(valid)}
    return json.loads(json.dumps(made, default=plain))  # as the storage will give it back


def fingerprint(data: Dataset) -> str:
    """A hash of the inputs (or their count, where they cannot be hashed) and the labels."""
    h = hashlib.sha256()
    h.update((data.fingerprint() or f"{len(data)} unhashable inputs").encode() + b"\0")
    labels = data.labels
    if is_table(labels):
        import pandas as pd

        h.update(json.dumps([str(c) for c in labels.columns]).encode())
        h.update(pd.util.hash_pandas_object(labels, index=False).to_numpy().tobytes())
    else:
        for label in labels:  # each label's type too: True and 1 are different labels
            text = f"{type(plain(label)).__name__}:{plain(label)!r}".encode()
            h.update(len(text).to_bytes(8, "little") + text)
    return h.hexdigest()[:16]


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between a study's record and a new call, in words; [] when nothing."""
    found = []
    for key in KEYS:
        if key not in old or json.dumps(old[key]) == json.dumps(new[key]):
            continue  # compared as JSON: the order of a task table's columns counts
        if key == "space":
            found += [f"space {f}={old[key].get(f)!r}, not {v!r}"
                      for f, v in new[key].items() if old[key].get(f) != v]
        elif key == "classes":
            found.append(f"classes {_preview(old[key])}, not {_preview(new[key])}")
        elif key == "train":
            found.append("other training data (its inputs or labels differ)")
        elif key == "valid":
            found.append("another validation set (valid=, valid_fraction= or seed differ)")
        else:
            found.append(f"{key}={old[key]!r}, not {new[key]!r}")
    return found


def _preview(classes: list | None) -> str:
    if classes is None:
        return "none (not a classification)"
    shown = ", ".join(repr(c) for c in classes[:8])
    return f"[{shown}{', ...' if len(classes) > 8 else ''}] ({len(classes)})"


def plain(value: Any) -> Any:
    """numpy scalars and arrays as Python numbers and lists."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return value
