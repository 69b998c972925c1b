"""Argument checks: an integer, a number or a flag in range, or an AutotransferError that
names the argument, the value and what is accepted."""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import ConfigError


def integer(name: str, value: Any, *, low: int | None = None,
            high: int | None = None) -> int:
    """``value`` as an int (numpy integers too; not bools, floats or strings), in range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer{_range(low, high)}, but got "
                          f"{name}={value!r} ({type(value).__name__}).")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{name} must be an integer{_range(low, high)}, but got "
                          f"{name}={value}.")
    return value


def number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
           open_low: bool = False) -> float:
    """``value`` as a finite float (ints and numpy numbers too), in range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number{_range(low, high, open_low)}, but got "
                          f"{name}={value!r} ({type(value).__name__}).")
    value = float(value)
    bad = not math.isfinite(value) or (low is not None and (
        value <= low if open_low else value < low)) or (high is not None and value > high)
    if bad:
        raise ConfigError(f"{name} must be a finite number{_range(low, high, open_low)}, but "
                          f"got {name}={value!r}.")
    return value


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, but got {name}={value!r}.")
    return value


def _range(low: Any, high: Any, open_low: bool = False) -> str:
    if low is not None and high is not None:
        return f" in {'(' if open_low else '['}{low}, {high}]"
    if low is not None:
        return f" {'>' if open_low else '>='} {low}"
    if high is not None:
        return f" <= {high}"
    return ""
