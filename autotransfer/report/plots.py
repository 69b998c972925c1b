"""The report's figures: each function takes what the study stored and returns a Plotly
figure, or a sentence saying why there is nothing to plot.

They read one :class:`Facts` (the leaderboard plus the Optuna trials by number), so a
leaderboard with columns or row states this module has not seen (``test_*`` scores,
``refit`` rows without a validation score) is plotted where it fits and skipped elsewhere.
Every axis, colour bar and trace that shows a score names its split and metric
("validation accuracy", "test macro_f1").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from .. import storage as st

TOP_CURVES = 5
# Importances need this many searched trials (completed, not a baseline). fANOVA fits a
# random forest from the sampled values to the score; with fewer points than this (also
# the number of trials Optuna's TPE samples at random before it models anything) one trial
# more or less reorders the bars, so the page says why they are missing instead.
MIN_SEARCHED = 10
_PALETTE = qualitative.Plotly + qualitative.D3
_BASELINE_SYMBOL = {"scratch": "x", "linear_probe": "square", "default_finetune": "diamond"}


@dataclass(frozen=True)
class Facts:
    """What every figure reads: the leaderboard, its trials by number, the metric."""

    lb: Any  # pandas DataFrame, best first (Study.leaderboard())
    trials: dict[int, FrozenTrial]
    metric: str
    maximize: bool

    @property
    def scored(self) -> Any:
        """Finished trials with a validation score, best first."""
        lb = self.lb
        if self.metric not in lb.columns:
            return lb.iloc[0:0]
        return lb[(lb["state"] == "complete") & lb[self.metric].notna()]

    @property
    def direction(self) -> str:
        return "higher is better" if self.maximize else "lower is better"

    @property
    def score(self) -> str:
        """What the leaderboard's metric column holds: ``"validation accuracy"``."""
        return f"validation {self.metric}"


def _layout(fig: go.Figure, title: str, **kw: Any) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", height=kw.pop("height", 420),
                      margin=dict(l=60, r=30, t=60, b=50), **kw)
    return fig


def _text(value: Any) -> str:
    """A string cell as text; a missing one (None, NaN) as ""."""
    return value if isinstance(value, str) else ""


def _label(row: Any) -> str:
    base = _text(row.get("baseline"))
    return f"#{int(row['trial'])} {_text(row.get('backbone')) or '?'}{' ' + base if base else ''}"


NO_SCORE = "No trial has finished with a validation score yet."


def best_by_clock(facts: Facts) -> go.Figure | str:
    """Each finished trial's score and the best so far, by the wall clock it finished at."""
    rows = facts.scored.copy()
    if rows.empty:
        return NO_SCORE
    done = {n: t.datetime_complete for n, t in facts.trials.items()}
    rows["x"] = rows["trial"].map(lambda n: done.get(int(n)))
    rows = rows[rows["x"].notna()].sort_values("x")
    if rows.empty:
        return "No finished trial recorded when it completed."
    values = rows[facts.metric].astype(float).to_numpy()
    best = (np.maximum if facts.maximize else np.minimum).accumulate(values)
    hover = [_label(r) for _, r in rows.iterrows()]
    fig = go.Figure()
    fig.add_scatter(x=rows["x"], y=values, mode="markers", name=f"a trial's {facts.score}",
                    text=hover, marker=dict(color="#9aa5b1", size=8))
    fig.add_scatter(x=rows["x"], y=best, mode="lines", name=f"best {facts.score} so far",
                    text=hover, line=dict(shape="hv", width=3, color=_PALETTE[0]))
    return _layout(fig, f"Best {facts.score} so far by wall clock ({facts.direction})",
                   xaxis_title="finished at (wall clock)", yaxis_title=facts.score)


def best_by_trial(study: Any, facts: Facts) -> go.Figure | str:
    """Optuna's optimization history of ``study`` (the Optuna study): each finished
    trial's score and the best so far, by trial number."""
    from optuna.visualization import plot_optimization_history

    if facts.scored.empty:
        return NO_SCORE
    fig = plot_optimization_history(study, target_name=facts.score)
    labels = {int(r["trial"]): _label(r) for _, r in facts.scored.iterrows()}
    fig.data[0].text = [labels.get(int(n), f"#{n}") for n in fig.data[0].x]  # hover names
    fig.data = [t for t in fig.data if t.x is not None and len(t.x)]  # no empty "Infeasible"
    for trace in fig.data[1:]:  # Optuna's "Best Value" line
        if trace.name == "Best Value":
            trace.name = f"best {facts.score} so far"
    return _layout(fig, f"Best {facts.score} so far by trial number ({facts.direction})",
                   xaxis_title="trial number", yaxis_title=facts.score)


