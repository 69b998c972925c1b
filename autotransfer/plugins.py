"""The plugin host: entry-point loading, registration, and the backbone/head registries.

Plugins are found through the ``autotransfer`` entry-point group (first-party ones too).
Loading is guarded: a plugin that fails to import is reported by name and skipped.
Set ``AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD=1`` to load none (tests do, then register
what they need with :func:`register_plugin`).
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import types
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import PluginError, UnknownNameError

if TYPE_CHECKING:
    from .backbones import Backbone
    from .head import Head

ENTRY_POINT_GROUP = "autotransfer"
DISABLE_AUTOLOAD_ENV = "AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD"


@dataclass
class _Host:
    pm: pluggy.PluginManager
    autoloaded: bool = False
    failed: dict[str, str] = field(default_factory=dict)
    backbones: dict[str, Backbone] | None = None
    heads: dict[str, Head] | None = None
    provided_by: dict[str, str] = field(default_factory=dict)


def _new_host() -> _Host:
    pm = pluggy.PluginManager("autotransfer")
    pm.add_hookspecs(hookspecs)
    return _Host(pm)


_host = _new_host()


def _autoload() -> None:
    if _host.autoloaded:
        return
    _host.autoloaded = True
    if os.environ.get(DISABLE_AUTOLOAD_ENV, "").lower() in ("1", "true", "yes"):
        return
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if _host.pm.has_plugin(ep.name) or ep.name in _host.failed:
            continue
        try:
            plugin = ep.load()
            if _host.pm.is_registered(plugin):  # registered explicitly already
                continue
            _register_checked(plugin, ep.name)
        except Exception as exc:  # one broken plugin must not take the host down
            _host.failed[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"autotransfer plugin {ep.name!r} ({ep.value}) failed to load and was "
                f"skipped: {type(exc).__name__}: {exc}",
                stacklevel=2,
            )
    _invalidate()


def _invalidate() -> None:
    _host.backbones = None
    _host.heads = None
    _host.provided_by.clear()


def register_plugin(plugin: Any, name: str | None = None) -> str:
    """Register a plugin (a module or an object with hook implementations).

    Args:
        plugin: The module or object, or a module's import path as a string.
        name: The plugin's name; defaults to the module name.

    Returns:
        The name it was registered under.
    """
    if isinstance(plugin, str):
        try:
            plugin = importlib.import_module(plugin)
        except ImportError as exc:
            raise PluginError(f"Cannot import plugin module {plugin!r}: {exc}") from exc
    name = name or getattr(plugin, "__name__", None) or repr(plugin)
    if _host.pm.has_plugin(name):
        return name
    if _host.pm.is_registered(plugin):  # e.g. autoloaded under its entry-point name
        return _host.pm.get_name(plugin)
    _register_checked(plugin, name)
    _invalidate()
    return name


def _register_checked(plugin: Any, name: str) -> None:
    """Register, then reject hooks that match no hookspec (a misspelt name)."""
    try:
        _host.pm.register(plugin, name=name)
        _host.pm.check_pending()
    except pluggy.PluginValidationError as exc:
        if _host.pm.has_plugin(name):
            _host.pm.unregister(name=name)
        raise PluginError(
            f"Plugin {name!r} is invalid: {exc}; hooks it may implement: "
            f"register_backbones, register_heads."
        ) from exc


def unregister_plugin(name: str) -> None:
    """Remove a registered plugin by name (no error if it is not registered)."""
    if _host.pm.has_plugin(name):
        _host.pm.unregister(name=name)
        _invalidate()


def reset(autoload: bool = True) -> None:
    """Forget every registered plugin; the next lookup autoloads again if ``autoload``."""
    global _host
    _host = _new_host()
    _host.autoloaded = not autoload


def plugin_modules() -> list[str]:
    """Import paths of the registered plugins that are modules (so a worker can re-register)."""
    _autoload()
    return [
        p.__name__ for _, p in _host.pm.list_name_plugin() if isinstance(p, types.ModuleType)
    ]


@dataclass(frozen=True)
class PluginInfo:
    name: str
    backbones: tuple[str, ...]
    heads: tuple[str, ...]
    error: str | None = None


def list_plugins() -> list[PluginInfo]:
    """Every plugin, with what it registered, and the ones that failed to load."""
    _collect()
    infos = []
    for name, _ in _host.pm.list_name_plugin():
        owned = [k for k, v in _host.provided_by.items() if v == name]
        infos.append(
            PluginInfo(
                name,
                tuple(k.split(":", 1)[1] for k in owned if k.startswith("backbone:")),
                tuple(k.split(":", 1)[1] for k in owned if k.startswith("head:")),
                error=_host.failed.get(name),
            )
        )
    listed = {i.name for i in infos}
    infos += [PluginInfo(n, (), (), error=e) for n, e in _host.failed.items() if n not in listed]
    return infos


def _collect() -> None:
    """Call every plugin's hooks once, validating as things register."""
    _autoload()
    if _host.backbones is not None and _host.heads is not None:
        return
    from .backbones import Backbone
    from .head import Head

    backbones: dict[str, Backbone] = {}
    heads: dict[str, Head] = {}
    _host.provided_by.clear()

    def make_register(kind: str, cls: type, table: dict, plugin: str):
        def register(obj: Any) -> None:
            if not isinstance(obj, cls):
                raise PluginError(
                    f"Plugin {plugin!r} registered {obj!r} as a {kind}; "
                    f"expected an instance of autotransfer.{cls.__name__}."
                )
            if obj.name in table:
                raise PluginError(
                    f"Duplicate {kind} name {obj.name!r}: registered by plugin "
                    f"{_host.provided_by[f'{kind}:{obj.name}']!r} and again by {plugin!r}."
                )
            table[obj.name] = obj
            _host.provided_by[f"{kind}:{obj.name}"] = plugin

        return register

    for hook, kind, cls, table in (
        (_host.pm.hook.register_backbones, "backbone", Backbone, backbones),
        (_host.pm.hook.register_heads, "head", Head, heads),
    ):
        # One call per plugin (in registration order) so a duplicate names its plugin.
        for impl in hook.get_hookimpls():
            try:
                impl.function(register=make_register(kind, cls, table, impl.plugin_name))
            except PluginError:
                raise
            except Exception as exc:  # a buggy hook: report it, keep the other plugins
                _host.failed[impl.plugin_name] = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"autotransfer plugin {impl.plugin_name!r} failed in "
                              f"{hook.name}: {type(exc).__name__}: {exc}", stacklevel=2)
    _host.backbones, _host.heads = backbones, heads


