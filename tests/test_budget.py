"""Budgets that hold: a timeout bounds the whole search() call (the running trial is cut
and keeps its best epoch; the test set is scored in the time left), and the reference
trials take at most half of n_trials.

Time is a fake clock that moves only when an epoch is validated (a head plugin advances
it), so these tests never wait on the wall clock and pass on a busy machine.
"""

import time

import pytest
from autotransfer_plugins.heads import ClassificationHead

import autotransfer as at
from autotransfer import plugins
from autotransfer.strategy.baselines import planned, split
from autotransfer.testing import toy_images

SPACE = at.SearchSpace(epochs=3, image_size=16)
EPOCH_S = 10.0  # fake seconds one validated epoch takes


class Clock:
    """``time.time`` for the modules that read the budget; each validation adds EPOCH_S."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def __getattr__(self, name):  # perf_counter, sleep, ...: the real ones
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch):
    import sys

    c = Clock()
    for module in ("autotransfer.search", "autotransfer.backends._job",
                   "autotransfer.training.loop", "autotransfer.study.results",
                   "autotransfer.backends._progress", "autotransfer.study.opening",
                   "autotransfer.selection.ranking"):
        monkeypatch.setattr(sys.modules[module], "time", c)
    return c


def _clocked_head(clock: Clock):
    class Clocked(ClassificationHead):
        name = "clocked"

        def metrics(self, outputs, targets, info):
            clock.now += EPOCH_S
            return super().metrics(outputs, targets, info)

    return Clocked()


class ClockPlugin:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    @at.hookimpl
    def register_heads(self, register):
        register(_clocked_head(self.clock))


def test_a_trial_past_its_deadline_keeps_its_best_epoch_and_says_it_was_cut(clock):
    at.register_plugin(ClockPlugin(clock), name="clock")
    train, valid = toy_images(60, classes=3, size=16).split(0.3, seed=0)
    s = at.Strategy("tiny_cnn", epochs=6, image_size=16, lr=1e-2)
    # two validations fit before the deadline; the third epoch is stopped at its first batch
    r = at.run_trial(s, train, valid, task="clocked", patience=None,
                     deadline=clock.now + 2 * EPOCH_S)
    assert r.epochs_run == 2 and r.best_epoch in (1, 2)
    assert r.value == max(h["accuracy"] for h in r.history)
    assert r.cut == f"cut by the time budget during epoch 3 of 6 (best epoch {r.best_epoch} kept)"
    assert r.state_dict  # the kept weights are the best epoch's


def test_a_trial_cut_before_any_epoch_fails_with_that_reason(clock):
    train, valid = toy_images(60, classes=3, size=16).split(0.3, seed=0)
    with pytest.raises(at.TrialFailed, match="cut by the time budget during epoch 1 of 3, "
                                             "before any epoch was validated"):
        at.run_trial(at.Strategy("tiny_cnn", epochs=3, image_size=16), train, valid,
                     deadline=clock.now)


def test_the_timeout_bounds_trials_and_test_scoring(clock, tmp_path, capsys):
    at.register_plugin(ClockPlugin(clock), name="clock")
    data = toy_images(90, classes=3, size=16)
    test = toy_images(30, classes=3, size=16, seed=1)
    start = clock.now
    # 100 s: trials until 90 s (a tenth is left for the test set), 3 epochs = 30 s each
    study = at.search(data, task="clocked", backbones=["tiny_cnn"], timeout=100, test=test,
                      space=SPACE, storage=tmp_path / "s.db", name="budget", patience=None,
                      pruner="none", keep_checkpoints=3, progress=False, final="best")
    lb = study.leaderboard().set_index("trial")
    assert list(lb.index.sort_values()) == [0, 1, 2]  # a fourth would start at 90 s
    assert (lb["state"] == "complete").all()
    assert clock.now - start <= 100  # trials 90 s, then the best model's test score 10 s
    # only the best model was scored: the budget had ended when it was done
    scored = lb["test_accuracy"].notna()
    assert scored.sum() == 1 and lb.loc[scored, "rank"].item() == 1
    assert "before 2 kept model(s) were scored on the test set" in capsys.readouterr().err


def test_a_search_cuts_the_trial_running_at_the_deadline(clock, tmp_path):
    at.register_plugin(ClockPlugin(clock), name="clock")
    # 3 epochs of 10 s: the third trial starts at 60 s, validates at 70 s and 80 s, and is
    # cut then, past the 75 s deadline (no test set: all of it goes to trials)
    study = at.search(toy_images(90, classes=3, size=16), task="clocked",
                      backbones=["tiny_cnn"], timeout=75, space=SPACE, patience=None,
                      pruner="none", storage=tmp_path / "s.db", name="cut", progress=False)
    ran = [t for t in study.optuna.trials if t.state.is_finished()]
    assert len(ran) == 3  # none started after the deadline
    t = ran[-1]
    assert t.state.name == "COMPLETE" and t.user_attrs["epochs_run"] == 2
    assert t.user_attrs["cut"].startswith("cut by the time budget during epoch 3 of 3")


RANK_S = 30.0  # fake seconds ranking one backbone takes (a slow forward pass)


@pytest.fixture
def slow_ranking(clock, monkeypatch):
    from autotransfer.selection import ranking

    score = ranking._score

    def slow(*args, **kwargs):
        clock.now += RANK_S
        return score(*args, **kwargs)

    monkeypatch.setattr(ranking, "_score", slow)
    return clock


def test_the_ranking_takes_at_most_a_quarter_of_the_budget(slow_ranking, tmp_path):
    """200 s: the ranking begins backbones until 50 s (two of three, 30 s each), and the
    trials get the rest; the unranked backbone still races, after the ranked ones."""
    at.register_plugin(ClockPlugin(slow_ranking), name="clock")
    plugins.current().add_backbone(at.TimmBackbone("tiny_cnn_b", timm_name="test_efficientnet",
                                                   image_size=32))
    start = slow_ranking.now
    study = at.search(toy_images(90, classes=3, size=16), task="clocked",
                      backbones=["tiny_cnn", "tiny_resnet", "tiny_cnn_b"], timeout=200,
                      space=SPACE,
                      patience=None, pruner="none", storage=tmp_path / "s.db",
                      name="ranked", progress=False, baselines=False)
    ranked = study.ranking()
    assert ranked["score"].notna().sum() == 2, ranked  # begun at 0 s and 30 s; not at 60 s
    assert (ranked["reason"] == "not ranked: the time budget ended first").sum() == 1
    done = study.leaderboard()
    assert (done["state"] == "complete").sum() >= 4  # 140 s of 30 s trials
    assert slow_ranking.now - start <= 200


def test_a_budget_that_ends_before_any_trial_says_so(slow_ranking, tmp_path):
    at.register_plugin(ClockPlugin(slow_ranking), name="clock")
    with pytest.raises(at.SearchFailed, match=r"No trial finished within the time budget "
                                              r"\(timeout=20 s\).*rerun with a larger timeout"):
        at.search(toy_images(90, classes=3, size=16), task="clocked",
                  backbones=["tiny_cnn", "tiny_resnet"], timeout=20, space=SPACE,
                  storage=tmp_path / "s.db", name="short", progress=False)


@pytest.mark.parametrize("n_trials,backbones,said", [
    (8, ["a", "b"], "8 trials: 4 reference (linear probe of a, b; default fine-tune of a; "
                    "scratch of a), 4 searched"),
    (20, ["a", "b", "c"], "20 trials: 9 reference (linear probe of a, b, c; default fine-tune "
                          "of a, b, c; scratch of a, b, c), 11 searched"),
    (3, ["a"], "3 trials: 1 reference (linear probe of a), 2 searched"),
    (1, ["a"], "1 trial: no reference trials, 1 searched"),
    (None, ["a"], "trials until the time budget ends: 3 reference (linear probe of a; default "
                  "fine-tune of a; scratch of a) first, the rest searched"),
])
def test_reference_trials_take_at_most_half_the_trials(n_trials, backbones, said):
    plan = planned(backbones, n_trials)
    assert n_trials is None or len(plan) <= n_trials // 2
    assert split(plan, n_trials) == said


def test_a_small_search_says_how_its_trials_divide_and_keeps_to_it(tmp_path, capsys):
    study = at.search(toy_images(90, classes=3, size=16), backbones=["tiny_cnn", "tiny_resnet"],
                      n_trials=6, space=SPACE, storage=tmp_path / "s.db", name="small",
                      progress=True, final="best")
    lb = study.leaderboard()
    refs = lb[lb["baseline"] != ""]
    assert len(refs) == 3 and (lb["baseline"] == "").sum() == 3
    first = study.ranking()["backbone"].iloc[0]  # the best-ranked gets the default fine-tune
    assert sorted(zip(refs["baseline"], refs["backbone"])) == sorted(
        [("linear_probe", "tiny_cnn"), ("linear_probe", "tiny_resnet"),
         ("default_finetune", first)])
    assert (f"6 trials: 3 reference (linear probe of {first}, "
            f"{({'tiny_cnn', 'tiny_resnet'} - {first}).pop()}; default fine-tune of {first}), "
            f"3 searched") in capsys.readouterr().err


def test_time_limit_is_refused_with_the_name_to_use(tmp_path):
    with pytest.raises(at.ConfigError, match="timeout= .*time_limit=60"):
        at.search(toy_images(30, classes=3, size=16), time_limit=60, storage=tmp_path / "s.db")


def test_backbones_not_ranked_before_the_budget_ends_say_so():
    from autotransfer.selection.ranking import NOT_RANKED

    df = at.rank_backbones(toy_images(30, classes=3, size=16), backbones=["tiny_*"],
                           image_size=16, errors="skip", until=time.time() - 1)
    assert len(df) == 2 and df["score"].isna().all() and (df["reason"] == NOT_RANKED).all()
