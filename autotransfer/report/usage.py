"""How to use a study's best model: its file and the exact commands, in one place.

The summary ``autotransfer run`` prints (:func:`autotransfer.study.summary.use_lines`) and
the report's "Use this model" section both read :func:`usage`, so they say the same.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import storage as st
from ..errors import StorageError


@dataclass(frozen=True)
class Usage:
    """The best model's file and the commands that use it, as a user would type them."""

    model: str | None  # the best model's file; None when the study kept none
    trial: int | None  # the trial it is the checkpoint of (None: a file of no trial)
    why_none: str  # why there is no model file ("" when there is one)
    shell: list[tuple[str, str]]  # (command, what it does), for a POSIX shell
    python: list[tuple[str, str]]  # (line, what it does)
    load: str  # the Python expression that loads the best model
    relative_to: str | None  # the folder the paths are relative to, when any is


def usage(study: Any) -> Usage:
    """The best model of ``study`` (a Study) and the CLI and Python lines that use it."""
    storage, moved = _where(study)
    try:
        path = study.model_path()
    except StorageError as exc:
        return Usage(None, None, str(exc), [], [], "", None)
    model = relative(path)
    several = _several_studies(study)
    name = f" --name {shlex.quote(study.name)}" if several else ""
    where = shlex.quote(storage) + name
    modality = study.meta.get("modality")
    inputs, kinds = {"image": ("IMAGES...", "files or folders"),
                     "text": ("TEXTS...", "strings")}.get(
        modality, ("IMAGES_OR_TEXTS...", "files, folders or strings"))
    data = "LABELLED.csv --text COLUMN --label COLUMN" if modality == "text" else \
        "LABELLED_FOLDER"
    shell = [(f"autotransfer best {where}", "print the best model's file"),
             (f"autotransfer predict {where} {inputs}",
              f"predict new inputs ({kinds}; the model file works in place of the storage)"),
             (f"autotransfer evaluate {where} {data}", "score it on other labelled data"),
             (f"autotransfer export {where} --format onnx", "export it for another runtime")]
    load = f"at.Study.load({storage!r}, name={study.name!r}).load_best()"
    example = "'a text to label'" if modality == "text" else "'photo.jpg'"
    python = [("import autotransfer as at", ""),
              (f"model = {load}", "the best model, ready to predict"),
              (f"# model = at.load({model!r})", "or load its file directly"),
              (f"model.predict({example})", "also a folder, a list, a DataFrame column"),
              ("model.export('model.onnx', format='onnx')", "checked against the model")]
    folder = str(Path.cwd()) if moved or model != str(path) else None
    trial = next((t.number for t in study.trials()
                  if t.system_attrs.get(st.CHECKPOINT) == str(path)), None)
    return Usage(model, trial, "", shell, python, load, folder)


def _where(study: Any) -> tuple[str, bool]:
    """The storage as a user names it: a file relative to the working folder when it lies
    under it, else the URL without its password; and whether the path was made relative."""
    path = study.spec.path
    if path is None:
        return study.spec.shown, False
    shown = relative(path)
    return shown, shown != str(path)


def _several_studies(study: Any) -> bool:
    """Whether the storage holds more searches than this one (``--name`` is then needed)."""
    try:
        names = st.study_names(st.storage_of(study.optuna), searches=True)
    except Exception:  # noqa: BLE001 - a storage that cannot list its studies: name it
        return True
    return names != [study.name]


def text_lines(u: Usage) -> list[str]:
    """The usage as the CLI summary prints it."""
    if u.model is None:
        return [f"no model file: {u.why_none}"]
    # Commands only, no trailing comments: a copied line runs as it is (zsh reads '#' as
    # an argument unless interactive_comments is set).
    return ([f"best model: {u.model}"] + [f"  {c}" for c, _ in u.shell]
            + [f"  python: {u.load}"])


def relative(path: Any) -> str:
    """``path`` relative to the working directory when it lies under it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
