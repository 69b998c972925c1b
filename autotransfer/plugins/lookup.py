"""The current plugin host and the lookups that act on it: ``get_backbone``,
``list_backbones``, ``resolve_backbones``, ``get_head``, ``technique_registry``, and the
errors for names and globs that match nothing. The technique fields ``Strategy`` and
``SearchSpace`` take are the current host's."""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator, Mapping
from typing import Any

from ..backbones import Backbone, catalogue
from ..errors import (
    AutotransferError,
    ConfigError,
    ModalityError,
    UnknownNameError,
    WeightsUnavailableError,
)
from ..heads import Head
from ..heads.multitask import MultiTaskHead
from ..strategy import fields
from .host import PluginHost, PluginInfo

_current = PluginHost()


def current() -> PluginHost:
    """The host the module functions use."""
    return _current


def set_current(host: PluginHost) -> None:
    global _current
    _current = host


@contextlib.contextmanager
def use(host: PluginHost) -> Iterator[PluginHost]:
    """Make ``host`` current for a block (a test's fresh host), then restore the previous."""
    before = current()
    set_current(host)
    try:
        yield host
    finally:
        set_current(before)


def reset(autoload: bool = True) -> None:
    """Install a fresh host; the next lookup autoloads again if ``autoload``."""
    set_current(PluginHost(autoload=autoload))


def register_plugin(plugin: Any, name: str | None = None) -> str:
    """Register a plugin (a module, an object with hook implementations, or a module path)
    with the current host; returns the name it was registered under."""
    return current().register(plugin, name)


def unregister_plugin(name: str) -> None:
    """Remove a registered plugin by name (no error if it is not registered)."""
    current().unregister(name)


def modules_for(backbones: list[str], task: str | Mapping[str, str]) -> list[str]:
    """The plugin modules, registered by hand here, that provide ``backbones`` and the
    task's heads: what a command in a fresh process names with ``--plugin``."""
    heads = list(task.values()) if isinstance(task, Mapping) else [task]
    return current().modules_for([f"backbone:{b}" for b in backbones]
                                 + [f"head:{h}" for h in heads])


def list_plugins() -> list[PluginInfo]:
    """Every plugin, with what it registered, and the ones that were skipped."""
    return current().list_plugins()


def backbone_registry() -> dict[str, Backbone]:
    """Name -> Backbone for every registered backbone."""
    return current().backbones()


def head_registry() -> dict[str, Head]:
    """Name -> Head (task name) for every registered head."""
    return current().heads()


def technique_registry() -> dict[str, Any]:
    """Name -> technique (:class:`autotransfer.techniques.Technique`) for every registered
    one, in registration order."""
    return current().techniques()


# Strategy and SearchSpace read the technique fields through this (they sit below plugins).
fields.set_plugin_source(lambda: current().technique_fields())


def list_backbones(pattern: str = "*", *, modality: str | None = None,
                   include_unavailable: bool = False) -> list[str]:
    """Names of the registered backbones matching a glob, sorted; a ``timm/...`` or
    ``hf/...`` glob lists the catalogue too.

    Args:
        pattern: A glob over names: ``"efficientnet*"``, ``"timm/convnext*"``
            (``"timm/convnext_tiny.*"`` for pretrained tags), ``"hf/*"``.
        modality: Only backbones of this modality (``"image"``, ``"text"``).
        include_unavailable: List catalogue models whose pretrained weights are not here
            too (every timm model the glob matches). Registered backbones are listed
            either way. ``hf/`` globs list the local Hugging Face cache only.

    Example:
        >>> import autotransfer as at
        >>> "efficientnet_lite0" in at.list_backbones("efficientnet*")  # doctest: +SKIP
        True
        >>> at.list_backbones("timm/resnet1?t", include_unavailable=True)
        ['timm/resnet10t', 'timm/resnet14t']
    """
    registered = {
        name
        for name, b in backbone_registry().items()
        if fnmatch.fnmatchcase(name, pattern) and (modality is None or b.modality == modality)
    }
    return sorted(registered.union(catalogue.matching(
        pattern, modality=modality, include_unavailable=include_unavailable)))


def get_backbone(name: str) -> Backbone:
    """The backbone called ``name``: a registered one, or ``timm/<model>`` / ``hf/<repo>``
    from the catalogue. The error lists close matches.

    Example:
        >>> import autotransfer as at
        >>> b = at.get_backbone("timm/resnet10t")
        >>> b.timm_name, b.weights
        ('resnet10t', 'hub')
    """
    return current().backbone(name)


