"""``autotransfer evaluate MODEL DATA``: a model file, or a study's best (or ``--trial``)
model, scored on labelled data: a folder of class subfolders, or a CSV file named as a
study file's ``[data]`` table names one (``--label``, and ``--image`` or ``--text``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .commands import model_file, register_modules
from .tables import shown, text_table


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .. import inputs
    from ..predict.predictor import load
    from ..study.results import score

    register_modules(args.plugin)
    path = model_file(args)  # a mistake in the model or --trial is told before any work
    data = labelled_data(args)
    model = load(path)
    if Path(args.data).is_dir():
        data = folder_classes(data, model.classes)
    data = inputs.held_out("data", data, model.task, model.preprocessing.modality, model.info)
    metrics, se = score(model, data, args.batch_size)
    primary = model.head.metric
    row = {"model": str(path), "n": len(data), **metrics, f"{primary}_se": se}
    if args.format == "json":
        print(json.dumps(row, indent=1))
    elif args.format == "csv":
        import pandas as pd

        print(pd.DataFrame([row]).to_csv(index=False), end="")
    else:
        print(f"model: {path}\ndata:  {len(data)} examples from {args.data}")
        rows = [{"metric": k, "value": shown(v), "se": shown(se) if k == primary else None}
                for k, v in metrics.items()]
        print(text_table(rows, ["metric", "value", "se"]))
        print(f"se: the bootstrap standard error of {primary} ({len(data)} examples "
              f"resampled): how much it would move on another draw of the data.")
    return 0


CSV_OPTIONS = ("label", "image", "text")


def labelled_data(args: argparse.Namespace):
    """The data ``args.data`` names: a folder of class subfolders (``from_folder``), or a
    ``.csv`` file with ``--label`` and one of ``--image``/``--text`` (``from_csv``)."""
    from ..data import from_csv, from_folder
    from ..errors import ConfigError

    path = Path(args.data)
    given = [f"--{k}" for k in CSV_OPTIONS if getattr(args, k) is not None]
    accepted = ("a folder with one subfolder of examples per class, or a .csv file with "
                "--label COLUMN and --image COLUMN (image paths, relative to the CSV's "
                "folder) or --text COLUMN")
    if not path.exists():
        raise ConfigError(f"DATA {args.data!r} does not exist; give {accepted}.")
    if path.is_dir():
        if given:
            raise ConfigError(f"{', '.join(given)} {'names' if len(given) == 1 else 'name'} "
                              f"a CSV file's columns, but DATA "
                              f"{args.data!r} is a folder (its subfolders are the labels); "
                              f"leave them out, or give a .csv file.")
        return from_folder(path)
    if path.suffix.lower() != ".csv":
        raise ConfigError(f"DATA {args.data!r} is neither a folder nor a .csv file; give "
                          f"{accepted}.")
    if args.label is None or (args.image is None) == (args.text is None):
        raise ConfigError(f"DATA {args.data!r} is a CSV file: it needs --label COLUMN and "
                          f"exactly one of --image COLUMN or --text COLUMN, but got "
                          f"{', '.join(given) or 'none of them'}.")
    labels = [c.strip() for c in args.label.split(",") if c.strip()]
    return from_csv(path, label=labels[0] if len(labels) == 1 else labels,
                    image=args.image, text=args.text)


def folder_classes(data, classes: list | None):
    """A folder's labels read as the model's classes: folder names are text, so a model
    trained on numbered classes (0, 1, ...) gets ``"0"`` read as ``0``; other labels are
    left for the usual check, which names them."""
    from ..data import Dataset

    if not classes or all(isinstance(c, str) for c in classes):
        return data
    names = {str(c): c for c in classes}
    if len(names) != len(classes) or not all(str(v) in names for v in data.labels):
        return data
    labels = np.asarray([names[str(v)] for v in data.labels])
    return Dataset(data.source, labels, data.modality, index=data.index, skipped=data.skipped)
