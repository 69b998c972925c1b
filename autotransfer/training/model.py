"""TransferModel: a backbone body and a task head, with freezing by layer group; and
:func:`build_model`, the untrained model for a strategy."""

from __future__ import annotations

from itertools import chain
from typing import Any

import torch
from torch import nn

from .. import plugins
from ..backbones import Stage
from ..errors import StrategyError
from ..strategy import Strategy, fields


class TransferModel(nn.Module):
    """``head(body(x))``, split into a frozen prefix and a trainable tail.

    Freezing ``k`` groups stops gradients to their parameters and keeps every module whose
    parameters are all frozen in eval mode (BatchNorm statistics stay, dropout and
    drop-path are off): a frozen part is a fixed function of its input. The leading body
    stages that lie wholly in the frozen part form the *prefix*; its output for an input
    never changes during training, which is what lets the runner compute it once.
    """

    def __init__(self, body: nn.Module, head: nn.Module, groups: list[list[str]],
                 stages: list[Stage]) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.groups = groups
        self._stages = stages
        self._frozen_modules: list[nn.Module] = []
        self.frozen_groups = 0
        self.n_prefix = 0

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    def freeze(self, k: int) -> None:
        """Freeze the first ``k`` layer groups (and only those)."""
        if not 0 <= k <= self.n_groups:
            raise StrategyError(
                f"frozen_groups={k} is out of range: this backbone has {self.n_groups} layer "
                f"groups, so accepted values are 0..{self.n_groups}."
            )
        frozen = set(chain.from_iterable(self.groups[:k]))
        for name, p in self.body.named_parameters():
            p.requires_grad_(name not in frozen)
        self.n_prefix = 0
        for stage in self._stages:
            if not stage.params <= frozen:
                break
            self.n_prefix += 1
        self.frozen_groups = k
        self.mark_frozen()

    def mark_frozen(self) -> None:
        """Keep every body module whose parameters are all frozen in eval mode (after
        :meth:`freeze`, and after an adapter changed what trains)."""
        self._frozen_modules = [
            m for m in self.body.modules()
            if any(True for _ in m.parameters())
            and not any(p.requires_grad for p in m.parameters())
        ]
        self.train(self.training)

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        for m in self._frozen_modules:
            m.eval()
        return self

    def forward_prefix(self, x: Any) -> Any:
        """The frozen prefix: a no-grad call whose output does not depend on training."""
        with torch.no_grad():
            for stage in self._stages[: self.n_prefix]:
                x = stage.fn(x)
        return x

    def embed_tail(self, h: Any) -> torch.Tensor:
        """The trainable rest of the body: the features the head reads."""
        for stage in self._stages[self.n_prefix :]:
            h = stage.fn(h)
        return h

    def forward_tail(self, h: Any) -> torch.Tensor:
        """The trainable rest of the body, then the head."""
        return self.head(self.embed_tail(h))

    def embed(self, x: Any) -> torch.Tensor:
        """The body's features of an input (what the head reads)."""
        return self.embed_tail(self.forward_prefix(x))

    def forward(self, x: Any) -> torch.Tensor:
        return self.forward_tail(self.forward_prefix(x))

    def param_counts(self) -> tuple[int, int]:
        """(trainable, total) parameters, head included."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, total


def build_model(strategy: Strategy, task: str, info: dict) -> TransferModel:
    """The untrained model for a strategy: pretrained (or random) body plus a new head."""
    backbone = plugins.get_backbone(strategy.backbone)
    if (reason := fields.fits(strategy, backbone)) is not None:
        raise StrategyError(reason)
    head = plugins.get_head(task)
    body = backbone.build(pretrained=strategy.pretrained, drop_path=strategy.drop_path)
    # A timm model whose pooled output passes a last hidden layer (MobileNetV3's conv_head)
    # gives head_hidden_size features, not num_features.
    width = getattr(body, "head_hidden_size", None) or body.num_features
    return TransferModel(body, head.build(width, info, dropout=strategy.dropout),
                         backbone.layer_groups(body), backbone.stages(body))