def freezing(facts: Facts) -> go.Figure | str:
    """How much to freeze: best score per backbone x frozen groups, and every trial."""
    rows = facts.scored
    rows = rows[rows["frozen_groups"].notna()] if "frozen_groups" in rows else rows.iloc[0:0]
    if rows.empty:
        return "No finished trial records how many layer groups it froze."
    rows = rows.assign(frozen_groups=rows["frozen_groups"].astype(int),
                       backbone=rows["backbone"].fillna("?").astype(str),
                       **{facts.metric: rows[facts.metric].astype(float)})
    pick = "max" if facts.maximize else "min"
    grid = rows.pivot_table(index="backbone", columns="frozen_groups", values=facts.metric,
                            aggfunc=pick)
    count = rows.pivot_table(index="backbone", columns="frozen_groups", values="trial",
                             aggfunc="count").reindex_like(grid)
    text = [[("" if c != c else f"{v:.3g}<br>n={int(c)}") for v, c in zip(vr, cr)]
            for vr, cr in zip(grid.to_numpy(), count.to_numpy())]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
        f"best {facts.score} per cell", f"{facts.score} of every finished trial"))
    fig.add_heatmap(z=grid.to_numpy(), x=[str(c) for c in grid.columns],
                    y=list(grid.index), text=text, texttemplate="%{text}",
                    colorscale="Viridis", reversescale=not facts.maximize,
                    colorbar=dict(title=facts.score.replace(" ", "<br>"), x=0.44),
                    hoverongaps=False,
                    row=1, col=1)
    for i, (name, group) in enumerate(rows.groupby("backbone", sort=True)):
        # Spread backbones sideways a little so trials at one setting do not hide each other.
        offset = (i - (rows["backbone"].nunique() - 1) / 2) * 0.12
        fig.add_scatter(x=group["frozen_groups"] + offset, y=group[facts.metric],
                        mode="markers", name=name, marker=dict(size=9, color=_PALETTE[i]),
                        text=[_label(r) for _, r in group.iterrows()], row=1, col=2)
    fig.update_xaxes(title_text="frozen layer groups (input side)", type="category",
                     row=1, col=1)
    fig.update_xaxes(title_text="frozen layer groups (input side)", dtick=1, row=1, col=2)
    fig.update_yaxes(title_text="backbone", row=1, col=1)
    fig.update_yaxes(title_text=facts.score, row=1, col=2)
    return _layout(fig, f"How much to freeze ({facts.direction})", height=460)


def _curve(facts: Facts, trial: FrozenTrial | None) -> tuple[list[int], list[float]]:
    """Validation score per epoch: the stored history, else Optuna's intermediate values."""
    if trial is None:
        return [], []
    history = trial.system_attrs.get(st.HISTORY) or []
    points = [(h["epoch"], h[facts.metric]) for h in history
              if h.get(facts.metric) is not None and "epoch" in h]
    if not points:
        points = sorted(trial.intermediate_values.items())
    return [int(e) for e, _ in points], [float(v) for _, v in points]


def curve_rows(facts: Facts) -> Any:
    """The top searched trials plus every baseline trial, in leaderboard order."""
    lb = facts.lb
    if "baseline" not in lb.columns:
        return facts.scored.head(TOP_CURVES)
    named = lb["baseline"].map(_text) != ""
    top = facts.scored[~named.loc[facts.scored.index]].head(TOP_CURVES)
    base = lb[named]
    return lb.loc[lb.index.isin(top.index) | lb.index.isin(base.index)]


def learning_curves(facts: Facts) -> go.Figure | str:
    """Score per epoch of the best trials and the baselines; negative transfer dashed."""
    fig = go.Figure()
    for i, (_, row) in enumerate(curve_rows(facts).iterrows()):
        epochs, values = _curve(facts, facts.trials.get(int(row["trial"])))
        if not epochs:
            continue
        flag = row.get("negative_transfer")
        negative = bool(flag) if isinstance(flag, (bool, np.bool_)) else False
        baseline = _text(row.get("baseline"))
        name = _label(row) + (" - negative transfer" if negative else "")
        fig.add_scatter(
            x=epochs, y=values, mode="lines+markers", name=name,
            legendgroup="baselines" if baseline else "searched",
            legendgrouptitle_text="baselines" if baseline else "top searched trials",
            line=dict(color=_PALETTE[i % len(_PALETTE)], width=1.5 if baseline else 2.5,
                      dash="dash" if negative else "solid"),
            marker=dict(symbol=_BASELINE_SYMBOL.get(baseline, "circle"), size=7),
            meta={"trial": int(row["trial"]), "negative_transfer": negative},
            hovertemplate=f"{name}<br>epoch %{{x}}: {facts.score} %{{y:.4g}}<extra></extra>")
    if not fig.data:
        return "No trial has recorded a score per epoch yet."
    title = (f"Learning curves: top {TOP_CURVES} trials and the baselines "
             f"(dashed: worse than training from scratch)")
    return _layout(fig, title, xaxis_title="epoch", yaxis_title=facts.score,
                   xaxis=dict(dtick=1), height=480)


