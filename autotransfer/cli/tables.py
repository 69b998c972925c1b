"""Text tables for the terminal: the leaderboard cut to fit 120 columns, and plain listings."""

from __future__ import annotations

from ..errors import UnknownNameError

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
    """The columns that fit ``width``: taken in ``keep``'s order while the table still fits
    (a column with one value in every row, such as the only backbone, comes last; one
    empty in every row never), shown in ``columns``' order."""
    def used(c: str) -> bool:
        return any(r.get(c) not in (None, "") for r in rows)

    def constant(c: str) -> bool:  # the first five (rank .. test score) always lead
        return c not in keep[:5] and len({r.get(c) for r in rows}) == 1 and len(rows) > 1

    chosen: list[str] = []
    for c in sorted((c for c in keep if c in columns and used(c)), key=constant):
        if max(map(len, text_table(rows, chosen + [c]).splitlines())) <= width:
            chosen.append(c)
    return [c for c in columns if c in chosen]


SUMMARY_COLUMNS = ["rank", "trial", "state", "baseline", "prior", "backbone", "transferability",
                   "frozen_groups",
                   "n_groups", "lr", "layer_decay", "weight_decay", "dropout", "augment", "mixup",
                   "cutmix", "l2sp", "adapter", "lora_rank", "epochs_run", "cached"]


SUMMARY_TAIL = ["transfer_gain", "negative_transfer", "trainable_params", "duration_s",
                "reason"]


def _priority(metric: str) -> list[str]:
    """Columns in the order they are kept when the table must fit: the first matter most."""
    return ["rank", "trial", "state", metric, f"test_{metric}", "backbone", "transferability",
            "baseline", "prior",
            "frozen_groups", "lr", "reason", "epochs_run", "transfer_gain", "n_groups",
            "layer_decay", "augment", "mixup", "weight_decay", "cutmix", "dropout", "l2sp",
            "adapter", "trainable_params", "lora_rank", "duration_s", f"test_{metric}_se",
            "cached", "negative_transfer"]


def shown(v) -> str | None:
    import math

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_leaderboard(study, *, top: int | None = None, fmt: str = "table",
                      all_columns: bool = False) -> None:
    df = study.leaderboard()
    if top:
        df = df.head(top)
    if fmt == "csv":
        print(df.to_csv(index=False), end="")
        return
    if fmt == "json":
        print(df.to_json(orient="records", indent=1))
        return
    m = study.metric
    tasks = _task_columns(study.task)  # a multi-task study: each task's metric, weights
    cols = list(df.columns) if all_columns else [
        c for c in SUMMARY_COLUMNS + [m, f"test_{m}", f"test_{m}_se"] + tasks + SUMMARY_TAIL
        if c in df.columns]
    rows = [{c: shown(r[c]) for c in cols} for r in df.to_dict("records")]
    if not all_columns:
        priority = _priority(m)
        cols = _fit(rows, cols, priority[:5] + tasks + priority[5:], WIDTH)
    print(text_table(rows, cols))


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
