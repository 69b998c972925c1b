"""Every error autotransfer raises derives from :class:`AutotransferError`.

Messages name the bad value and what is accepted, in the style of Optuna's
``"Percentile must be between 0 and 100 inclusive, but got {percentile=}."``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

# torch re-raises an error from a DataLoader worker as ``type(msg)`` with the worker's whole
# traceback in ``msg``; the user is owed only the original message.
_WORKER = re.compile(r"\ACaught (\w+) in DataLoader worker process \d+\.\nOriginal "
                     r"Traceback.*\n(?:[\w.]+\.)?\1: (?P<message>.*?)\n?\Z", re.S)


class AutotransferError(Exception):
    """Root of all autotransfer errors."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str) and (m := _WORKER.match(args[0])):
            args = (m["message"],)
        super().__init__(*args)


class UnknownNameError(AutotransferError, LookupError):
    """A backbone, head, backend or other name that is not registered."""

    def __init__(self, kind: str, name: str, accepted: Iterable[str]) -> None:
        accepted = sorted(accepted)
        close = difflib.get_close_matches(name, accepted, n=5, cutoff=0.5) \
            if isinstance(name, str) else []  # e.g. final=True: no spelling is close
        parts = []
        if close:
            parts.append(f"close matches: {', '.join(close)}")
        if accepted and (len(accepted) <= 12 or not close):
            shown = accepted[:30]
            parts.append(f"accepted: {', '.join(shown)}{', ...' if len(accepted) > 30 else ''}")
        hint = "; ".join(parts) or "none is registered"
        super().__init__(f"Unknown {kind} {name!r}; {hint}.")
        self.kind, self.name, self.accepted = kind, name, accepted

    def __str__(self) -> str:  # LookupError would otherwise repr() the message
        return str(self.args[0])


class PluginError(AutotransferError):
    """A plugin registered something invalid (a duplicate name, a wrong type)."""


class WeightsUnavailableError(AutotransferError):
    """Pretrained weights cannot be loaded: a missing file, package, or unreachable hub."""


class DataError(AutotransferError, ValueError):
    """Data that cannot be used: empty, wrong shape, labels that do not fit the task."""


class ModalityError(DataError):
    """A text backbone given images, or an image backbone given text."""


class StrategyError(AutotransferError, ValueError):
    """A strategy value out of range or not supported by its backbone."""


class ConfigError(AutotransferError, ValueError):
    """A bad argument to search(), a bad study file, or a bad search space."""


class StorageError(AutotransferError):
    """A storage that cannot be opened, or a study that is not in it."""


class DeviceError(AutotransferError):
    """A device request that this machine cannot satisfy."""


class TrialFailed(AutotransferError):
    """A trial that cannot go on (a non-finite loss, out of memory); the reason is the message."""


class TrialCut(TrialFailed):
    """A trial stopped by the search's time budget before it validated one epoch: it has
    no score to keep (one that had is kept at its best epoch and recorded as cut)."""


def check_choice(kind: str, value: str, accepted: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``accepted``, else raise :class:`UnknownNameError`."""
    accepted = list(accepted)
    if value not in accepted:
        raise UnknownNameError(kind, value, accepted)
    return value


class SearchFailed(AutotransferError):
    """Every trial of a search failed: the cause is the data, the space or the setup."""


class ExportError(AutotransferError):
    """An export that cannot be made, or whose files do not reproduce the model."""


class OptimisticValidation(UserWarning):
    """The best trial's validation score overstates its test score beyond the noise."""


def known_fields(cls: type) -> type:
    """Class decorator for a dataclass: an unknown keyword names close matches, rather
    than Python's bare ``TypeError: unexpected keyword argument``."""
    import dataclasses
    import functools

    init = cls.__init__
    names = [f.name for f in dataclasses.fields(cls)]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):  # noqa: N807
        for key in kwargs:
            if key not in names:
                raise UnknownNameError(f"{cls.__name__} field", key, names)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls
