"""The plugin host: entry-point loading, registration, and the backbone, head and
technique registries.

Plugins are found through the ``autotransfer`` entry-point group (first-party ones too).
A :class:`PluginHost` is an object, as pluggy's ``PluginManager`` is: tests make a fresh
one each, and a worker process rebuilds the parent's from :meth:`PluginHost.portable`.
Loading is guarded: a plugin that fails to import, whose hook raises, that registers
something that is not a backbone or head, or whose names collide with an earlier
plugin's is reported by name and skipped; the others load. A technique's Strategy fields
are checked when its plugin registers, and belong to the host: ``Strategy`` and
``SearchSpace`` take those of the current host (``fields.plugin_fields``). Set
``AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD=1`` to autoload none.

Besides what plugins register, a backbone can be named from the catalogue (``timm/<model>``,
``hf/<repo>``, see :mod:`autotransfer.backbones.catalogue`), made on first lookup and kept
by the host, or given as an object (:meth:`PluginHost.add_backbone`), which the host holds
in a plugin of its own so that it reaches worker processes like any other.

The module functions (``register_plugin``, ``get_backbone``, ...) act on the current host.
"""

from __future__ import annotations

import importlib
import os
import types
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from .. import hookspecs
from ..backbones import Backbone, catalogue
from ..errors import AutotransferError, ConfigError, PluginError, UnknownNameError
from ..heads import Head
from ..strategy import declared, space

ENTRY_POINT_GROUP = "autotransfer"
DISABLE_AUTOLOAD_ENV = "AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD"
OBJECTS = "autotransfer:objects"  # the plugin holding backbones given as objects


@dataclass(frozen=True)
class PluginInfo:
    name: str
    backbones: tuple[str, ...]
    heads: tuple[str, ...]
    error: str | None = None
    techniques: tuple[str, ...] = ()


