"""The closing summary of a search, as lines of text: the best trial with its test score
beside the reference trials, the refits, an optimism warning, and where the best model is
with the commands that use it. ``autotransfer run`` prints it (with the ranking table
between the two parts); ``search()`` logs it, ranking included, unless ``progress=False``.
"""

from __future__ import annotations

import math
from typing import Any

from ..log import get_logger
from ..report.usage import text_lines, usage
from .results import optimism

logger = get_logger(__name__)  # search() logs the summary here; the CLI prints it instead


def result_lines(study: Any) -> list[str]:
    """The best trial, the reference trials' scores, the refits, an optimism warning."""
    df = study.leaderboard()
    done = df[df["state"] == "complete"]
    if done.empty:
        return []
    best, m = done.iloc[0], study.metric
    line = (f"best: trial {best['trial']} ({best['backbone']}, frozen_groups="
            f"{best['frozen_groups']}/{best['n_groups']}) validation {m}={best[m]:.4f}")
    if _known(best.get(f"test_{m}")):
        line += f", test {m}={best[f'test_{m}']:.4f} (± {best[f'test_{m}_se']:.4f})"
    for kind in ("default_finetune", "scratch"):
        ref = done[done["baseline"] == kind]
        if not ref.empty:
            line += f"; {kind} {ref.iloc[0][m]:.4f}"
    lines = [line]
    for r in df[df["state"].isin(("refit", "soup", "ensemble"))].to_dict("records"):
        test = f", test {m}={r[f'test_{m}']:.4f}" if _known(r.get(f"test_{m}")) else ""
        what = r["reason"] if r["state"] != "refit" else \
            f"refit of trial {r['trial']} on all labelled data ({r['epochs']} epochs)"
        lines.append(f"{what}{test}")
    warning = optimism(study)
    return lines + ([f"warning: {warning}"] if warning else [])


def use_lines(study: Any) -> list[str]:
    """Where the best model is, and the commands that use it (the same the report's "Use
    this model" section shows: both read :func:`autotransfer.report.usage.usage`)."""
    return text_lines(usage(study))


RANKING_TITLE = ("transferability before the search (held-out accuracy of a linear probe on "
                 "frozen features, higher is better; degenerate features rank last):")


def lines(study: Any) -> list[str]:
    """The whole summary: results, the ranking (when there was one), the model."""
    ranked = study.ranking()
    table = [] if ranked.empty else [RANKING_TITLE, *ranked.to_string(index=False).splitlines()]
    return result_lines(study) + table + use_lines(study)


def _known(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))
