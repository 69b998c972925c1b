"""The ``autotransfer`` command line: the parser and ``main``.

Exit codes: 0 done; 1 the work failed (every trial of a search, an export); 2 a mistake
in what was given (an option, name or value, a file that is not a model or a study that
is not there, a data column, a plugin that is not registered); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import AutotransferError, ExportError, SearchFailed, TrialFailed
from .commands import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    cmd_backbones,
    cmd_best,
    cmd_export,
    cmd_leaderboard,
    cmd_plugins,
    cmd_predict,
    cmd_report,
    cmd_run,
)
from .evaluate import cmd_evaluate

# The work failed (exit 1); every other AutotransferError is a mistake in the input (exit 2).
WORK_FAILURES = (SearchFailed, TrialFailed, ExportError)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes print ``error: ...`` (what is wrong and what is accepted), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if "not allowed with argument" in message:  # two options that exclude each other
            message += " (give one of them, not both)"
        self.exit(EXIT_USAGE, f"error: {message}; see `{self.prog} --help`.\n")


def _trial_number(text: str) -> int:
    """A trial number for --trial: an integer >= 0, as the leaderboard's trial column."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a trial number (an integer >= 0, as in the "
                                         f"leaderboard's trial column), but got {text!r}")
    return value


def _count(text: str) -> int:
    """A row count for --top: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autotransfer",
        description="Search the best way to transfer a pretrained model to your task.",
        epilog="exit codes: 0 done, 1 the work failed, 2 a mistake in what was given, "
               "130 interrupted")
    parser.add_argument("--version", action="version", version=f"autotransfer {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("plugins", help="list installed plugins and what they register")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("backbones", help="list registered backbones, or timm/ and hf/ models")
    p.add_argument("pattern", nargs="?", default="*",
                   help="glob, e.g. 'efficientnet*', 'timm/convnext*', 'hf/*'")
    p.add_argument("--modality", choices=["image", "text"])
    p.add_argument("--all", "--include-unavailable", dest="include_unavailable",
                   action="store_true",
                   help="with a timm/ glob, list models whose weights are not here too")
    p.set_defaults(func=cmd_backbones)

    p = sub.add_parser("run", help="run (or resume) the search a study file describes")
    p.add_argument("study_file", help="a TOML study file, e.g. studies/quickstart.toml")
    p.add_argument("--n-trials", type=_count, help="override n_trials")
    p.add_argument("--timeout", type=float, help="override timeout (seconds)")
    p.add_argument("--top", type=_count, default=None,
                   help="rows of the leaderboard to print")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("leaderboard", help="print a stored study's trials, best first")
    p.add_argument("storage", help="a .db/.log file or an Optuna storage URL")
    p.add_argument("--name", help="study name (needed when the storage holds several)")
    p.add_argument("--top", type=_count, default=None, help="only the best K rows")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--all-columns", action="store_true", help="every column in table format")
    shown.add_argument("--columns", metavar="A,B,C",
                       help="these columns, in this order (any format), e.g. "
                            "trial,accuracy,adapter,lora_rank")
    p.set_defaults(func=cmd_leaderboard)
    _results_commands(sub)
    return parser


def _results_commands(sub) -> None:
    p = sub.add_parser("report", help="write a study's HTML report (one offline file)")
    p.add_argument("storage", help="a .db/.log file or an Optuna storage URL")
    p.add_argument("--name", help="study name (needed when the storage holds several)")
    p.add_argument("-o", "--output", help="the HTML file (default: beside the storage, "
                                          "studies/x.db -> studies/x.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("best", help="print the path of a study's best model file")
    p.add_argument("storage", help="a .db/.log file or an Optuna storage URL")
    _trial_options(p)
    p.set_defaults(func=cmd_best)

    p = sub.add_parser("predict", help="predict with a saved model file or a study's best")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("inputs", nargs="+", help="image files or folders (image models), or "
                                             "strings (text models)")
    p.add_argument("--proba", action="store_true", help="class probabilities too")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--batch-size", type=_count, default=64)
    _trial_options(p)
    _plugin_option(p)
    p.set_defaults(func=cmd_predict)

    _evaluate_command(sub)

    p = sub.add_parser("export", help="export a saved model: onnx, torchscript, timm, "
                                      "transformers")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--format", required=True,
                   choices=["onnx", "torchscript", "timm", "transformers"])
    p.add_argument("-o", "--output", help="where to write (default: beside the model)")
    _trial_options(p)
    _plugin_option(p)
    p.set_defaults(func=cmd_export)


def _evaluate_command(sub) -> None:
    p = sub.add_parser("evaluate", help="score a saved model, or a study's best, on labelled "
                                        "data: a folder of class subfolders or a CSV")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("data", help="a folder with one subfolder of examples per class, or a "
                                ".csv file (then --label, and --image or --text)")
    p.add_argument("--label", metavar="COLUMN", help="the CSV's label column (several, "
                                                     "comma-separated, for a multi-task model)")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--image", metavar="COLUMN",
                       help="the CSV's column of image paths (relative to the CSV's folder)")
    given.add_argument("--text", metavar="COLUMN", help="the CSV's text column")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--batch-size", type=_count, default=64)
    _trial_options(p)
    _plugin_option(p)
    p.set_defaults(func=cmd_evaluate)


MODEL_HELP = ("a model file (Predictor.save, or a study's checkpoint), or a study's storage "
              "(.db/.log file or URL): its best trial's model, or --trial K's")


def _trial_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="study name (needed when the storage holds several)")
    p.add_argument("--trial", type=_trial_number,
                   help="this trial's model instead of the best")


def _plugin_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="register a plugin module first (one that provides the model's "
                        "backbone and is not installed as an entry point); repeatable")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("autotransfer")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from .. import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AutotransferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED if isinstance(exc, WORK_FAILURES) else EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `autotransfer leaderboard x.db | head`: the reader left
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
