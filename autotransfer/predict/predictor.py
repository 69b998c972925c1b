"""A trained model ready to predict on raw inputs, saved with its strategy."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import checks, plugins
from ..data import Dataset, pipeline
from ..data import batch as _batch
from ..data._inputs import as_dataset
from ..data._sources import ImageFiles
from ..data.preprocessing import Preprocessing
from ..errors import DataError, StorageError
from ..files import check_target
from ..strategy.strategy import Strategy
from ..techniques.adapters import merged_state
from ..training.devices import torch_device
from ..training.model import TransferModel
from . import modelconfig, modelfile
from .export import export


class Predictor:
    """The model of one trial with its preprocessing and label decoding.

    Example:
        >>> model = study.load_best()                        # doctest: +SKIP
        >>> model.predict(images[:5])                        # doctest: +SKIP
        array([3, 8, 1, 0, 4])
        >>> model.save("digits.safetensors")                 # doctest: +SKIP
        >>> at.load("digits.safetensors").predict(images[:5])  # doctest: +SKIP
    """

    def __init__(self, model: TransferModel, strategy: Strategy, task: str, info: dict,
                 preprocessing: Preprocessing) -> None:
        self.model = model.eval()
        self.strategy, self.task, self.info = strategy, task, info
        self.preprocessing = preprocessing
        self.head = plugins.get_head(task)
        self.study = ""  # the id of the study it came from, when it did
        # an ensemble's (strategy, preprocessing) per member, the first being the above
        self.members: tuple[tuple[Strategy, Preprocessing], ...] = ()

    @property
    def classes(self) -> list | None:
        return self.info.get("classes")

    @torch.no_grad()
    def _outputs(self, inputs: Any, batch_size: int,
                 column: str | None) -> tuple[torch.Tensor, bool, Any]:
        """Model outputs for the inputs, whether one input was given, and the inputs' own
        row labels (:func:`row_index`; None where they have none)."""
        from ..checks import integer

        integer("batch_size", batch_size, low=1)
        ds, single = as_dataset(inputs, self.preprocessing.modality, column=column)
        device = next(self.model.parameters()).device
        outs = []
        for xb in pipeline.inference_batches(self.preprocessing, ds, batch_size):
            xb = _batch.to(xb, device)
            outs.append(self.model(self.preprocessing.normalize(xb)).float().cpu())
        return torch.cat(outs), single, row_index(inputs, ds)

    def predict(self, inputs: Any, *, batch_size: int = 64, column: str | None = None,
                as_pandas: bool = True) -> Any:
        """Predictions in the label space of the training data (class names, numbers).

        ``inputs``: one image (PIL image, array, file path) or string, which gives one
        prediction; or many: a list (images of varied sizes too), a batch array, a folder,
        a DataFrame (``column=`` names the input column when it has several) or a Dataset.

        Many inputs that name their rows give a pandas Series named ``prediction``
        (several regression targets: a DataFrame with a column per target), indexed by
        them: a folder or a list of image files by each file's path (the index is named
        ``path``), a DataFrame or Series by its own index. Inputs without names (in-memory
        images, arrays, tensors, texts, a Dataset) give the array, one answer per input in
        order. A multi-task model gives a DataFrame with a column per task, indexed the
        same way (else numbered from 0; a Series for one input). ``as_pandas=False`` gives
        the array (a multi-task model: ``{task column: array}``).
        """
        checks.flag("as_pandas", as_pandas)
        out, single, index = self._outputs(inputs, batch_size, column)
        pred = self.head.decode(out, self.info)
        if single:
            return pred.iloc[0] if hasattr(pred, "iloc") else pred[0]
        if hasattr(pred, "iloc"):  # a column per task
            if not as_pandas:
                return {col: pred[col].to_numpy() for col in pred.columns}
            if index is not None:
                pred.index = index
            return pred
        return pred if index is None or not as_pandas else _labelled(pred, index)

    def predict_proba(self, inputs: Any, *, batch_size: int = 64, column: str | None = None,
                      as_pandas: bool = True) -> Any:
        """Class probabilities: a DataFrame with one column per class (a Series for one input).

        Classification: softmax; multilabel: a sigmoid per label. Columns are the class
        names, as in AutoGluon and scikit-learn's ``classes_`` order. Rows are indexed as
        :meth:`predict` indexes them (file paths, the DataFrame's index), else numbered
        from 0. ``as_pandas=False`` gives the array (columns in :attr:`classes` order). A
        multi-task model gives a dict: label column -> that, for each classification and
        multilabel task.
        """
        checks.flag("as_pandas", as_pandas)
        out, single, index = self._outputs(inputs, batch_size, column)
        if not isinstance(self.task, dict):
            return _proba(self.task, out, self.classes, single, index, as_pandas)
        tasks = {col: (self.task[col], o, self.info["tasks"][col]["info"].get("classes"))
                 for col, o, _ in self.head.blocks(out, None, self.info)}
        probas = {col: _proba(t, o, classes, single, index, as_pandas)
                  for col, (t, o, classes) in tasks.items() if t in PROBA_TASKS}
        if not probas:
            raise DataError(f"predict_proba applies to classification and multilabel tasks, "
                            f"but this model's are {self.task!r}; use predict().")
        return probas

    def evaluate(self, data: Dataset, *, batch_size: int = 64) -> dict[str, float]:
        """The task's metrics on labelled data (AutoGluon's ``predictor.evaluate``).

        The labels must fit what the model was trained on (its classes, its label width).
        """
        from ..inputs import dataset

        data = dataset("data", data)
        if data.modality != self.preprocessing.modality:
            raise DataError(f"This model takes {self.preprocessing.modality} inputs, but the "
                            f"data holds {data.modality}; give {self.preprocessing.modality} "
                            f"data with labels.")
        targets, _ = self.head.encode(data.labels, self.info)
        out, _, _ = self._outputs(data, batch_size, None)
        return self.head.metrics(out, targets, self.info)

    def save(self, path: str | Path) -> Path:
        """Save weights, strategy, task, labels and preprocessing to one safetensors file.

        The file is written beside ``path`` and renamed over it once complete; ``path`` may
        be a model file (replaced) but not a study's storage or another program's file.
        """
        path = Path(path)
        check_target(path, what="the model file", ours=modelfile.is_ours)  # before mkdir
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_checkpoint(path, merged_state(self.model), self.strategy, self.task,
                               self.info, self.preprocessing, study=self.study,
                               members=self.members)

    def export(self, path: str | Path, *, format: str) -> dict:
        """Write the model for another runtime: ``"onnx"``, ``"torchscript"``, ``"timm"``
        or ``"transformers"``; returns what was written and how closely it matches."""
        return export(self, path, format=format)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu", study: str | None = None
             ) -> Predictor:
        """Load a file written by :meth:`save` (the backbone must be registered).

        Model files hold safetensors weights and a JSON config: loading one runs no code.
        The config is checked, and the weights' names and shapes in the file's header are
        checked against the architecture it names, before that architecture is built.
        ``study``: the id of the study the file must belong to (``Study.load_best`` checks).
        """
        from .modelcheck import build_checked

        path = Path(path)
        torch_device(device)
        header = modelfile.read_header(path)
        cfg = modelconfig.parse(path, header.config)
        if study and cfg.study != study:
            raise StorageError(f"{str(path)!r} holds a model of another study (id "
                               f"{cfg.study!r}, not {study!r}); it was not used.")
        model = build_checked(path, cfg, header)
        predictor = cls(model.to(device), cfg.strategy, cfg.task, cfg.info, cfg.preprocessing)
        predictor.study, predictor.members = cfg.study, cfg.members
        return predictor

    def __repr__(self) -> str:
        if self.members:
            names = ", ".join(s.backbone for s, _ in self.members)
            return f"Predictor(task={self.task!r}, ensemble of {len(self.members)}: {names})"
        return f"Predictor(task={self.task!r}, strategy={self.strategy!r})"


PROBA_TASKS = ("classification", "multilabel")


def row_index(inputs: Any, ds: Dataset) -> Any:
    """The inputs' own row labels: a DataFrame's or Series' index; the file paths of a
    folder or a list of image files (a pandas Index named ``path``); None for inputs whose
    rows have no names (in-memory images, arrays, texts, a Dataset)."""
    import pandas as pd

    if hasattr(inputs, "index") and hasattr(inputs, "iloc"):
        return inputs.index
    if not isinstance(inputs, Dataset) and isinstance(ds.source, ImageFiles):
        return pd.Index([str(p) for p in ds.source.paths], name="path")
    return None


def _labelled(pred: Any, index: Any) -> Any:
    """Predictions with their row labels: a Series named ``prediction`` (a multilabel
    model's label lists as its cells), or a DataFrame with a column per regression target."""
    import pandas as pd

    if isinstance(pred, np.ndarray) and pred.ndim == 2:
        return pd.DataFrame(pred, index=index)
    if isinstance(pred, np.ndarray):
        return pd.Series(pred, index=index, name="prediction")
    return pd.Series(list(pred), index=index, name="prediction", dtype=object)


def _proba(task: str, out: torch.Tensor, classes: list | None, single: bool, index: Any,
           as_pandas: bool) -> Any:
    """Class probabilities of one task's outputs (softmax; a sigmoid per label)."""
    import pandas as pd

    if task not in PROBA_TASKS:
        raise DataError(f"predict_proba applies to classification and multilabel, "
                        f"not {task!r}; use predict().")
    proba = (torch.softmax(out, 1) if task == "classification" else torch.sigmoid(out)).numpy()
    if not as_pandas:
        return proba[0] if single else proba
    frame = pd.DataFrame(proba, columns=list(classes), index=index)
    return frame.iloc[0] if single else frame


def save_checkpoint(path: Path, state_dict: dict, strategy: Strategy, task: str, info: dict,
                    preprocessing: Preprocessing, *, study: str = "",
                    members: tuple[tuple[Strategy, Preprocessing], ...] = ()) -> Path:
    """Write a model file; ``study`` is the id of the study whose trial it is, ``members``
    an ensemble's (strategy, preprocessing) per member."""
    config = {"study": study, "strategy": strategy.to_dict(), "task": task, "info": info,
              "preprocessing": dataclasses.asdict(preprocessing)}
    if members:
        config["members"] = [{"strategy": s.to_dict(), "preprocessing": dataclasses.asdict(p)}
                             for s, p in members]
    return modelfile.write(path, state_dict, config)


def load(path: str | Path, *, device: str = "cpu") -> Predictor:
    """Load a saved model: ``at.load("model.safetensors").predict(inputs)``."""
    return Predictor.load(path, device=device)