KINDS = ("backbone", "head", "technique")
TECHNIQUE_HOOKS = ("active", "start", "live", "build", "param_groups", "batch", "embed",
                   "criterion", "loss", "step", "epoch_end", "validation")


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
        self._catalogue: dict[str, Backbone] = {}  # "timm/..." and "hf/..." made so far

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
                              f"register_backbones, register_heads, "
                              f"register_techniques.") from exc

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

    def modules_for(self, provided: list[str]) -> list[str]:
        """The plugin modules another process must register by name (``--plugin``) to
        have ``provided`` (``"backbone:<name>"``, ``"head:<name>"``): the modules that
        provide them here, but for the installed entry points (every process loads those)."""
        self._collect()
        plugins = dict(self._plugins())
        installed = {ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
        owners = {self.provided_by.get(key) for key in provided} - {None}
        modules = {plugins[o].__name__ for o in owners
                   if isinstance(plugins.get(o), types.ModuleType)}
        return sorted(modules - installed)

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
        tables: dict[str, dict[str, Any]] = {k: {} for k in (*KINDS, "field")}
        self.provided_by = {}
        checks = _checks()
        for plugin, _ in self._plugins():
            if plugin in self.failed:
                continue
            try:
                mine = self._hooks_of(plugin, checks)
                self._merge(plugin, mine, tables)
            except PluginError as exc:
                self._skip(plugin, str(exc))
            except _HookFailed as exc:  # a buggy hook: report it, keep the other plugins
                self._skip(plugin, exc.reason, f"failed in {exc.hook}")
        self._tables = tables
        return tables

    def _hooks_of(self, plugin: str,
                  checks: dict[str, Callable[[Any], str | None]]) -> dict[str, dict[str, Any]]:
        """What one plugin registers, checked, without touching the shared tables; a
        technique's fields go to ``"field"`` as table entries."""
        mine: dict[str, dict[str, Any]] = {k: {} for k in (*checks, "field")}
        for kind, check in checks.items():
            def register(obj: Any, kind: str = kind, check: Callable = check) -> None:
                problem = check(obj)
                if problem is None and kind == "technique":
                    problem = next((f"field {n!r} is declared twice" for n in obj.fields
                                    if n in mine["field"]), None)
                if problem is not None:
                    raise PluginError(f"Plugin {plugin!r} registered {obj!r} as a {kind}; "
                                      f"{problem}.")
                mine[kind][obj.name] = obj
                if kind == "technique":
                    mine["field"].update({n: declared.prepared(n, f)
                                          for n, f in obj.fields.items()})

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

    def techniques(self) -> dict[str, Any]:
        """Name -> technique (:class:`autotransfer.techniques.Technique`), in the order
        their plugins registered."""
        return dict(self._collect()["technique"])

    def technique_fields(self) -> dict[str, Any]:
        """Name -> table entry of every field the registered techniques declare."""
        return dict(self._collect()["field"])

    def backbone(self, name: str) -> Backbone:
        """The registered backbone ``name``, else the catalogue's ``timm/...`` or ``hf/...``
        one (made on first lookup, then kept); the error lists close matches."""
        table = self.backbones()
        if isinstance(name, str) and name in table:
            return table[name]
        if catalogue.prefix_of(name):
            if name not in self._catalogue:
                self._catalogue[name] = catalogue.make(name)
            return self._catalogue[name]
        accepted = list(table)
        if isinstance(name, str) and catalogue.timm_knows(name):  # suggest "timm/<name>"
            accepted.append(catalogue.TIMM + name)
        raise UnknownNameError("backbone", str(name), accepted)

    def add_backbone(self, backbone: Backbone) -> str:
        """Register a Backbone object under its name, as ``search(backbones=[obj])`` does;
        it travels to worker processes with the plugins. Returns the name.

        The same object again changes nothing; another object of that name replaces one
        added earlier (a rerun notebook cell); a name a plugin registered raises
        :class:`ConfigError` naming both. A catalogue name (``timm/...``, ``hf/...``) is
        taken only by the catalogue's own model (e.g. ``at.get_backbone("timm/resnet18")``),
        which needs no adding; another object of that name raises :class:`ConfigError`.
        """
        if not isinstance(backbone, Backbone):
            raise ConfigError(f"add_backbone takes an autotransfer.Backbone, but got "
                              f"{backbone!r} ({type(backbone).__name__}).")
        name = backbone.name
        held = self.backbones().get(name)
        if held is backbone:
            return name
        if held is None and catalogue.prefix_of(name):
            if self._is_catalogue_model(backbone):
                return name
            raise ConfigError(f"Backbone object {backbone!r} is named {name!r}, but names "
                              f"starting with 'timm/' or 'hf/' mean the catalogue's models "
                              f"(timm/<model> with hub weights, hf/<repo>); give the object "
                              f"a name of its own, e.g. {name.rsplit('/', 1)[-1] + '_mine'!r}.")
        owner = self.provided_by.get(f"backbone:{name}")
        if held is not None and owner != OBJECTS:
            raise ConfigError(f"Two backbones are named {name!r}: {backbone!r}, given as an "
                              f"object, and {held!r}, registered by plugin {owner!r}; give "
                              f"the object another name.")
        if not self.pm.has_plugin(OBJECTS):
            self.register(_Objects(), OBJECTS)
        self.pm.get_plugin(OBJECTS).backbones[name] = backbone
        self._tables = None
        return name

    def _is_catalogue_model(self, backbone: Backbone) -> bool:
        """Whether ``backbone`` is the model its catalogue name means: that object, or one
        of its type with the same settings."""
        try:
            made = self.backbone(backbone.name)
        except AutotransferError:  # a name the catalogue does not know
            return False
        return made is backbone or (type(made) is type(backbone)
                                    and _settings(made) == _settings(backbone))

    def list_plugins(self) -> list[PluginInfo]:
        """Every plugin, with what it registered, and the ones that were skipped."""
        self._collect()
        infos = []
        for name, _ in self._plugins():
            owned = [k.split(":", 1) for k, v in self.provided_by.items() if v == name]
            infos.append(PluginInfo(name, tuple(n for k, n in owned if k == "backbone"),
                                    tuple(n for k, n in owned if k == "head"),
                                    error=self.failed.get(name),
                                    techniques=tuple(n for k, n in owned if k == "technique")))
        listed = {i.name for i in infos}
        return infos + [PluginInfo(n, (), (), error=e) for n, e in self.failed.items()
                        if n not in listed]


def _checks() -> dict[str, Callable[[Any], str | None]]:
    """What each kind a plugin registers must be: the problem with an object, or None."""
    reserved = space.reserved()

    def instance(cls: type) -> Callable[[Any], str | None]:
        return lambda obj: None if isinstance(obj, cls) else \
            f"expected an instance of autotransfer.{cls.__name__}"

    return {"backbone": instance(Backbone), "head": instance(Head),
            "technique": lambda obj: _technique_problem(obj, reserved)}


def _technique_problem(obj: Any, reserved: set[str]) -> str | None:
    """A technique is checked by its shape (the base class lives in a layer above):
    a name, a ``fields`` mapping of ``spec(...)`` entries, and the hook methods."""
    name, declared_fields = getattr(obj, "name", None), getattr(obj, "fields", None)
    if isinstance(obj, type) or not (isinstance(name, str) and name) \
            or not isinstance(declared_fields, Mapping) \
            or not all(callable(getattr(obj, h, None)) for h in TECHNIQUE_HOOKS):
        return ("expected an instance of autotransfer.techniques.Technique (a name, a "
                "fields dict and its hook methods)")
    for field_name, entry in declared_fields.items():
        problem = declared.check_declared(field_name, entry, reserved)
        if problem is not None:
            return problem
    return None


def _settings(backbone: Backbone) -> dict[str, Any]:
    return {k: v for k, v in vars(backbone).items() if not k.startswith("_")}


class _Objects:
    """The plugin holding backbones given as objects; :meth:`PluginHost.portable` ships it
    by value, like any object plugin."""

    def __init__(self) -> None:
        self.backbones: dict[str, Backbone] = {}

    @hookspecs.hookimpl
    def register_backbones(self, register: Any) -> None:
        for backbone in self.backbones.values():
            register(backbone)


class _HookFailed(Exception):
    def __init__(self, hook: str, reason: str) -> None:
        super().__init__(reason)
        self.hook, self.reason = hook, reason
