"""The plugin host: entry-point loading, registration, and the backbone/head registries.

Plugins are found through the ``autotransfer`` entry-point group (first-party ones too).
A :class:`PluginHost` is an object, as pluggy's ``PluginManager`` is: tests make a fresh
one each, and a worker process rebuilds the parent's from :meth:`PluginHost.portable`.
Loading is guarded: a plugin that fails to import, whose hook raises, that registers
something that is not a backbone or head, or whose names collide with an earlier
plugin's is reported by name and skipped; the others load. Set
``AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD=1`` to autoload none.

Besides what plugins register, a backbone can be named from the catalogue (``timm/<model>``,
``hf/<repo>``, see :mod:`autotransfer.catalogue`), made on first lookup and kept by the host,
or given as an object (:meth:`PluginHost.add_backbone`), which the host holds in a plugin of
its own so that it reaches worker processes like any other.

The module functions (``register_plugin``, ``get_backbone``, ...) act on the current host.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import os
import types
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import AutotransferError, ConfigError, PluginError, UnknownNameError

if TYPE_CHECKING:
    from .backbones import Backbone
    from .head import Head

ENTRY_POINT_GROUP = "autotransfer"
DISABLE_AUTOLOAD_ENV = "AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD"
OBJECTS = "autotransfer:objects"  # the plugin holding backbones given as objects


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

    def backbone(self, name: str) -> Backbone:
        """The registered backbone ``name``, else the catalogue's ``timm/...`` or ``hf/...``
        one (made on first lookup, then kept); the error lists close matches."""
        from . import catalogue

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
        from . import catalogue
        from .backbones import Backbone

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
                                    error=self.failed.get(name)))
        listed = {i.name for i in infos}
        return infos + [PluginInfo(n, (), (), error=e) for n, e in self.failed.items()
                        if n not in listed]


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
    from . import catalogue

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
    for ``{label column: task}`` a :class:`~autotransfer.multitask.MultiTaskHead` built
    from the registered heads (the first task is the primary one)."""
    if isinstance(task, Mapping):
        from .multitask import MultiTaskHead

        return MultiTaskHead(task)
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
    from .catalogue import no_match

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
