"""The report's sections that lead on from the results: how to use the best model, and
the backbones' transferability ranking computed before the search."""

from __future__ import annotations

import html
from typing import Any

from .cells import blank, cell, head, note
from .usage import Usage, usage


def use_this_model(study: Any, lb: Any) -> str:
    """The best model's file and the exact commands that use it, in copyable blocks (the
    lines ``autotransfer run`` ends with: both read :func:`~autotransfer.report.usage.usage`).
    ``lb``: the leaderboard, to name the model's trial and backbone."""
    u = usage(study)
    if u.model is None:
        return note(f"No model file to use: {u.why_none}")
    who = f" (the {html.escape(u.what)})" if u.what else ""
    rows = lb[(lb["trial"] == u.trial) & (lb["state"] == "complete")]
    if not rows.empty:
        backbone = rows.iloc[0].get("backbone")
        who = f" (trial #{u.trial}" + (
            "" if blank(backbone) else f", {html.escape(str(backbone))}") + ")"
    where = ("" if u.relative_to is None else
             f' <span class="muted">Paths are relative to <code>{html.escape(u.relative_to)}'
             f"</code>, where the report was written: run the commands from there.</span>")
    shell = "\n".join(html.escape(c) for c, _ in u.shell)
    what = "; ".join(f"<code>{html.escape(c.split()[1])}</code>: {html.escape(w)}"
                     for c, w in u.shell)
    return (f"<p>The best model{who} is the file <code>{html.escape(u.model)}</code>.{where}"
            f"</p>\n<h3>On the command line</h3>\n"
            f'<pre class="copy" id="use-cli">{shell}</pre>\n'
            f'<p class="muted">{what}.</p>\n<h3>In Python</h3>\n'
            f'<pre class="copy" id="use-python">{_python(u)}</pre>\n')


def _python(u: Usage) -> str:
    """The Python lines, each with its comment."""
    return "\n".join(html.escape(f"{line}  # {why}" if why else line)
                     for line, why in u.python)


RANKING_COLUMNS = ["rank", "backbone", "score", "score_se", "degenerate", "logme", "seconds",
                   "feature_dim", "n", "reason"]


def ranking(study: Any) -> str | None:
    """The transferability ranking as a table, best first and degenerate rows last; None
    when the study has none (one backbone, or ``rank=False``)."""
    ranked = study.ranking()
    if ranked.empty:
        return None
    if "degenerate" in ranked:  # ranked last already; kept last here whatever the ranks
        ranked = ranked.assign(_last=ranked["degenerate"].fillna(False).astype(bool))
        ranked = ranked.sort_values("_last", kind="stable").drop(columns="_last")
    columns = [c for c in RANKING_COLUMNS if c in ranked.columns]
    columns += [c for c in ranked.columns if c not in columns]
    rows = []
    for row in ranked.to_dict("records"):
        degenerate = bool(row.get("degenerate")) and not blank(row.get("degenerate"))
        cells = "".join(cell(row[c], c) for c in columns)
        rows.append(f'<tr class="{"degenerate" if degenerate else ""}">{cells}</tr>')
    return (f'<p class="muted">Before the search, each backbone was scored on its frozen '
            f"features: <code>score</code> is the held-out {_probe_metric(study.task)} of a "
            f"cross-validated linear probe on them (higher is better, "
            f"<code>score_se</code> its standard error; LogME beside it). Degenerate "
            f"features (constant, or a probe no better than chance) rank last, greyed. "
            f"It ordered the backbones' first trials; the leaderboard above says which "
            f"transferred best once fine-tuned.</p>\n"
            f'<div class="scroll"><table class="sortable" id="ranking"><thead><tr>'
            f'{"".join(head(c) for c in columns)}</tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody></table></div>\n")


def _probe_metric(task: Any) -> str:
    """What the probe's score is: accuracy, or R² for regression."""
    if task == "regression":
        return "R²"
    return "accuracy" if isinstance(task, str) else "accuracy (R² for a regression task)"
