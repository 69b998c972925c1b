"""Small pieces of the page's HTML: table cells, numbers, notes. Everything shown is
escaped here, whoever supplied it (a user's class names, a plugin's backbone name)."""

from __future__ import annotations

import html
from typing import Any

import numpy as np


def cell(value: Any, column: str) -> str:
    """A table cell showing a short form, sorting on the exact value (``data-v``)."""
    if blank(value):
        shown, key = "", ""
    elif isinstance(value, (bool, np.bool_)):
        shown = key = "yes" if value else "no"
    elif isinstance(value, (float, np.floating)):
        shown, key = fmt(value), repr(float(value))
    else:
        shown = key = str(value)
    return (f'<td{test_class(column)} data-v="{html.escape(key)}">'
            f"{html.escape(shown)}</td>")


def head(column: Any) -> str:
    return f'<th{test_class(column)} title="click to sort">{html.escape(str(column))}</th>'


def test_class(column: Any) -> str:
    return ' class="test"' if str(column).startswith("test_") else ""


def fmt(value: Any) -> str:
    return "" if blank(value) else f"{float(value):.4g}"


def blank(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or an array in a cell: not blank
        return False


def flag(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_)) and bool(value)


def slug(value: Any) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in str(value).lower())


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'
