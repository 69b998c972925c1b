"""Task heads: classification, regression, multilabel."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import autotransfer as at
from autotransfer.errors import DataError


def _as_array(labels: Any) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.cpu().numpy()
    arr = np.asarray(labels)
    if arr.size == 0:
        raise DataError("The labels are empty; give at least one label per input.")
    return arr


class ClassificationHead(at.Head):
    """Cross-entropy over classes; accuracy (primary) and macro-F1."""

    name = "classification"
    metric = "accuracy"

    def encode(self, labels, info=None):
        arr = _as_array(labels)
        if arr.ndim != 1:
            raise DataError(
                f"Classification labels must be one label per input (1-D), but got shape "
                f"{arr.shape}; for several labels per input use task='multilabel'."
            )
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                bad = arr[~(np.isfinite(arr) & (arr == np.round(arr)))][0].item()
                raise DataError(
                    f"Classification labels must be class ids or names, but got {bad!r}; "
                    f"for continuous targets use task='regression'."
                )
            arr = arr.astype(np.int64)
        if info is None:
            classes = np.unique(arr).tolist()
            if len(classes) < 2:
                raise DataError(
                    f"Classification needs at least two classes, but every label is "
                    f"{classes[0]!r}."
                )
            info = {"classes": classes}
        index = {c: i for i, c in enumerate(info["classes"])}
        unknown = [v for v in np.unique(arr).tolist() if v not in index]
        if unknown:
            raise DataError(
                f"Label {unknown[0]!r} is not among the training classes "
                f"{info['classes'][:20]}; give validation and test labels that occur in training."
            )
        return torch.tensor([index[v] for v in arr.tolist()], dtype=torch.long), info

    def n_outputs(self, info):
        return len(info["classes"])

    def loss(self, outputs, targets, *, label_smoothing=0.0):
        return F.cross_entropy(outputs, targets, label_smoothing=label_smoothing)

    def metrics(self, outputs, targets, info):
        from sklearn.metrics import f1_score

        pred = outputs.argmax(1).cpu().numpy()
        true = targets.cpu().numpy()
        return {
            "accuracy": float((pred == true).mean()),
            "macro_f1": float(f1_score(true, pred, average="macro", zero_division=0)),
        }

    def metric_value(self, outputs, targets, info):
        return float((outputs.argmax(1) == targets).float().mean())

    def combine(self, outputs, info):
        # log of the mean probability: softmax of the result is that mean, exactly
        logp = torch.stack([torch.log_softmax(o.float(), 1) for o in outputs])
        return torch.logsumexp(logp, 0) - math.log(len(outputs))

    def decode(self, outputs, info):
        return np.asarray(info["classes"])[outputs.argmax(1).cpu().numpy()]


class RegressionHead(at.Head):
    """MSE on standardized targets; R² (primary), MAE and MSE in the original units."""

    name = "regression"
    metric = "r2"

    def encode(self, labels, info=None):
        arr = _as_array(labels)
        if arr.dtype.kind not in "iufb":
            first = arr.flat[0]  # a Python object in an object array, else a numpy scalar
            raise DataError(
                f"Regression labels must be numbers, but got {arr.dtype} values like "
                f"{getattr(first, 'item', lambda: first)()!r}; for categories use "
                f"task='classification'."
            )
        arr = arr.astype(np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or not np.all(np.isfinite(arr)):
            bad = arr[~np.isfinite(arr)]
            raise DataError(
                f"Regression labels must be finite numbers, shape (N,) or (N, targets), "
                f"but got shape {arr.shape} with {bad.size} non-finite"
                + (f" (e.g. {bad.flat[0].item()!r})" if bad.size else "") + ".")
        if info is None:
            std = arr.std(0)
            info = {"n_targets": arr.shape[1], "mean": arr.mean(0).tolist(),
                    "std": np.where(std > 0, std, 1.0).tolist()}
        if arr.shape[1] != info["n_targets"]:
            raise DataError(f"Expected {info['n_targets']} regression targets, got {arr.shape[1]}.")
        z = (arr - np.asarray(info["mean"])) / np.asarray(info["std"])
        return torch.tensor(z, dtype=torch.float32), info

    def n_outputs(self, info):
        return info["n_targets"]

    def loss(self, outputs, targets, *, label_smoothing=0.0):
        return F.mse_loss(outputs, targets)

    def metrics(self, outputs, targets, info):
        from sklearn.metrics import r2_score

        scale = torch.tensor(info["std"], device=outputs.device)
        pred = (outputs.float() * scale).cpu().numpy()
        true = (targets.float() * scale).cpu().numpy()
        return {
            "r2": float(r2_score(true, pred)),
            "mae": float(np.abs(pred - true).mean()),
            "mse": float(((pred - true) ** 2).mean()),
        }

    def decode(self, outputs, info):
        out = outputs.float().cpu().numpy() * np.asarray(info["std"]) + np.asarray(info["mean"])
        return out[:, 0] if info["n_targets"] == 1 else out


class MultilabelHead(at.Head):
    """Binary cross-entropy per label; mean average precision (primary) and micro-F1."""

    name = "multilabel"
    metric = "map"

    def encode(self, labels, info=None):
        if hasattr(labels, "columns"):  # a table of 0/1 columns, one per label
            labels = labels.to_numpy()
        if isinstance(labels, (list, tuple)) or (
            isinstance(labels, np.ndarray) and labels.dtype == object
        ) or hasattr(labels, "iloc"):
            labels = list(labels)
            if labels and all(isinstance(v, (list, tuple, set)) for v in labels):
                return self._from_sets(labels, info)
        arr = _as_array(labels)
        if arr.ndim != 2 or not np.isin(arr, (0, 1)).all():
            raise DataError(
                f"Multilabel labels must be a 0/1 matrix (N, labels) or a list of label "
                f"lists, but got an array of shape {arr.shape}"
                + ("" if arr.ndim != 2 else " with values other than 0 and 1")
                + "; for one label per input use task='classification'."
            )
        if info is None:
            if arr.shape[1] < 1:
                raise DataError("Multilabel needs at least one label column.")
            info = {"classes": list(range(arr.shape[1]))}
        if arr.shape[1] != len(info["classes"]):
            raise DataError(f"Expected {len(info['classes'])} label columns, got {arr.shape[1]}.")
        return torch.tensor(arr, dtype=torch.float32), info

    def _from_sets(self, labels, info):
        if info is None:
            info = {"classes": sorted({v for row in labels for v in row})}
            if not info["classes"]:
                raise DataError("Multilabel labels hold no label at all.")
        index = {c: i for i, c in enumerate(info["classes"])}
        out = torch.zeros(len(labels), len(index))
        for r, row in enumerate(labels):
            for v in row:
                if v not in index:
                    raise DataError(f"Label {v!r} is not among the training labels "
                                    f"{info['classes'][:20]}.")
                out[r, index[v]] = 1
        return out, info

    def n_outputs(self, info):
        return len(info["classes"])

    def combine(self, outputs, info):
        # logits of each label's mean probability: a sigmoid of them gives that mean
        p = torch.stack([torch.sigmoid(o.float()) for o in outputs]).mean(0)
        p = p.clamp(1e-7, 1 - 1e-7)
        return torch.log(p) - torch.log1p(-p)

    def loss(self, outputs, targets, *, label_smoothing=0.0):
        if label_smoothing:
            targets = targets * (1 - label_smoothing) + label_smoothing / 2
        return F.binary_cross_entropy_with_logits(outputs, targets)

    def metrics(self, outputs, targets, info):
        from sklearn.metrics import average_precision_score, f1_score

        prob = torch.sigmoid(outputs.float()).cpu().numpy()
        true = targets.cpu().numpy().round().astype(int)
        present = true.sum(0) > 0  # AP is undefined for a label with no positives
        ap = average_precision_score(true[:, present], prob[:, present], average="macro") \
            if present.any() else 0.0
        return {
            "map": float(ap),
            "micro_f1": float(f1_score(true, prob > 0.5, average="micro", zero_division=0)),
        }

    def decode(self, outputs, info):
        hits = (torch.sigmoid(outputs.float()) > 0.5).cpu().numpy()
        return [[c for c, h in zip(info["classes"], row) if h] for row in hits]


@at.hookimpl
def register_heads(register):
    register(ClassificationHead())
    register(RegressionHead())
    register(MultilabelHead())
