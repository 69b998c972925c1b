"""The ``autotransfer`` command line (``main``) and its subcommands."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
