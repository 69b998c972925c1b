"""Multi-task learning: one shared body, a registered head per label column, a loss weight
per task.

Data whose labels are a table (``at.data.from_pandas(df, image="path", label=["species",
"age"])``) searched with ``task={"species": "classification", "age": "regression"}`` trains
one body and one head per column. The **first** task is the primary one: its metric,
prefixed with its column (``species_accuracy``), is what the search optimizes, prunes on
and ranks trials by; every task's metrics are recorded (``age_r2``, ``age_mae``, ...). The
training loss is ``sum_t w_t * loss_t``: the primary's weight is 1 and the others' come from
:attr:`Strategy.loss_weights <autotransfer.Strategy>` (searched from
``SearchSpace.loss_weight``, as Optuna params ``loss_weight.<column>``).

Example:
    >>> import autotransfer as at
    >>> head = at.get_head({"species": "classification", "age": "regression"})
    >>> head.metric, head.direction
    ('species_accuracy', 'maximize')
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..data._dataset import is_table
from ..errors import ConfigError, DataError, StrategyError, UnknownNameError
from ..log import get_logger
from ._base import Head

if TYPE_CHECKING:
    from ..data import Dataset
    from ..strategy.strategy import Strategy

DEFAULT_TASK = "classification"  # search()'s default: a table of labels is inferred instead
MAX_INFERRED_CLASSES = 20  # whole numbers with more distinct values are taken as regression
EXAMPLE = "task={'species': 'classification', 'age': 'regression'}"

logger = get_logger(__name__)


def is_multitask(task: Any) -> bool:
    """Whether ``task`` names several label columns (``{column: task}``)."""
    return isinstance(task, Mapping)


class TaskBlocks(nn.Module):
    """One output module per task over the same features; their outputs side by side."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for block in self.blocks:
            outs.append(block(x))
        return torch.cat(outs, 1)


