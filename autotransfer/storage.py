"""Where studies live: Optuna storages from a URL or a path, and each study's folder.

The Optuna internals autotransfer needs (a study's storage and id, a trial's id) are read
here only, through the small functions under "Optuna access" below.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

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
EXCLUDED = "autotransfer:excluded"  # failed for a cause fixed before a rerun: not counted
RUN = "autotransfer:run"  # the search() call that ran a trial
TEST = "autotransfer:test"  # model key -> its scores on the held-out test set
REFIT = "autotransfer:refit"  # trial number -> its refit on all labelled data
SOUP = "autotransfer:soup"  # the weight soup of kept trials: path, method, members
ENSEMBLE = "autotransfer:ensemble"  # the ensemble of kept trials: path, method, members
FINAL = "autotransfer:final"  # "ensemble" | "soup": the study's model (search(final=))
COMBINED = {"soup": SOUP, "ensemble": ENSEMBLE}  # models made of kept trials: their keys
RANKING = "autotransfer:ranking"  # backbone -> its transferability (ranking row) before search
PROFILE = "autotransfer:profile"  # the data's features and best strategies, for warm starts
PRIOR = "autotransfer:prior"  # the prior studies a warm start began from
LAUNCHES = "autotransfer:launches"  # search() calls begun on the study: seeds them apart

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)  # trials that are over


@dataclass(frozen=True)
class StorageSpec:
    """A storage to (re)open in any process: the URL, or a journal file."""

    url: str
    journal: str | None = None

    def open(self) -> optuna.storages.BaseStorage:
        try:
            if self.journal:
                from optuna.storages.journal import JournalFileBackend, JournalStorage

                return JournalStorage(JournalFileBackend(self.journal))
            kwargs: dict[str, Any] = {}
            if self.url.startswith("sqlite"):
                # Several worker processes write one SQLite file: wait for the lock instead
                # of failing at once. For many workers use a journal file or PostgreSQL.
                kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
            return optuna.storages.RDBStorage(self.url, **kwargs)
        except Exception as exc:
            raise StorageError(
                f"Cannot open storage {self.shown!r}: {type(exc).__name__}: "
                f"{str(exc).replace(self.url, self.shown).rstrip('.')}. Accepted: {ACCEPTED}."
            ) from None  # the chained error would print the password again

    @property
    def shown(self) -> str:
        """The URL as messages show it: without its password."""
        if "@" not in self.url or "://" not in self.url:
            return self.url
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is shown as given
            return self.url

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
    """``None`` -> ``<root>/studies/<name>.db``; a path or URL otherwise. Touches nothing."""
    if storage is None:
        path = (root or Path.cwd()) / "studies" / f"{safe_name(name)}.db"
        return StorageSpec(f"sqlite:///{path.resolve()}")
    if not isinstance(storage, (str, os.PathLike)):
        raise StorageError(f"storage must be a path or a URL, but got {storage!r}; "
                           f"accepted: {ACCEPTED}.")
    text = os.fspath(storage)
    if text in ("sqlite:///:memory:", "sqlite://", ":memory:"):
        raise StorageError(f"storage={text!r} keeps the study in memory: worker processes "
                           f"cannot share it and it is gone when the search returns; accepted: "
                           f"{ACCEPTED}.")
    if "://" in text:
        return StorageSpec(text)
    path = Path(text)
    if path.suffix in JOURNAL_SUFFIXES:
        return StorageSpec(f"journal:{path.resolve()}", journal=str(path.resolve()))
    if path.suffix in SQLITE_SUFFIXES:
        return StorageSpec(f"sqlite:///{path.resolve()}")
    raise StorageError(f"Cannot tell what storage {text!r} is; accepted: {ACCEPTED}.")


def make_room(spec: StorageSpec, name: str) -> Path:
    """Create the storage's folder and the study's folder; refuse ones that cannot be written,
    and a storage file that cannot be, before any folder is made."""
    if spec.path is not None and spec.path.is_file():
        try:  # opened to append, nothing written: fails on a read-only or immutable file
            open(spec.path, "ab").close()
        except OSError as exc:
            raise StorageError(f"Storage file {str(spec.path)!r} cannot be written "
                               f"({exc.strerror or exc}): a search records every trial there; "
                               f"make it writable, or give another storage path.") from exc
    folders = [workdir_for(spec, name)] + ([spec.path.parent] if spec.path else [])
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"Cannot create folder {str(folder)!r} for storage "
                               f"{spec.url!r}: {exc.strerror or exc}; give a storage path in "
                               f"a folder you can write.") from exc
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StorageError(f"Folder {str(folder)!r} of storage {spec.url!r} is not "
                               f"writable; give a storage path in a folder you can write.")
    return folders[0]


def existing(storage: str | os.PathLike) -> StorageSpec:
    """Like :func:`resolve`, for a storage that must already exist (reviewing)."""
    spec = resolve(storage, "_")
    if spec.path is not None and not spec.path.exists():
        raise StorageError(f"Storage file {str(spec.path)!r} does not exist; {ACCEPTED}.")
    if spec.path is not None and spec.path.is_file():
        _check_kind(spec)  # before opening: opening an empty file would make it a database
    return spec


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_kind(spec: StorageSpec) -> None:
    """Refuse a file that is not the storage its suffix says, without writing to it."""
    with open(spec.path, "rb") as f:
        head = f.read(4096)
    if spec.journal is None:
        if not head.startswith(_SQLITE_MAGIC):
            what = "is empty" if not head else f"starts with {head[:16]!r}"
            raise StorageError(f"Storage file {str(spec.path)!r} is not an SQLite database "
                               f"(it {what}); {ACCEPTED}.")
        return
    first = head.split(b"\n", 1)[0]
    try:
        ok = not head or "op_code" in json.loads(first)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise StorageError(f"Storage file {str(spec.path)!r} is not an Optuna journal (its "
                           f"first line is {first[:60]!r}, not a JSON operation); {ACCEPTED}.")


def workdir_for(spec: StorageSpec, name: str) -> Path:
    """The study's own folder (checkpoints, caches, locks), derived from storage *and* name.

    ``studies/pets.db`` + name ``pets`` -> ``studies/pets.db.d/pets``: two storages in one
    folder, or two studies in one storage, never share files, and the folder's name (with a
    dot) can never shadow an importable package next to the user's script. A storage that
    is not a local file gets ``./studies/<hash of its URL>.d/<name>``.
    """
    if spec.path is not None:
        base = spec.path.parent / f"{spec.path.name}.d"
    else:
        base = Path.cwd() / "studies" / f"{hashlib.sha1(spec.url.encode()).hexdigest()[:10]}.d"
    return base / safe_name(name)


def safe_name(name: str) -> str:
    """A file name for any study name: no separators, no '..', distinct for distinct names."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:80] or "study"
    if slug != name:
        slug += "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return slug


