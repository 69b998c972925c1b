"""The ``autotransfer`` command line.

Exit codes: 0 done; 1 the work failed (every trial failed, a file that is not a model, a
study that is not there); 2 a usage mistake (an unknown option, name or value); 130
interrupted.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from .errors import (
    AutotransferError,
    ConfigError,
    DeviceError,
    StrategyError,
    UnknownNameError,
)

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
USAGE_ERRORS = (ConfigError, UnknownNameError, StrategyError, DeviceError)
WIDTH = 120  # the leaderboard table fits a 120-column terminal unless --all-columns
CELL = 40  # longest cell in a table (a failure reason is cut there)


def _table(rows: list[dict], columns: list[str], cut: int | None = CELL) -> str:
    """A plain left-aligned text table; None shows as '-', cells cut at ``cut``."""
    if not rows:
        return "(none)"
    cells = [[c for c in columns]] + [[_cell(r.get(c), cut) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()
                     for row in cells)


def _cell(v, cut: int | None) -> str:
    text = "-" if v is None else str(v)
    return text if cut is None or len(text) <= cut else text[:cut - 1] + "…"


def _fit(rows: list[dict], columns: list[str], keep: list[str], width: int) -> list[str]:
    """The columns that fit ``width``: taken in ``keep``'s order while the table still fits
    (a column with one value in every row, such as the only backbone, comes last; one
    empty in every row never), shown in ``columns``' order."""
    def used(c: str) -> bool:
        return any(r.get(c) not in (None, "") for r in rows)

    def constant(c: str) -> bool:  # the first five (rank .. test score) always lead
        return c not in keep[:5] and len({r.get(c) for r in rows}) == 1 and len(rows) > 1

    chosen: list[str] = []
    for c in sorted((c for c in keep if c in columns and used(c)), key=constant):
        if max(map(len, _table(rows, chosen + [c]).splitlines())) <= width:
            chosen.append(c)
    return [c for c in columns if c in chosen]


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import list_plugins

    rows = [{"plugin": p.name, "backbones": ", ".join(p.backbones) or "-",
             "heads": ", ".join(p.heads) or "-", "status": p.error or "loaded"}
            for p in list_plugins()]
    print(_table(rows, ["plugin", "backbones", "heads", "status"]))
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from . import catalogue
    from .plugins import backbone_registry, list_backbones, list_plugins

    owner = {b: p.name for p in list_plugins() for b in p.backbones}
    registry = backbone_registry()
    names = list_backbones(args.pattern, modality=args.modality,
                           include_unavailable=args.include_unavailable)
    if not names and not list_backbones(args.pattern, modality=args.modality,
                                        include_unavailable=True):
        raise catalogue.no_match(args.pattern or "*", args.modality)  # a typo, say so
    rows = []
    for name in names:
        # a catalogue model is described without building it: a listing stays fast
        d = registry[name].describe() if name in registry else catalogue.describe(name)
        rows.append({
            "name": name, "plugin": owner.get(name, "catalogue"), "family": d["family"],
            "modality": d["modality"], "groups": d["groups"],
            "params": f"{d['params'] / 1e6:.1f}M" if d["params"] else None,
            "weights": d["weights"], "available": "yes" if d["available"] else "no",
        })
    print(_table(rows, ["name", "plugin", "family", "modality", "groups", "params", "weights",
                        "available"]))
    if not rows:
        print("(models match, but none has its weights here: --all lists them)", file=sys.stderr)
    return 0


SUMMARY_COLUMNS = ["rank", "trial", "state", "baseline", "prior", "backbone", "transferability",
                   "frozen_groups",
                   "n_groups", "lr", "layer_decay", "weight_decay", "dropout", "augment", "mixup",
                   "cutmix", "l2sp", "adapter", "lora_rank", "epochs_run", "cached"]
SUMMARY_TAIL = ["transfer_gain", "negative_transfer", "trainable_params", "duration_s",
                "reason"]


def _priority(metric: str) -> list[str]:
    """Columns in the order they are kept when the table must fit: the first matter most."""
    return ["rank", "trial", "state", metric, f"test_{metric}", "backbone", "transferability",
            "baseline", "prior",
            "frozen_groups", "lr", "reason", "epochs_run", "transfer_gain", "n_groups",
            "layer_decay", "augment", "mixup", "weight_decay", "cutmix", "dropout", "l2sp",
            "adapter", "trainable_params", "lora_rank", "duration_s", f"test_{metric}_se",
            "cached", "negative_transfer"]


