"""Files autotransfer writes: atomically, and never over a file it did not write.

Every page, model file and export goes through :func:`check_target` before any work and
:func:`replacing` to write: the content goes to a temporary sibling, is checked, and is then
renamed over the target in one step, so a crash, a kill or a failed check leaves the
previous file byte for byte as it was. A target that is a study's storage, or a file that
autotransfer cannot recognise as its own output of that kind, is refused, never replaced.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import StorageError

SQLITE_MAGIC = b"SQLite format 3\x00"
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.(tmp|old)$")


def foreign_kind(path: Path) -> str | None:
    """What ``path`` is when it is something autotransfer must never write over."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head.startswith(SQLITE_MAGIC):
        return "a SQLite database (a study's storage, or another program's)"
    first = head.split(b"\n", 1)[0]
    if first.startswith(b"{") and b'"op_code"' in first:
        return "an Optuna journal (a study's storage)"
    return None


def check_target(path: str | os.PathLike, *, what: str, ours: Callable[[Path], bool],
                 protect: Iterable[str | os.PathLike | None] = ()) -> Path:
    """The absolute target path, once it is known that writing there destroys nothing.

    Args:
        path: Where the caller will write.
        what: What is written, for messages ("the report", "the ONNX export").
        ours: Whether an existing file (or folder) there is one autotransfer wrote of this
            kind, and so may be replaced.
        protect: Files that must never be replaced (the study's own storage).

    Raises:
        StorageError: the target is a protected file, a storage, or a file that
            autotransfer did not write.
    """
    target = Path(os.fspath(path)).expanduser().absolute()
    for keep in protect:
        if keep is not None and _same(target, Path(keep)):
            raise StorageError(f"Refusing to write {what} to {str(target)!r}: that is the "
                               f"study's own storage, which it would destroy; choose another "
                               f"path.")
    if not (target.exists() or target.is_symlink()):
        return target
    if not (target.is_file() or target.is_dir()):  # a device, a FIFO, a dangling link
        raise StorageError(f"Refusing to write {what} to {str(target)!r}: it is not a "
                           f"regular file or folder; choose another path.")
    kind = None if target.is_dir() else foreign_kind(target)
    if kind is not None:
        raise StorageError(f"Refusing to write {what} over {str(target)!r}: it is {kind}, "
                           f"which it would destroy; choose another path.")
    if not ours(target):
        raise StorageError(f"Refusing to write {what} over {str(target)!r}: it exists and "
                           f"autotransfer did not write it; remove it yourself or choose "
                           f"another path.")
    return target


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def replacing(target: Path, *, what: str = "the file") -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` to write; rename it over ``target`` when the
    block ends without an error, remove it otherwise.

    A folder (a timm or transformers export) is swapped in two renames: the previous one
    is kept under a temporary name until the new one is in place, so no kill loses both.
    Temporary files left by a killed earlier write are removed first.
    """
    sweep(target)
    tmp = _sibling(target, "tmp")
    try:
        yield tmp
        if tmp.is_dir() and target.is_dir():
            old = _sibling(target, "old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except OSError as exc:
        _remove(tmp)
        raise StorageError(f"Cannot write {what} to {str(target)!r}: {type(exc).__name__}: "
                           f"{exc}; check the disk space and the folder's permissions.") from exc
    except BaseException:
        _remove(tmp)
        raise


def _sibling(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{kind}")


def sweep(target: Path) -> list[Path]:
    """Remove the temporary siblings of ``target`` left by writers that are no longer alive."""
    removed = []
    folder = target.parent
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TMP.match(entry.name)
        if m and m["name"] == target.name and not _alive(int(m["pid"])):
            _remove(entry)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
