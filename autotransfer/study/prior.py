"""Warm start from your own earlier studies (``search(..., warm_start="prior")``).

Each search records, in its study, a profile: the data's simple features (modality, task,
examples, classes, image size), the backbones' ranking and the best strategy each
backbone reached. A new study started with ``warm_start="prior"`` (the studies in its own
storage) or ``warm_start="some/folder"`` (every ``.db`` and journal file there) begins with
the best strategies of the closest prior studies, nearest first, instead of the fixed
portfolio. Quick-Tune (Arango et al., ICLR 2024) meta-learns such a prior offline from a
large benchmark; this one is local and transparent: the new study records which studies it
started from, at what distance, and each enqueued trial names its source (``prior`` column).
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from .. import storage as st
from ..backends._enqueue import claim_warm_start, portfolio
from ..errors import AutotransferError, ConfigError
from ..log import get_logger

if TYPE_CHECKING:
    from ..backends._job import TrialContext

CLOSEST = 3  # prior studies to start from
MAX_POINTS = 6  # enqueued trials at most, like the portfolio's
FEATURES = ("n", "classes", "image_size")  # compared on a log scale
ACCEPTED = ("True or 'portfolio' (settings that usually work), False (none), 'prior' (the "
            "closest earlier studies in this storage), or the path of a folder or storage "
            "file holding earlier studies")

logger = get_logger(__name__)


def check(value: Any) -> bool | str | Path:
    """``warm_start`` as given -> True, False, "prior" or the Path of prior studies."""
    if isinstance(value, bool):
        return value
    if value in ("portfolio", "prior"):
        return "prior" if value == "prior" else True
    if isinstance(value, (str, os.PathLike)) and str(value) and "\0" not in str(value):
        path = Path(value).expanduser()
        if path.is_dir() or (path.is_file() and path.suffix in st.SQLITE_SUFFIXES
                             + st.JOURNAL_SUFFIXES):
            _check_source(path)
            return path
        what = "is not a folder or a .db/.log file" if path.exists() else "does not exist"
        close = difflib.get_close_matches(str(value), ["prior", "portfolio"], n=1)
        what += f" (close match: {close[0]!r})" if close and not path.exists() else ""
        raise ConfigError(f"warm_start={str(value)!r} {what}; accepted: {ACCEPTED}.")
    raise ConfigError(f"warm_start must be {ACCEPTED}, but got warm_start={value!r}.")


def _check_source(path: Path) -> None:
    """Refuse prior studies whose recorded profile cannot be used (a crafted or damaged
    file), naming the file, the study and the value, before the new study exists: the user
    named this source, so quietly starting from fewer priors would hide it."""
    for where, name, attrs in _recorded(path, None, None):
        problem = profile_problem(attrs.get(st.PROFILE))
        if problem:
            raise ConfigError(f"warm_start={str(path)!r}: {_named(name)} in {where!r} has a "
                              f"recorded profile that cannot be used: {problem}. Move that "
                              f"file out of the folder, or use warm_start=True (the "
                              f"portfolio) or False.")


def _named(name: str | None) -> str:
    """A study as messages name it; None: a file whose attributes cannot all be read."""
    return f"study {name!r}" if name is not None else "a study"


class _Unreadable(str):
    """An attribute whose stored JSON cannot be parsed (the text says why)."""


def profile_problem(profile: Any) -> str | None:
    """What makes a recorded profile unusable for a warm start, or None (also for a study
    without one: it is not a finished search, and is passed over)."""
    if profile is None:
        return None
    if isinstance(profile, _Unreadable):
        return f"its JSON cannot be read ({profile})"
    if not isinstance(profile, dict):
        return f"profile={_short(profile)} (accepted: a table of the data's features)"
    for k in FEATURES:
        v = profile.get(k)
        if v is not None and not _positive(v):
            return f"{k}={_short(v)} (accepted: a number > 0, or none)"
    if profile.get("direction") not in ("maximize", "minimize"):
        return (f"direction={_short(profile.get('direction'))} (accepted: 'maximize' or "
                f"'minimize')")
    best = profile.get("best", {})
    if not isinstance(best, dict):
        return f"best={_short(best)} (accepted: a table of backbone -> best trial)"
    for backbone, rec in best.items():
        problem = _best_problem(backbone, rec)
        if problem:
            return f"best[{backbone!r}]: {problem}"
    return None


def _best_problem(backbone: str, rec: Any) -> str | None:
    from ..strategy.strategy import Strategy

    if not isinstance(rec, dict) or not {"value", "trial", "strategy"} <= set(rec):
        return f"{_short(rec)} (accepted: a table with value, trial and strategy)"
    value, trial, strategy = rec["value"], rec["trial"], rec["strategy"]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        return f"value={_short(value)} (accepted: a finite number)"
    if isinstance(trial, bool) or not isinstance(trial, int) or trial < 0:
        return f"trial={_short(trial)} (accepted: a trial number >= 0)"
    if not isinstance(strategy, dict) or strategy.get("backbone") != backbone:
        return f"strategy={_short(strategy)} (accepted: a strategy for {backbone!r})"
    try:
        Strategy.from_dict(strategy)
    except AutotransferError as exc:
        return f"strategy: {str(exc).rstrip('.')}"
    return None


def _positive(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v) \
        and v > 0


def _short(value: Any, n: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n - 3] + "..."


def data_profile(ctx: TrialContext) -> dict[str, Any]:
    """The training data's simple features, as recorded and compared."""
    train, job = ctx.train, ctx.job
    classes = train.classes
    return {"modality": job.modality, "task": job.task, "n": len(train),
            "classes": len(classes) if classes is not None else None,
            "image_size": _image_side(train) if job.modality == "image" else None}