def _fmt(v) -> str | None:
    import math

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_leaderboard(study, *, top: int | None = None, fmt: str = "table",
                      all_columns: bool = False) -> None:
    df = study.leaderboard()
    if top:
        df = df.head(top)
    if fmt == "csv":
        print(df.to_csv(index=False), end="")
        return
    if fmt == "json":
        print(df.to_json(orient="records", indent=1))
        return
    m = study.metric
    tasks = _task_columns(study.task)  # a multi-task study: each task's metric, weights
    cols = list(df.columns) if all_columns else [
        c for c in SUMMARY_COLUMNS + [m, f"test_{m}", f"test_{m}_se"] + tasks + SUMMARY_TAIL
        if c in df.columns]
    rows = [{c: _fmt(r[c]) for c in cols} for r in df.to_dict("records")]
    if not all_columns:
        priority = _priority(m)
        cols = _fit(rows, cols, priority[:5] + tasks + priority[5:], WIDTH)
    print(_table(rows, cols))


def _task_columns(task: object) -> list[str]:
    """A multi-task study's other tasks' metrics and loss weights (``age_r2``,
    ``loss_weight.age``), for the leaderboard table."""
    from .plugins import get_head

    if not isinstance(task, dict):
        return []
    rest = list(task)[1:]
    try:
        return [f"{c}_{get_head(task[c]).metric}" for c in rest] + \
            [f"loss_weight.{c}" for c in rest]
    except UnknownNameError:  # a head whose plugin is not registered here
        return [f"loss_weight.{c}" for c in rest]


def cmd_run(args: argparse.Namespace) -> int:
    from .config import load_study_file
    from .errors import OptimisticValidation
    from .search import search

    kwargs, train, valid = load_study_file(args.study_file)
    if args.n_trials is not None:
        kwargs["n_trials"] = args.n_trials
    if args.timeout is not None:
        kwargs["timeout"] = args.timeout
    try:
        with warnings.catch_warnings():  # the summary says it in words, not as a warning
            warnings.simplefilter("ignore", OptimisticValidation)
            study = search(train, valid=valid, progress=not args.no_progress, **kwargs)
    except KeyboardInterrupt:
        print("\ninterrupted: the running trial is marked failed; rerun the same command "
              "to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"\nstudy {study.name!r} in {study.spec.url}")
    print_leaderboard(study, top=args.top)
    _print_summary(study)
    return 0


def _print_summary(study) -> None:
    df = study.leaderboard()
    done = df[df["state"] == "complete"]
    if done.empty:
        return
    from .results import optimism

    best = done.iloc[0]
    m = study.metric
    line = f"\nbest: trial {best['trial']} ({best['backbone']}, frozen_groups=" \
           f"{best['frozen_groups']}/{best['n_groups']}) validation {m}={best[m]:.4f}"
    if _known(best.get(f"test_{m}")):
        line += f", test {m}={best[f'test_{m}']:.4f} (± {best[f'test_{m}_se']:.4f})"
    for kind in ("default_finetune", "scratch"):
        ref = done[done["baseline"] == kind]
        if not ref.empty:
            line += f"; {kind} {ref.iloc[0][m]:.4f}"
    print(line)
    for r in df[df["state"] == "refit"].to_dict("records"):
        test = f", test {m}={r[f'test_{m}']:.4f}" if _known(r.get(f"test_{m}")) else ""
        print(f"refit of trial {r['trial']} on all labelled data ({r['epochs']} epochs){test}")
    warning = optimism(study)
    if warning:
        print(f"warning: {warning}")
    ranked = study.ranking()
    if not ranked.empty:
        print("\ntransferability before the search (LogME on frozen features, higher is "
              "better):")
        print(_table([{c: _fmt(v) for c, v in r.items()} for r in ranked.to_dict("records")],
                     list(ranked.columns)))
    print(f"load it: at.Study.load({str(study.spec.path or study.spec.url)!r}, "
          f"name={study.name!r}).load_best()")


def _known(v) -> bool:
    return _fmt(v) is not None


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from .study import Study

    study = Study.load(args.storage, args.name)
    print_leaderboard(study, top=args.top, fmt=args.format, all_columns=args.all_columns)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .storage import safe_name
    from .study import Study

    study = Study.load(args.storage, args.name)
    stem = "://" not in args.storage and Path(args.storage).stem in (study.name,
                                                                    safe_name(study.name))
    out = args.output or _beside(args.storage,
                                 ".html" if stem else f"-{safe_name(study.name)}.html")
    print(f"wrote {study.report(out)}")
    return 0


def _beside(storage: str, suffix: str) -> str:
    """``studies/x.db`` -> ``studies/x<suffix>``; a URL storage -> ``./study<suffix>``."""
    if "://" in storage:
        return "study" + suffix
    path = Path(storage)
    return str(path.with_name(path.stem + suffix))


EXPORT_SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "timm": "-timm",
                 "transformers": "-transformers"}


