"""Backbones addressed by name without registering them: ``timm/<model>`` and ``hf/<repo>``.

``timm/convnext_tiny`` (or a pretrained tag, ``timm/convnext_tiny.fb_in22k``) is any model
``timm.list_models()`` knows, as a :class:`TimmBackbone` with ``weights="hub"``; an
architecture timm has no pretrained weights for is built with random init
(``weights=None``). ``hf/google-bert/bert-base-uncased`` is a Hugging Face transformers
text encoder, as an :class:`HFBackbone` with ``weights="hub"``. The plugin host makes these
on first lookup and keeps them; this module only makes, lists and describes them.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import json
import os
from typing import Any

from ..errors import (
    ConfigError,
    UnknownNameError,
)
from . import Backbone, HFBackbone, TimmBackbone, _weights

TIMM, HF = "timm/", "hf/"
MODALITY = {TIMM: "image", HF: "text"}


def prefix_of(name: str) -> str | None:
    """``"timm/"`` or ``"hf/"`` when ``name`` addresses the catalogue, else None."""
    return next((p for p in MODALITY if isinstance(name, str) and name.startswith(p)), None)


def make(name: str) -> Backbone:
    """The backbone ``name`` addresses. A timm model timm does not know raises
    :class:`UnknownNameError` with close matches; a repository whose config is not a text
    encoder, :class:`ConfigError` (an ``hf/`` name that cannot be checked offline is
    accepted, and fails when built)."""
    prefix = prefix_of(name)
    if prefix == TIMM:
        return _timm(name, name[len(TIMM):])
    if prefix == HF:
        return _hf(name, name[len(HF):])
    raise ConfigError(f"{name!r} is not a catalogue name; those start with 'timm/' or 'hf/'.")


def timm_knows(model: str) -> bool:
    """Whether ``model`` (an architecture, optionally with a tag) is a timm model."""
    import timm

    arch, _, tag = model.partition(".")
    return bool(arch) and timm.is_model(arch) and (not tag or model in _timm_tags(arch))


def matching(pattern: str, *, modality: str | None = None,
             include_unavailable: bool = False) -> list[str]:
    """Catalogue names matching a ``timm/...`` or ``hf/...`` glob, sorted.

    By default only those whose pretrained weights can be had here (cached, or the hub
    reachable); ``include_unavailable`` lists every timm model, weights or not. ``hf/``
    globs list the transformers models in the local Hugging Face cache (the hub itself
    cannot be listed).
    """
    prefix = prefix_of(pattern)
    if prefix is None or modality not in (None, MODALITY[prefix]):
        return []
    glob = pattern[len(prefix):]
    if prefix == TIMM:
        import timm

        # as timm.list_models does: tagged names only when the glob names a tag
        models = timm.list_pretrained(glob) if "." in glob else timm.list_models(glob)
        names = [TIMM + m for m in models]
        if not include_unavailable:
            names = [n for n in names if _has_weights(n) and make(n).available()]
    else:
        names = [HF + r for r in _cached_hf_encoders() if fnmatch.fnmatchcase(r, glob)]
    return sorted(names)


def unmatched(pattern: str) -> str:
    """Why the catalogue glob ``pattern`` (which matches nothing) names no model, and what
    to give instead: close matches of its literal part, or where the names come from."""
    prefix = prefix_of(pattern)
    glob = pattern[len(prefix or ""):]
    if prefix == HF:
        return ("no transformers text encoder in the local Hugging Face cache matches it (an "
                "hf/ glob lists that cache; the hub cannot be searched); name the repository "
                "instead, e.g. 'hf/google-bert/bert-base-uncased'")
    import timm

    tagged = "." in glob
    models = timm.list_pretrained() if tagged else timm.list_models()
    stem = "".join(ch for ch in glob if ch not in "*?[]")
    close = difflib.get_close_matches(stem, models, n=5, cutoff=0.6)
    listed = "timm.list_pretrained" if tagged else "timm.list_models"
    hint = f"close matches: {', '.join(TIMM + m for m in close)}; " if close else ""
    return (f"no timm model matches it ({listed}({glob!r}) is empty); {hint}use `autotransfer "
            f"backbones '{TIMM}{'*.*' if tagged else '*'}' --all` to list the {len(models)} "
            f"there are")


def describe(name: str) -> dict[str, Any]:
    """What ``Backbone.describe`` gives, without building the model (groups and parameter
    counts are None): listing hundreds of catalogue models stays fast."""
    b = make(name)
    return {"name": name, "family": b.family, "modality": b.modality, "groups": None,
            "params": None, "weights": b.weights_source, "available": b.available()}


# --- timm ---

def _timm(name: str, model: str) -> TimmBackbone:
    import timm

    arch, _, tag = model.partition(".")
    if not arch or not timm.is_model(arch):
        raise UnknownNameError("backbone", name, [TIMM + m for m in timm.list_models()])
    if tag and model not in _timm_tags(arch):
        # no tags at all: the only name is the random-init architecture
        raise UnknownNameError("timm pretrained tag", name,
                               [TIMM + t for t in _timm_tags(arch)] or [TIMM + arch])
    return TimmBackbone(name, timm_name=model, weights="hub" if _has_weights(name) else None)


@functools.lru_cache(maxsize=1)
def _tags() -> dict[str, tuple[str, ...]]:
    """Architecture -> its pretrained names, ``arch.tag``."""
    import timm

    tags: dict[str, list[str]] = {}
    for t in timm.list_pretrained():
        tags.setdefault(t.split(".", 1)[0], []).append(t)
    return {arch: tuple(sorted(ts)) for arch, ts in tags.items()}


def _timm_tags(arch: str) -> tuple[str, ...]:
    return _tags().get(arch, ())


def _has_weights(name: str) -> bool:
    model = name[len(TIMM):]
    return model in _timm_tags(model.split(".", 1)[0]) if "." in model else bool(_timm_tags(model))


# --- Hugging Face ---

def _hf(name: str, repo: str) -> HFBackbone:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise ConfigError(f"Backbone {name!r}: {repo!r} is not a Hugging Face repository id "
                          f"({exc}); write hf/<owner>/<model>, e.g. "
                          f"'hf/google-bert/bert-base-uncased'.") from exc
    config = _hf_config(name, repo)
    if config is not None:  # offline and not cached: accepted now, checked when built
        problem = _not_a_text_encoder(config)
        if problem:
            hint = (f"; for a timm model use {TIMM + repo.split('/', 1)[-1]!r}"
                    if "architecture" in config else "")
            raise ConfigError(f"Backbone {name!r}: {repo!r} {problem}; hf/<repo> takes a "
                              f"transformers text encoder (BERT, RoBERTa, MiniLM, ...){hint}.")
    return HFBackbone(name, hf_name=repo, weights="hub")


def _hf_config(name: str, repo: str) -> dict[str, Any] | None:
    """The repository's config.json: from the local cache, else from the hub when it is
    reachable; None when neither can be read."""
    path = _weights.cached_hub_file(repo, ("config.json",))
    if path is None and _weights.hub_reachable():
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import EntryNotFoundError, RepositoryNotFoundError

        try:
            path = hf_hub_download(repo, "config.json")
        except (RepositoryNotFoundError, EntryNotFoundError) as exc:
            raise ConfigError(f"Backbone {name!r}: the Hugging Face Hub has no model "
                              f"repository {repo!r} with a config.json "
                              f"({type(exc).__name__}); check the repository id.") from exc
        except Exception:  # a network hiccup: accept now, the build reports it
            return None
    return None if path is None else _read_json(path)


def _read_json(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _not_a_text_encoder(config: dict[str, Any]) -> str | None:
    """Why a config.json is not one HFBackbone can use, or None."""
    model_type = config.get("model_type")
    if not model_type:
        return "is not a transformers model (its config.json has no model_type)"
    if config.get("is_encoder_decoder"):
        return f"is an encoder-decoder model (model_type {model_type!r})"
    if "vocab_size" not in config:
        return f"is not a text model (model_type {model_type!r} has no vocabulary)"
    return None


def _cached_hf_encoders() -> list[str]:
    """Repository ids in the local Hugging Face cache whose config is a text encoder."""
    from huggingface_hub import constants

    root = constants.HF_HUB_CACHE
    repos = []
    for entry in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        if not entry.startswith("models--"):
            continue
        repo = "/".join(entry.split("--")[1:])
        try:
            path = _weights.cached_hub_file(repo, ("config.json",))
            if path and _not_a_text_encoder(_read_json(path)) is None:
                repos.append(repo)
        except (OSError, ValueError):  # an unreadable entry is not listed
            continue
    return repos
