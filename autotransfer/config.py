"""Declarative study files: ``autotransfer run studies/quickstart.toml``.

Top-level keys mirror :func:`autotransfer.search`; ``[data]`` names the data source and
``[space]`` fixes or narrows search-space fields.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from . import data as data_mod
from .errors import ConfigError
from .plugins import register_plugin
from .space import SearchSpace

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SEARCH_KEYS = ("name", "task", "backbones", "n_trials", "timeout", "backend", "storage",
               "seed", "baselines", "valid_fraction", "pruner", "sampler", "keep_checkpoints",
               "patience", "warm_start")
BACKEND_KEYS = ("devices", "trials_per_device", "address", "max_retries", "resources")
EXTRA_KEYS = ("plugins",)  # plugin modules to register (ones not installed as packages)
TABLES = ("data", "space")
DATA_SOURCES = {
    "demo": ("demo", "image_size", "per_class", "valid_per_class", "test_per_class", "seed"),
    "folder": ("folder", "valid_folder", "test_folder", "on_error", "unlabeled"),
    "csv": ("csv", "image", "text", "label", "valid_csv", "test_csv", "on_error", "unlabeled"),
}


def load_study_file(path: str | Path) -> tuple[dict[str, Any], Any, Any]:
    """Read a study file -> (search keyword arguments, train data, valid data or None).

    A held-out test set ([data] test_per_class, test_folder or test_csv) is passed as the
    ``test`` keyword argument."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Study file {str(path)!r} does not exist; give the path of a TOML "
                          f"study file such as studies/quickstart.toml.")
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(cfg) - set(SEARCH_KEYS + BACKEND_KEYS + EXTRA_KEYS + TABLES))
    if unknown:
        raise ConfigError(f"Unknown key {unknown[0]!r} in {path}; accepted: "
                          f"{', '.join(SEARCH_KEYS + BACKEND_KEYS + EXTRA_KEYS)}, and the "
                          f"tables [data] and [space].")
    modules = cfg.get("plugins", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ConfigError(f"plugins in {path} must be a list of module names, but got "
                          f"plugins={modules!r}.")
    for module in modules:
        register_plugin(module)
    if "data" not in cfg:
        raise ConfigError(f"{path} has no [data] table; give one of "
                          f"{', '.join(f'{k} = ...' for k in DATA_SOURCES)}.")
    kwargs = {k: v for k, v in cfg.items() if k in SEARCH_KEYS}
    kwargs["backend"] = _backend(cfg, path)
    kwargs.setdefault("name", path.stem)
    base = path.parent
    if not isinstance(kwargs["name"], str):
        raise ConfigError(f"name in {path} must be a string, but got name={kwargs['name']!r}.")
    if "storage" in kwargs and not isinstance(kwargs["storage"], str):
        raise ConfigError(f"storage in {path} must be a path or URL string, but got "
                          f"storage={kwargs['storage']!r}.")
    if "storage" in kwargs and "://" not in kwargs["storage"]:
        kwargs["storage"] = str(base / kwargs["storage"])
    kwargs.setdefault("storage", str(base / f"{kwargs['name']}.db"))
    space = cfg.get("space", {})
    if not isinstance(space, dict):
        raise ConfigError(f"[space] in {path} must be a table.")
    kwargs["space"] = SearchSpace.from_dict(space)
    train, valid, test = _data(cfg["data"], base, path)
    if test is not None:
        kwargs["test"] = test
    if "unlabeled" in cfg["data"]:
        kwargs["unlabeled"] = _unlabeled(cfg["data"], base, path)
    return kwargs, train, valid


def _unlabeled(table: dict[str, Any], base: Path, path: Path) -> str:
    """``unlabeled = "folder/"`` in [data]: unlabeled target-domain images for domain
    adaptation, a folder relative to the study file."""
    value = table["unlabeled"]
    if "text" in table:
        raise ConfigError(f"unlabeled in [data] of {path} is a folder of images; for a text "
                          f"study pass unlabeled=[...] to autotransfer.search instead.")
    if not isinstance(value, str) or not (base / value).is_dir():
        raise ConfigError(f"unlabeled in [data] of {path} must name a folder of target-domain "
                          f"images (relative to the study file), but got unlabeled={value!r}.")
    return str(base / value)


def _backend(cfg: dict[str, Any], path: Path) -> Any:
    """``backend`` plus its settings (devices, address, ...) -> a Backend object."""
    from .backends import OptunaBackend, RayBackend, as_backend

    name = cfg.get("backend", "optuna")
    given = {k: cfg[k] for k in BACKEND_KEYS if k in cfg}
    accepted = {"optuna": ("devices", "trials_per_device"),
                "ray": ("devices", "trials_per_device", "address", "max_retries", "resources")}
    backend = as_backend(name)
    wrong = sorted(set(given) - set(accepted[backend.name]))
    if wrong:
        raise ConfigError(f"{wrong[0]} in {path} applies to backend='ray', not "
                          f"backend={name!r}; keys for {backend.name!r}: "
                          f"{', '.join(accepted[backend.name])}; use backend='ray' or remove "
                          f"{wrong[0]}.")
    return (RayBackend if backend.name == "ray" else OptunaBackend)(**given)


def _data(table: dict[str, Any], base: Path, path: Path) -> tuple[Any, Any, Any]:
    sources = [k for k in DATA_SOURCES if k in table]
    if len(sources) != 1:
        raise ConfigError(f"[data] in {path} needs exactly one of "
                          f"{', '.join(DATA_SOURCES)}; got {sources or 'none'} (keys: "
                          f"{sorted(table)}).")
    source = sources[0]
    unknown = sorted(set(table) - set(DATA_SOURCES[source]))
    if unknown:
        raise ConfigError(f"Unknown key {unknown[0]!r} in [data] of {path} (a {source} "
                          f"source); accepted: {', '.join(DATA_SOURCES[source])}.")
    opts = {k: v for k, v in table.items() if k not in (source, "unlabeled")}
    if source == "demo":
        splits = data_mod.demo(table["demo"], **opts)
        return (*splits, None) if len(splits) == 2 else splits
    if source == "folder":
        valid, test = opts.pop("valid_folder", None), opts.pop("test_folder", None)
        return (data_mod.from_folder(base / table["folder"], **opts),
                data_mod.from_folder(base / valid, **opts) if valid else None,
                data_mod.from_folder(base / test, **opts) if test else None)
    if "label" not in opts or ("image" in opts) == ("text" in opts):
        raise ConfigError(f"[data] csv in {path} needs label = '<column>' and one of "
                          f"image = '<path column>' or text = '<text column>'.")
    valid, test = opts.pop("valid_csv", None), opts.pop("test_csv", None)
    return (data_mod.from_csv(base / table["csv"], **opts),
            data_mod.from_csv(base / valid, **opts) if valid else None,
            data_mod.from_csv(base / test, **opts) if test else None)
