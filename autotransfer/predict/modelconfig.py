"""A model file's JSON config, checked field by field before anything is built from it.

The config comes from a file anyone may have crafted: every key, type and range is checked
here, and anything else is a :class:`~autotransfer.errors.StorageError` naming the file, the
key and what is accepted (never a raw KeyError, TypeError or RecursionError).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.preprocessing import ImagePreprocessing, Preprocessing, TextPreprocessing
from ..errors import AutotransferError, StorageError
from ..strategy.strategy import MAX_IMAGE_SIZE, Strategy
from .ensemble import MAX_MEMBERS, mismatch

REQUIRED = ("strategy", "task", "info", "preprocessing")
KNOWN = REQUIRED + ("study", "members")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "box", "hamming", "lanczos")
MAX_RESIZE = 2 * MAX_IMAGE_SIZE  # the shorter side before the crop: size / crop_pct
_PREPROCESSING = {"image": ImagePreprocessing, "text": TextPreprocessing}


@dataclass(frozen=True)
class ModelConfig:
    """What a model file says about its model, every field checked."""

    strategy: Strategy
    task: str | dict[str, str]
    info: dict[str, Any]
    preprocessing: Preprocessing
    study: str = ""
    members: tuple[tuple[Strategy, Preprocessing], ...] = ()  # an ensemble's, first = above


class Bad(Exception):
    """One field's problem; :func:`parse` adds the file and the hint."""


def parse(path: Path, config: Any) -> ModelConfig:
    """The checked config of the model file at ``path``.

    Raises:
        StorageError: a config that is not an object, lacks a key, has an unknown one, or a
            value of the wrong type or range (named, with what is accepted).
    """
    try:
        fields = _fields(config)
        cfg = ModelConfig(_strategy(fields["strategy"]), _task(fields["task"]),
                          fields["info"], _preprocessing(fields["preprocessing"]),
                          _study(fields.get("study", "")), _members(fields.get("members")))
        if cfg.members and cfg.members[0] != (cfg.strategy, cfg.preprocessing):
            raise Bad("ensemble member 0 must be the model's own 'strategy' and "
                      "'preprocessing' (the best member's)")
        return cfg
    except Bad as exc:
        raise damaged(path, str(exc)) from None


def damaged(path: Path, detail: str) -> StorageError:
    detail = detail.rstrip(". ")
    return StorageError(f"{str(path)!r} has a damaged model config: {detail}. Give a file "
                        f"written by Predictor.save or kept by a study.")


