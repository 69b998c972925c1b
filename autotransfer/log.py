"""The library's logging, modelled on ``optuna.logging``.

Every module logs through ``get_logger(__name__)``; the library root logger ``autotransfer``
gets one default handler that writes ``[autotransfer] <message>`` to standard error at INFO.
Applications quieten it with ``set_verbosity(logging.WARNING)``, or route it through their own
handlers with ``disable_default_handler()`` and ``enable_propagation()``.
"""
from __future__ import annotations

import logging
import sys
import threading
from logging import CRITICAL, DEBUG, ERROR, INFO, WARNING

__all__ = ["CRITICAL", "DEBUG", "ERROR", "INFO", "WARNING", "disable_default_handler",
           "disable_propagation", "enable_default_handler", "enable_propagation", "get_logger",
           "get_verbosity", "set_verbosity"]

_LIBRARY = __name__.split(".")[0]
_lock = threading.Lock()
_default_handler: logging.Handler | None = None


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not at creation.

    A redirected or captured standard error (pytest's capsys, ``contextlib.redirect_stderr``)
    then receives the messages, as a ``print(..., file=sys.stderr)`` would.
    """

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        # logging.StreamHandler.__init__ assigns the stream; the property ignores it.
        pass


def _root() -> logging.Logger:
    return logging.getLogger(_LIBRARY)


def _configure_library_root_logger() -> logging.Handler:
    """Give the library root logger its default handler, once; return that handler."""
    global _default_handler
    with _lock:
        if _default_handler is not None:
            return _default_handler
        _default_handler = _StderrHandler()
        _default_handler.setFormatter(logging.Formatter(f"[{_LIBRARY}] %(message)s"))
        root = _root()
        root.addHandler(_default_handler)
        root.setLevel(logging.INFO)
        root.propagate = False
        return _default_handler


def get_logger(name: str) -> logging.Logger:
    """Return the logger ``name`` (a module's ``__name__``) under the library root logger."""
    _configure_library_root_logger()
    return logging.getLogger(name)


def get_verbosity() -> int:
    """Return the level of the library root logger, e.g. ``logging.INFO`` (the default)."""
    _configure_library_root_logger()
    return _root().getEffectiveLevel()


def set_verbosity(level: int) -> None:
    """Set the level of the library root logger, e.g. ``logging.WARNING`` to hide progress."""
    _configure_library_root_logger()
    _root().setLevel(level)


def disable_default_handler() -> None:
    """Stop the default handler writing the library's messages to standard error."""
    _root().removeHandler(_configure_library_root_logger())


def enable_default_handler() -> None:
    """Write the library's messages to standard error again (the default)."""
    _root().addHandler(_configure_library_root_logger())


def disable_propagation() -> None:
    """Keep the library's messages from the root logger's handlers (the default)."""
    _configure_library_root_logger()
    _root().propagate = False


def enable_propagation() -> None:
    """Pass the library's messages on to the root logger's handlers too (e.g. for caplog)."""
    _configure_library_root_logger()
    _root().propagate = True
