"""Opening a search's study: created once with its record (what it was made from), or
resumed when it was made for the same job; due baselines, the backbones' ranking and the
warm start enqueued, all under the study's lock, however many processes start it."""

from __future__ import annotations

import time
import uuid
import warnings
from pathlib import Path

import optuna

from .. import plugins
from .. import storage as st
from ..backends import SearchJob, TrialContext
from ..backends._enqueue import enqueue_due_baselines, enqueue_portfolio
from ..backends._job import counted_trials
from ..backends._lifecycle import fail_stale_trials
from ..errors import ConfigError
from ..log import get_logger
from ..selection.ranking import NOT_RANKED, as_records, order, rank_backbones
from ..strategy.baselines import split
from ..training.cache import FeatureCache
from . import identity, prior

logger = get_logger(__name__)
RANK_SHARE = 0.25  # of what is left of a time budget: the most the ranking may begin in


def ranking_ends(deadline: float | None) -> float | None:
    """When the ranking stops beginning backbones: a quarter of the time left, so that a
    slow forward pass (a loaded machine, large backbones) leaves the trials most of the
    budget; the backbones not begun by then race after the ranked ones."""
    if deadline is None:
        return None
    now = time.time()
    return now + RANK_SHARE * max(0.0, deadline - now)


def open_search(job: SearchJob, ctx: TrialContext, warm_start: bool | str | Path,
                rank: bool) -> optuna.Study:
    """Create or load the study under its lock: once, however many processes start it."""
    if job.storage.path is None:  # a server: reach it before any local file is made
        job.storage.open()
    st.make_room(job.storage, job.study_name)
    with st.lock(job.storage, job.study_name):
        study = _create(job, ctx)
        job.launch = st.next_launch(study)
        stale = fail_stale_trials(study)
        if stale:
            logger.warning(f"marked {len(stale)} trial(s) left running by a dead process as "
                           f"failed: {stale}")
        ranking = _ranking(study, ctx) if rank and len(job.backbones) > 1 else {}
        if ranking:  # searched trials race the backbones, best-ranked first
            job.race = order(job.backbones, ranking)
        enqueue_due_baselines(study, ctx)
        if warm_start is True:
            enqueue_portfolio(study, ctx, order(job.backbones, ranking))
        elif warm_start:
            prior.enqueue(study, ctx, warm_start, order(job.backbones, ranking))
        done = counted_trials(study)
    if done:  # said with or without progress bars: a rerun continues, it does not restart
        logger.info(f"resuming study {job.study_name!r}: {done} trial(s) already recorded")
    elif job.progress:
        logger.info(split(ctx.reference_plan(), job.n_trials))
    return study


def _ranking(study: optuna.Study, ctx: TrialContext) -> dict[str, dict]:
    """The backbones' ranking (``rank_backbones``), computed once per study and recorded
    in it."""
    stored = st.study_attrs(study).get(st.RANKING)
    if stored is not None and not any(r.get("reason") == NOT_RANKED for r in stored.values()):
        return stored  # complete: a ranking the time budget cut is done again on resume
    job = ctx.job
    if job.progress:
        logger.info(f"ranking {len(job.backbones)} backbones by a linear probe on frozen "
                    f"features")
    df = rank_backbones(ctx.train, backbones=job.backbones, task=job.task,
                        image_size=job.space.base_strategy(job.backbones[0]).image_size,
                        cache=ctx.cache if isinstance(ctx.cache, FeatureCache) else None,
                        seed=job.seed, errors="skip", until=ranking_ends(job.deadline))
    for row in df[df["reason"] != ""].to_dict("records"):
        logger.warning(f"could not rank {row['backbone']!r} ({row['reason']}); its trials run "
                       f"as usual")
    ranking = as_records(df)
    st.set_study_attr(study, st.RANKING, ranking)
    return ranking


def _create(job: SearchJob, ctx: TrialContext) -> optuna.Study:
    """Create the study with its record, or load it when it was made for this same job."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = job.storage.open()
    head = plugins.get_head(job.task)
    made = identity.of(job, ctx.train, ctx.valid, head.encode(ctx.train.labels)[1])
    meta = {**made, "metric": head.metric, "seed": job.seed, "uid": uuid.uuid4().hex,
            "n_train": len(ctx.train), "n_valid": len(ctx.valid),
            "n_unlabeled": len(job.unlabeled or ()),
            "plugins": plugins.modules_for(job.backbones, job.task)}
    study, old = st.create_or_load(job.storage, storage, job.study_name,
                                   direction=job.direction, kind="search", meta=meta)
    if old is None:
        study.set_user_attr("task", job.task)
        study.set_user_attr("metric", meta["metric"])
        with warnings.catch_warnings():  # experimental in Optuna; dashboards read it
            warnings.simplefilter("ignore")
            study.set_metric_names([meta["metric"]])
        return study
    if differ := identity.differences(old, made):
        raise ConfigError(f"Study {job.study_name!r} in {job.storage.url!r} was made for "
                          f"other data or settings: {'; '.join(differ)}. Resume it with "
                          f"what it was made with, or pass name= a new name to start a new "
                          f"study.")
    return study
