"""One function per ``autotransfer`` subcommand: run, leaderboard, report, export, predict,
backbones, plugins."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from .tables import print_leaderboard, shown, text_table

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def cmd_plugins(args: argparse.Namespace) -> int:
    from ..plugins import list_plugins

    rows = [{"plugin": p.name, "backbones": ", ".join(p.backbones) or "-",
             "heads": ", ".join(p.heads) or "-",
             "techniques": ", ".join(p.techniques) or "-", "status": p.error or "loaded"}
            for p in list_plugins()]
    print(text_table(rows, ["plugin", "backbones", "heads", "techniques", "status"]))
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from ..backbones import catalogue
    from ..plugins import backbone_registry, list_backbones, list_plugins, no_match

    owner = {b: p.name for p in list_plugins() for b in p.backbones}
    registry = backbone_registry()
    names = list_backbones(args.pattern, modality=args.modality,
                           include_unavailable=args.include_unavailable)
    if not names and not list_backbones(args.pattern, modality=args.modality,
                                        include_unavailable=True):
        raise no_match(args.pattern or "*", args.modality)  # a typo, say so
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
    print(text_table(rows, ["name", "plugin", "family", "modality", "groups", "params", "weights",
                        "available"]))
    if not rows:
        print("(models match, but none has its weights here: --all lists them)", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..config import load_study_file
    from ..errors import OptimisticValidation
    from ..search import search
    from ..study import summary

    kwargs, train, valid = load_study_file(args.study_file)
    if args.n_trials is not None:
        kwargs["n_trials"] = args.n_trials
    if args.timeout is not None:
        kwargs["timeout"] = args.timeout
    level = summary.logger.level
    summary.logger.setLevel(logging.WARNING)  # printed below, not logged by search()
    try:
        with warnings.catch_warnings():  # the summary says it in words, not as a warning
            warnings.simplefilter("ignore", OptimisticValidation)
            study = search(train, valid=valid, progress=not args.no_progress, **kwargs)
    except KeyboardInterrupt:
        print("\ninterrupted: the running trial is recorded as interrupted; rerun the same "
              "command to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        summary.logger.setLevel(level)
    print(f"\nstudy {study.name!r} in {study.spec.url}")
    print_leaderboard(study, top=args.top)
    _print_summary(study)
    return 0


def _print_summary(study) -> None:
    from ..study import summary

    results = summary.result_lines(study)
    if not results:
        return
    print("\n" + "\n".join(results))
    ranked = study.ranking()
    if not ranked.empty:
        print(f"\n{summary.RANKING_TITLE}")
        print(text_table([{c: shown(v) for c, v in r.items()} for r in ranked.to_dict("records")],
                     list(ranked.columns)))
    print("\n".join(summary.use_lines(study)))


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from ..study.study import Study

    study = Study.load(args.storage, args.name)
    print_leaderboard(study, top=args.top, fmt=args.format, all_columns=args.all_columns,
                      columns=args.columns)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..storage import safe_name
    from ..study.study import Study

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


def cmd_best(args: argparse.Namespace) -> int:
    from ..study.study import Study

    print(Study.load(args.storage, args.name).model_path(args.trial))
    return 0


def model_file(args: argparse.Namespace) -> str:
    """The model file ``args.model`` names: itself, or a study storage's best (or
    ``--trial``) model."""
    from ..errors import ConfigError
    from ..storage import JOURNAL_SUFFIXES, SQLITE_SUFFIXES
    from ..study.study import Study

    if "://" in args.model or Path(args.model).suffix in SQLITE_SUFFIXES + JOURNAL_SUFFIXES:
        return str(Study.load(args.model, args.name).model_path(args.trial))
    if args.name is not None or args.trial is not None:
        raise ConfigError(f"--name and --trial choose a model from a study's storage (a "
                          f".db/.log file or URL), but {args.model!r} is a model file.")
    return args.model


def cmd_export(args: argparse.Namespace) -> int:
    from ..predict.predictor import load

    register_modules(args.plugin)
    path = model_file(args)
    model = load(path)
    out = args.output or _beside(path, EXPORT_SUFFIX[args.format])
    info = model.export(out, format=args.format)
    for key, value in info.items():
        print(f"{key}: {value}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..predict.predictor import load

    register_modules(args.plugin)
    model = load(model_file(args))
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
        rows = [{str(c): shown(v) for c, v in r.items()} for r in frame.to_dict("records")]
        print(text_table(rows, [str(c) for c in frame.columns], cut=None))
    return 0


def _input_names(inputs: list[str], modality: str) -> list[str]:
    """Texts as given; image files as given and the images inside folders, sorted."""
    if modality == "text":
        return list(inputs)
    from ..data import IMAGE_SUFFIXES

    names = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(str(f) for f in path.rglob("*") if f.is_file()
                           and f.suffix.lower() in IMAGE_SUFFIXES
                           and not f.name.startswith("."))
            if not found:
                from ..errors import DataError

                raise DataError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) under "
                                f"{item!r}; give image files or folders holding them.")
            names += found
        else:
            names.append(item)
    return names


def register_modules(modules: list[str]) -> None:
    from ..plugins import register_plugin

    for module in modules:
        register_plugin(module)
