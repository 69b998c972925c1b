"""What a distillation trial learns from: the teacher's outputs as targets, the loss that
reads them, and the trial context a backend runs distillation trials with.

The student trains on the teacher's softened outputs (Hinton et al., 2015):
``alpha * CE(student, label) + (1 - alpha) * T**2 * KL(softmax(teacher / T) ||
softmax(student / T))``, the ``T**2`` keeping the soft term's gradients at the scale of
the hard one's. Extra unlabeled inputs add soft targets only: they carry the teacher's
class as a pseudo-label, masked out of the hard term.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import torch
import torch.nn.functional as F

from .. import plugins
from ..backends import TrialContext
from ..data import Dataset
from ..predict.predictor import Predictor
from ..strategy import Float, Strategy
from ..training.runner import Prepared, TrialResult, prepare, run_trial

TASK = "classification"  # soft targets are class probabilities
SEARCHED = {"temperature": Float(1.0, 8.0, log=True), "alpha": Float(0.0, 1.0),
            "lr": Float(1e-4, 1e-2, log=True)}
FIRST = {"temperature": 4.0, "alpha": 0.5}  # the sub-study's first trial (and the lr given)
BATCH = 128  # teacher inference batch


@dataclass(frozen=True)
class DistillLoss:
    """The student's training loss on targets made by :func:`pack`.

    ``alpha`` weighs the hard (label) term over the labelled rows of the batch,
    ``1 - alpha`` the soft term over all rows, at ``temperature``.

    Example:
        >>> y = pack(torch.tensor([0, 1]), torch.tensor([1, 0]), torch.zeros(2, 3))
        >>> round(float(DistillLoss(2.0, 1.0)(torch.zeros(2, 3), y)), 4)  # CE of row 0 only
        1.0986
    """

    temperature: float
    alpha: float

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        out, t = outputs.float(), self.temperature
        hard, labelled, teacher = targets[:, 0].long(), targets[:, 1] > 0, targets[:, 2:]
        soft = F.kl_div(F.log_softmax(out / t, 1), F.log_softmax(teacher / t, 1),
                        log_target=True, reduction="batchmean") * t * t
        if self.alpha == 0 or not bool(labelled.any()):
            return (1 - self.alpha) * soft
        return self.alpha * F.cross_entropy(out[labelled], hard[labelled]) \
            + (1 - self.alpha) * soft


def pack(hard: torch.Tensor, labelled: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-example training targets, one row each: ``[class index, labelled (1/0),
    teacher logits...]`` (what the loaders index and :class:`DistillLoss` reads)."""
    return torch.cat([hard.float()[:, None], labelled.float()[:, None], teacher.float()], 1)


def teacher_outputs(models: list[Predictor], data: Dataset) -> torch.Tensor:
    """The log of the models' mean softmax on ``data`` (one model: its log-softmax, which
    gives the same tempered targets as its logits at every temperature)."""
    probs = torch.stack([torch.softmax(m._outputs(data, BATCH, None)[0], 1) for m in models])
    return probs.mean(0).clamp_min(1e-12).log()


@dataclass
class SoftTargets:
    """The student's starting strategy and the teacher's targets, computed once in the
    parent and sent to every worker with the job: ``logits`` for the training rows, then
    for the unlabeled rows (``pseudo``: the teacher's class for each)."""

    strategy: Strategy
    info: dict
    logits: torch.Tensor
    n_labelled: int
    unlabeled: Dataset | None = None
    pseudo: np.ndarray | None = None


def soft_targets(strategy: Strategy, members: list[Predictor], train: Dataset,
                 unlabeled: Dataset | None) -> SoftTargets:
    logits, pseudo = teacher_outputs(members, train), None
    if unlabeled is not None:
        extra = teacher_outputs(members, unlabeled)
        pseudo = np.asarray(members[0].info["classes"])[extra.argmax(1).numpy()]
        logits = torch.cat([logits, extra])
    return SoftTargets(strategy, members[0].info, logits, len(train), unlabeled, pseudo)


class DistillContext(TrialContext):
    """A distillation sub-study's trials, run by any backend like a search's: define
    (temperature, alpha and lr sampled; the student's strategy otherwise fixed), then
    train on the teacher's targets. Every trial starts from the same seed (head init,
    batch order): trials differ only in the searched values."""

    def define(self, trial: optuna.Trial) -> tuple[Strategy, str]:
        targets: SoftTargets = self.job.extra
        p = {k: trial.suggest_float(k, d.low, d.high, log=d.log) for k, d in SEARCHED.items()}
        for key, value in {"temperature": p["temperature"], "alpha": p["alpha"],
                           "n_train": targets.n_labelled,
                           "n_unlabeled": len(targets.logits) - targets.n_labelled}.items():
            trial.set_user_attr(key, value)
        return targets.strategy.replace(lr=p["lr"]), ""

    def prepared(self, strategy: Strategy) -> Prepared:
        """The student's data with the teacher's targets: the labelled rows, then the
        unlabeled ones under the teacher's class, masked out of the hard term."""
        if "student" in self._prepared:  # one student strategy: its data, prepared once
            return self._prepared["student"]
        t: SoftTargets = self.job.extra
        head, train = plugins.get_head(TASK), self.train
        labelled = torch.arange(len(t.logits)) < t.n_labelled
        if t.unlabeled is not None:
            u = t.unlabeled
            train = train.concat(Dataset(u.source, t.pseudo, u.modality, index=u.index))
        prepared = prepare(strategy, train, self.valid, TASK)
        # The student's outputs line up with the teacher's classes, whichever classes
        # this split happens to hold.
        prepared.info = t.info
        prepared.y_valid, _ = head.encode(self.valid.labels, t.info)
        prepared.y_train = pack(head.encode(train.labels, t.info)[0], labelled, t.logits)
        self._prepared["student"] = prepared
        return prepared

    def run(self, strategy: Strategy, report: Callable[[float, int], None], *, device: str,
            seed: int, timings: dict[str, float] | None = None,
            params: dict[str, Any] | None = None) -> TrialResult:
        params = params or {}
        loss = DistillLoss(params.get("temperature", FIRST["temperature"]),
                           params.get("alpha", FIRST["alpha"]))
        setup = self.setup(strategy, report, device=device, seed=self.job.seed, timings=timings)
        return run_trial(strategy, self.train, self.valid, setup, loss=loss)