class MultiTaskHead(Head):
    """A head per label column, built from the registered heads, on one shared body.

    Targets are one 2-D float tensor with a block of columns per task (class ids as
    floats); outputs are a block per task too. ``info["tasks"]`` keeps each column's task,
    its own head's ``info`` and the widths of its blocks.

    Args:
        tasks: ``{column: task name}``, primary first (a registered single-task head each).
        registry: The registered heads, ``{task name: Head}`` (the plugin host's).
        weights: Loss weight per column; a column left out weighs 1.
    """

    name = "multitask"

    def __init__(self, tasks: Mapping[str, str], registry: Mapping[str, Head],
                 weights: Mapping[str, float] | None = None):
        self.tasks = _checked_tasks(tasks, registry)
        self.heads = {col: registry[task] for col, task in self.tasks.items()}
        self.primary = next(iter(self.tasks))
        self.metric = f"{self.primary}_{self.heads[self.primary].metric}"
        self.direction = self.heads[self.primary].direction
        self.weights = {col: 1.0 for col in self.tasks} | dict(weights or {})
        self._info: dict | None = None  # the training labels' layout, for loss()

    def encode(self, labels: Any, info: dict | None = None) -> tuple[torch.Tensor, dict]:
        table = label_table(labels, self.tasks)
        parts, layout = [], {}
        for col, head in self.heads.items():
            sub = None if info is None else info["tasks"][col]["info"]
            try:
                y, sub = head.encode(table[col], sub)
            except DataError as exc:
                raise type(exc)(f"Label column {col!r} (task {self.tasks[col]!r}): "
                                f"{exc}") from exc
            if info is None:
                _refuse_a_class_per_row(col, self.tasks[col], sub, len(table))
            flat = y.reshape(len(y), -1)
            layout[col] = {"task": self.tasks[col], "info": sub,
                           "outputs": head.n_outputs(sub), "targets": flat.shape[1],
                           "integer": not y.is_floating_point(), "flat": y.ndim == 1}
            parts.append(flat.float())
        return torch.cat(parts, 1), info if info is not None else {"tasks": layout}

    def n_outputs(self, info: dict) -> int:
        return sum(part["outputs"] for part in info["tasks"].values())

    def build(self, in_features: int, info: dict, *, dropout: float = 0.0) -> nn.Module:
        """Each task's own head module (its plugin's ``build``) over the shared features."""
        return TaskBlocks([self.heads[col].build(in_features, part["info"], dropout=dropout)
                           for col, part in info["tasks"].items()])

    def configured(self, strategy: Strategy, info: dict) -> MultiTaskHead:
        """A copy that knows the target layout and weighs each task's loss as ``strategy``
        says (``loss_weights``; tasks it leaves out weigh 1)."""
        weights = dict(strategy.loss_weights)
        unknown = [c for c in weights if c not in self.tasks]
        if unknown:
            raise StrategyError(f"loss_weights names {unknown[0]!r}, which is not a task of "
                                f"this study; tasks: {list(self.tasks)}.")
        head = copy.copy(self)
        head.weights = {col: 1.0 for col in self.tasks} | weights
        head._info = info
        return head

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, *,
             label_smoothing: float = 0.0) -> torch.Tensor:
        """``sum_t weight_t * loss_t`` over the tasks (each its own head's loss)."""
        if self._info is None:
            raise ConfigError("MultiTaskHead.loss needs the training labels' layout: use "
                              "head.configured(strategy, info) first (run_trial does).")
        total = outputs.new_zeros(())
        for col, out, y in self.blocks(outputs, targets, self._info):
            loss = self.heads[col].loss(out, y, label_smoothing=label_smoothing)
            total = total + self.weights[col] * loss
        return total

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor,
                info: dict) -> dict[str, float]:
        """Every task's metrics, each name prefixed with its column (``age_r2``)."""
        out: dict[str, float] = {}
        for col, o, y in self.blocks(outputs, targets, info):
            sub = info["tasks"][col]["info"]
            out.update({f"{col}_{k}": v for k, v in self.heads[col].metrics(o, y, sub).items()})
        return out

    def combine(self, outputs: list[torch.Tensor], info: dict) -> torch.Tensor:
        """Each task's block combined by its own head."""
        parts = zip(*[[o for _, o, _ in self.blocks(out, None, info)] for out in outputs])
        return torch.cat([self.heads[col].combine(list(block), info["tasks"][col]["info"])
                          for col, block in zip(info["tasks"], parts)], 1)

    def decode(self, outputs: torch.Tensor, info: dict) -> Any:
        """A DataFrame with one column of predictions per task."""
        import pandas as pd

        columns = {}
        for col, o, _ in self.blocks(outputs, None, info):
            pred = self.heads[col].decode(o, info["tasks"][col]["info"])
            columns[col] = pred if isinstance(pred, np.ndarray) and pred.ndim == 1 \
                else list(pred)
        return pd.DataFrame(columns)

    def blocks(self, outputs: torch.Tensor, targets: torch.Tensor | None,
               info: dict) -> Iterator[tuple[str, torch.Tensor, torch.Tensor | None]]:
        """``(column, its outputs, its targets as its own head encoded them)`` per task."""
        o = t = 0
        for col, part in info["tasks"].items():
            out, y = outputs[:, o:o + part["outputs"]], None
            if targets is not None:
                y = targets[:, t:t + part["targets"]]
                y = y.round().long() if part["integer"] else y
                y = y[:, 0] if part["flat"] else y
            yield col, out, y
            o, t = o + part["outputs"], t + part["targets"]

    def __repr__(self) -> str:
        return f"MultiTaskHead(tasks={self.tasks!r}, metric={self.metric!r})"


def _checked_tasks(tasks: Any, table: Mapping[str, Head]) -> dict[str, str]:
    """``{column: task name}``: non-empty, string columns, registered single-task heads."""
    if not isinstance(tasks, Mapping) or not tasks:
        raise ConfigError(f"A multi-task task must be a non-empty dict {{label column: task}}, "
                          f"e.g. {EXAMPLE}; but got task={tasks!r}.")
    for col, task in tasks.items():
        if not isinstance(col, str) or not col:
            raise ConfigError(f"task={dict(tasks)!r}: label columns must be named by "
                              f"non-empty strings, but got {col!r}; e.g. {EXAMPLE}.")
        if not isinstance(task, str) or task not in table:
            raise UnknownNameError(f"task for label column {col!r}:", str(task), table)
    return dict(tasks)


