"""Plugins: the host that loads them (``host``) and the lookups that act on the current
host (``lookup``): backbones, heads and techniques by name, globs, and the catalogue."""

from .host import (
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    OBJECTS,
    PluginHost,
    PluginInfo,
)
from .lookup import (
    backbone_registry,
    create_backbone,
    current,
    get_backbone,
    get_head,
    head_registry,
    list_backbones,
    list_plugins,
    modules_for,
    no_match,
    register_plugin,
    reset,
    resolve_backbones,
    set_current,
    technique_registry,
    unregister_plugin,
    use,
)

__all__ = ["DISABLE_AUTOLOAD_ENV", "ENTRY_POINT_GROUP", "OBJECTS", "PluginHost", "PluginInfo",
           "backbone_registry", "create_backbone", "current", "get_backbone", "get_head",
           "head_registry", "list_backbones", "list_plugins", "modules_for", "no_match",
           "register_plugin",
           "reset", "resolve_backbones", "set_current", "technique_registry",
           "unregister_plugin", "use"]
