"""The one field table: what each Strategy field is, and everything derived from it.

Every field of :class:`~autotransfer.Strategy` is declared once, in the class body, with
:func:`spec`: its default, the values it accepts, its default search range, when it
applies (to which backbones, data and other fields), its off value, and whether the
leaderboard shows it. The Strategy's validation, the search space's defaults and
conditions, the baselines' and portfolio's neutral values, what distillation switches
off, the runner's check, the leaderboard, report and CLI columns and the study-file
``[space]`` keys all read the table through the functions here; adding a field is one
``spec`` line plus the code that acts on it (docs/fields.md shows one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..backbones import NONE_ONLY
from ..backbones._base import describe_adapters


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Int:
    low: int
    high: int


@dataclass(frozen=True)
class Categorical:
    choices: tuple


Dim = Any  # Float | Int | Categorical | a fixed value


@dataclass(frozen=True)
class Where:
    """What decides whether a field applies to a trial: the data, the task, the backbone,
    the values chosen so far (in table order) and the domain-adaptation fields available
    (``search(..., unlabeled=)``)."""

    modality: str = "image"
    task: Any = "classification"
    supports_drop_path: bool = True
    adapters: tuple[str, ...] = NONE_ONLY
    values: dict[str, Any] = field(default_factory=dict)
    domain: tuple[str, ...] = ()


# When a field applies (None: always).
def images(w: Where) -> bool:
    return w.modality == "image"


def texts(w: Where) -> bool:
    return w.modality == "text"


def classes(w: Where) -> bool:
    return w.task in ("classification", "multilabel")


def mixed_images(w: Where) -> bool:  # timm's Mixup mixes class targets of images
    return images(w) and classes(w)


def drop_path(w: Where) -> bool:
    return w.supports_drop_path


def adapters(w: Where) -> bool:
    return w.adapters != NONE_ONLY


def lora(w: Where) -> bool:
    return w.values.get("adapter") == "lora"


def domain(name: str) -> Callable[[Where], bool]:
    def applies(w: Where) -> bool:
        return name in w.domain
    applies.__name__ = f"domain({name})"
    return applies


ALWAYS = object()  # a field without an off value: it applies to every trial


def spec(default: Any, *, accepts: Callable[[Any], bool] | None = None, accepted: str = "",
         search: Dim = None, off: Any = ALWAYS, when: Callable[[Where], bool] | None = None,
         column: bool = False, baseline: Any = ALWAYS, off_in: tuple[str, ...] = (),
         technique: str = "") -> Any:
    """A Strategy field's entry in the table.

    Args:
        default: The Strategy default.
        accepts, accepted: A check of a (coerced) value, and what it accepts in words.
        search: The SearchSpace default: a Float/Int/Categorical range, or a fixed value
            (``None`` for ``frozen_groups``: every group count of the trial's backbone).
        off: The value that switches the field off. A field that does not apply to a
            trial (``when``) takes it; baselines, the portfolio and distillation students
            take it for fields that change the inputs or the targets.
        when: Whether the field applies to a trial (see :class:`Where`); None: always.
        column: The leaderboard, report and CLI show it.
        baseline: The value the reference trials (scratch, linear probe, default
            fine-tune) train with, where they fix it.
        off_in: Where the field is switched off whatever the space says: ``"portfolio"``
            (the warm-start points, kept cheap: nothing that stops the frozen prefix
            being cached) and ``"student"`` (a distillation student, whose targets are
            the teacher's outputs on unaugmented source inputs).
        technique: The registered technique that acts on a built-in field (``"mixing"``):
            it is active when the field is on, and a trial refuses the field on while no
            loaded plugin registers it. A technique's own fields are its by declaration.
    """
    meta = {"accepts": accepts, "accepted": accepted, "search": search, "off": off,
            "when": when, "column": column, "baseline": baseline, "off_in": off_in,
            "technique": technique}
    return field(default=default, metadata=meta)


def table(strategy_cls: type) -> list[dataclasses.Field]:
    """The table's built-in entries (every Strategy field but ``backbone`` and ``extra``),
    in declaration order."""
    return [f for f in dataclasses.fields(strategy_cls) if f.metadata]


def every(strategy_cls: type) -> list[dataclasses.Field]:
    """The built-in entries, then those the registered technique plugins declare (by name)."""
    return table(strategy_cls) + [f for _, f in sorted(plugin_fields().items())]


def entry(strategy_cls: type, name: str) -> dataclasses.Field:
    """A field's entry: a built-in one, else one a registered technique declares."""
    for f in table(strategy_cls):
        if f.name == name:
            return f
    return plugin_fields()[name]


def searchable(strategy_cls: type) -> list[str]:
    """The fields a SearchSpace holds a range or value for (all but ``pretrained``)."""
    return [f.name for f in table(strategy_cls) if f.metadata["search"] is not NOT_SEARCHED]


def applies(strategy_cls: type, name: str, where: Where) -> bool:
    when = entry(strategy_cls, name).metadata["when"]
    return when is None or when(where)


def off_value(strategy_cls: type, name: str) -> Any:
    """The value that switches ``name`` off (its default when it has none)."""
    return off_of(entry(strategy_cls, name))


def off_of(f: dataclasses.Field) -> Any:
    """The value that switches field ``f`` off (its default when it has none)."""
    return f.default if f.metadata["off"] is ALWAYS else f.metadata["off"]


ROLES = ("portfolio", "student")  # where off_in may switch a field off


def off_in(strategy_cls: type, role: str) -> dict[str, Any]:
    """``{field: off value}`` of the fields switched off for ``role`` (one of
    :data:`ROLES`), technique plugins' included: read it on use, not at import."""
    return {f.name: off_of(f) for f in every(strategy_cls) if role in f.metadata["off_in"]}


def baseline_values(strategy_cls: type) -> dict[str, Any]:
    """The values every reference trial trains with, beyond frozen groups and lr."""
    return {f.name: f.metadata["baseline"] for f in every(strategy_cls)
            if f.metadata["baseline"] is not ALWAYS}


def columns(strategy_cls: type) -> list[str]:
    """The fields the leaderboard, the report and the CLI table show."""
    return [f.name for f in every(strategy_cls) if f.metadata["column"]]


def unfit(strategy: Any, modality: str, task: Any) -> str | None:
    """Why ``strategy`` cannot train on such data (a field that applies only to other
    inputs or targets is on), or None. The runner checks this before any work."""
    where = Where(modality=modality, task=task)
    on = [f.name for f in every(type(strategy)) if f.metadata["when"] in DATA_RULES
          and not f.metadata["when"](where) and getattr(strategy, f.name) != f.metadata["off"]]
    if not on:
        return None
    name = on[0]
    if entry(type(strategy), name).metadata["when"] in (images, mixed_images) \
            and modality != "image":
        return (f"{name} applies to images; backbone {strategy.backbone!r} takes {modality}. "
                f"Use {name}={off_value(type(strategy), name)!r}.")
    if entry(type(strategy), name).metadata["when"] is mixed_images:
        return (f"mixup and cutmix mix class targets; task {task!r} has none. Use mixup=0 "
                f"and cutmix=0.")
    return (f"{name} does not apply to {modality} data with task {task!r}. Use "
            f"{name}={off_value(type(strategy), name)!r}.")


# The fields technique plugins declare (autotransfer.techniques): the current plugin host
# installs this source (that layer sits above this one). Read on use, never at import.
_plugin_source: Callable[[], dict[str, dataclasses.Field]] = dict


def plugin_fields() -> dict[str, dataclasses.Field]:
    """``{name: entry}`` of the fields the registered technique plugins declare."""
    return _plugin_source()


def set_plugin_source(source: Callable[[], dict[str, dataclasses.Field]]) -> None:
    """Where :func:`plugin_fields` reads them (:mod:`autotransfer.plugins` sets it)."""
    global _plugin_source
    _plugin_source = source


def fits(strategy: Any, backbone: Any, *, task: Any = None, n_groups: int | None = None
         ) -> str | None:
    """Why ``strategy`` does not apply to ``backbone`` (an adapter it does not take, more
    frozen groups than its ``n_groups``, a field for inputs or targets that ``task`` and its
    modality lack), or None when it does. Search, refit and distillation all ask this."""
    if strategy.adapter not in backbone.adapters:
        return (f"adapter={strategy.adapter!r} does not apply to backbone {backbone.name!r}; "
                f"{describe_adapters(backbone.adapters)}.")
    if n_groups is not None and strategy.frozen_groups > n_groups:
        return (f"frozen_groups={strategy.frozen_groups}, but backbone {strategy.backbone!r} "
                f"has {n_groups} layer groups; accepted: 0..{n_groups}.")
    return None if task is None else unfit(strategy, backbone.modality, task)


NOT_SEARCHED = object()  # spec(search=NOT_SEARCHED): the SearchSpace has no such field
DATA_RULES = (images, texts, classes, mixed_images)  # rules that the data alone decides


def markdown(strategy_cls: type) -> str:
    """The table as Markdown (docs/fields.md is this, and a test keeps it so)."""
    docs = _attribute_docs(strategy_cls.__doc__ or "")
    lines = ["| field | type | default | accepts | searched by default | applies | off | "
             "technique |", "|---|---|---|---|---|---|---|---|"]
    for f in table(strategy_cls):
        m = f.metadata
        search = "not searched" if m["search"] is NOT_SEARCHED else (
            "0 .. the backbone's groups" if m["search"] is None and f.name == "frozen_groups"
            else _shown(m["search"]))
        when = "always" if m["when"] is None else m["when"].__name__
        off = "-" if m["off"] is ALWAYS else repr(m["off"])
        kind = f.type.replace(" | ", " or ")
        lines.append(f"| `{f.name}` | {kind} | `{f.default!r}` | {m['accepted'] or '-'} | "
                     f"{search} | {when} | {off} | {m['technique'] or '-'} |")
    lines += ["", *(f"- **`{name}`**: {text}" for name, text in docs.items())]
    return "\n".join(lines) + "\n"


def _shown(dim: Dim) -> str:
    if isinstance(dim, Float):
        return f"{dim.low} .. {dim.high}{' (log)' if dim.log else ''}"
    if isinstance(dim, Int):
        return f"{dim.low} .. {dim.high}"
    if isinstance(dim, Categorical):
        return "one of " + ", ".join(repr(c) for c in dim.choices)
    return f"fixed at {dim!r}"


def _attribute_docs(doc: str) -> dict[str, str]:
    """``{name: text}`` from a Google-style ``Attributes:`` section."""
    out: dict[str, str] = {}
    section = doc.split("Attributes:", 1)[-1].split("Example:", 1)[0]
    name = None
    for line in section.splitlines():
        head, _, text = line.strip().partition(": ")
        if line.startswith(" " * 8) and not line.startswith(" " * 12) and text:
            name = head
            out[name] = text.strip()
        elif name and line.strip():
            out[name] += " " + line.strip()
    return out
