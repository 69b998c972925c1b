"""Technique plugins: a third party's technique (examples/technique_plugin: Batch Spectral
Shrinkage) declares a Strategy field that is validated, searched, recorded and shown like a
built-in one, and its loss hook runs in the trial."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

import autotransfer as at
from autotransfer import plugins
from autotransfer.cli import main
from autotransfer.techniques import Categorical, Float, Technique, spec
from autotransfer.testing import toy_images

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "technique_plugin"
MODULE = "autotransfer_technique_plugin"


@pytest.fixture
def bss(first_party_plugins, monkeypatch):
    """The example plugin registered by module path, as a study file's ``plugins`` does
    (worker processes import it from the same path)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    plugins.register_plugin(MODULE)
    return sys.modules[MODULE].BatchSpectralShrinkage


@pytest.fixture
def toy():
    return toy_images(64, classes=3, size=16).split(0.25, seed=0)


def test_a_technique_field_needs_its_plugin():
    with pytest.raises(at.UnknownNameError, match="Unknown Strategy field 'bss'"):
        at.Strategy("tiny_cnn", bss=0.01)
    with pytest.raises(at.UnknownNameError, match="Unknown SearchSpace field 'bss'"):
        at.SearchSpace(bss=[0.0, 0.01])
    with pytest.raises(at.StrategyError, match=r"Unknown strategy field\(s\) \['bss'\]"):
        at.Strategy.from_dict({"backbone": "tiny_cnn", "bss": 0.01})


def test_strategy_takes_reads_and_round_trips_a_technique_field(bss):
    s = at.Strategy("tiny_cnn", bss=np.float32(0.001), lr=1e-3)
    assert s.bss == pytest.approx(0.001) and isinstance(s.bss, float)
    assert at.Strategy("tiny_cnn").bss == 0.0  # its default
    assert at.Strategy("tiny_cnn", bss=0.0) == at.Strategy("tiny_cnn")  # a default is no change
    assert s.to_dict()["bss"] == s.bss and at.Strategy("tiny_cnn").to_dict()["bss"] == 0.0
    assert at.Strategy.from_dict(s.to_dict()) == s and hash(s)
    assert s.replace(bss=0.01).bss == 0.01 and s.replace(lr=0.1).bss == s.bss
    with pytest.raises(at.StrategyError, match=r"bss must be >= 0 \(the BSS weight"):
        at.Strategy("tiny_cnn", bss=-1.0)
    with pytest.raises(at.UnknownNameError, match="close matches: bss"):
        at.Strategy("tiny_cnn", bs=0.01)
    assert bss().active(s) and not bss().active(at.Strategy("tiny_cnn"))


def test_search_space_takes_a_technique_field(bss):
    assert at.SearchSpace().bss == Categorical((0.0, 0.001, 0.01))  # the spec's range
    space = at.SearchSpace(bss=(0.0, 0.01))
    assert space.bss == Float(0.0, 0.01) and "bss" in space.searched()
    assert space.to_dict()["bss"] == [0.0, 0.01]
    assert at.SearchSpace.from_dict({"bss": [0.0, 0.01]}) == space
    assert at.SearchSpace(bss=0.001).base_strategy("tiny_cnn").bss == 0.001  # fixed
    with pytest.raises(at.ConfigError, match=r"SearchSpace bss=\[-1.0, 0.0\] is out of range"):
        at.SearchSpace(bss=(-1.0, 0.0))
    trial = optuna.create_study().ask()
    s = at.SearchSpace(bss=[0.01]).sample(trial, "tiny_cnn", 6, modality="image",
                                          task="classification", supports_drop_path=True)
    assert s.bss == 0.01 and trial.params["bss"] == 0.01  # define-by-run


def test_the_loss_hook_runs_in_a_trial(bss, toy, monkeypatch):
    calls = []
    loss = bss.loss
    monkeypatch.setattr(bss, "loss", lambda self, *a: calls.append(a[1].shape) or loss(self, *a))
    strategy = at.Strategy("tiny_cnn", lr=1e-2, epochs=2, image_size=16, batch_size=16)
    plain = at.run_trial(strategy, *toy, seed=3)
    assert calls == []  # bss=0: the technique is off
    shrunk = at.run_trial(strategy.replace(bss=0.01), *toy, seed=3)
    assert len(calls) == 2 * 3 and len(calls[0]) == 2 and calls[0][0] == 16  # every batch
    assert shrunk.history[0]["train_loss"] != pytest.approx(plain.history[0]["train_loss"])


