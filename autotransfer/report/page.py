"""A study as one self-contained HTML page: how to use the best model, a sortable
leaderboard, the transferability ranking and Plotly figures.

The page works offline: plotly.js is inlined once, compressed, and every figure is compact
JSON (:mod:`autotransfer.report.embed`). The figures themselves are built in
:mod:`autotransfer.report.plots`, the sections that lead on in
:mod:`autotransfer.report.sections`.
"""

from __future__ import annotations

import datetime as dt
import html
import os
from pathlib import Path
from typing import Any

from .. import files
from ..errors import StorageError
from . import plots, sections
from .cells import blank, cell, flag, fmt, head, note, slug
from .embed import Figures

GENERATOR = '<meta name="generator" content="autotransfer">'  # marks a page as ours
_LEAD_COLUMNS = ("rank", "trial", "state", "baseline", "backbone", "frozen_groups", "n_groups")
_GAIN_COLUMNS = ("transfer_gain", "negative_transfer")

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1400px;
       padding: 0 16px; color: #1f2933; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #d9e2ec; }
.muted { color: #616e7c; } .note { background: #fffbea; border-left: 4px solid #f0b429;
       padding: 8px 12px; }
nav a { margin-right: 14px; }
.scroll { overflow-x: auto; max-height: 620px; overflow-y: auto; }
table.sortable { border-collapse: collapse; font-size: 13px; white-space: nowrap; }
table.sortable th { position: sticky; top: 0; background: #f0f4f8; cursor: pointer;
       user-select: none; }
table.sortable th, table.sortable td { padding: 4px 8px; border-bottom: 1px solid #e4e7eb;
       text-align: right; }