def get_head(task: str | Mapping[str, str]) -> Head:
    """The registered head for ``task`` ("classification", "regression", "multilabel", ...);
    for ``{label column: task}`` a :class:`~autotransfer.heads.multitask.MultiTaskHead` built
    from the registered heads (the first task is the primary one)."""
    if isinstance(task, Mapping):
        return MultiTaskHead(task, head_registry())
    table = head_registry()
    if not isinstance(task, str) or task not in table:
        raise UnknownNameError("task", str(task), table)
    return table[task]


def resolve_backbones(patterns: list[str | Backbone] | str | Backbone | None,
                      modality: str | None) -> list[str]:
    """Expand names, globs and Backbone objects to backbone names; default: every
    registered one available for the modality.

    Objects are added to the current host first (:meth:`PluginHost.add_backbone`); two
    objects with one name raise :class:`ConfigError`. A glob keeps only backbones of
    ``modality`` (a catalogue glob, only models whose weights are here); a name is kept as
    given (so a wrong modality is reported, not silently dropped).
    """
    table = backbone_registry()
    if patterns is None:
        names = [n for n in list_backbones(modality=modality) if table[n].available()]
        if not names:
            raise UnknownNameError(
                f"{modality} backbone with available weights", "*", list_backbones()
            )
        return names
    if not isinstance(patterns, (list, tuple)):
        patterns = [patterns]
    _add_objects([p for p in patterns if not isinstance(p, str)])
    names: list[str] = []
    for pat in patterns:
        if not isinstance(pat, str):
            hits = [pat.name]
        elif any(ch in pat for ch in "*?["):
            hits = _glob(pat, modality)
        else:
            hits = [get_backbone(pat).name]
        names += [h for h in hits if h not in names]
    return names


def _add_objects(objects: list[Backbone]) -> None:
    given: dict[str, Backbone] = {}
    for b in objects:
        if given.setdefault(b.name, b) is not b:
            raise ConfigError(f"Two backbones in backbones= are named {b.name!r}: "
                              f"{given[b.name]!r} and {b!r}; give each its own name.")
    for b in given.values():
        current().add_backbone(b)


def _glob(pattern: str, modality: str | None) -> list[str]:
    hits = list_backbones(pattern, modality=modality)
    if hits:
        return hits
    raise no_match(pattern, modality)


def create_backbone(name: str, *, pretrained: bool = True, drop_path: float = 0.0):
    """Build a backbone's body by name (like ``timm.create_model``).

    Example:
        >>> import autotransfer as at
        >>> body = at.create_backbone("timm/resnet10t", pretrained=False)
        >>> body.num_features
        512
    """
    return get_backbone(name).build(pretrained=pretrained, drop_path=drop_path)


def no_match(pattern: str, modality: str | None = None) -> AutotransferError:
    """The error for a glob that :func:`list_backbones` lists nothing for: models whose
    weights are not here, backbones of another modality only, or no name at all (a
    ``timm/`` glob: close matches among timm's models)."""
    known = catalogue.matching(pattern, modality=modality, include_unavailable=True)
    if known:
        return WeightsUnavailableError(
            f"No model matching {pattern!r} has pretrained weights here ({len(known)} match, "
            f"e.g. {', '.join(known[:3])}; none is cached and the Hugging Face Hub cannot be "
            f"reached). Offline, give a local file: at.TimmBackbone('mine', timm_name=..., "
            f"weights='/path/to/weights.safetensors'), or use a backbone that "
            f"`autotransfer backbones` lists with available=yes.")
    wrong = other_modality(pattern, modality)
    if wrong is not None:
        return wrong
    error = UnknownNameError("backbone pattern", pattern, backbone_registry())
    if catalogue.prefix_of(pattern):  # registered names are no help: say what the glob means
        error.args = (f"Unknown backbone pattern {pattern!r}: {catalogue.unmatched(pattern)}.",)
    return error


def other_modality(pattern: str, modality: str | None) -> ModalityError | None:
    """The error when ``pattern`` names backbones, but none of ``modality``."""
    prefix = catalogue.prefix_of(pattern)
    table = backbone_registry()
    theirs = ({catalogue.MODALITY[prefix]} if prefix else
              {table[n].modality for n in list_backbones(pattern)})
    if modality is None or not theirs or modality in theirs:
        return None
    fits = ", ".join(list_backbones(modality=modality)) or "none registered"
    what = f"{prefix}... names" if prefix else "Backbones matching it"
    return ModalityError(f"No {modality} backbone matches {pattern!r}: {what} take "
                         f"{' or '.join(sorted(theirs))} inputs, but the data holds "
                         f"{modality}; {modality} backbones: {fits}.")