def _fields(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise Bad(f"it must be a JSON object with keys {list(REQUIRED)}, but it is a "
                  f"{_json_type(config)}")
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise Bad(f"it lacks key(s) {missing}; a model config has keys {list(REQUIRED)}")
    unknown = sorted(set(config) - set(KNOWN))
    if unknown:
        raise Bad(f"unknown key(s) {unknown}; accepted keys: {list(KNOWN)}")
    if not isinstance(config["info"], dict):
        raise Bad(f"'info' must be an object (classes, scales), but it is a "
                  f"{_json_type(config['info'])}")
    _check_classes(config["info"])
    return config


def _check_classes(info: dict[str, Any], depth: int = 0) -> None:
    """Every ``classes`` list (a multi-task model's too) holds distinct labels: strings,
    numbers or booleans; anything else would decode into nonsense predictions."""
    classes = info.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or not all(
                isinstance(c, (str, int, float, bool)) for c in classes):
            raise Bad(f"info 'classes' must be a list of labels (strings or numbers), but "
                      f"got {classes!r:.80}")
        if len({(type(c), c) for c in classes}) != len(classes):
            raise Bad(f"info 'classes' must be distinct, but {classes!r:.80} repeats one")
    for value in info.values():  # a multi-task model's: info["tasks"][column]["info"]
        if isinstance(value, dict) and depth < 4:
            _check_classes(value, depth + 1)


def _strategy(values: Any) -> Strategy:
    if not isinstance(values, dict):
        raise Bad(f"'strategy' must be an object of Strategy fields, but it is a "
                  f"{_json_type(values)}")
    if not isinstance(values.get("backbone"), str) or not values["backbone"]:
        raise Bad(f"strategy 'backbone' must be a backbone name (a string), but got "
                  f"{values.get('backbone')!r:.80}")
    try:
        return Strategy.from_dict(values)
    except AutotransferError as exc:
        raise Bad(f"strategy: {exc}") from None
    except (TypeError, ValueError) as exc:  # a value of the wrong type for a field
        raise Bad(f"strategy: {type(exc).__name__}: {str(exc)[:200]}; accepted: the fields "
                  f"of Strategy with values of their types") from None


def _task(task: Any) -> str | dict[str, str]:
    ok = isinstance(task, str) or (isinstance(task, dict) and task and all(
        isinstance(k, str) and isinstance(v, str) for k, v in task.items()))
    if not ok:
        raise Bad(f"'task' must be a task name or a {{label column: task name}} object, but "
                  f"got {task!r:.80}")
    return task


def _study(study: Any) -> str:
    if not isinstance(study, str):
        raise Bad(f"'study' must be a study id (a string), but got {study!r:.80}")
    return study


def _members(values: Any) -> tuple[tuple[Strategy, Preprocessing], ...]:
    """An ensemble's members: 2 to MAX_MEMBERS ``{strategy, preprocessing}`` objects whose
    inputs are prepared alike (:func:`.ensemble.mismatch`)."""
    if values is None:
        return ()
    if not isinstance(values, list) or not 2 <= len(values) <= MAX_MEMBERS:
        raise Bad(f"'members' must be a list of 2 to {MAX_MEMBERS} ensemble members, but got "
                  f"{values!r:.80}")
    members = []
    for i, member in enumerate(values):
        if not isinstance(member, dict) or set(member) != {"strategy", "preprocessing"}:
            raise Bad(f"ensemble member {i} must be an object with keys 'strategy' and "
                      f"'preprocessing', but got {member!r:.80}")
        members.append((_strategy(member["strategy"]), _preprocessing(member["preprocessing"])))
    for i, (_, pre) in enumerate(members[1:], 1):
        if (why := mismatch(members[0][1], pre)) is not None:
            raise Bad(f"ensemble member {i} cannot share the first one's inputs: {why}")
    return tuple(members)


def _preprocessing(values: Any) -> Preprocessing:
    if not isinstance(values, dict):
        raise Bad(f"'preprocessing' must be an object, but it is a {_json_type(values)}")
    cls = _PREPROCESSING.get(values.get("modality"))
    if cls is None:
        raise Bad(f"preprocessing 'modality' must be one of {list(_PREPROCESSING)}, but got "
                  f"{values.get('modality')!r:.80}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise Bad(f"unknown preprocessing key(s) {unknown}; accepted for "
                  f"{values['modality']} models: {names}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.name not in values]
    if required:
        raise Bad(f"preprocessing lacks key(s) {required}; {values['modality']} models need "
                  f"{names}")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    (_check_image if cls is ImagePreprocessing else _check_text)(args)
    return cls(**args)


def _check_image(args: dict[str, Any]) -> None:
    size = args["size"]
    _need(_integer(size) and 8 <= size <= MAX_IMAGE_SIZE, "size", size,
          f"an integer from 8 to {MAX_IMAGE_SIZE}")
    for key in ("mean", "std"):
        v = args[key]
        _need(isinstance(v, tuple) and len(v) == 3 and all(_number(x) for x in v)
              and (key == "mean" or all(x > 0 for x in v)), key, v,
              "3 finite numbers (one per RGB channel)" + (", each > 0" if key == "std" else ""))
    crop = args.get("crop_pct", 1.0)
    _need(_number(crop) and 0 < crop <= 2 and size / crop <= MAX_RESIZE, "crop_pct", crop,
          f"a number in (0, 2] with size / crop_pct <= {MAX_RESIZE}")
    interp = args.get("interpolation", "bilinear")
    _need(interp in INTERPOLATIONS, "interpolation", interp, f"one of {list(INTERPOLATIONS)}")


def _check_text(args: dict[str, Any]) -> None:
    tok = args["tokenizer"]
    _need(isinstance(tok, str) and tok and "\0" not in tok, "tokenizer", tok,
          "a tokenizer name or folder (a string)")
    _need(_integer(args["max_length"]) and args["max_length"] >= 2, "max_length",
          args["max_length"], "an integer >= 2")


def _need(ok: bool, key: str, value: Any, accepted: str) -> None:
    if not ok:
        raise Bad(f"preprocessing {key!r} must be {accepted}, but got {value!r:.80}")


def _integer(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _json_type(value: Any) -> str:
    return {dict: "JSON object", list: "JSON list", str: "string", bool: "boolean",
            type(None): "null"}.get(type(value), "number")
