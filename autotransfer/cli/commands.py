"""One function per ``autotransfer`` subcommand: run, leaderboard, report, export, predict,
backbones, plugins."""

from __future__ import annotations

import argparse
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
    from ..study.results import optimism

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
        print("\ntransferability before the search (held-out accuracy of a linear probe on "
              "frozen features, higher is better; degenerate features rank last):")
        print(text_table([{c: shown(v) for c, v in r.items()} for r in ranked.to_dict("records")],
                     list(ranked.columns)))
    _print_use(study)


def _print_use(study) -> None:
    """Where the best model is, and the commands that use it."""
    from ..errors import StorageError

    storage = _relative(study.spec.path) if study.spec.path else str(study.spec.url)
    try:
        path = study.model_path()
    except StorageError as exc:
        print(f"no model file: {exc}")
        return
    print(f"best model: {_relative(path)}")
    print(f"  autotransfer predict {storage} IMAGES_OR_TEXTS...   (or the file above)")
    print(f"  autotransfer export {storage} --format onnx")
    print(f"  python: at.Study.load({storage!r}, name={study.name!r}).load_best()")


def _relative(path) -> str:
    """``path`` relative to the working directory when it lies under it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _known(v) -> bool:
    return shown(v) is not None


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from ..study.study import Study

    study = Study.load(args.storage, args.name)
    print_leaderboard(study, top=args.top, fmt=args.format, all_columns=args.all_columns)
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
            names += sorted(str(f) for f in path.rglob("*") if f.is_file()
                            and f.suffix.lower() in IMAGE_SUFFIXES
                            and not f.name.startswith("."))
        else:
            names.append(item)
    return names


def register_modules(modules: list[str]) -> None:
    from ..plugins import register_plugin

    for module in modules:
        register_plugin(module)
