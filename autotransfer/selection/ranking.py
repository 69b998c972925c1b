"""Rank backbones before searching them: a held-out linear probe on each one's frozen
features, LogME beside it.

One forward pass of a capped sample through each pretrained body (its penultimate,
pooled features), then :func:`autotransfer.selection.probe.probe` (the score: cross-validated
accuracy, or R², with its standard error) and :func:`autotransfer.selection.logme.logme` (a
second column): seconds per backbone instead of full trials spent finding out which ones
transfer badly. A backbone whose features are degenerate (constant, or a probe not above
chance) ranks below every one whose features are not, whatever its scores. The features
are kept in the study's feature cache, so a resumed study or a second ranking reads them
back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from .. import checks, inputs, plugins
from ..data import Dataset, pipeline
from ..data import batch as _batch
from ..errors import ConfigError, DataError
from ..heads import multitask
from ..strategy.strategy import MAX_IMAGE_SIZE
from ..training.cache import CacheKey, FeatureCache, weights_id
from ..training.devices import torch_device
from .logme import logme
from .probe import probe

MAX_EXAMPLES = 1000  # a capped, stratified sample: the ranking settles well before
COLUMNS = ["backbone", "score", "score_se", "degenerate", "logme", "seconds", "feature_dim",
           "n", "reason"]


NOT_RANKED = "not ranked: the time budget ended first"


def rank_backbones(data: Dataset, *, backbones: Sequence[str] | str | None = None,
                   task: str | dict = "classification", max_examples: int = MAX_EXAMPLES,
                   image_size: int | None = None, batch_size: int = 64, device: str = "cpu",
                   cache: FeatureCache | None = None, seed: int = 0,
                   errors: str = "raise", until: float | None = None) -> Any:
    """How well each backbone's frozen features fit the labels, best first.

    Returns a DataFrame: backbone, score (the held-out accuracy of a cross-validated linear
    probe on the frozen features; R² for regression), score_se (its standard error),
    degenerate (constant features, or a probe not above chance: ranked last), logme (the
    LogME score, for comparison), seconds, feature_dim, n (examples used). Give the image
    size the search will train at (``search`` does): features at another size rank
    differently.
    A multi-task ``task`` (``{column: task}``) is ranked on its primary task's column.
    ``errors="skip"``: a backbone that fails to build or gives unusable features gets no
    score and its reason, instead of stopping the ranking (what ``search`` does: such a
    backbone's trials then fail on their own). Mistakes in the arguments, and a backbone
    of the wrong modality, raise either way; with ``errors="raise"`` a backbone whose
    pretrained weights are not here raises before any is ranked. ``until``
    (``time.time()``, a search's budget): backbones not begun by then get no score and
    the reason ``NOT_RANKED``.

    Example:
        >>> at.rank_backbones(train, backbones=["efficientnet_lite*"])   # doctest: +SKIP
    """
    import pandas as pd

    data = inputs.dataset("data", data)
    if multitask.is_multitask(task):  # LogME scores one task: the primary (first) one
        task, data = multitask.primary(task, data)
    head = plugins.get_head(task)
    _check_arguments(max_examples=max_examples, image_size=image_size, batch_size=batch_size,
                     device=device, cache=cache, seed=seed, errors=errors)
    names = plugins.resolve_backbones(inputs.backbone_patterns(backbones), data.modality)
    for name in names:  # ranking uses pretrained features
        inputs.backbone_fits(name, data.modality, weights=errors == "raise",
                             also="; or pass errors='skip' to rank the others without it")
    sample = _sample(data, max_examples, seed)
    _, info = head.encode(data.labels)
    targets, _ = head.encode(sample.labels, info)
    regression = task != "classification"
    if not regression and len(sample) < len(info["classes"]):
        raise DataError(f"Ranking needs at least one example per class: {len(sample)} "
                        f"examples for {len(info['classes'])} classes; give more labelled "
                        f"data (or max_examples >= {len(info['classes'])}).")
    rows = [_score(name, sample, targets.numpy(), regression, errors, image_size=image_size,
                   batch_size=batch_size, device=device, cache=cache)
            if until is None or time.time() < until else
            {"backbone": name, "score": None, "n": len(sample), "reason": NOT_RANKED}
            for name in names]
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["_last"] = df["degenerate"].fillna(True).astype(bool)  # degenerate or unscored
    df = df.sort_values(["_last", "score"], ascending=[True, False], kind="stable")
    return df.drop(columns="_last").reset_index(drop=True)


def _check_arguments(*, max_examples: Any, image_size: Any, batch_size: Any, device: Any,
                     cache: Any, seed: Any, errors: Any) -> None:
    checks.integer("max_examples", max_examples, low=2)
    if image_size is not None:
        checks.integer("image_size", image_size, low=8, high=MAX_IMAGE_SIZE)
    checks.integer("batch_size", batch_size, low=1)
    checks.integer("seed", seed, low=0, high=2**32 - 1)
    torch_device(device)  # a device that is not here: every backbone would fail on it
    if cache is not None and not isinstance(cache, FeatureCache):
        raise ConfigError(f"cache must be an autotransfer.training.cache.FeatureCache or None, "
                          f"but got "
                          f"cache={cache!r} ({type(cache).__name__}); e.g. "
                          f"cache=FeatureCache('features/') keeps the features in a folder.")
    if errors not in ("raise", "skip"):
        raise ConfigError(f"errors must be 'raise' or 'skip', but got errors={errors!r}.")


def _score(name: str, sample: Dataset, targets: Any, regression: bool, errors: str,
           **features: Any) -> dict[str, Any]:
    """One row of the ranking: ``name``'s probe and LogME scores, or (``errors="skip"``)
    the reason it has none."""
    t0 = time.perf_counter()
    try:
        f = backbone_features(name, sample, **features)
        array = f.numpy()
        try:
            fitted = probe(array, targets, regression=regression)
            # LogME has no score for all-zero features: the probe says they are degenerate
            evidence = logme(array, targets, regression=regression) if array.any() else None
        except DataError as exc:
            hint = "" if errors == "skip" else (" errors='skip' ranks the other backbones "
                                                "without it.")
            raise DataError(f"Backbone {name!r}: {exc}{hint}") from exc
    except Exception as exc:
        if errors != "skip":
            raise
        return {"backbone": name, "score": None, "n": len(sample),
                "reason": f"{type(exc).__name__}: {exc}"[:300]}
    return {"backbone": name, "score": round(fitted.score, 6), "score_se": round(fitted.se, 6),
            "degenerate": fitted.degenerate,
            "logme": None if evidence is None else round(evidence, 6),
            "seconds": round(time.perf_counter() - t0, 2),
            "feature_dim": int(f.shape[1]), "n": len(sample), "reason": ""}


def _sample(data: Dataset, cap: int, seed: int) -> Dataset:
    """All of ``data``, or a seeded (stratified when it can be) sample of ``cap`` items."""
    if len(data) <= cap:
        return data
    _, sample = data.split(cap / len(data), seed=seed)
    return sample


@torch.no_grad()
def backbone_features(name: str, data: Dataset, *, image_size: int | None = None,
                      batch_size: int = 64, device: str = "cpu",
                      cache: FeatureCache | None = None) -> torch.Tensor:
    """The pretrained body's pooled features of every input (N, D), as float32 on the CPU."""
    backbone = plugins.get_backbone(name)
    pre = backbone.preprocessing(image_size=image_size)
    key = CacheKey(backbone=name, weights=weights_id(backbone), pretrained=True,
                   frozen_groups=-1, n_prefix=-1, preprocessing=repr(pre),
                   data=data.fingerprint() or "", dtype="float32", views="ranking")
    if cache is not None and key.data:
        stored, _ = cache.get(key)
        if stored is not None:
            return stored
    dev = torch_device(device)
    body = backbone.build(pretrained=True).eval().to(dev)
    out = [body(pre.normalize(_batch.to(xb, dev))).float().cpu()
           for xb in pipeline.inference_batches(pre, data, batch_size)]
    features = torch.cat(out)
    if cache is not None and key.data:
        cache.put(key, features)
    return features


def order(names: list[str], ranking: dict[str, dict]) -> list[str]:
    """``names`` best-ranked first (those without a score keep their place, last)."""
    scored = [n for n in names if ranking.get(n, {}).get("score") is not None]
    scored.sort(key=lambda n: ranking[n]["rank"])
    return scored + [n for n in names if n not in scored]


def as_records(df: Any) -> dict[str, dict]:
    """A ranking DataFrame as the study attribute it is stored in: backbone -> its row."""
    return {r["backbone"]: {k: r[k] for k in COLUMNS[1:]} | {"rank": i + 1}
            for i, r in enumerate(df.to_dict("records"))}
