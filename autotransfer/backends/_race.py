"""The backbone race: spend the budget on the backbones that transfer, seeded by their rank.

A study with several backbones wraps its sampler in :class:`BackboneRace`. The sampler
still chooses every other field; the race chooses the ``backbone`` of a searched trial:

- Backbones enter in rank order (the ranking before the search, best first): rung 0 gives each
  the same number of finished trials, the best-ranked first.
- When every backbone still in the race has its rung's trials, the worse half by their
  *observed* best score is dropped (rank breaks ties) and the rung's size doubles, as in
  successive halving. The ranking orders the race; results decide it, so a backbone the
  ranking underrated but that does well in its cheap first trials stays in.
- One searched trial in ``EXPLORE`` picks among all backbones through the wrapped sampler,
  so a dropped backbone can come back if the sampler's model of the results favours it.

Trials running in parallel count toward their backbone's rung, so workers do not all pile
onto the same backbone.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

EXPLORE = 8  # one searched trial in EXPLORE lets the wrapped sampler pick the backbone
RUNG = 1  # trials per backbone in the first rung; doubles each rung


class BackboneRace(BaseSampler):
    """Wrap ``sampler``; choose ``backbone`` by a rank-seeded successive-halving race."""

    def __init__(self, sampler: BaseSampler, order: list[str], *, explore: int = EXPLORE,
                 rung: int = RUNG) -> None:
        self.sampler, self.order = sampler, list(order)
        self.explore, self.rung = explore, rung

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        space = self.sampler.infer_relative_search_space(study, trial)
        return {k: v for k, v in space.items() if k != "backbone"}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if param_name != "backbone" or (trial.number + 1) % self.explore == 0:
            return self.sampler.sample_independent(study, trial, param_name,
                                                   param_distribution)
        choice = race_choice(study.get_trials(deepcopy=False), self.order,
                             maximize=study.direction.name == "MAXIMIZE", rung=self.rung,
                             exclude=trial.number)
        choices = getattr(param_distribution, "choices", ())
        if choice in choices:
            return choice
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: list[float] | None) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


def race_choice(trials: list[FrozenTrial], order: list[str], *, maximize: bool,
                rung: int = RUNG, exclude: int | None = None) -> str:
    """The backbone the next searched trial should train (pure: a function of the trials).

    Baseline trials (linear probe, scratch, ...) are references, not entries: they do not
    count. A rung compares each backbone's best over its *first* ``size`` trials, so a
    backbone with more trials (the warm start's) is not favoured for having more tries.
    """
    runs: dict[str, list[FrozenTrial]] = {name: [] for name in order}
    for t in sorted(trials, key=lambda t: t.number):
        name = t.params.get("backbone")
        if name in runs and t.number != exclude and t.state != TrialState.FAIL \
                and not t.user_attrs.get("baseline"):
            runs[name].append(t)  # running trials count too: parallel workers spread out
    sign = 1 if maximize else -1
    alive, size = list(order), rung
    while True:
        due = [n for n in alive if len(runs[n]) < size]
        if due:
            return due[0]  # best-ranked first
        if len(alive) == 1:
            return alive[0]

        def best(name: str, size: int = size) -> float:
            values = [v for v in map(_score, runs[name][:size]) if v is not None]
            return max(sign * v for v in values) if values else -float("inf")

        ranked = sorted(alive, key=lambda n: (-best(n), order.index(n)))
        alive, size = ranked[: (len(ranked) + 1) // 2], size * 2


def _score(t: FrozenTrial) -> float | None:
    """A finished trial's value, or a pruned one's last reported value."""
    if t.state == TrialState.COMPLETE:
        return t.value
    if t.intermediate_values:
        return t.intermediate_values[max(t.intermediate_values)]
    return None