def _image_side(data: Any) -> int | None:
    """The median longer side of (at most) the first five images."""
    sides = []
    for i in range(min(5, len(data))):
        item = data.load(i)
        size = getattr(item, "size", None)
        if isinstance(size, tuple):
            sides.append(max(size))
    return sorted(sides)[len(sides) // 2] if sides else None


def record(study: optuna.Study, ctx: TrialContext) -> dict[str, Any]:
    """Record the study's profile for later warm starts; return it."""
    attrs = st.study_attrs(study)
    ranking = attrs.get(st.RANKING, {})
    profile = {**data_profile(ctx), "metric": attrs.get(st.META, {}).get("metric"),
               "direction": ctx.job.direction,
               "ranking": {b: r.get("score") for b, r in ranking.items()},
               "best": best_per_backbone(study, ctx.job.direction == "maximize")}
    st.set_study_attr(study, st.PROFILE, profile)
    return profile


def best_per_backbone(study: optuna.Study, maximize: bool) -> dict[str, dict[str, Any]]:
    """Backbone -> the value, trial number and strategy of its best completed trial."""
    best: dict[str, dict[str, Any]] = {}
    ranked = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                    key=lambda t: st.rank_key(t.value, maximize, t.user_attrs.get(st.VAL_LOSS),
                                              t.user_attrs.get("duration_s"), t.number))
    for t in ranked:  # best first, ties as the leaderboard breaks them
        strategy = t.system_attrs.get(st.STRATEGY)
        if t.value is None or not strategy or not strategy.get("pretrained", True):
            continue  # a scratch trial says nothing about transferring this backbone
        best.setdefault(strategy["backbone"],
                        {"value": t.value, "trial": t.number, "strategy": strategy})
    return best


def distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """How far two data profiles are: infinite across modalities or tasks, else the sum of
    absolute log ratios of the features both have."""
    if a.get("modality") != b.get("modality") or a.get("task") != b.get("task"):
        return math.inf
    return sum(abs(math.log(a[k]) - math.log(b[k])) for k in FEATURES
               if a.get(k) and b.get(k))


def closest(source: str | Path, study: optuna.Study, profile: dict[str, Any],
            spec: st.StorageSpec, backbones: list[str]) -> list[dict[str, Any]]:
    """The CLOSEST recorded studies (name, storage, distance, best) to ``profile`` that
    reached a best strategy for one of ``backbones``."""
    own = st.study_attrs(study).get(st.META, {}).get("uid")
    found = []
    for where, name, attrs in _recorded(source, study, spec):
        prior = attrs.get(st.PROFILE)
        problem = profile_problem(prior)
        if problem:  # in this storage (checked sources were refused before it existed)
            logger.warning(f"warm start: skipped {_named(name)} in {where!r}: {problem}")
            continue
        meta = attrs.get(st.META)
        if (not prior or (isinstance(meta, dict) and meta.get("uid") == own)
                or not set(prior.get("best", {})) & set(backbones)):
            continue
        d = distance(profile, prior)
        if math.isfinite(d):
            found.append({"study": name, "storage": where, "distance": round(d, 4),
                          "direction": prior["direction"], "best": prior["best"]})
    found.sort(key=lambda p: (p["distance"], p["study"], p["storage"]))
    return found[:CLOSEST]


