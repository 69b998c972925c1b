"""A Hugging Face transformers encoder as a backbone: embeddings, each layer, then the rest."""

from __future__ import annotations

import contextlib
import inspect
import re
from typing import Any

import torch
from torch import nn

from ..data.preprocessing import TextPreprocessing
from ..errors import StrategyError
from . import _weights
from ._base import ADAPTERS, Backbone, Stage, check_stages
from ._weights import Weights

_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|block|h)\.(\d+)\.")


class HFEncoder(nn.Module):
    """A transformers encoder that pools token states into one feature vector."""

    def __init__(self, model: nn.Module, pooling: str = "mean") -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.num_features = model.config.hidden_size

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.model(**batch).last_hidden_state
        return self.pool(hidden, batch["attention_mask"])

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class HFBackbone(Backbone):
    """A transformers encoder (BERT, RoBERTa, MiniLM, ...) with its tokenizer.

    Args:
        name: The registry name.
        hf_name: Hub id of the architecture, weights and tokenizer (used with
            ``weights="hub"`` and for the config of a random-init model).
        weights: ``"hub"``, a local model folder (``config.json`` + weights + tokenizer),
            a :class:`PackageWeights` locating such a folder, or ``None`` (random init from
            ``config``).
        config: A ``transformers`` config for random init (tiny test models).
        tokenizer: Tokenizer folder or hub id; default: the weights folder or ``hf_name``.
        pooling: ``"mean"`` over tokens (what sentence-transformers trains) or ``"cls"``.
        max_length: Default tokens per input.
    """

    family = "transformers"
    adapters = ADAPTERS
    modality = "text"

    def __init__(self, name: str, *, hf_name: str | None = None, weights: Weights = "hub",
                 config: Any = None, tokenizer: str | None = None, pooling: str = "mean",
                 max_length: int = 128, family: str | None = None) -> None:
        super().__init__(name, weights=weights)
        if pooling not in ("mean", "cls"):
            raise StrategyError(f"pooling must be 'mean' or 'cls', but got {pooling!r}.")
        if weights == "hub" and not hf_name:
            raise StrategyError(f"HFBackbone {name!r}: weights='hub' needs hf_name.")
        if weights is None and config is None and not hf_name:
            raise StrategyError(f"HFBackbone {name!r}: random init needs config= or hf_name=.")
        self.hf_name, self.config, self.tokenizer = hf_name, config, tokenizer
        self.pooling, self.max_length = pooling, max_length
        if family:
            self.family = family
        self._stages_ok: bool | None = None

    def _source(self) -> str:
        """Where from_pretrained reads: a local folder, or the hub id."""
        if self.weights in (None, "hub"):
            if self.hf_name and self._hub_cached() and not _weights.hub_reachable():
                return self.hf_name  # transformers reads the cache
            if self.hf_name and not _weights.hub_reachable():
                raise _weights.hub_error(self.name, "the model", "the hub cannot be reached")
            return self.hf_name  # type: ignore[return-value]
        return str(_weights.local_path(self.weights, self.name))

    def _hub_cached(self) -> bool:
        return bool(self.hf_name) and _weights.cached_hub_file(
            self.hf_name, ("config.json",)) is not None

    def build(self, *, pretrained: bool = True, drop_path: float = 0.0) -> nn.Module:
        from transformers import AutoConfig, AutoModel

        if drop_path:
            raise StrategyError(f"Backbone {self.name!r} does not support drop_path; use 0.")
        with _quiet_transformers():
            if pretrained and self.weights is not None:
                model = _call_without_pooler(AutoModel.from_pretrained, self._source())
            else:
                config = self.config or AutoConfig.from_pretrained(self._source())
                model = _call_without_pooler(AutoModel.from_config, config)
        return HFEncoder(model, self.pooling)

    def layer_groups(self, model: nn.Module) -> list[list[str]]:
        embed: list[str] = []
        layers: dict[int, list[str]] = {}
        rest: list[str] = []
        for name, _ in model.named_parameters():
            hit = _LAYER.search(name)
            if hit:
                layers.setdefault(int(hit.group(1)), []).append(name)
            elif not layers:
                embed.append(name)
            else:
                rest.append(name)
        groups = [embed] + [layers[i] for i in sorted(layers)] + [rest]
        return [g for g in groups if g]

    def preprocessing(self, *, image_size: int | None = None,
                      max_length: int | None = None) -> TextPreprocessing:
        if self.tokenizer:
            source = self.tokenizer
        elif self.weights in (None, "hub"):
            source = self._source()
        else:
            source = str(_weights.local_path(self.weights, self.name))
        return TextPreprocessing(source, int(max_length or self.max_length))

    def stages(self, model: nn.Module) -> list[Stage]:
        """Embeddings, each encoder layer, then pooling, for BERT-style encoders."""
        candidate = _bert_stages(model)
        if candidate is None:
            return super().stages(model)
        if self._stages_ok is None:
            ids = torch.randint(0, model.model.config.vocab_size, (2, 8))
            mask = torch.ones_like(ids)
            mask[1, 5:] = 0
            self._stages_ok = check_stages(model, candidate,
                                           {"input_ids": ids, "attention_mask": mask})
        return candidate if self._stages_ok else super().stages(model)


@contextlib.contextmanager
def _quiet_transformers():
    """No load reports or progress bars for every trial's model."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _call_without_pooler(fn, source):
    # The pooler is unused with mean/cls pooling; leaving it out keeps every parameter
    # trainable-by-gradient (the conformance suite checks that).
    try:
        return fn(source, add_pooling_layer=False)
    except TypeError:
        return fn(source)


def _bert_stages(body: HFEncoder) -> list[Stage] | None:
    m = body.model
    if not (hasattr(m, "embeddings") and hasattr(getattr(m, "encoder", None), "layer")
            and hasattr(m, "_create_attention_masks")):
        return None

    # transformers renamed this private method's cache argument (past_key_values -> cache)
    # and, in 5.x, added position_ids; the forward passes None for both when not given
    params = inspect.signature(m._create_attention_masks).parameters
    no_cache = {k: None for k in ("past_key_values", "cache", "position_ids") if k in params}

    def names(prefix: str, module: nn.Module) -> frozenset[str]:
        return frozenset(f"{prefix}.{n}" for n, _ in module.named_parameters())

    def embed(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = m.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
        return h, batch["attention_mask"]

    def layer_stage(layer: nn.Module):
        def run(state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            h, mask = state
            ext, _ = m._create_attention_masks(attention_mask=mask, encoder_attention_mask=None,
                                               embedding_output=h, encoder_hidden_states=None,
                                               **no_cache)
            out = layer(h, ext)
            return (out[0] if isinstance(out, tuple) else out), mask
        return run

    stages = [Stage(embed, names("model.embeddings", m.embeddings))]
    stages += [Stage(layer_stage(layer), names(f"model.encoder.layer.{i}", layer))
               for i, layer in enumerate(m.encoder.layer)]
    covered = set().union(*(s.params for s in stages))
    rest = frozenset(n for n, _ in body.named_parameters() if n not in covered)
    if rest:  # anything else (a final norm) would be skipped by this chain
        return None
    stages.append(Stage(lambda state: body.pool(*state), frozenset()))
    return stages