def lock(spec: StorageSpec, name: str) -> Any:
    """A lock held while a study is created or enqueued, shared by every process here.

    A new SQLite or journal file is created once, and baselines and the warm-start points
    are enqueued once, however many ``search`` processes start on it together.
    """
    from filelock import FileLock

    return FileLock(str(workdir_for(spec, name).parent / f"{safe_name(name)}.lock"))


def create_or_load(spec: StorageSpec, storage: optuna.storages.BaseStorage, name: str, *,
                   direction: str, kind: str,
                   meta: dict[str, Any]) -> tuple[optuna.Study, dict | None]:
    """Create study ``name`` with ``meta`` as its record, or load it: ``(study, old meta)``,
    old meta None when it was created now. Call it under :func:`lock`.

    Only a study autotransfer made for the same ``kind`` of job ("search", "distill") is
    ever loaded: a plain Optuna study, or a search's name given to a distillation (or the
    reverse), is refused before anything is written into it.
    """
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception as exc:
        raise StorageError(f"Cannot create or load study {name!r} in {spec.url!r}: "
                           f"{type(exc).__name__}: {exc}") from exc
    else:
        set_study_attr(study, META, {"kind": kind, **meta})
        return study, None
    old = study_attrs(study).get(META)
    made = study.direction.name.lower()
    if old is None and (made != direction or study.get_trials(deepcopy=False)):
        raise StorageError(
            f"Study {name!r} in {spec.url!r} was not made by autotransfer (an Optuna study "
            f"with {len(study.trials)} trial(s), direction={made!r}); autotransfer never "
            f"writes into another program's study: pass name= a new name.")
    if old is None:  # ours, left empty by a process killed while creating it
        set_study_attr(study, META, {"kind": kind, **meta})
        return study, None
    if old.get("kind", "search") != kind:
        parent = f" of study {old['parent']!r}" if old.get("parent") else ""
        raise StorageError(
            f"Study {name!r} in {spec.url!r} is a {old.get('kind', 'search')} study{parent}, "
            f"not a {kind} study; pass name= a new name.")
    return study, old


def next_launch(study: optuna.Study) -> int:
    """Count one more search() call on the study (under its lock); the calls before it."""
    n = int(study_attrs(study).get(LAUNCHES, 0))
    set_study_attr(study, LAUNCHES, n + 1)
    return n