def test_the_example_technique_is_searched_recorded_and_reported(bss, tmp_path, capsys):
    data = toy_images(60, classes=3, size=16)
    study = at.search(data, backbones=["tiny_cnn"], n_trials=4, storage=tmp_path / "s.db",
                      name="bss", space=at.SearchSpace(epochs=1, image_size=16,
                                                       bss=[0.0, 0.01]),
                      baselines=False, warm_start=False, progress=False, seed=1, final="best")
    trials = [t for t in study.optuna.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 4
    sampled = [t.params["bss"] for t in trials]
    assert set(sampled) == {0.0, 0.01}  # both ran (in worker processes; seed 1 draws both)
    assert [t.user_attrs["strategy.bss"] for t in trials] == sampled
    lb = study.leaderboard().set_index("trial")
    assert [lb.loc[t.number, "bss"] for t in trials] == sampled
    html = study.report(tmp_path / "report.html").read_text()
    assert 'title="click to sort">bss</th>' in html
    assert study.best_strategy.bss in (0.0, 0.01)
    assert main(["plugins"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if MODULE in x]
    assert "bss" in line and "loaded" in line


class _Broken(Technique):
    name = "broken"


@pytest.mark.parametrize("declared,problem", [
    ({"lr": spec(0.0)}, "field 'lr' is a name Strategy or SearchSpace uses already"),
    ({"_x": spec(0.0)}, "field name '_x' is not an identifier"),
    ({"x": dataclasses.field(default=0.0)}, "must be made with autotransfer.techniques.spec"),
    ({"x": spec(-1.0, accepts=lambda v: v >= 0, accepted=">= 0")},
     "its default is refused: x must be >= 0"),
    ({"x": spec(0.0, accepts=lambda v: v >= 0, accepted=">= 0", search=Float(-1.0, 1.0))},
     "its search bound is refused"),
])
def test_a_technique_with_a_bad_field_is_skipped_and_reported(declared, problem):
    technique = type("Bad", (_Broken,), {"fields": declared})()

    class Plugin:
        @at.hookimpl
        def register_techniques(self, register):
            register(technique)

    at.register_plugin(Plugin(), name="bad")
    with pytest.warns(UserWarning, match="'bad' registered Bad"):
        assert "broken" not in plugins.technique_registry()
    (info,) = [p for p in at.list_plugins() if p.name == "bad"]
    assert problem in info.error and info.techniques == ()


def test_two_plugins_declaring_one_field_name_the_first(bss):
    class Again:
        @at.hookimpl
        def register_techniques(self, register):
            register(type("Other", (_Broken,), {"name": "other",
                                                "fields": {"bss": spec(0.0)}})())

    at.register_plugin(Again(), name="again")
    with pytest.warns(UserWarning, match="duplicate field name 'bss'.*'again' skipped"):
        assert list(plugins.technique_registry())[-1] == "bss"
        assert "other" not in plugins.technique_registry()


def test_a_technique_reaches_the_optimizer_groups_and_the_epoch_end(toy):
    seen = []

    class Probe(Technique):
        name = "probe"
        fields = {"probe": spec(False, search=Categorical((False, True)), off=False)}

        def build(self, model, strategy):
            seen.append("build")

        def param_groups(self, groups, model, strategy):
            seen.append("groups")
            return [{**g, "lr": g["lr"] / 2} for g in groups]

        def epoch_end(self, model, epoch, strategy):
            seen.append(f"epoch {epoch}")

    class Plugin:
        @at.hookimpl
        def register_techniques(self, register):
            register(Probe())

    at.register_plugin(Plugin(), name="probe")
    strategy = at.Strategy("tiny_cnn", lr=1e-2, epochs=2, image_size=16, probe=True)
    at.run_trial(strategy, *toy, patience=None)
    assert seen == ["build", "groups", "epoch 1", "epoch 2"]
    from autotransfer.training.model import build_model
    from autotransfer.training.optim import apply

    model = build_model(strategy, "classification", {"classes": [0, 1]})
    groups = apply(strategy, model, 1).optimizer.param_groups
    assert {g["name"]: g["initial_lr"] for g in groups}["head"] == pytest.approx(5e-3)


def test_the_built_in_techniques_are_a_plugin_of_the_entry_point_group(capsys):
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="autotransfer")
             if e.value == "autotransfer_plugins.techniques"]
    host = plugins.PluginHost(autoload=False)
    host.register(ep.load(), name=ep.name)  # what autoload does with each entry point
    assert list(host.techniques()) == ["adapters", "layer_decay", "l2sp", "label_smoothing",
                                       "adabn", "dann", "mixing"]
    assert main(["plugins"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines()
               if "autotransfer_plugins.techniques" in x]
    assert "adapters, layer_decay, l2sp" in line and "loaded" in line


def test_a_built_in_field_on_without_its_technique_is_refused(toy):
    host = plugins.PluginHost(autoload=False)
    for name in ("autotransfer_plugins.heads", "autotransfer.testing"):
        host.register(name)
    with plugins.use(host):
        at.run_trial(at.Strategy("tiny_cnn", epochs=1, image_size=16), *toy)  # nothing on
        with pytest.raises(at.StrategyError,
                           match=r"mixup=0.2 needs the technique 'mixing', which no loaded "
                                 r"plugin registers .*'autotransfer_plugins.techniques'"):
            at.run_trial(at.Strategy("tiny_cnn", epochs=1, image_size=16, mixup=0.2), *toy)


def test_the_techniques_hooks_run_at_their_points_of_a_trial(toy):
    seen = []

    class Probe(Technique):
        name = "probe"
        fields = {"probe": spec(False, search=Categorical((False, True)), off=False)}

        def start(self, trial):
            seen.append(("start", trial.batch_size, trial.head.name))
            return self.copy()

        def batch(self, inputs, targets, strategy):
            seen.append("batch")
            return inputs.flip(-1), targets

        def criterion(self, criterion, strategy):
            return lambda outputs, targets: 2 * criterion(outputs, targets)

        def step(self, scaler):
            seen.append("step")

        def validation(self, model, strategy):
            import contextlib

            seen.append("validation")
            return contextlib.nullcontext()

    class Plugin:
        @at.hookimpl
        def register_techniques(self, register):
            register(Probe())

    at.register_plugin(Plugin(), name="probe")
    train, valid = toy
    r = at.run_trial(at.Strategy("tiny_cnn", epochs=1, image_size=16, batch_size=16,
                                 frozen_groups=1, probe=True), train, valid, patience=None)
    steps = len(train) // 16
    assert seen == [("start", 16, "classification"), *["batch", "step"] * steps, "validation"]
    assert r.cache_source == "no (probe)"  # a batch hook needs the inputs every batch


def test_a_technique_field_can_be_off_in_the_portfolio_and_for_students():
    from autotransfer.strategy import baselines, fields

    class Noisy(Technique):
        name = "noisy"
        fields = {"noise": spec(0.0, accepts=lambda v: v >= 0, accepted=">= 0",
                                search=Categorical((0.0, 0.1)), off=0.0,
                                off_in=("portfolio", "student"))}

    class Plugin:
        @at.hookimpl
        def register_techniques(self, register):
            register(Noisy())

    at.register_plugin(Plugin(), name="noisy")
    assert all(point["noise"] == 0.0 for _, point in baselines.portfolio())
    assert fields.off_in(at.Strategy, "student")["noise"] == 0.0
    assert "mixup" in fields.off_in(at.Strategy, "student")  # the built-in ones stay


def test_a_search_without_the_built_in_techniques_leaves_their_fields_off(tmp_path, caplog):
    host = plugins.PluginHost(autoload=False)
    for name in ("autotransfer_plugins.heads", "autotransfer.testing"):
        host.register(name)
    data = toy_images(48, classes=2, size=16)
    with plugins.use(host):
        with pytest.raises(at.ConfigError, match=r"SearchSpace mixup=.* needs the technique "
                                                 r"'mixing'.*or fix mixup=0.0"):
            at.search(data, backbones=["tiny_cnn"], n_trials=1, storage=tmp_path / "x.db",
                      space=at.SearchSpace(mixup=[0.0, 0.2]))
        assert not (tmp_path / "x.db").exists()  # refused before any storage
        study = at.search(data, backbones=["tiny_cnn"], n_trials=3, storage=tmp_path / "s.db",
                          space=at.SearchSpace(epochs=1, image_size=16), baselines=False,
                          final="best")
    assert "leaves layer_decay, label_smoothing, mixup, cutmix, l2sp" in caplog.text
    lb = study.leaderboard()
    assert len(lb) == 3 and (lb["state"] == "complete").all()
    assert (lb[["layer_decay", "mixup", "l2sp", "label_smoothing"]] == [1.0, 0.0, 0.0, 0.0]).all().all()