def searched_trials(study: Any) -> list[FrozenTrial]:
    """The completed trials with a finite score that are not baselines: samples of the
    search space (the sampler's, the warm-start portfolio's, a prior study's), not the
    fixed reference strategies every study also runs."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if not t.user_attrs.get("baseline") and t.value is not None
            and np.isfinite(t.value)]


def importances(study: Any, facts: Facts) -> go.Figure | str:
    """Optuna's parameter importances (fANOVA) over the searched trials, as bars, or why
    they are not drawn (fewer than :data:`MIN_SEARCHED` searched trials, a failed fit)."""
    import optuna
    from optuna.visualization import plot_param_importances

    searched = searched_trials(study)
    if len(searched) < MIN_SEARCHED:
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        return (f"Parameter importances are not shown: they need at least {MIN_SEARCHED} "
                f"searched trials that completed, and this study has {len(searched)} (of "
                f"{done} completed; baselines are fixed reference strategies, not samples "
                f"of the search space, so they never count). With fewer, one trial more or "
                f"less reorders the bars. Run the search longer to see them.")
    try:
        fig = plot_param_importances(
            _comparable(searched, study.directions),
            evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
            target_name=facts.score)
    except Exception as exc:  # a constant target, a failed fit
        return f"Parameter importances are not available: {type(exc).__name__}: {exc}"
    if not fig.data:
        return "Parameter importances are not available: no parameter varied across trials."
    fig.update_traces(marker_color=_PALETTE[0])
    return _layout(fig, f"Parameter importances for {facts.score} (fANOVA over the "
                        f"{len(searched)} searched trials, baselines left out)",
                   xaxis_title=f"importance: share of the variance of {facts.score}",
                   yaxis_title=None, height=max(300, 60 + 28 * len(fig.data[0].y)))


def _comparable(done: list[FrozenTrial], directions: Any) -> Any:
    """An in-memory study of the trials ``done`` that Optuna's importances accept.

    Optuna compares only parameters every trial shares with one distribution. Here
    ``frozen_groups`` ranges differ per backbone, so the copy keeps the parameters every
    trial sampled and widens each one's range.
    """
    import optuna

    done = [t for t in done if t.params]
    if len(done) < 2:
        raise ValueError(f"they need 2 finished trials that sampled parameters, "
                         f"this study has {len(done)}")
    names = set.intersection(*(set(t.distributions) for t in done))
    merged = {n: _widest([t.distributions[n] for t in done]) for n in sorted(names)}
    merged = {n: d for n, d in merged.items() if d is not None}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        copy = optuna.create_study(directions=directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    copy.add_trials([optuna.trial.create_trial(
        params={n: t.params[n] for n in merged}, distributions=merged, value=t.value)
        for t in done])
    return copy


def _widest(dists: list[Any]) -> Any:
    """One distribution holding every value of ``dists``; None if they are not alike."""
    from optuna import distributions as od

    kinds = {type(d) for d in dists}
    if len(kinds) != 1:
        return None
    first = dists[0]
    if isinstance(first, od.CategoricalDistribution):
        choices = list(dict.fromkeys(c for d in dists for c in d.choices))
        return od.CategoricalDistribution(choices)
    log = all(d.log for d in dists)
    steps = {d.step for d in dists}
    low, high = min(d.low for d in dists), max(d.high for d in dists)
    if isinstance(first, od.IntDistribution):
        step = steps.pop() if len(steps) == 1 and not log else 1
        return od.IntDistribution(low, high, log=log, step=step)
    step = steps.pop() if len(steps) == 1 and not log else None
    return od.FloatDistribution(low, high, log=log, step=step)


def test_columns(lb: Any) -> list[str]:
    """Columns holding a test-set score (``test_<metric>``, not its ``_se``) with a value."""
    return [c for c in lb.columns if str(c).startswith("test_") and not str(c).endswith("_se")
            and lb[c].notna().any()]


def test_scores(facts: Facts) -> go.Figure | str:
    """Validation against test score for every trial that was scored on the test set: one
    panel per metric, each bar named by its split and metric."""
    columns = test_columns(facts.lb)
    if not columns:
        return "No trial was scored on a test set."
    metrics = [test[len("test_"):] for test in columns]
    fig = make_subplots(rows=1, cols=len(columns), subplot_titles=[
        f"{m}: validation and test" for m in metrics])
    for col, (test, metric) in enumerate(zip(columns, metrics), start=1):
        rows = facts.lb[facts.lb[test].notna()]
        labels = [f"{_label(r)} ({r['state']})" for _, r in rows.iterrows()]
        if metric in rows.columns:  # refits have no validation score: no bar
            fig.add_bar(x=labels, y=rows[metric], name=f"validation {metric}", row=1, col=col,
                        marker_color=_PALETTE[0], legendgroup=f"validation {metric}")
        se = rows.get(f"{test}_se")  # the primary metric's bootstrap standard error
        fig.add_bar(x=labels, y=rows[test], name=f"test {metric}" + (
                        " (± bootstrap SE)" if se is not None else ""), row=1, col=col,
                    marker_color=_PALETTE[1], legendgroup=f"test {metric}",
                    error_y=None if se is None else {"type": "data", "array": se.tolist()})
        fig.update_yaxes(title_text=metric, row=1, col=col)
    fig.update_layout(barmode="group")
    return _layout(fig, "Validation and test scores of the kept models", height=460)
