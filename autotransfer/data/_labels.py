"""Labels as given: one per input (a class, a number, a row, a label list) or a table with a
column per task; of one kind each (no missing ones, no strings, numbers and bools mixed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ._inputs import unique_columns


def labels(y: Any) -> Any:
    """``y`` as an array (or a list of label lists, or a table) of checked labels."""
    if isinstance(y, dict) or (hasattr(y, "columns") and hasattr(y, "iloc")):
        return label_table(y)
    if hasattr(y, "to_numpy"):
        y = y.to_numpy()
    if isinstance(y, torch.Tensor):
        y = y.cpu().numpy()
    if isinstance(y, np.ndarray) and y.dtype != object:
        return y
    y = list(y)
    if y and all(isinstance(v, (list, tuple, set)) for v in y):
        return y  # label lists (multilabel) stay lists
    check_kinds(y)
    return np.asarray(y)


def label_table(y: Any) -> Any:
    """A DataFrame (or a dict of columns) of labels: a column per task, each of one kind."""
    import pandas as pd

    try:
        table = pd.DataFrame(y).reset_index(drop=True)
    except ValueError as exc:  # columns of different lengths
        raise DataError(f"Label columns must have one label per input each: {exc}.") from exc
    if table.shape[1] == 0:
        raise DataError("The table of labels has no column; give a column per task.")
    unique_columns(list(table.columns), list(table.columns), "table of labels")
    for col in table.columns:
        if not (table[col].map(lambda v: isinstance(v, (list, tuple, set))).all()):
            check_kinds(table[col].tolist(), f" in column {col!r}")
    return table


def check_kinds(y: list, where: str = "") -> None:
    """Labels of one kind: no missing ones, no strings mixed with numbers."""
    import numbers

    def kind(v: Any) -> str:  # True == 1: bools and numbers would merge into one class
        if isinstance(v, (bool, np.bool_)):
            return "bool"
        return "text" if isinstance(v, str) else (
            "number" if isinstance(v, numbers.Number) else type(v).__name__)

    examples: dict[str, Any] = {}
    for i, v in enumerate(y):
        if v is None:
            raise DataError(f"Label {i}{where} is None; every input needs a label (drop "
                            f"unlabelled rows first).")
        examples.setdefault(kind(v), v)
    if len(examples) > 1:
        shown = ", ".join(f"{k} like {v!r}" for k, v in examples.items())
        raise DataError(f"Labels{where} mix kinds ({shown}); give every label as a class "
                        f"name, every label as a number, or every label as True/False.")