def cmd_export(args: argparse.Namespace) -> int:
    from .predictor import load

    _register(args.plugin)
    model = load(args.model)
    out = args.output or _beside(args.model, EXPORT_SUFFIX[args.format])
    info = model.export(out, format=args.format)
    for key, value in info.items():
        print(f"{key}: {value}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from .predictor import load

    _register(args.plugin)
    model = load(args.model)
    names = _input_names(args.inputs, model.preprocessing.modality)
    pred = model.predict(names, batch_size=args.batch_size)
    frame = pd.concat([pd.DataFrame({"input": names}), pred.reset_index(drop=True)], axis=1) \
        if hasattr(pred, "columns") else pd.DataFrame({"input": names, "prediction": list(pred)})
    if args.proba and model.task in ("classification", "multilabel"):
        proba = model.predict_proba(names, batch_size=args.batch_size)
        frame = pd.concat([frame, proba.reset_index(drop=True).round(4)], axis=1)
    if args.format == "csv":
        print(frame.to_csv(index=False), end="")
    elif args.format == "json":
        print(frame.to_json(orient="records", indent=1))
    else:
        print(_table([{c: _fmt(v) for c, v in r.items()} for r in frame.to_dict("records")],
                     [str(c) for c in frame.columns], cut=None))
    return 0


def _input_names(inputs: list[str], modality: str) -> list[str]:
    """Texts as given; image files as given and the images inside folders, sorted."""
    if modality == "text":
        return list(inputs)
    from .data import IMAGE_SUFFIXES

    names = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            names += sorted(str(f) for f in path.rglob("*") if f.is_file()
                            and f.suffix.lower() in IMAGE_SUFFIXES
                            and not f.name.startswith("."))
        else:
            names.append(item)
    return names


class _Parser(argparse.ArgumentParser):
    """Usage mistakes print ``error: ...`` (what is wrong and what is accepted), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message}; see `{self.prog} --help`.\n")


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
        epilog="exit codes: 0 done, 1 the work failed, 2 a usage mistake, 130 interrupted")
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
    p.add_argument("--all-columns", action="store_true", help="every column in table format")
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

    p = sub.add_parser("predict", help="predict with a saved model file")
    p.add_argument("model", help="a model file (Predictor.save, or a study's checkpoint)")
    p.add_argument("inputs", nargs="+", help="image files or folders (image models), or "
                                             "strings (text models)")
    p.add_argument("--proba", action="store_true", help="class probabilities too")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--batch-size", type=_count, default=64)
    _plugin_option(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a saved model: onnx, torchscript, timm, "
                                      "transformers")
    p.add_argument("model", help="a model file (Predictor.save, or a study's checkpoint)")
    p.add_argument("--format", required=True,
                   choices=["onnx", "torchscript", "timm", "transformers"])
    p.add_argument("-o", "--output", help="where to write (default: beside the model)")
    _plugin_option(p)
    p.set_defaults(func=cmd_export)


def _plugin_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="register a plugin module first (one that provides the model's "
                        "backbone and is not installed as an entry point); repeatable")


def _register(modules: list[str]) -> None:
    from .plugins import register_plugin

    for module in modules:
        register_plugin(module)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("autotransfer")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from . import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AutotransferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, USAGE_ERRORS) else EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `autotransfer leaderboard x.db | head`: the reader left
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
