"""The plugin host: entry-point loading, registration, and the backbone/head registries.

Plugins are found through the ``autotransfer`` entry-point group (first-party ones too).
A :class:`PluginHost` is an object, as pluggy's ``PluginManager`` is: tests make a fresh
one each, and a worker process rebuilds the parent's from :meth:`PluginHost.portable`.
Loading is guarded: a plugin that fails to import, whose hook raises, that registers
something that is not a backbone or head, or whose names collide with an earlier
plugin's is reported by name and skipped; the others load. Set
``AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD=1`` to autoload none.

The module functions (``register_plugin``, ``get_backbone``, ...) act on the current host.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import os
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class PluginInfo:
    name: str
    backbones: tuple[str, ...]
    heads: tuple[str, ...]
    error: str | None = None


class PluginHost:
    """Registered plugins and the backbones and heads they provide.

    Args:
        autoload: Load the installed ``autotransfer`` entry points on first lookup
            (unless ``AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD`` is set).
    """

    def __init__(self, autoload: bool = True) -> None:
        self.pm = pluggy.PluginManager("autotransfer")
        self.pm.add_hookspecs(hookspecs)
        self._autoloaded = not autoload
        self.failed: dict[str, str] = {}
        self._tables: dict[str, dict[str, Any]] | None = None
        self.provided_by: dict[str, str] = {}  # "backbone:<name>" -> plugin

    # --- registering ---
    def register(self, plugin: Any, name: str | None = None) -> str:
        """Register a module, an object with hook implementations, or a module path."""
        if isinstance(plugin, str):
            try:
                plugin = importlib.import_module(plugin)
            except ImportError as exc:
                raise PluginError(f"Cannot import plugin module {plugin!r}: {exc}; install it, "
                                  f"or give an importable module path.") from exc
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        if self.pm.has_plugin(name):
            return name
        if self.pm.is_registered(plugin):  # e.g. autoloaded under its entry-point name
            return self.pm.get_name(plugin)
        self._register_checked(plugin, name)
        self._tables = None
        return name

    def _register_checked(self, plugin: Any, name: str) -> None:
        """Register, then reject hooks that match no hookspec (a misspelt name)."""
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.has_plugin(name):
                self.pm.unregister(name=name)
            raise PluginError(f"Plugin {name!r} is invalid: {exc}; hooks it may implement: "
                              f"register_backbones, register_heads.") from exc

    def unregister(self, name: str) -> None:
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
            self.failed.pop(name, None)
            self._tables = None

    def _autoload(self) -> None:
        if self._autoloaded:
            return
        self._autoloaded = True
        if os.environ.get(DISABLE_AUTOLOAD_ENV, "").lower() in ("1", "true", "yes"):
            return
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.has_plugin(ep.name) or ep.name in self.failed:
                continue
            try:
                plugin = ep.load()
                if not self.pm.is_registered(plugin):  # not registered explicitly already
                    self._register_checked(plugin, ep.name)
            except Exception as exc:  # one broken plugin must not take the host down
                self._skip(ep.name, f"{type(exc).__name__}: {exc}",
                           f"({ep.value}) failed to load")
        self._tables = None

    def _skip(self, plugin: str, reason: str, what: str = "failed") -> None:
        self.failed[plugin] = reason
        warnings.warn(f"autotransfer plugin {plugin!r} {what}: {reason}; it was skipped",
                      stacklevel=3)

    # --- what workers need ---
    def portable(self) -> list[tuple[str, Any]]:
        """What a fresh process needs to rebuild this host, in registration order: modules
        by import path, other objects as themselves (send them with cloudpickle)."""
        self._autoload()
        return [(("module", p.__name__) if isinstance(p, types.ModuleType) else ("object", p),
                 name) for name, p in self._plugins()]

    @classmethod
    def from_portable(cls, items: list[Any]) -> PluginHost:
        """The host :meth:`portable` describes (no autoload: it lists what was loaded)."""
        host = cls(autoload=False)
        for (kind, plugin), name in items:
            host.register(importlib.import_module(plugin) if kind == "module" else plugin, name)
        return host

    def _plugins(self) -> list[tuple[str, Any]]:
        return [(n, p) for n, p in self.pm.list_name_plugin() if p is not None]

    # --- the registries ---
    def _collect(self) -> dict[str, dict[str, Any]]:
        """Call every plugin's hooks once; skip a plugin whose registrations are invalid."""
        self._autoload()
        if self._tables is not None:
            return self._tables
        from .backbones import Backbone
        from .head import Head

        tables: dict[str, dict[str, Any]] = {"backbone": {}, "head": {}}
        self.provided_by = {}
        for plugin, _ in self._plugins():
            if plugin in self.failed:
                continue
            try:
                mine = self._hooks_of(plugin, {"backbone": Backbone, "head": Head})
                self._merge(plugin, mine, tables)
            except PluginError as exc:
                self._skip(plugin, str(exc))
            except _HookFailed as exc:  # a buggy hook: report it, keep the other plugins
                self._skip(plugin, exc.reason, f"failed in {exc.hook}")
        self._tables = tables
        return tables

    def _hooks_of(self, plugin: str, kinds: dict[str, type]) -> dict[str, dict[str, Any]]:
        """What one plugin registers, checked, without touching the shared tables."""
        mine: dict[str, dict[str, Any]] = {k: {} for k in kinds}
        for kind, cls in kinds.items():
            def register(obj: Any, kind: str = kind, cls: type = cls) -> None:
                if not isinstance(obj, cls):
                    raise PluginError(f"Plugin {plugin!r} registered {obj!r} as a {kind}; "
                                      f"expected an instance of autotransfer.{cls.__name__}.")
                mine[kind][obj.name] = obj

            hook = getattr(self.pm.hook, f"register_{kind}s")
            for impl in hook.get_hookimpls():
                if impl.plugin_name != plugin:
                    continue
                try:
                    impl.function(register=register)
                except PluginError:
                    raise
                except Exception as exc:
                    raise _HookFailed(hook.name, f"{type(exc).__name__}: {exc}") from exc
        return mine

    def _merge(self, plugin: str, mine: dict[str, dict[str, Any]],
               tables: dict[str, dict[str, Any]]) -> None:
        """Add one plugin's registrations; a name taken by an earlier plugin skips it whole."""
        for kind, objs in mine.items():
            for name in objs:
                if name in tables[kind]:
                    first = self.provided_by[f"{kind}:{name}"]
                    raise PluginError(f"duplicate {kind} name {name!r}: already registered by "
                                      f"plugin {first!r}; plugin {plugin!r} skipped")
        for kind, objs in mine.items():
            tables[kind].update(objs)
            self.provided_by.update({f"{kind}:{n}": plugin for n in objs})

    def backbones(self) -> dict[str, Backbone]:
        return dict(self._collect()["backbone"])

    def heads(self) -> dict[str, Head]:
        return dict(self._collect()["head"])

    def list_plugins(self) -> list[PluginInfo]:
        """Every plugin, with what it registered, and the ones that were skipped."""
        self._collect()
        infos = []
        for name, _ in self._plugins():
            owned = [k.split(":", 1) for k, v in self.provided_by.items() if v == name]
            infos.append(PluginInfo(name, tuple(n for k, n in owned if k == "backbone"),
                                    tuple(n for k, n in owned if k == "head"),
                                    error=self.failed.get(name)))
        listed = {i.name for i in infos}
        return infos + [PluginInfo(n, (), (), error=e) for n, e in self.failed.items()
                        if n not in listed]


class _HookFailed(Exception):
    def __init__(self, hook: str, reason: str) -> None:
        super().__init__(reason)
        self.hook, self.reason = hook, reason


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


def list_plugins() -> list[PluginInfo]:
    """Every plugin, with what it registered, and the ones that were skipped."""
    return current().list_plugins()


def backbone_registry() -> dict[str, Backbone]:
    """Name -> Backbone for every registered backbone."""
    return current().backbones()


def head_registry() -> dict[str, Head]:
    """Name -> Head (task name) for every registered head."""
    return current().heads()


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
    if not isinstance(name, str) or name not in table:
        raise UnknownNameError("backbone", str(name), table)
    return table[name]


def get_head(task: str) -> Head:
    """The registered head for ``task`` ("classification", "regression", "multilabel", ...)."""
    table = head_registry()
    if not isinstance(task, str) or task not in table:
        raise UnknownNameError("task", str(task), table)
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
