"""The ``autotransfer`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import AutotransferError


def _table(rows: list[dict], columns: list[str]) -> str:
    """A plain left-aligned text table; None shows as '-'."""
    if not rows:
        return "(none)"
    cells = [[c for c in columns]] + [["-" if r.get(c) is None else str(r[c]) for c in columns]
                                      for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()
                     for row in cells)


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import list_plugins

    rows = [{"plugin": p.name, "backbones": ", ".join(p.backbones) or "-",
             "heads": ", ".join(p.heads) or "-", "status": p.error or "loaded"}
            for p in list_plugins()]
    print(_table(rows, ["plugin", "backbones", "heads", "status"]))
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from .plugins import get_backbone, list_backbones, list_plugins

    owner = {b: p.name for p in list_plugins() for b in p.backbones}
    rows = []
    for name in list_backbones(args.pattern, modality=args.modality):
        d = get_backbone(name).describe()
        rows.append({
            "name": name, "plugin": owner.get(name, "?"), "family": d["family"],
            "modality": d["modality"], "groups": d["groups"],
            "params": f"{d['params'] / 1e6:.1f}M" if d["params"] else None,
            "weights": d["weights"], "available": "yes" if d["available"] else "no",
        })
    print(_table(rows, ["name", "plugin", "family", "modality", "groups", "params", "weights",
                        "available"]))
    return 0


SUMMARY_COLUMNS = ["rank", "trial", "state", "baseline", "backbone", "frozen_groups",
                   "n_groups", "lr", "layer_decay", "weight_decay", "dropout", "augment", "mixup",
                   "cutmix", "l2sp", "epochs_run", "cached"]
SUMMARY_TAIL = ["transfer_gain", "negative_transfer", "duration_s", "reason"]


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
    cols = list(df.columns) if all_columns else [
        c for c in SUMMARY_COLUMNS + [study.metric] + SUMMARY_TAIL if c in df.columns]
    rows = [{c: _fmt(r[c]) for c in cols} for r in df.to_dict("records")]
    print(_table(rows, cols))


def cmd_run(args: argparse.Namespace) -> int:
    from .config import load_study_file
    from .search import search

    kwargs, train, valid = load_study_file(args.study_file)
    if args.n_trials is not None:
        kwargs["n_trials"] = args.n_trials
    if args.timeout is not None:
        kwargs["timeout"] = args.timeout
    try:
        study = search(train, valid=valid, progress=not args.no_progress, **kwargs)
    except KeyboardInterrupt:
        print("\ninterrupted: the running trial is marked failed; rerun the same command "
              "to resume.", file=sys.stderr)
        return 130
    print(f"\nstudy {study.name!r} in {study.spec.url}")
    print_leaderboard(study, top=args.top)
    _print_summary(study)
    return 0


def _print_summary(study) -> None:
    df = study.leaderboard()
    done = df[df["state"] == "complete"]
    if done.empty:
        return
    best = done.iloc[0]
    m = study.metric
    line = f"\nbest: trial {best['trial']} ({best['backbone']}, frozen_groups=" \
           f"{best['frozen_groups']}/{best['n_groups']}) {m}={best[m]:.4f}"
    for kind in ("default_finetune", "scratch"):
        ref = done[done["baseline"] == kind]
        if not ref.empty:
            line += f"; {kind} {ref.iloc[0][m]:.4f}"
    print(line)
    print(f"load it: at.Study.load({str(study.spec.path or study.spec.url)!r}, "
          f"name={study.name!r}).load_best()")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from .study import Study

    study = Study.load(args.storage, args.name)
    print_leaderboard(study, top=args.top, fmt=args.format, all_columns=args.all_columns)
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage mistakes print ``error: ...`` (what is wrong and what is accepted), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}; see `{self.prog} --help`.\n")


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
        description="Search the best way to transfer a pretrained model to your task.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("plugins", help="list installed plugins and what they register")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("backbones", help="list registered backbones")
    p.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'efficientnet*'")
    p.add_argument("--modality", choices=["image", "text"])
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AutotransferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
