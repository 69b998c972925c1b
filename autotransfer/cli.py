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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotransfer",
        description="Search the best way to transfer a pretrained model to your task.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list installed plugins and what they register")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("backbones", help="list registered backbones")
    p.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'efficientnet*'")
    p.add_argument("--modality", choices=["image", "text"])
    p.set_defaults(func=cmd_backbones)
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
