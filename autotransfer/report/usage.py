"""How to use a study's best model: its file and the exact commands, in one place.

The summary ``autotransfer run`` prints (:func:`autotransfer.study.summary.use_lines`) and
the report's "Use this model" section both read :func:`usage`, so they say the same.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
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
    what: str = ""  # a model of no one trial: "greedy ensemble of trials 3, 5"
    plugins: list[str] = field(default_factory=list)  # modules to register to load it


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
    modules = _plugins(study.meta.get("plugins"))  # registered by hand: a new process needs
    loads = where + "".join(f" --plugin {shlex.quote(m)}" for m in modules)
    modality = study.meta.get("modality")
    inputs, kinds = {"image": ("IMAGES...", "files or folders"),
                     "text": ("TEXTS...", "strings")}.get(
        modality, ("IMAGES_OR_TEXTS...", "files, folders or strings"))
    data = "LABELLED.csv --text COLUMN --label COLUMN" if modality == "text" else \
        "LABELLED_FOLDER"
    shell = [(f"autotransfer best {where}", "print the best model's file"),
             (f"autotransfer predict {loads} {inputs}",
              f"predict new inputs ({kinds}; the model file works in place of the storage)"),
             (f"autotransfer evaluate {loads} {data}", "score it on other labelled data"),
             (f"autotransfer export {loads} --format onnx", "export it for another runtime")]
    load = f"at.Study.load({storage!r}, name={study.name!r}).load_best()"
    example = "'a text to label'" if modality == "text" else "'photo.jpg'"
    python = [("import autotransfer as at", ""), *_registers(modules),
              (f"model = {load}", "the best model, ready to predict"),
              (f"# model = at.load({model!r})", "or load its file directly"),
              (f"model.predict({example})", "also a folder, a list, a DataFrame column"),
              ("model.export('model.onnx', format='onnx')", "checked against the model")]
    folder = str(Path.cwd()) if moved or model != str(path) else None
    trial = next((t.number for t in study.trials()
                  if t.system_attrs.get(st.CHECKPOINT) == str(path)), None)
    return Usage(model, trial, "", shell, python, load, folder,
                 "" if trial is not None else _final(study), modules)


def _plugins(recorded: Any) -> list[str]:
    """The plugin module names the study recorded (a list of strings; else none)."""
    return [m for m in recorded if isinstance(m, str)] if isinstance(recorded, list) else []


def _registers(modules: list[str]) -> list[tuple[str, str]]:
    return [(f"at.register_plugin({m!r})", "the plugin that provides the model")
            for m in modules]


def _final(study: Any) -> str:
    """What the study's model is when ``search(final=)`` made it an ensemble or soup."""
    attrs = study.system_attrs()
    kind = attrs.get(st.FINAL)
    record = attrs.get(st.COMBINED.get(kind, ""))
    if not record:
        return ""
    members = ", ".join(map(str, record["members"]))
    return f"{record['method']} {kind} of trials {members}"


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
    what = [f"the study's model is its {u.what} (search(final=...))"] if u.what else []
    return (what + [f"best model: {u.model}"] + [f"  {c}" for c, _ in u.shell]
            + [f"  python: {''.join(f'{c}; ' for c, _ in _registers(u.plugins))}{u.load}"])


def relative(path: Any) -> str:
    """``path`` relative to the working directory when it lies under it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
