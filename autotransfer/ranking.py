"""Rank backbones before searching them: LogME on each one's frozen features.

One forward pass of a capped sample through each pretrained body (its penultimate,
pooled features), then :func:`autotransfer.logme.logme`: seconds per backbone instead of
full trials spent finding out which ones transfer badly. The features are kept in the
study's feature cache, so a resumed study or a second ranking reads them back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from . import _batch, checks, pipeline, plugins
from .cache import CacheKey, FeatureCache, weights_id
from .data import Dataset
from .devices import torch_device
from .errors import ConfigError, DataError
from .logme import logme

MAX_EXAMPLES = 1000  # a capped, stratified sample: LogME's ranking settles well before
COLUMNS = ["backbone", "score", "seconds", "feature_dim", "n", "reason"]


def rank_backbones(data: Dataset, *, backbones: Sequence[str] | str | None = None,
                   task: str = "classification", max_examples: int = MAX_EXAMPLES,
                   image_size: int | None = None, batch_size: int = 64, device: str = "cpu",
                   cache: FeatureCache | None = None, seed: int = 0,
                   errors: str = "raise") -> Any:
    """How well each backbone's frozen features fit the labels (LogME), best first.

    Returns a DataFrame: backbone, score (LogME, higher is better; comparable across
    backbones on the same data), seconds, feature_dim, n (examples used).
    ``errors="skip"``: a backbone that fails to build or gives unusable features gets no
    score and its reason, instead of stopping the ranking (what ``search`` does: such a
    backbone's trials then fail on their own).

    Example:
        >>> at.rank_backbones(train, backbones=["efficientnet_lite*"])   # doctest: +SKIP
    """
    import pandas as pd

    data = checks.dataset("data", data)
    head = plugins.get_head(task)
    names = plugins.resolve_backbones(checks.backbone_patterns(backbones), data.modality)
    checks.integer("max_examples", max_examples, low=2)
    checks.integer("batch_size", batch_size, low=1)
    if errors not in ("raise", "skip"):
        raise ConfigError(f"errors must be 'raise' or 'skip', but got errors={errors!r}.")
    sample = _sample(data, max_examples, seed)
    _, info = head.encode(data.labels)
    targets, _ = head.encode(sample.labels, info)
    regression = task != "classification"
    if not regression and len(sample) < len(info["classes"]):
        raise DataError(f"Ranking needs at least one example per class: {len(sample)} "
                        f"examples for {len(info['classes'])} classes; give more labelled "
                        f"data (or max_examples >= {len(info['classes'])}).")
    rows = []
    for name in names:
        t0 = time.perf_counter()
        try:
            f = backbone_features(name, sample, image_size=image_size, batch_size=batch_size,
                                  device=device, cache=cache)
            try:
                score = logme(f.numpy(), targets.numpy(), regression=regression)
            except DataError as exc:
                raise DataError(f"Backbone {name!r}: {exc}") from exc
        except Exception as exc:
            if errors != "skip":
                raise
            rows.append({"backbone": name, "score": None, "n": len(sample),
                         "reason": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        rows.append({"backbone": name, "score": round(score, 6),
                     "seconds": round(time.perf_counter() - t0, 2),
                     "feature_dim": int(f.shape[1]), "n": len(sample), "reason": ""})
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


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
    scored.sort(key=lambda n: -ranking[n]["score"])
    return scored + [n for n in names if n not in scored]


def as_records(df: Any) -> dict[str, dict]:
    """A ranking DataFrame as the study attribute it is stored in: backbone -> its row."""
    return {r["backbone"]: {k: r[k] for k in COLUMNS[1:]} | {"rank": i + 1}
            for i, r in enumerate(df.to_dict("records"))}
