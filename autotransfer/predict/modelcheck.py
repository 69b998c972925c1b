"""A model file's weights checked against the architecture its config names, before any
real memory is spent on that architecture.

A 60 kB file may name ``timm/vit_large_patch16_224``: building that model for real takes
gigabytes and half a minute before ``load_state_dict`` finds that nothing fits. Here the
architecture is first built on PyTorch's ``meta`` device (shapes, no storage, no init
cost) and compared, name by name and shape by shape, with the safetensors header; only a
file that fits is built and read. A backbone that cannot be built on ``meta`` is compared
after its real build instead, still before any weight is read or loaded.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import plugins
from ..errors import AutotransferError, PluginError, StorageError, StrategyError, UnknownNameError
from ..training.model import TransferModel
from . import modelfile
from .ensemble import EnsembleModel, Members
from .modelconfig import ModelConfig, damaged

Shapes = dict[str, tuple[tuple[int, ...], str]]  # tensor name -> (shape, dtype kind)
SHOWN = 3  # mismatching tensors named in a message


def build_checked(path: Path, cfg: ModelConfig, header: modelfile.Header) -> nn.Module:
    """The model of the file at ``path``, its weights loaded, once they fit its architecture
    (an ensemble's: every member's, each under ``body.members.<i>.``).

    Raises:
        PluginError: a backbone or task is not registered here.
        StorageError: the weights do not fit the architecture the config names (the first
            mismatching tensors are named), or the config's labels do not fit its task.
    """
    parts = [dataclasses.replace(cfg, strategy=s, preprocessing=p, members=())
             for s, p in cfg.members] or [cfg]
    prefixes = [f"body.members.{i}." for i in range(len(parts))] if cfg.members else [""]
    expected = [_expected(path, part) for part in parts]
    got = _kinds(header.tensors)
    if all(e is not None for e in expected):
        compare(path, cfg, got, _prefixed(expected, prefixes))
    models = [_built(path, part) for part in parts]
    if not all(e is not None for e in expected):
        compare(path, cfg, got, _prefixed([_state_shapes(m) for m in models], prefixes))
    model = models[0] if not cfg.members else EnsembleModel(Members(
        models, [p.preprocessing for p in parts],
        functools.partial(plugins.get_head(cfg.task).combine, info=cfg.info)))
    try:
        model.load_state_dict(modelfile.read_state(path))
    except RuntimeError as exc:  # the file changed on disk since its header was checked
        raise damaged(path, f"its weights do not load: {str(exc)[:300]}") from exc
    return model


def _expected(path: Path, cfg: ModelConfig) -> Shapes | None:
    """The state's shapes of one model's architecture (None: known only once built),
    after its backbone, task and labels are found to fit."""
    backbone, head = _registered(path, cfg)
    expected = _on_meta(path, cfg, backbone, head)
    _check_decodes(path, cfg, head)
    return expected


def _built(path: Path, cfg: ModelConfig) -> TransferModel:
    """The architecture only: the saved state replaces every weight."""
    from ..training.model import build_model

    try:
        model = build_model(cfg.strategy.replace(pretrained=False, l2sp=0.0), cfg.task,
                            cfg.info)
        model.freeze(cfg.strategy.frozen_groups)
    except StrategyError as exc:
        raise damaged(path, f"strategy: {exc}") from exc
    return model


def _prefixed(shapes: list[Shapes], prefixes: list[str]) -> Shapes:
    return {prefix + k: v for prefix, part in zip(prefixes, shapes) for k, v in part.items()}


def _registered(path: Path, cfg: ModelConfig) -> tuple[Any, Any]:
    try:
        backbone = plugins.get_backbone(cfg.strategy.backbone)
        head = plugins.get_head(cfg.task)
    except UnknownNameError as exc:
        raise PluginError(
            f"{str(path)!r} needs backbone {cfg.strategy.backbone!r} and task {cfg.task!r}, "
            f"and one is not registered here ({exc}). Register the plugin that provides it: "
            f"at.register_plugin('module') in Python, --plugin module on the command "
            f"line.") from exc
    except AutotransferError as exc:  # a multi-task mapping naming a bad task
        raise damaged(path, f"task {cfg.task!r:.80}: {exc}") from exc
    if cfg.strategy.adapter not in backbone.adapters:
        raise damaged(path, f"strategy adapter={cfg.strategy.adapter!r} does not apply to "
                            f"backbone {backbone.name!r}; accepted: {list(backbone.adapters)}")
    return backbone, head


def _on_meta(path: Path, cfg: ModelConfig, backbone: Any, head: Any) -> Shapes | None:
    """The state's shapes of the architecture, built on ``meta``; None when the backbone
    cannot be built there (it is then checked after its real build)."""
    s = cfg.strategy
    try:
        with torch.device("meta"):
            body = backbone.build(pretrained=False, drop_path=s.drop_path)
    except StrategyError as exc:
        raise damaged(path, f"strategy: {exc}") from exc
    except AutotransferError:
        raise  # e.g. a hub config that cannot be fetched: the real build says the same
    except Exception:  # noqa: BLE001 - a backbone whose build needs real tensors
        return None
    # The feature width as runner.build_model takes it.
    width = getattr(body, "head_hidden_size", None) or body.num_features
    try:
        with torch.device("meta"):
            out = head.build(width, cfg.info, dropout=s.dropout)
    except Exception as exc:  # noqa: BLE001 - labels that do not fit the task
        raise damaged(path, f"its info does not fit task {cfg.task!r}: "
                            f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    groups = len(backbone.layer_groups(body))
    if not 0 <= s.frozen_groups <= groups:
        raise damaged(path, f"strategy frozen_groups={s.frozen_groups} is out of range: "
                            f"backbone {s.backbone!r} has {groups} layer groups, so accepted "
                            f"values are 0..{groups}")
    return _state_shapes(TransferModel(body, out, [], []))


def _check_decodes(path: Path, cfg: ModelConfig, head: Any) -> None:
    """The labels in ``info`` decode an output batch into finite predictions."""
    try:
        n = int(head.n_outputs(cfg.info))
        decoded = head.decode(torch.zeros(2, n), cfg.info)
    except Exception as exc:  # noqa: BLE001 - a crafted info: a missing or mistyped key
        raise damaged(path, f"its info does not fit task {cfg.task!r}: {type(exc).__name__}: "
                            f"{str(exc)[:200]}; it must be what training recorded (classes, "
                            f"or regression scales)") from exc
    values = np.asarray(decoded) if isinstance(decoded, np.ndarray) else None
    if values is not None and values.dtype.kind == "f" and not np.isfinite(values).all():
        raise damaged(path, f"its info gives task {cfg.task!r} non-finite scales; they must "
                            f"be finite numbers")


def compare(path: Path, cfg: ModelConfig, got: Shapes, want: Shapes) -> None:
    """Refuse a file whose tensors are not exactly the architecture's, naming the first."""
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    other = [k for k in want if k in got and got[k] != want[k]]
    if not (missing or extra or other):
        return
    shown = ([f"{k!r} has shape {_shape(got[k])} ({got[k][1]}), the architecture needs "
              f"{_shape(want[k])} ({want[k][1]})" for k in other[:SHOWN]]
             + [f"{k!r} {_shape(want[k])} is missing" for k in missing[:SHOWN]]
             + [f"{k!r} is not part of it" for k in extra[:SHOWN]])
    counts = f"{len(other)} of other shape or type, {len(missing)} missing, {len(extra)} extra"
    about_head = " (the head's size comes from the config's info: its classes or targets)" \
        if not (missing or extra) and all(k.startswith("head.") for k in other) else ""
    raise StorageError(
        f"{str(path)!r} does not hold the weights of the architecture its config names "
        f"(backbone {cfg.strategy.backbone!r}, task {cfg.task!r}): {'; '.join(shown)}"
        f"{about_head} ({counts}, of {len(want)} tensors). It was not loaded, and the "
        f"architecture was not built. Give a file written by Predictor.save or kept by a "
        f"study.")


def _state_shapes(model: nn.Module) -> Shapes:
    return {k: (tuple(v.shape), _kind(v.dtype)) for k, v in model.state_dict().items()}


def _kind(dtype: torch.dtype) -> str:
    return "float" if dtype.is_floating_point else "complex" if dtype.is_complex else \
        "bool" if dtype == torch.bool else "integer"


def _kinds(tensors: dict[str, tuple[tuple[int, ...], str]]) -> Shapes:
    """safetensors dtypes (F32, BF16, I64, U8, BOOL, ...) as kinds: a float file tensor may
    fill a float parameter of another width, never an integer one."""
    def kind(name: str) -> str:
        return "float" if name.startswith(("F", "BF")) else "bool" if name == "BOOL" \
            else "integer" if name.startswith(("I", "U")) else \
            "complex" if name.startswith("C") else name

    return {k: (shape, kind(dtype)) for k, (shape, dtype) in tensors.items()}


def _shape(entry: tuple[tuple[int, ...], str]) -> str:
    return str(tuple(entry[0]))
