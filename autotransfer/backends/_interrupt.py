"""Ctrl-C that never lands inside a storage write.

A KeyboardInterrupt in the middle of a SQLite transaction can leave the process holding
the database lock, so the write that records the interruption would wait for itself.
While a search runs, SIGINT is deferred inside :func:`shielded` blocks (storage calls) and
raised as soon as the block ends; during training it is raised at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_depth = 0
_pending = False


def _handler(signum, frame):  # noqa: ARG001
    global _pending
    if _depth:
        _pending = True
    else:
        raise KeyboardInterrupt


@contextlib.contextmanager
def shielded():
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending:
            _pending = False
            raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_sigint():
    """Install the deferring handler (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