def label_table(labels: Any, tasks: Mapping[str, str]) -> Any:
    """``labels`` as a table holding a column per task, or a DataError saying what is
    missing and what there is."""
    if not is_table(labels):
        shape = getattr(np.asarray(labels, dtype=object), "shape", ())
        raise DataError(f"task={dict(tasks)!r} names label columns, but the labels are not a "
                        f"table (got {type(labels).__name__} of shape {shape}); build the data "
                        f"with a column per task: at.data.from_pandas(df, image=..., "
                        f"label={list(tasks)!r}), or from_arrays/from_texts with a DataFrame "
                        f"of labels.")
    missing = [c for c in tasks if c not in labels.columns]
    if missing:
        raise DataError(f"Label column {missing[0]!r} (task {tasks[missing[0]]!r}) is not in "
                        f"the labels; label columns: {list(labels.columns)}.")
    return labels


def _refuse_a_class_per_row(col: str, task: str, info: dict, n: int) -> None:
    classes = info.get("classes")
    if task == "classification" and classes is not None and n >= 4 and len(classes) == n:
        raise DataError(f"Label column {col!r} (task 'classification') has a different value "
                        f"in every one of its {n} rows (e.g. {classes[0]!r}), so no class has "
                        f"two examples to learn from; numbers like these want task "
                        f"'regression' for {col!r}.")


def resolve_task(task: Any, labels: Any, registry: Mapping[str, Head]) -> str | dict[str, str]:
    """``search(task=...)`` checked against the training labels: a head name, or
    ``{column: head name}`` for labels in a table. With the default task and a table of
    labels, each column's task is inferred, and a printed line says so."""
    if is_multitask(task):
        tasks = _checked_tasks(task, registry)
        label_table(labels, tasks)
        return tasks
    if not isinstance(task, str):
        raise ConfigError(f"task must be a task name such as 'classification', or a dict "
                          f"{{label column: task}} such as {EXAMPLE}, but got task={task!r}; "
                          f"tasks: {', '.join(registry)}.")
    if task != DEFAULT_TASK or not is_table(labels):
        return task
    tasks = _checked_tasks({col: infer_task(labels[col]) for col in labels.columns}, registry)
    said = ", ".join(f"{c}: {t}" for c, t in tasks.items())
    logger.info(f"the labels have {len(tasks)} column(s); tasks inferred per column ({said}); "
                f"the first, {next(iter(tasks))!r}, is the primary one (what the search "
                f"optimizes). Pass task={tasks!r} (reordered or changed) to choose.")
    return tasks


def infer_task(column: Any) -> str:
    """A column's task: numbers that are not all whole, or more than MAX_INFERRED_CLASSES
    distinct whole numbers, are a regression; label lists are multilabel; the rest
    (names, booleans, a few whole numbers) are classes."""
    import pandas as pd

    values = column.to_numpy() if hasattr(column, "to_numpy") else np.asarray(column)
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        numbers = values.astype(np.float64)
        whole = np.isfinite(numbers).all() and np.all(numbers == np.round(numbers))
        if not whole or len(np.unique(numbers)) > MAX_INFERRED_CLASSES:
            return "regression"
        return "classification"
    if len(values) and all(isinstance(v, (list, tuple, set)) for v in values):
        return "multilabel"
    return "classification"


def primary(task: Mapping[str, str], data: Dataset) -> tuple[str, Dataset]:
    """The primary task's name and ``data`` labelled by its column alone (for what scores
    one task, such as the LogME ranking)."""
    from ..data import Dataset

    col = next(iter(task))
    labels = label_table(data.labels, task)[col].to_numpy()
    return task[col], Dataset(data.source, labels, data.modality, index=data.index)


def describe_outputs(task: Any, info: dict, meanings: Mapping[str, str]) -> str:
    """What a model's output columns hold (``meanings``: per task name); a multi-task
    model's block by block."""
    if not is_multitask(task):
        return meanings.get(task, f"the {task!r} head's outputs")
    parts, o = [], 0
    for col, part in info["tasks"].items():
        end = o + part["outputs"]
        meaning = meanings.get(part["task"], f"the {part['task']!r} head's outputs")
        parts.append(f"[{o}:{end}] {col}: {meaning}")
        o = end
    return "one block of columns per task: " + "; ".join(parts)
