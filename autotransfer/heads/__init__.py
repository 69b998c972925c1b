"""Task heads: the interface, and the multi-task head built from registered ones."""

from ._base import Head

__all__ = ["Head"]