table.sortable th[data-dir=asc]::after { content: " \\25B2"; }
table.sortable th[data-dir=desc]::after { content: " \\25BC"; }
th.test, td.test { background: #e3f8ff; }
tr.negative td { color: #ab091e; } tr.best td { font-weight: 600; }
tr.tied td { background: #fffbea; }
tr.state-failed td, tr.state-interrupted td, tr.state-pruned td, tr.degenerate td {
       color: #9aa5b1; }
pre.copy { background: #f0f4f8; padding: 10px 14px; overflow-x: auto; }
code { background: #f0f4f8; padding: 0 3px; }
"""

# Click a header to sort by it; click again to reverse. Blanks always go last.
_SORT_JS = """
document.querySelectorAll("table.sortable th").forEach((th, i) => {
  th.addEventListener("click", () => {
    const table = th.closest("table"), body = table.tBodies[0];
    const asc = th.dataset.dir !== "asc";
    table.querySelectorAll("th").forEach(h => { delete h.dataset.dir; });
    th.dataset.dir = asc ? "asc" : "desc";
    const key = r => r.cells[i].dataset.v;
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b);
      if ((x === "") !== (y === "")) return x === "" ? 1 : -1;
      const nx = Number(x), ny = Number(y);
      const c = (x !== "" && y !== "" && !isNaN(nx) && !isNaN(ny))
        ? nx - ny : x.localeCompare(y, undefined, {numeric: true});
      return asc ? c : -c;
    });
    rows.forEach(r => body.appendChild(r));
  });
});
"""


def write_report(study: Any, path: str | os.PathLike) -> Path:
    """Write ``study`` as one HTML page that opens offline in any browser.

    The page holds how to use the best model (its file, the CLI and Python lines), the
    leaderboard (click a header to sort), the transferability ranking (when the backbones
    were ranked), the best score so far by wall clock and by trial, the score by backbone
    and number of frozen layer groups, the learning curves of the best trials and the
    baselines (negative transfer dashed), Optuna's parameter importances over the searched
    trials (from :data:`~autotransfer.report.plots.MIN_SEARCHED` of them), and validation
    against test scores when a test set was scored. The file is replaced atomically: a
    reader never sees half a page.

    Args:
        study: A :class:`~autotransfer.study.study.Study` (``at.search(...)`` or ``Study.load``).
        path: The HTML file to write; its folder must exist and be writable.

    Returns:
        The path written.

    Raises:
        StorageError: the folder is missing, is not a folder, or is not writable (checked
            before any work is done), or the write itself failed.

    Example:
        >>> from autotransfer.report.page import write_report              # doctest: +SKIP
        >>> write_report(at.Study.load("studies/pets.db"), "pets.html")  # doctest: +SKIP
    """
    target = _check_target(path, study)
    facts = plots.Facts(lb=study.leaderboard(), metric=study.metric, maximize=study.maximize,
                        trials={t.number: t for t in study.trials()})
    page = _page(study, facts)
    _write_atomic(target, page)
    return target


def _check_target(path: Any, study: Any) -> Path:
    """The report's path, once its folder is known to exist and to be writable and the
    file there (if any) is an earlier report, never the study's storage or a user's file."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise StorageError(f"The report path must be a file path such as 'report.html', "
                           f"but got {path!r}.")
    target = Path(os.fspath(path)).expanduser().absolute()
    if target.is_dir():
        raise StorageError(f"Cannot write the report to {str(target)!r}: it is a folder; "
                           f"pass a file path such as {str(target / 'report.html')!r}.")
    folder = target.parent
    if not folder.exists():
        raise StorageError(f"Cannot write the report to {str(target)!r}: the folder "
                           f"{str(folder)!r} does not exist; create it first or choose a "
                           f"path in an existing folder.")
    if not folder.is_dir():
        raise StorageError(f"Cannot write the report to {str(target)!r}: {str(folder)!r} "
                           f"is a file, not a folder; choose a path in a folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StorageError(f"Cannot write the report to {str(target)!r}: the folder "
                           f"{str(folder)!r} is not writable; choose a folder you can "
                           f"write to, or change its permissions.")
    return files.check_target(target, what="the report", ours=_is_report,
                              protect=[getattr(study.spec, "path", None)])


def _is_report(path: Path) -> bool:
    """A page this module wrote: it names its generator (or, before 0.3, its title) in the
    first lines."""
    try:
        with open(path, "rb") as f:
            head = f.read(2048)
        return GENERATOR.encode() in head or b"<title>autotransfer study " in head
    except OSError:
        return False


def _write_atomic(target: Path, text: str) -> None:
    """Write a sibling temporary file, then rename it over ``target`` in one step."""
    with files.replacing(target, what="the report") as tmp:
        with open(tmp, "x", encoding="utf-8") as f:  # created with the user's umask
            f.write(text)


def _page(study: Any, facts: plots.Facts) -> str:
    title = f"autotransfer study {study.name}"
    figures = Figures()
    sections_ = _sections(study, facts, figures)
    nav = " ".join(f'<a href="#{sid}">{html.escape(name)}</a>' for sid, name, _ in sections_)
    body = "\n".join(f'<section id="{sid}"><h2>{html.escape(name)}</h2>\n{content}</section>'
                     for sid, name, content in sections_)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{GENERATOR}\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n{_summary(study, facts)}\n"
        f"<nav>{nav}</nav>\n{body}\n{figures.scripts()}<script>{_SORT_JS}</script>\n"
        f"</body></html>\n"
    )


def _sections(study: Any, facts: plots.Facts, figures: Figures) -> list[tuple[str, str, str]]:
    """(id, title, HTML) of each section, in page order: what to do next leads."""
    out = []
    if not facts.scored.empty:
        out.append(("use", "Use this model", sections.use_this_model(study, facts.lb)))
    out.append(("leaderboard", "Leaderboard", _leaderboard(facts)))
    ranked = sections.ranking(study)
    if ranked is not None:
        out.append(("ranking", "Transferability ranking", ranked))
    if facts.scored.empty:
        out.append(("plots", "Plots", note(
            "No trial of this study has completed with a validation score yet, so there is "
            "nothing to plot. Run the search longer, or see the reason column above.")))
    else:
        out += _plot_sections(study, facts, figures)
    return out


def _plot_sections(study: Any, facts: plots.Facts,
                   figures: Figures) -> list[tuple[str, str, str]]:
    def figure(fig: Any, div_id: str) -> str:  # a figure, or the note explaining its absence
        return note(fig) if isinstance(fig, str) else figures.html(fig, f"fig-{div_id}")

    sections_ = [
        ("progress", "Best so far", figure(plots.best_by_clock(facts), "best-clock")
         + figure(plots.best_by_trial(study.optuna, facts), "best-trial")),
        ("freezing", "How much to freeze", figure(plots.freezing(facts), "freezing")),
        ("curves", "Learning curves", figure(plots.learning_curves(facts), "curves")),
        ("importance", "Parameter importances",
         figure(plots.importances(study.optuna, facts), "importance")),
    ]
    if plots.test_columns(facts.lb):
        sections_.append(("test", "Test scores", figure(plots.test_scores(facts), "test")))
    return sections_


def _summary(study: Any, facts: plots.Facts) -> str:
    lb = facts.lb
    counts = lb["state"].value_counts().to_dict() if "state" in lb else {}
    states = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no trials yet"
    lines = [
        f"task <b>{html.escape(str(study.task))}</b>, metric <b>{html.escape(facts.metric)}"
        f"</b> ({facts.direction}); {len(lb)} trials: {html.escape(states)}.",
    ]
    if not facts.scored.empty:
        best = facts.scored.iloc[0]
        frozen = best.get("frozen_groups")
        groups = best.get("n_groups")
        freeze = "" if blank(frozen) else (
            f", {int(frozen)}" + ("" if blank(groups) else f" of {int(groups)}")
            + " layer groups frozen")
        backbone = plots._text(best.get("backbone")) or "?"
        lines.append(f"Best: trial #{int(best['trial'])}, {html.escape(backbone)}"
                     f"{html.escape(freeze)}: {html.escape(facts.score)} = "
                     f"<b>{fmt(best[facts.metric])}</b> "
                     f'(<a href="#use">use this model</a>).')
    ties = lb.attrs.get("note")  # the validation set's resolution and the ties, in words
    if ties:
        lines.append(f'<span class="ties">{html.escape(ties[0].upper() + ties[1:])}</span>')
    stamp = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines.append(f'<span class="muted">Written {html.escape(stamp)}.</span>')
    return "".join(f"<p>{line}</p>" for line in lines)


def _table_columns(lb: Any, metric: str) -> list[str]:
    """Who and what first, then the scores (validation, test, gain), then the rest."""
    tests = [c for c in lb.columns if str(c).startswith("test_")]
    lead = [*_LEAD_COLUMNS, metric, "tied", *tests, *_GAIN_COLUMNS]
    first = [c for c in lead if c in lb.columns]
    return first + [c for c in lb.columns if c not in first]


def _leaderboard(facts: plots.Facts) -> str:
    lb = facts.lb
    if lb.empty:
        return note("The study has no trials yet.")
    columns = _table_columns(lb, facts.metric)
    best = None if facts.scored.empty else facts.scored.index[0]
    heads = "".join(head(c) for c in columns)
    rows = []
    for index, row in lb.iterrows():
        classes = [f"state-{slug(row.get('state'))}"]
        if flag(row.get("negative_transfer")):
            classes.append("negative")
        if index == best:
            classes.append("best")
        if flag(row.get("tied")):
            classes.append("tied")
        cells = "".join(cell(row[c], c) for c in columns)
        rows.append(f'<tr class="{" ".join(classes)}">{cells}</tr>')
    return (f'<p class="muted">Best first. Click a header to sort. '
            f'<code>{html.escape(facts.metric)}</code> is the validation score; test-set '
            f'columns (<code>test_*</code>) are shaded; red rows did worse than training the '
            f'same backbone from scratch; yellow rows tie with the best on the validation '
            f'score.</p>\n'
            f'<div class="scroll"><table class="sortable" id="leaderboard"><thead><tr>{heads}'
            f'</tr></thead>\n<tbody>\n' + "\n".join(rows) + "\n</tbody></table></div>\n")