def _recorded(source: str | Path, study: optuna.Study | None,
              spec: st.StorageSpec | None) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(storage, study name, system attributes) of every study in the prior's source
    (``study`` and ``spec`` None: files only, as :func:`check` reads them)."""
    if source == "prior":
        return [(spec.url, s.study_name, s.system_attrs)
                for s in st.storage_of(study).get_all_studies()]
    path = Path(source)
    files = sorted(p for p in path.iterdir() if p.is_file()
                   and p.suffix in st.SQLITE_SUFFIXES + st.JOURNAL_SUFFIXES) \
        if path.is_dir() else [path]
    out = []
    for file in files:
        if spec is not None and spec.path is not None and \
                file.resolve() == spec.path.resolve():
            out += _recorded("prior", study, spec)
        elif file.suffix in st.SQLITE_SUFFIXES:
            out += [(str(file), n, a) for n, a in _read_sqlite(file)]
        else:
            out += [(str(file), n, a) for n, a in _read_journal(file)]
    return out


def _read_journal(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Studies' names and system attributes from an Optuna journal file; a file that is
    not one is skipped."""
    try:
        storage = st.resolve(path, "_").open()
        return [(s.study_name, s.system_attrs) for s in storage.get_all_studies()]
    except Exception:  # not a journal: JSON errors, missing fields, ...
        return []


def _read_sqlite(path: Path) -> list[tuple[str | None, dict[str, Any]]]:
    """Studies' names and system attributes, read-only: a file that is not an Optuna
    storage is skipped, never written. A stored attribute that is not JSON gives one
    :class:`_Unreadable` profile for the file (Optuna reads a file's studies at once), so
    the file is named rather than the read failing."""
    try:
        return [(s.study_name, s.system_attrs) for s in st.read_only_studies(path)]
    except (TypeError, ValueError, RecursionError) as exc:  # json.loads of an attribute
        return [(None, {st.PROFILE: _Unreadable(f"{type(exc).__name__}: {str(exc)[:80]}")})]
    except Exception:  # noqa: BLE001 - not an Optuna storage: another program's database
        return []


def points(priors: list[dict[str, Any]], ctx: TrialContext,
           taken: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """(params, user attributes) to enqueue: each prior's best strategies for this study's
    backbones, nearest prior first and best backbone first, at most MAX_POINTS, none that
    repeats a trial in ``taken`` (a prior's best may be a baseline this study runs too)."""
    out: list[tuple[dict, dict]] = []
    for prior in priors:
        sign = -1 if prior["direction"] == "maximize" else 1
        for b, best in sorted(prior["best"].items(), key=lambda kv: sign * kv[1]["value"]):
            if b not in ctx.job.backbones or len(out) >= MAX_POINTS:
                continue
            point = {"backbone": b, **ctx.params_for(b, best["strategy"])}
            if point not in taken and all(point != p for p, _ in out):
                out.append((point, {"prior": f"{prior['study']} #{best['trial']}"}))
    return out


def enqueue(study: optuna.Study, ctx: TrialContext, source: str | Path,
            names: list[str]) -> None:
    """Begin a new study from its closest prior studies, once; with none that match (same
    modality and task, a best strategy for one of its backbones), from the portfolio."""
    if not claim_warm_start(study):
        return
    priors = closest(source, study, data_profile(ctx), ctx.job.storage, ctx.job.backbones)
    taken = [{**t.params, **t.system_attrs.get("fixed_params", {})}
             for t in study.get_trials(deepcopy=False)]
    chosen = points(priors, ctx, taken)
    st.set_study_attr(study, st.PRIOR, [{k: p[k] for k in ("study", "storage", "distance")}
                                         for p in priors])
    if not chosen:
        logger.info(f"warm start: no prior study in {str(source)!r} has the same modality and "
                    f"task and one of these backbones; starting from the portfolio")
        return portfolio(study, ctx, names)
    if ctx.job.progress:
        described = ", ".join(f"{p['study']!r} (distance {p['distance']:.2f})" for p in priors)
        logger.info(f"warm start: {len(chosen)} trial(s) from the best strategies of "
                    f"{described}")
    for params, attrs in chosen:
        study.enqueue_trial(params, user_attrs=attrs)
