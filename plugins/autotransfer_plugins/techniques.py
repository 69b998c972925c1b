"""The built-in techniques, registered through ``register_techniques`` as anyone's are.

Each acts on built-in Strategy fields whose table entry names it (``technique=`` in
:mod:`autotransfer.strategy.fields`; docs/fields.md lists them), using the mechanics in
:mod:`autotransfer.techniques` (adapters, AdaBN, DANN) and timm (``Mixup``).
"""

from __future__ import annotations

import functools

import torch

import autotransfer as at
from autotransfer.techniques import Technique, adapters, domain

EVAL_BATCH = 256  # target inputs read per batch for AdaBN's statistics
SOURCE_INPUTS = 2048  # training inputs AdaBN reads for the source's (a random sample)


class Adapters(Technique):
    """What trains inside the trainable groups: LoRA, BitFit or the norms (``adapter``)."""

    name = "adapters"
    order = -10  # before anything that reads what trains (L2-SP's start point)

    def build(self, model, strategy):
        adapters.attach(model, strategy.adapter, strategy.lora_rank)


class LayerDecay(Technique):
    """Group i of G learns at ``lr * layer_decay ** (G - 1 - i)`` (``layer_decay``)."""

    name = "layer_decay"

    def param_groups(self, groups, model, strategy):
        for g in groups:
            if "layer" in g:
                g["lr"] = g["lr"] * strategy.layer_decay ** (g["layers"] - 1 - g["layer"])
        return groups


class L2SP(Technique):
    """``l2sp / 2 * ||w - w0||^2`` over the trainable backbone weights, in place of their
    weight decay (Li et al., ICML 2018)."""

    name = "l2sp"

    def active(self, strategy):
        return strategy.l2sp > 0 and strategy.pretrained

    def start(self, trial):
        return self.copy()  # this trial's start point, taken in build

    def build(self, model, strategy):
        self.start_point = [(p, p.detach().clone()) for p in model.body.parameters()
                            if p.requires_grad]

    def param_groups(self, groups, model, strategy):
        return [{**g, "weight_decay": 0.0} if "layer" in g else g for g in groups]

    def loss(self, model, features, outputs, targets, strategy):
        return 0.5 * strategy.l2sp * sum(((p - p0) ** 2).sum() for p, p0 in self.start_point)


class LabelSmoothing(Technique):
    """The head's loss with ``label_smoothing``; under mixing, timm's Mixup smooths."""

    name = "label_smoothing"

    def active(self, strategy):
        return strategy.label_smoothing > 0 and not strategy.mixes

    def start(self, trial):
        smoothing = self.copy()
        smoothing.head = trial.head
        return smoothing

    def criterion(self, criterion, strategy):
        return functools.partial(self.head.loss, label_smoothing=strategy.label_smoothing)


class Mixing(Technique):
    """Mixup and CutMix of input images with soft targets, by timm's ``Mixup``."""

    name = "mixing"
    even_batches = True  # timm's Mixup pairs a batch with its flip

    def start(self, trial):
        from timm.data import Mixup

        s, head, mixing = trial.strategy, trial.head, self.copy()
        mixing.mix = Mixup(mixup_alpha=s.mixup, cutmix_alpha=s.cutmix, mode="batch",
                           label_smoothing=s.label_smoothing,
                           num_classes=head.n_outputs(trial.info),
                           multi_label=head.name == "multilabel")
        return mixing

    def live(self, strategy):
        return "no (mixup)" if strategy.mixup else "no (cutmix)"

    def batch(self, inputs, targets, strategy):
        return self.mix(inputs, targets)


class AdaBN(Technique):
    """BatchNorm statistics re-estimated on the target inputs for every validation and
    in the kept weights; frozen layers map the target's moments onto the training
    inputs' (``adabn``; :mod:`autotransfer.techniques.domain`)."""

    name = "adabn"
    relative = True  # False: frozen layers too map the target onto N(0, 1) (classic AdaBN)

    def start(self, trial):
        domain.check(trial.strategy, trial.model, trial.unlabeled)
        adabn = self.copy()
        adabn.batches = domain.target_batches(trial, EVAL_BATCH)
        # Without the trial's training inputs (or relative off): classic AdaBN.
        adabn.source = domain.source_batches(trial, EVAL_BATCH) if self.relative else None
        adabn.forward = trial.forward
        return adabn

    def live(self, strategy):
        return "no (domain adaptation)"  # target inputs pass through the whole body

    def validation(self, model, strategy):
        return domain.target_statistics(model, self.batches, self.forward, self.source,
                                        SOURCE_INPUTS)


class DANN(Technique):
    """A domain classifier behind gradient reversal on source and target features
    (``dann``, its loss weight; :mod:`autotransfer.techniques.domain`)."""

    name = "dann"

    def start(self, trial):
        domain.check(trial.strategy, trial.model, trial.unlabeled)
        s, body, dann = trial.strategy, trial.model.body, self.copy()
        width = getattr(body, "head_hidden_size", None) or body.num_features
        batches = domain.target_batches(trial, trial.batch_size, shuffle=True)
        dann.adversary = domain.Dann(s.dann, width, batches, trial.steps, s.lr, trial.device)
        dann.inputs = trial.inputs
        return dann

    def live(self, strategy):
        return "no (domain adaptation)"

    def embed(self, model, inputs, strategy):
        """Images share one pass (and BatchNorm's batch statistics) with the target
        batch, as in DANN."""
        target_inputs = self.inputs(self.adversary.next_target())
        if isinstance(inputs, torch.Tensor) and isinstance(target_inputs, torch.Tensor):
            features = model.embed(torch.cat([inputs, target_inputs]))
            source, target = features[: len(inputs)], features[len(inputs):]
        else:
            source, target = model.embed(inputs), model.embed(target_inputs)
        return source, self.adversary.loss(source, target)

    def step(self, scaler):
        scaler.step(self.adversary.optimizer)
        self.adversary.zero_grad()


@at.hookimpl
def register_techniques(register):
    for technique in (Adapters(), LayerDecay(), L2SP(), LabelSmoothing(), AdaBN(), DANN(),
                      Mixing()):
        register(technique)
