"""An example third-party autotransfer technique: Batch Spectral Shrinkage (BSS).

Chen et al., "Catastrophic Forgetting Meets Negative Transfer: Batch Spectral Shrinkage
for Safe Transfer Learning", NeurIPS 2019. Fine-tuning keeps pretrained feature directions
the target task has no use for, and they can hurt it (negative transfer); they show up as
the smallest singular values of a batch's feature matrix. BSS adds
``eta * sum of the k smallest squared singular values`` of the batch features to the
loss, shrinking them (the paper's k=1, eta=0.001).

It declares one Strategy field, ``bss`` (eta; 0 = off). A search samples it like a
built-in field, records it with every trial, and the leaderboard and report show it.
"""

import torch

import autotransfer as at
from autotransfer.techniques import Categorical, Technique, spec

K = 1  # how many of the smallest singular values are shrunk


class BatchSpectralShrinkage(Technique):
    name = "bss"
    fields = {
        "bss": spec(0.0, accepts=lambda v: v >= 0, accepted=">= 0 (the BSS weight; 0 = off)",
                    search=Categorical((0.0, 0.001, 0.01)), off=0.0, column=True),
    }

    def loss(self, model, features, outputs, targets, strategy):
        # Singular values in float32: SVD has no half-precision kernels (autocast).
        singular = torch.linalg.svdvals(features.float().flatten(1))  # descending
        return strategy.bss * singular[-K:].pow(2).sum()


@at.hookimpl
def register_techniques(register):
    register(BatchSpectralShrinkage())
