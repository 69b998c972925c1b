"""Fields that technique plugins declare (:mod:`autotransfer.techniques`).

A technique declares its Strategy fields with the same :func:`~.fields.spec` as the
built-in ones. They are checked when its plugin registers (:func:`check_declared`), taken
by keyword into ``Strategy.extra`` and ``SearchSpace.extra`` (:func:`routes`), and coerced
and validated there as the built-in fields are (:func:`checked`). Which fields are
declared is the current plugin host's business: :func:`.fields.plugin_fields` reads them.
"""

from __future__ import annotations

import dataclasses
import functools
import keyword
import math
import numbers
from collections.abc import Callable, Collection, Iterable
from typing import Any

from ..errors import StrategyError, UnknownNameError
from . import fields
from .fields import ALWAYS, NOT_SEARCHED, Categorical, Float, Int

_KINDS = {bool: "bool", int: "int", float: "float", str: "str"}
_SPEC_KEYS = {"accepts", "accepted", "search", "off", "when", "column", "baseline", "off_in",
              "technique"}


def coerce(name: str, kind: str, v: Any) -> Any:
    """``v`` as a field of type ``kind`` (``"int"``, ``"float"``, ``"bool"``, ... with an
    optional ``" | None"``): numbers of any numeric type (numpy too) become int or float,
    other types are refused."""
    if v is None and kind.endswith(" | None"):
        return v
    kind = kind.removesuffix(" | None")
    if kind == "bool" and not isinstance(v, bool):
        raise StrategyError(f"{name} must be True or False, but got {name}={v!r}.")
    if kind not in ("int", "float"):
        return v
    whole = kind == "int"
    number = numbers.Integral if whole else numbers.Real
    if isinstance(v, bool) or not isinstance(v, number):
        raise StrategyError(f"{name} must be {'an integer' if whole else 'a number'}, but got "
                            f"{name}={v!r} ({type(v).__name__}).")
    if not whole and not math.isfinite(v):
        raise StrategyError(f"{name} must be a finite number, but got {name}={v!r}.")
    return int(v) if whole else float(v)


def value_of(f: dataclasses.Field, v: Any) -> Any:
    """``v`` coerced and checked as field ``f`` would take it (:class:`StrategyError`)."""
    v = coerce(f.name, f.type, v)
    check = f.metadata["accepts"]
    try:
        ok = check is None or check(v)
    except TypeError:  # a value of a type the check cannot compare
        ok = False
    if not ok:
        accepted = f.metadata["accepted"] or "a value its technique accepts"
        raise StrategyError(f"{f.name} must be {accepted}, but got {f.name}={v!r}.")
    return v


def prepared(name: str, declared: dataclasses.Field) -> dataclasses.Field:
    """A technique's ``spec(...)`` as a table entry: named, typed after its default; with
    no ``search=`` it is not searched (it keeps its default)."""
    meta = dict(declared.metadata)
    if meta["search"] is None:
        meta["search"] = NOT_SEARCHED
    out = dataclasses.field(default=declared.default, metadata=meta)
    out.name, out.type = name, _KINDS.get(type(declared.default), "Any")
    return out


def check_declared(name: Any, declared: Any, reserved: Collection[str]) -> str | None:
    """What is wrong with a technique's field ``name`` (``reserved``: the names Strategy
    and SearchSpace use already), or None."""
    if not (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)
            and not name.startswith("_")):
        return f"field name {name!r} is not an identifier without a leading '_'"
    if name in reserved:
        return f"field {name!r} is a name Strategy or SearchSpace uses already"
    if not isinstance(declared, dataclasses.Field) or set(declared.metadata) != _SPEC_KEYS:
        return f"field {name!r} must be made with autotransfer.techniques.spec(...)"
    if declared.metadata["technique"]:
        return f"field {name!r}: technique= is for built-in fields (it is its technique's)"
    roles = declared.metadata["off_in"]
    if not (isinstance(roles, tuple) and set(roles) <= set(fields.ROLES)):
        return f"field {name!r}: off_in must be a tuple of {fields.ROLES}, but got {roles!r}"
    f = prepared(name, declared)
    m = f.metadata
    points = [("default", f.default)]
    points += [("off value", m["off"])] if m["off"] is not ALWAYS else []
    points += [("baseline value", m["baseline"])] if m["baseline"] is not ALWAYS else []
    search = m["search"]
    if isinstance(search, Float) and search.log and search.low <= 0:
        return f"field {name!r}: a log search range needs low > 0"
    if isinstance(search, (Float, Int)):
        points += [("search bound", search.low), ("search bound", search.high)]
    elif isinstance(search, Categorical):
        points += [("search choice", c) for c in search.choices]
    elif search is not NOT_SEARCHED:
        points.append(("fixed search value", search))
    for what, value in points:
        try:
            value_of(f, value)
        except StrategyError as exc:
            return f"field {name!r}: its {what} is refused: {str(exc).rstrip('.')}"
    return None


def as_pairs(value: Any, error: type[Exception], what: str) -> dict[str, Any]:
    """``extra`` given as a mapping or as ``(name, value)`` pairs, as a dict."""
    try:
        return dict(value.items() if hasattr(value, "items") else value)
    except (TypeError, ValueError):
        raise error(f"{what}.extra must be technique fields as a {{name: value}} dict or "
                    f"(name, value) pairs, but got extra={value!r:.80}.") from None


def checked(extra: Any, builtin: Iterable[str]) -> tuple[tuple[str, Any], ...]:
    """``Strategy.extra`` as sorted ``(name, value)`` pairs of registered technique fields,
    coerced and checked; a value at its default is left out, so a Strategy equals the same
    one with a technique field set to its default."""
    given = as_pairs(extra, StrategyError, "Strategy")
    if not given:
        return ()
    known = fields.plugin_fields()
    out = []
    for name, v in given.items():
        if name not in known:
            raise UnknownNameError("Strategy field", str(name), [*builtin, *known])
        v = value_of(known[name], v)
        if v != known[name].default:
            out.append((name, v))
    return tuple(sorted(out))


def routes(known: Callable[[], Iterable[str]],
           error: type[Exception]) -> Callable[[type], type]:
    """Class decorator for a dataclass with an ``extra`` field: a keyword that is none of
    its fields but one of ``known()`` (technique fields) goes into ``extra``; any other
    names close matches, as :func:`autotransfer.errors.known_fields` does."""

    def decorate(cls: type) -> type:
        init = cls.__init__
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

        @functools.wraps(init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: N807
            given = {k: kwargs.pop(k) for k in [k for k in kwargs if k not in names
                                                and k != "extra"]}
            if given:
                plugin = list(known())
                for key in given:
                    if key not in plugin:
                        raise UnknownNameError(f"{cls.__name__} field", key, names + plugin)
                before = as_pairs(kwargs.get("extra", ()), error, cls.__name__)
                kwargs["extra"] = {**before, **given}
            init(self, *args, **kwargs)

        cls.__init__ = __init__
        return cls

    return decorate
