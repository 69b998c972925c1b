"""Reading a CSV file of a data set: only a regular UTF-8 text file is read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import DataError

CSV_ACCEPTED = "give the path of a UTF-8 CSV file with a header row"


def read_csv(path: Path) -> Any:
    """A CSV file as a DataFrame; a path that is no regular file (a device, a FIFO: read
    forever), a binary or non-UTF-8 file, or one pandas cannot parse is a DataError."""
    import pandas as pd

    if not path.exists():
        link = f" (a link to {os.readlink(path)!r}, which does not exist)" \
            if path.is_symlink() else ""
        raise DataError(f"CSV file {str(path)!r} does not exist{link}; {CSV_ACCEPTED}, a "
                        f"label column and an image-path or text column.")
    if not path.is_file():
        real = os.path.realpath(path)
        via = f" (a link to {real!r})" if real != os.path.abspath(path) else ""
        raise DataError(f"CSV path {str(path)!r}{via} is not a regular file but a "
                        f"{_file_kind(real)}; {CSV_ACCEPTED}.")
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    nul = head.find(b"\0")
    if nul >= 0:
        raise DataError(f"CSV file {str(path)!r} is binary (a NUL byte at offset {nul}), not "
                        f"text; {CSV_ACCEPTED}.")
    try:
        return pd.read_csv(path, encoding="utf-8")
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start:exc.start + 1].hex()
        raise DataError(f"CSV file {str(path)!r} is not UTF-8 text (byte 0x{byte}: "
                        f"{exc.reason}); {CSV_ACCEPTED}, e.g. re-save it as UTF-8.") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as exc:
        raise DataError(f"Cannot read CSV file {str(path)!r}: {type(exc).__name__}: {exc}; "
                        f"{CSV_ACCEPTED}.") from exc


def _file_kind(path: str) -> str:
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "path that cannot be read"
    return ("folder" if stat.S_ISDIR(mode) else "character device" if stat.S_ISCHR(mode)
            else "block device" if stat.S_ISBLK(mode) else "FIFO (named pipe)"
            if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "special file")