def backbone_registry() -> dict[str, Backbone]:
    """Name -> Backbone for every registered backbone."""
    _collect()
    assert _host.backbones is not None
    return dict(_host.backbones)


def head_registry() -> dict[str, Head]:
    """Name -> Head (task name) for every registered head."""
    _collect()
    assert _host.heads is not None
    return dict(_host.heads)


def list_backbones(pattern: str = "*", *, modality: str | None = None) -> list[str]:
    """Names of the registered backbones matching a glob, sorted.

    Example:
        >>> import autotransfer as at
        >>> "efficientnet_lite0" in at.list_backbones("efficientnet*")  # doctest: +SKIP
        True
    """
    return sorted(
        name
        for name, b in backbone_registry().items()
        if fnmatch.fnmatchcase(name, pattern) and (modality is None or b.modality == modality)
    )


def get_backbone(name: str) -> Backbone:
    """The registered backbone called ``name``; the error lists close matches."""
    table = backbone_registry()
    if name not in table:
        raise UnknownNameError("backbone", name, table)
    return table[name]


def get_head(task: str) -> Head:
    """The registered head for ``task`` ("classification", "regression", "multilabel", ...)."""
    table = head_registry()
    if task not in table:
        raise UnknownNameError("task", task, table)
    return table[task]


def resolve_backbones(patterns: list[str] | str | None, modality: str | None) -> list[str]:
    """Expand names and globs to backbone names; default: all available for the modality.

    A glob keeps only backbones of ``modality``; a name is kept as given (so a wrong
    modality is reported, not silently dropped).
    """
    table = backbone_registry()
    if patterns is None:
        names = [n for n in list_backbones(modality=modality) if table[n].available()]
        if not names:
            raise UnknownNameError(
                f"{modality} backbone with available weights", "*", list_backbones()
            )
        return names
    if isinstance(patterns, str):
        patterns = [patterns]
    names: list[str] = []
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            hits = list_backbones(pat, modality=modality)
            if not hits:
                raise UnknownNameError("backbone pattern", pat, table)
        else:
            hits = [get_backbone(pat).name]
        names += [h for h in hits if h not in names]
    return names


def create_backbone(name: str, *, pretrained: bool = True, drop_path: float = 0.0):
    """Build a registered backbone's body (like ``timm.create_model``)."""
    return get_backbone(name).build(pretrained=pretrained, drop_path=drop_path)
