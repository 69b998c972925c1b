"""Declarative study files: ``autotransfer run studies/quickstart.toml``.

Top-level keys mirror :func:`autotransfer.search`; ``[data]`` names the data source and
``[space]`` fixes or narrows search-space fields. Paths in a study file (data, storage,
warm-start folder) are relative to its folder; the default storage is
``<its folder>/<name>.db``, with any name made a safe file name (it never escapes).
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

from . import data as data_mod
from .errors import ConfigError
from .plugins import register_plugin
from .search import search
from .storage import safe_name
from .strategy.space import SearchSpace

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# search()'s keyword arguments, but those a study file gives another way: the data and the
# [data] table's splits, the [space] table, the CLI's --no-progress, its own folder as root.
# callbacks are Python objects: a study file cannot hold one
NOT_TOP_LEVEL = ("data", "space", "valid", "test", "unlabeled", "progress", "root", "callbacks")
SEARCH_KEYS = tuple(p.name for p in inspect.signature(search).parameters.values()
                    if p.kind is p.KEYWORD_ONLY and p.name not in NOT_TOP_LEVEL)
BACKEND_KEYS = ("devices", "trials_per_device", "address", "max_retries", "resources")
EXTRA_KEYS = ("plugins",)  # plugin modules to register (ones not installed as packages)
TABLES = ("data", "space")
DATA_SOURCES = {
    "demo": ("demo", "image_size", "per_class", "valid_per_class", "test_per_class", "seed"),
    "folder": ("folder", "valid_folder", "test_folder", "on_error", "unlabeled"),
    "csv": ("csv", "image", "text", "label", "valid_csv", "test_csv", "on_error", "unlabeled"),
}
FILES = ("csv", "valid_csv", "test_csv")  # [data] keys naming a file, and a folder:
FOLDERS = ("folder", "valid_folder", "test_folder", "unlabeled")
NAMES = ("demo", "image", "text", "label", "on_error")  # [data] keys holding a name
MAX_BYTES = 1 << 20  # a study file is a few lines; more is not one (or a resource bomb)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def load_study_file(path: str | Path) -> tuple[dict[str, Any], Any, Any]:
    """Read a study file -> (search keyword arguments, train data, valid data or None).

    A held-out test set ([data] test_per_class, test_folder or test_csv) is passed as the
    ``test`` keyword argument."""
    path = Path(path)
    cfg = _read(path)
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
    if not isinstance(cfg.get("data"), dict):
        got = f", but got data={cfg['data']!r}" if "data" in cfg else ""
        raise ConfigError(f"{path} has no [data] table{got}; give one of "
                          f"{', '.join(f'{k} = ...' for k in DATA_SOURCES)} in a [data] table.")
    kwargs = _top_level(cfg, path)
    space = cfg.get("space", {})
    if not isinstance(space, dict):
        raise ConfigError(f"[space] in {path} must be a table, but got space={space!r}.")
    kwargs["space"] = SearchSpace.from_dict(space)
    base = path.parent
    train, valid, test = _data(cfg["data"], base, path)
    if test is not None:
        kwargs["test"] = test
    if "unlabeled" in cfg["data"]:
        kwargs["unlabeled"] = _unlabeled(cfg["data"], base, path)
    return kwargs, train, valid


def _read(path: Path) -> dict[str, Any]:
    """The study file's TOML, refusing what is not a small UTF-8 text file (a device, a
    FIFO, a symlink to /dev/zero, a binary file) before reading it whole."""
    if not path.exists():
        raise ConfigError(f"Study file {str(path)!r} does not exist; give the path of a TOML "
                          f"study file such as studies/quickstart.toml.")
    if not path.is_file():
        raise ConfigError(f"Study file {str(path)!r} is not a regular file (a folder, device "
                          f"or FIFO); give the path of a TOML study file such as "
                          f"studies/quickstart.toml.")
    with path.open("rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"Study file {str(path)!r} has more than {MAX_BYTES} bytes; a study "
                          f"file must be at most {MAX_BYTES} bytes of TOML (the data go in "
                          f"the files [data] names).")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Study file {str(path)!r} is not UTF-8 text (byte "
                          f"{raw[exc.start]:#04x} at offset {exc.start}); a study file must "
                          f"be TOML text, e.g. studies/quickstart.toml.") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}; see studies/quickstart.toml "
                          f"for one that is.") from exc
    except RecursionError:
        raise ConfigError(f"{path} nests arrays or tables too deeply to read; a study file "
                          f"needs at most a few levels (see studies/quickstart.toml).") from None


def _top_level(cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    """search()'s keyword arguments from the top-level keys; paths relative to the file."""
    base = path.parent
    kwargs = {k: v for k, v in cfg.items() if k in SEARCH_KEYS}
    kwargs["backend"] = _backend(cfg, path)
    name = kwargs.setdefault("name", path.stem)
    if not isinstance(name, str) or not name.strip() or CONTROL.search(name):
        raise ConfigError(f"name in {path} must be a non-empty string without control "
                          f"characters (NUL, newline, ...), but got name={name!r}.")
    storage = kwargs.get("storage")
    if storage is not None and (not isinstance(storage, str) or not storage
                                or CONTROL.search(storage)):
        raise ConfigError(f"storage in {path} must be a path or URL string, but got "
                          f"storage={storage!r}.")
    if storage is not None and "://" not in storage:
        kwargs["storage"] = str(base / storage)  # the user's own choice of place
    kwargs.setdefault("storage", str(base / f"{safe_name(name)}.db"))  # never escapes
    warm = kwargs.get("warm_start")
    if isinstance(warm, str) and warm not in ("prior", "portfolio") and warm:
        if CONTROL.search(warm):
            raise ConfigError(f"warm_start in {path} must be 'prior', 'portfolio' or a "
                              f"folder's path, but got warm_start={warm!r}.")
        kwargs["warm_start"] = str(base / Path(warm).expanduser())
    return kwargs


def _check_paths(table: dict[str, Any], base: Path, path: Path) -> None:
    """Every name [data] gives is a string (a label may be a list of them), and every file
    or folder it names is a regular file (a CSV) or a folder, so that no device or FIFO
    is read (it would never end)."""
    for key in NAMES:
        value = table.get(key, "_")
        listed = key == "label" and isinstance(value, list) and bool(value)
        if not all(isinstance(v, str) and v for v in (value if listed else [value])):
            raise ConfigError(f"{key} in [data] of {path} must be a string"
                              f"{' or a list of column names' if key == 'label' else ''}, "
                              f"but got {key}={value!r}.")
    for key in FILES + FOLDERS:
        if key not in table or (key == "unlabeled" and "text" in table):
            continue
        value, want = table[key], "CSV file" if key in FILES else "folder"
        if not isinstance(value, str) or not value or CONTROL.search(value):
            raise ConfigError(f"{key} in [data] of {path} must be the path of a {want} "
                              f"(relative to the study file), but got {key}={value!r}.")
        target = base / value
        if not target.exists():
            raise ConfigError(f"{key} in [data] of {path}: {str(target)!r} does not exist; "
                              f"give the path of a {want} relative to the study file.")
        if not (target.is_file() if key in FILES else target.is_dir()):
            what = "a regular file (a folder, device or FIFO)" if key in FILES else \
                "a folder"
            raise ConfigError(f"{key} in [data] of {path}: {str(target)!r} is not {what}; "
                              f"give the path of a {want} relative to the study file.")


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
    _check_paths(table, base, path)
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