def excluded(study: optuna.Study) -> set[int]:
    """Numbers of the trials a study keeps out of ``n_trials``: every trial of a search that
    all failed (a cause the user fixes before rerunning). Kept on the study, since a
    finished trial's attributes cannot change."""
    return set(study_attrs(study).get(EXCLUDED, []))


def exclude(study: optuna.Study, numbers: list[int]) -> None:
    set_study_attr(study, EXCLUDED, sorted(excluded(study) | set(numbers)))


def uncounted(trial: Any, left_out: set[int]) -> bool:
    """A trial that does not count toward ``n_trials``: interrupted, or excluded."""
    return bool(trial.system_attrs.get(INTERRUPTED)) or trial.number in left_out


def study_names(storage: optuna.storages.BaseStorage, *, searches: bool = False) -> list[str]:
    """The studies in ``storage``; ``searches``: only searches, not the sub-studies that
    :meth:`Study.distill` keeps beside them."""
    return [s.study_name for s in storage.get_all_studies()
            if not (searches and s.system_attrs.get(META, {}).get("kind") == "distill")]


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


# ---------------------------------------------------------------------------- Optuna access
# Optuna keeps a study's storage and id, and a trial's id, private; these read them, so an
# Optuna release that moves them needs a change here only.

def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage ``study`` lives in."""
    return study._storage


def study_attrs(study: optuna.Study) -> dict[str, Any]:
    """The study's system attributes, as its storage holds them now."""
    return study._storage.get_study_system_attrs(study._study_id)


def set_study_attr(study: optuna.Study, key: str, value: Any) -> None:
    """Set one system attribute of the study (a JSON-serialisable ``value``)."""
    study._storage.set_study_system_attr(study._study_id, key, value)


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of a live or frozen trial (its number counts within its study)."""
    return trial._trial_id


def frozen_trial(study: optuna.Study, tid: int) -> optuna.trial.FrozenTrial:
    """Trial ``tid`` of ``study`` as its storage holds it now."""
    return study._storage.get_trial(tid)


def set_trial_attrs(study: optuna.Study, tid: int, *, user: dict[str, Any] | None = None,
                    system: dict[str, Any] | None = None) -> None:
    """Set user and system attributes of trial ``tid`` (of a running trial only)."""
    for key, value in (user or {}).items():
        study._storage.set_trial_user_attr(tid, key, value)
    for key, value in (system or {}).items():
        study._storage.set_trial_system_attr(tid, key, value)


def set_trial_state(study: optuna.Study, tid: int, state: TrialState) -> None:
    """End running trial ``tid`` in ``state`` without a value (e.g. FAIL)."""
    study._storage.set_trial_state_values(tid, state)


def report_value(study: optuna.Study, tid: int, step: int, value: float) -> None:
    """Record trial ``tid``'s intermediate ``value`` at ``step``, as ``trial.report`` does."""
    study._storage.set_trial_intermediate_value(tid, step, value)


def read_only_studies(path: Path) -> list[Any]:
    """The studies (FrozenStudy: name, attributes) in SQLite file ``path``, read-only: Optuna
    would add its tables to any SQLite file. Raises for a file that is not an Optuna
    storage, and ValueError or RecursionError for a stored attribute that is not JSON."""
    uri = f"{path.resolve().as_uri()}?mode=ro"  # a connection, not a URL: any file name
    storage = optuna.storages.RDBStorage(
        "sqlite://", skip_compatibility_check=True, skip_table_creation=True,
        engine_kwargs={"creator": lambda: sqlite3.connect(uri, uri=True)})
    try:
        return storage.get_all_studies()
    finally:
        storage.engine.dispose()


# How trials rank, best first: one key for best_trial, the leaderboard, model_path and the
# checkpoints a search keeps.
VAL_LOSS = "val_loss"  # a trial's validation loss, where its head or runner records one
TIE_RULE = ("ties on the validation score go to the lower validation loss (where recorded), "
            "then the fewer seconds, then the lower trial number")
_DIGITS = 9  # scores equal to this many decimals are tied (float noise is not a difference)


def rank_key(value: Any, maximize: bool, val_loss: Any, seconds: Any, number: int) -> tuple:
    """Where a trial ranks, best first: by its validation score; among ties, by the lower
    validation loss where recorded, then the fewer seconds, then the lower trial number.
    Missing values (None, NaN) go last. ``best_trial``, the leaderboard and ``model_path``
    all rank with this key."""
    def known(v: Any) -> float:
        return math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    score = known(value)
    if score != math.inf:
        score = round(-score if maximize else score, _DIGITS)
    return (score, known(val_loss), known(seconds), number)
