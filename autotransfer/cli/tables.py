"""Text tables for the terminal: the leaderboard cut to fit 120 columns, and plain listings."""

from __future__ import annotations

import difflib
import textwrap

from ..errors import ConfigError, UnknownNameError

WIDTH = 120  # the leaderboard table fits a 120-column terminal unless --all-columns


CELL = 40  # longest cell in a table (a failure reason is cut there)


def text_table(rows: list[dict], columns: list[str], cut: int | None = CELL) -> str:
    """A plain left-aligned text table; None shows as '-', cells cut at ``cut``."""
    if not rows:
        return "(none)"
    cells = [[c for c in columns]] + [[_cell(r.get(c), cut) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()
                     for row in cells)


def _cell(v, cut: int | None) -> str:
    text = "-" if v is None else str(v)
    return text if cut is None or len(text) <= cut else text[:cut - 1] + "…"


def _fit(rows: list[dict], columns: list[str], keep: list[str], width: int) -> list[str]:
    """The columns that fit ``width``, taken in ``keep``'s order while the table still
    fits, shown in ``columns``' order."""
    chosen: list[str] = []
    for c in (c for c in keep if c in columns):
        if max(map(len, text_table(rows, chosen + [c]).splitlines())) <= width:
            chosen.append(c)
    return [c for c in columns if c in chosen]


SUMMARY_HEAD = ["rank", "trial", "state", "baseline", "prior", "backbone", "transferability"]
SUMMARY_AFTER = ["n_groups", "epochs_run", "cached"]  # after the strategy fields


SUMMARY_TAIL = ["transfer_gain", "negative_transfer", "trainable_params", "duration_s",
                "reason"]


def _priority(metric: str) -> list[str]:
    """Columns in the order they are kept when the table must fit: the first matter most
    (what was chosen structurally, backbone, freezing and adapter, before the finer knobs)."""
    return ["rank", "trial", "state", metric, f"test_{metric}", "backbone", "tied",
            "transferability",
            "baseline", "prior", "frozen_groups", "lr", "adapter", "lora_rank", "reason",
            "epochs_run", "transfer_gain", "n_groups", "layer_decay", "augment", "mixup",
            "weight_decay", "cutmix", "dropout", "l2sp", "adabn", "dann", "trainable_params",
            "duration_s", f"test_{metric}_se", "cached", "negative_transfer"]


def _candidates(metric: str, tasks: list[str]) -> list[str]:
    """Every column the summary table may show, in the order it shows them: who, the
    strategy fields of the field table (technique plugins' too), the scores, the rest."""
    from ..strategy import fields
    from ..strategy.strategy import Strategy

    return (SUMMARY_HEAD + fields.columns(Strategy) + SUMMARY_AFTER
            + [metric, "tied", f"test_{metric}", f"test_{metric}_se"] + tasks + SUMMARY_TAIL)


LEAD = 5  # rank, trial, state, the metric and its test score: always shown


def shown(v) -> str | None:
    import math

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_leaderboard(study, *, top: int | None = None, fmt: str = "table",
                      all_columns: bool = False, columns: str | None = None) -> None:
    """The study's leaderboard, best first (``top``: its first rows). The table's columns
    are chosen from the whole study, so ``top`` shows the same ones; ``columns`` (a
    comma-separated list) chooses them, in every format."""
    full = study.leaderboard()
    chosen = pick_columns(full, columns) if columns is not None else None
    df = full.head(top) if top else full
    if chosen and fmt != "table":
        df = df[chosen]
    if fmt == "csv":
        print(df.to_csv(index=False), end="")
        return
    if fmt == "json":
        print(df.to_json(orient="records", indent=1))
        return
    hidden: list[str] = []
    if chosen:
        cols = chosen
    elif all_columns:
        cols = list(full.columns)
    else:
        cols, hidden = summary_columns(study, full)
    rows = [{c: shown(r[c]) for c in cols} for r in df.to_dict("records")]
    print(text_table(rows, cols))
    note = full.attrs.get("note")
    if note and not df.empty:
        print(textwrap.fill(note, WIDTH))
    if hidden:
        print(textwrap.fill(f"not shown, to fit {WIDTH} columns: {', '.join(hidden)} "
                            f"(--columns a,b,c or --all-columns)", WIDTH))


def summary_columns(study, full) -> tuple[list[str], list[str]]:
    """``(shown, hidden)``: the table's columns, chosen from every trial of the study: the
    rank, trial, state and scores, then each column that varies across the trials or was
    searched, as many as fit :data:`WIDTH` (most important first); ``hidden``: those that
    did not fit."""
    m = study.metric
    tasks = _task_columns(study.task)  # a multi-task study: each task's metric, weights
    order = [c for c in dict.fromkeys(_candidates(m, tasks)) if c in full.columns]
    priority = _priority(m)
    priority = priority[:LEAD] + tasks + priority[LEAD:]
    priority += [c for c in order if c not in priority]  # a technique plugin's fields
    searched = _searched(study)
    rows = [{c: shown(r[c]) for c in order} for r in full.to_dict("records")]
    wanted = [c for c in order if c in priority[:LEAD] or c in tasks
              or (any(r[c] is not None for r in rows)
                  and (c in searched or len({r[c] for r in rows}) > 1))]
    cols = _fit(rows, wanted, [c for c in priority if c in wanted], WIDTH)
    return cols, [c for c in priority if c in wanted and c not in cols]


def _searched(study) -> set[str]:
    """The fields some trial sampled from more than one value (Optuna's params)."""
    return {name for t in study.trials() for name, dist in t.distributions.items()
            if not dist.single()}


def pick_columns(df, columns: str) -> list[str]:
    """The columns ``--columns a,b,c`` names, each checked against the leaderboard's."""
    names = [c.strip() for c in columns.split(",") if c.strip()]
    available = [str(c) for c in df.columns]
    if not names:
        raise ConfigError(f"--columns needs column names separated by commas, but got "
                          f"{columns!r}; available: {', '.join(available)}.")
    for name in names:
        if name not in available:
            close = difflib.get_close_matches(name, available, n=3)
            hint = f" (close: {', '.join(close)})" if close else ""
            raise ConfigError(f"Unknown leaderboard column {name!r}{hint}; available: "
                              f"{', '.join(available)}.")
    return names


def _task_columns(task: object) -> list[str]:
    """A multi-task study's other tasks' metrics and loss weights (``age_r2``,
    ``loss_weight.age``), for the leaderboard table."""
    from ..plugins import get_head

    if not isinstance(task, dict):
        return []
    rest = list(task)[1:]
    try:
        return [f"{c}_{get_head(task[c]).metric}" for c in rest] + \
            [f"loss_weight.{c}" for c in rest]
    except UnknownNameError:  # a head whose plugin is not registered here
        return [f"loss_weight.{c}" for c in rest]
