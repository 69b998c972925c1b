"""Where studies live: Optuna storages from a URL or a path, and each study's folder."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from .errors import StorageError

JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
ACCEPTED = ("a path to a .db file (SQLite), a path to a .log file (Optuna journal), "
            "or any URL Optuna's RDBStorage accepts (sqlite:///..., postgresql://...)")

# Keys of the Optuna system attributes autotransfer keeps (hidden from optuna-dashboard).
STRATEGY = "autotransfer:strategy"
CHECKPOINT = "autotransfer:checkpoint"
HOST = "autotransfer:host"
PID = "autotransfer:pid"
INTERRUPTED = "autotransfer:interrupted"
HISTORY = "autotransfer:history"
META = "autotransfer:meta"
RESULT = "autotransfer:result"


@dataclass(frozen=True)
class StorageSpec:
    """A storage to (re)open in any process: the URL, or a journal file."""

    url: str
    journal: str | None = None

    def open(self) -> optuna.storages.BaseStorage:
        try:
            if self.journal:
                from optuna.storages.journal import JournalFileBackend, JournalStorage

                Path(self.journal).parent.mkdir(parents=True, exist_ok=True)
                return JournalStorage(JournalFileBackend(self.journal))
            kwargs: dict[str, Any] = {}
            if self.url.startswith("sqlite"):
                # Several worker processes write one SQLite file: wait for the lock instead
                # of failing at once. For many workers use a journal file or PostgreSQL.
                kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
            return optuna.storages.RDBStorage(self.url, **kwargs)
        except Exception as exc:
            raise StorageError(
                f"Cannot open storage {self.url!r}: {type(exc).__name__}: {exc}. "
                f"Accepted: {ACCEPTED}."
            ) from exc

    @property
    def path(self) -> Path | None:
        """The local file behind the storage, if it is one."""
        if self.journal:
            return Path(self.journal)
        if self.url.startswith("sqlite:///"):
            return Path(self.url[len("sqlite:///"):])
        return None


def resolve(storage: str | os.PathLike | None, name: str, *,
            root: Path | None = None) -> StorageSpec:
    """``None`` -> ``<root>/studies/<name>.db``; a path or URL otherwise."""
    if storage is None:
        path = (root or Path.cwd()) / "studies" / f"{name}.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return StorageSpec(f"sqlite:///{path.resolve()}")
    text = os.fspath(storage)
    if "://" in text:
        if text.startswith("sqlite:///") and text != "sqlite:///:memory:":
            Path(text[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return StorageSpec(text)
    path = Path(text)
    if path.suffix in JOURNAL_SUFFIXES:
        return StorageSpec(f"journal:{path.resolve()}", journal=str(path.resolve()))
    if path.suffix in SQLITE_SUFFIXES:
        path.parent.mkdir(parents=True, exist_ok=True)
        return StorageSpec(f"sqlite:///{path.resolve()}")
    raise StorageError(f"Cannot tell what storage {text!r} is; accepted: {ACCEPTED}.")


def existing(storage: str | os.PathLike) -> StorageSpec:
    """Like :func:`resolve`, for a storage that must already exist (reviewing)."""
    spec = resolve(storage, "_")
    if spec.path is not None and not spec.path.exists():
        raise StorageError(f"Storage file {str(spec.path)!r} does not exist; {ACCEPTED}.")
    return spec


def workdir_for(spec: StorageSpec, name: str) -> Path:
    """The study's folder (checkpoints, caches): next to a file storage, else ./studies/."""
    base = spec.path.parent if spec.path is not None else Path.cwd() / "studies"
    return base / name


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def this_process() -> dict[str, Any]:
    return {HOST: socket.gethostname(), PID: os.getpid()}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
