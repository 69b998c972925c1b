"""search(): stored studies, baselines, resume after a kill, leaderboards, best model."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import optuna
import pandas as pd
import pytest

import autotransfer as at
from autotransfer.cli import main
from autotransfer.testing import toy_images

from helpers import Exploding, pause_plugin, wait_for_pause

SPACE = at.SearchSpace(epochs=3, image_size=16)


@pytest.fixture
def toy():
    return toy_images(120, classes=3, size=16)


def _search(data, tmp_path, **kw):
    args = dict(backbones=["tiny_cnn"], n_trials=6, storage=tmp_path / "s.db", name="toy",
                space=SPACE, progress=False, final="best")  # trials: test_ensemble.py has final
    args.update(kw)
    return at.search(data, **args)


def test_a_search_stores_baselines_and_ranks_trials(toy, tmp_path):
    study = at.search(toy, backbones=["tiny_*"], task="classification", n_trials=8,
                      space=SPACE, name="pets", root=tmp_path, progress=False)
    assert (tmp_path / "studies" / "pets.db").is_file()  # the default storage
    lb = study.leaderboard()
    assert len(lb) == 9 and lb["rank"].tolist() == list(range(1, 10))
    # the 8 trials, then the study's model: the greedy ensemble of the kept trials (default)
    assert lb["state"].tolist()[-1] == "ensemble" and lb["trial"].nunique() == 8
    assert study.model_path() == study.final_path()
    baselines = lb[lb["baseline"] != ""]  # half of 8: both probes, then the first-ranked's
    first = study.ranking()["backbone"].iloc[0]
    assert sorted(zip(baselines["backbone"], baselines["baseline"])) == sorted([
        ("tiny_cnn", "linear_probe"), ("tiny_resnet", "linear_probe"),
        (first, "default_finetune"), (first, "scratch")])
    for col in ["trial", "state", "backbone", "frozen_groups", "n_groups", "lr", "layer_decay",
                "weight_decay", "dropout", "drop_path", "label_smoothing", "mixup", "l2sp",
                "batch_size", "epochs_run", "accuracy", "macro_f1", "transfer_gain",
                "negative_transfer", "trainable_params", "total_params", "duration_s",
                "device", "reason"]:
        assert col in lb.columns, col
    complete = lb[lb["state"] == "complete"]
    assert complete["accuracy"].is_monotonic_decreasing
    scratch = lb[(lb["baseline"] == "scratch") & (lb["backbone"] == first)]["accuracy"].item()
    row = lb[(lb["backbone"] == first) & (lb["baseline"] == "linear_probe")].iloc[0]
    assert row["transfer_gain"] == pytest.approx(row["accuracy"] - scratch)
    assert row["negative_transfer"] == (row["accuracy"] < scratch)
    row = lb[(lb["backbone"] == "tiny_cnn") & (lb["baseline"] == "linear_probe")].iloc[0]
    assert row["frozen_groups"] == row["n_groups"] == 6
    # internal bookkeeping stays out of the attributes optuna-dashboard lists
    t = study.optuna.trials[0]
    assert not any(k.startswith("autotransfer:") for k in t.user_attrs)
    assert "autotransfer:strategy" in t.system_attrs


def test_rerunning_resumes_without_repeating_trials(toy, tmp_path):
    first = _search(toy, tmp_path, n_trials=5).leaderboard()
    again = _search(toy, tmp_path, n_trials=5).leaderboard()
    pd.testing.assert_frame_equal(first, again)  # finished: nothing reran
    more = _search(toy, tmp_path, n_trials=7).leaderboard()
    assert sorted(more["trial"]) == list(range(7))
    assert (more["baseline"] == "scratch").sum() == 1  # baselines are not enqueued twice
    kept = more.set_index("trial").loc[first["trial"], "accuracy"]
    assert kept.tolist() == first.set_index("trial")["accuracy"].tolist()


def test_a_new_study_starts_with_the_portfolio_cheapest_first(toy, tmp_path):
    lb = _search(toy, tmp_path, n_trials=12, pruner="none").leaderboard().set_index("trial")
    assert lb.loc[0, "baseline"] == "linear_probe"
    first = lb.loc[[1, 2, 3]]
    assert first["frozen_groups"].tolist() == [5, 3, 2]  # of tiny_cnn's 6 groups
    assert first["lr"].tolist() == [3e-3, 3e-3, 1e-3]
    assert (first["layer_decay"] == 0.8).all() and (first["mixup"] == 0.0).all()

    # values outside the user's space are left to the sampler
    narrow = at.SearchSpace(epochs=3, image_size=16, lr=(1e-4, 5e-4))
    lb = _search(toy, tmp_path, n_trials=12, name="narrow", space=narrow,
                 pruner="none").leaderboard().set_index("trial")
    assert lb.loc[[1, 2, 3], "frozen_groups"].tolist() == [5, 3, 2]
    assert lb.loc[[1, 2, 3], "lr"].between(1e-4, 5e-4).all()

    # warm_start=False, or a study too short for it: every searched trial is sampled
    for name, kw in (("cold", dict(n_trials=12, warm_start=False)), ("short", dict(n_trials=8))):
        lb = _search(toy, tmp_path, name=name, pruner="none", **kw).leaderboard()
        searched = lb[lb["baseline"] == ""]
        assert not (searched["layer_decay"] == 0.8).any(), name


def test_study_load_by_storage_and_name(toy, tmp_path):
    _search(toy, tmp_path, n_trials=3, name="one")
    assert at.Study.load(tmp_path / "s.db").name == "one"  # the only study: no name needed
    _search(toy, tmp_path, n_trials=3, name="two")
    with pytest.raises(at.StorageError, match=r"holds 2 studies; pass name= one of \['one', 'two'\]"):
        at.Study.load(tmp_path / "s.db")
    with pytest.raises(at.StorageError, match=r"No study named 'three'.*studies there: \['one', 'two'\]"):
        at.Study.load(tmp_path / "s.db", name="three")
    assert len(at.Study.load(tmp_path / "s.db", name="two").leaderboard()) == 3


def test_journal_storage_works_too(toy, tmp_path):
    _search(toy, tmp_path, n_trials=3, storage=tmp_path / "study.log")
    assert len(at.Study.load(tmp_path / "study.log").leaderboard()) == 3


def test_best_model_predicts_and_saves_with_its_strategy(toy, tmp_path):
    study = _search(toy, tmp_path, n_trials=6, keep_checkpoints=2)
    files = list((study.workdir / "checkpoints").glob("*.safetensors"))
    assert len(files) == 2  # only the best two are kept
    model = study.load_best()
    assert model.strategy == study.best_strategy
    pred = model.predict(toy.inputs[:20])
    lb = study.leaderboard()
    assert np.mean(pred == toy.labels[:20]) >= lb.iloc[0]["accuracy"] - 0.3
    path = model.save(tmp_path / "model.safetensors")
    again = at.load(path)
    assert again.strategy == model.strategy
    np.testing.assert_array_equal(again.predict(toy.inputs[:20]), pred)
    assert again.predict_proba(toy.inputs[:2]).shape == (2, 3)


def test_pruned_trials_stay_on_the_leaderboard(toy, tmp_path):
    always = optuna.pruners.ThresholdPruner(lower=2.0)  # accuracy never reaches 2
    lb = _search(toy, tmp_path, n_trials=6, pruner=always).leaderboard()
    assert (lb["state"] == "pruned").sum() == 3  # every searched trial
    assert (lb[lb["baseline"] != ""]["state"] == "complete").all()  # baselines never prune
    assert lb["state"].tolist() == ["complete"] * 3 + ["pruned"] * 3
    assert (lb[lb["state"] == "pruned"]["epochs_run"] == 1).all()


def test_failed_trials_record_their_reason_and_the_study_goes_on(toy, tmp_path):
    space = at.SearchSpace(epochs=3, image_size=16, lr=1e8, optimizer="sgd", grad_clip=0.0,
                           weight_decay=0.0, mixup=0.0, cutmix=0.0, frozen_groups=0)
    with pytest.raises(at.SearchFailed, match="All 3 trial.*loss became nan.*rerun"):
        _search(toy, tmp_path, n_trials=3, space=space, baselines=False)
    lb = at.Study.load(tmp_path / "s.db").leaderboard()
    assert (lb["state"] == "failed").all() and len(lb) == 3
    assert lb["reason"].str.contains("loss became nan").all()


def test_an_exception_in_a_plugin_fails_only_that_trial(toy, tmp_path):
    at.register_plugin(Exploding(), name="exploding")
    lb = _search(toy, tmp_path, backbones=["boom", "tiny_cnn"], n_trials=8).leaderboard()
    boom = lb[lb["backbone"] == "boom"]
    assert (boom[boom["baseline"] != "scratch"]["state"] == "failed").all()
    assert boom["reason"].str.contains("RuntimeError: boom in a plugin").any()
    assert (lb[lb["backbone"] == "tiny_cnn"]["state"] == "complete").any()


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(n_trials=None), at.ConfigError, "Give n_trials .* or timeout .*neither was given"),
    (dict(backend="tensorflow"), at.ConfigError, "backend must be 'optuna', 'ray', or a Backend .* but got backend='tensorflow'"),
    (dict(pruner="asha"), at.UnknownNameError, "Unknown pruner 'asha'"),
    (dict(storage="postgresql://nobody@127.0.0.1:1/nodb"), at.StorageError, "Cannot open storage 'postgresql://"),
    (dict(storage="study.xyz"), at.StorageError, "Cannot tell what storage 'study.xyz' is"),
    (dict(backbones=["tiny_bert"]), at.ModalityError, "'tiny_bert' takes text inputs, but the data holds image"),
    (dict(space=at.SearchSpace(frozen_groups=(0, 9))), at.ConfigError, "reaches 9, but backbone 'tiny_cnn' has 6 layer groups; accepted: 0..6"),
])
def test_bad_arguments(toy, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        _search(toy, tmp_path, **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=(-1.0, 1.0)), r"SearchSpace lr=\[-1.0, 1.0\] is out of range: lr must be a finite number > 0"),
    (dict(dropout=(0.0, 1.5)), r"dropout must be in \[0, 1\)"),
    (dict(layer_decay=(0.9, 0.5)), "low must be <= high"),
])
def test_search_space_values_out_of_range(kwargs, match):
    with pytest.raises(at.ConfigError, match=match):
        at.SearchSpace(**kwargs)


def test_search_space_fix_narrow_choose():
    space = at.SearchSpace(frozen_groups=0, lr=(1e-4, 1e-2), batch_size=[16, 32])
    assert space.frozen_groups == 0 and "frozen_groups" not in space.searched()
    assert space.lr == at.Float(1e-4, 1e-2, log=True)
    assert space.batch_size == at.Categorical((16, 32))
    assert at.SearchSpace.from_dict({"lr": [1e-4, 1e-3], "mixup": {"choices": [0.0]}}) == \
        at.SearchSpace(lr=(1e-4, 1e-3), mixup=[0.0])


_SCRIPT = textwrap.dedent("""
    import sys
    import autotransfer as at
    from autotransfer.testing import PauseAt, toy_images
    for m in ["autotransfer_plugins.heads", "autotransfer_plugins.techniques",
              "autotransfer.testing"]:
        at.register_plugin(m)
    at.register_plugin(PauseAt(sys.argv[2], after=2 * 4 + 2), name="pause")
    at.search(toy_images(200, classes=4, size=16), backbones=["tiny_cnn"], n_trials=6,
              task="paused", storage=sys.argv[1], name="killed", pruner="none", patience=None,
              space=at.SearchSpace(epochs=4, image_size=16, mixup=0.0), progress=False)
""")


def test_sigkill_mid_trial_then_rerun_loses_no_completed_trial(tmp_path):
    script, marker = tmp_path / "run.py", tmp_path / "paused"
    script.write_text(_SCRIPT)
    storage = f"sqlite:///{tmp_path / 'k.db'}"
    proc = subprocess.Popen([sys.executable, str(script), storage, str(marker)])
    wait_for_pause(marker, proc)  # two trials done, the third an epoch in
    before = optuna.load_study(study_name="killed", storage=storage).trials
    done = {t.number: t.value for t in before if t.state.is_finished()}
    (running,) = [t for t in before if t.state == optuna.trial.TrialState.RUNNING]
    assert len(done) == 2 and len(running.intermediate_values) == 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run([sys.executable, str(script), storage, str(marker)], check=True, timeout=600)

    trials = {t.number: t for t in optuna.load_study(study_name="killed", storage=storage).trials}
    for number, value in done.items():  # every trial completed before the kill survived
        assert trials[number].value == value
    assert trials[running.number].state == optuna.trial.TrialState.FAIL
    assert "interrupted: its process" in trials[running.number].user_attrs["fail_reason"]
    complete = [t for t in trials.values() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 6  # the killed trial was replaced: n_trials reached
    assert len(trials) == 7


def test_ctrl_c_marks_the_trial_interrupted_and_the_same_command_resumes(tmp_path):
    marker = tmp_path / "paused"
    module = pause_plugin(tmp_path, marker, after=1 * 4 + 2)
    toml = tmp_path / "study.toml"
    toml.write_text(textwrap.dedent(f"""
        name = "ctrlc"
        task = "paused"
        backbones = ["tiny_cnn"]
        n_trials = 4
        pruner = "none"
        patience = 100
        plugins = ["autotransfer_plugins.heads", "autotransfer_plugins.techniques",
                   "autotransfer.testing", "{module}"]
        [data]
        demo = "digits"
        image_size = 16
        per_class = 10
        [space]
        epochs = 4
        image_size = 16
        mixup = 0.0
    """))
    cmd = [sys.executable, "-m", "autotransfer.cli", "run", str(toml), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.Popen(cmd, env=env)
    wait_for_pause(marker, proc)  # one trial done, the second an epoch in
    storage = f"sqlite:///{tmp_path / 'ctrlc.db'}"
    (running,) = [t for t in optuna.load_study(study_name="ctrlc", storage=storage).trials
                  if t.state == optuna.trial.TrialState.RUNNING]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True,
                         timeout=600).stdout
    study = at.Study.load(tmp_path / "ctrlc.db")
    lb = study.leaderboard().set_index("trial")
    assert lb.loc[running.number, "state"] == "interrupted"
    assert lb.loc[running.number, "reason"] == "interrupted (Ctrl-C)"
    assert (lb["state"] == "complete").sum() == 4
    assert "best: trial" in out


def test_cli_leaderboard_csv_matches_python(toy, tmp_path, capsys):
    study = _search(toy, tmp_path, n_trials=5)
    assert main(["leaderboard", str(tmp_path / "s.db"), "--format", "csv"]) == 0
    printed = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    lb = study.leaderboard()
    assert printed["trial"].tolist() == lb["trial"].tolist()
    assert printed["accuracy"].tolist() == pytest.approx(lb["accuracy"].tolist())
    assert main(["leaderboard", str(tmp_path / "s.db"), "--format", "json", "--top", "2"]) == 0
    assert [r["trial"] for r in json.loads(capsys.readouterr().out)] == lb["trial"][:2].tolist()
    assert main(["leaderboard", str(tmp_path / "missing.db")]) == 2  # a wrong path given
    assert "does not exist" in capsys.readouterr().err


def test_study_file_errors(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('n_trial = 3\n[data]\ndemo = "digits"\n')
    assert main(["run", str(bad)]) == 2
    assert "Unknown key 'n_trial' in" in capsys.readouterr().err
    bad.write_text('n_trials = 3\n[data]\ndemo = "digits"\nsize = 3\n')
    assert main(["run", str(bad)]) == 2
    assert "Unknown key 'size' in [data]" in capsys.readouterr().err
    bad.write_text('n_trials = 3\n[data]\ndemo = "digits"\n[space]\nlearning_rate = 0.1\n')
    assert main(["run", str(bad)]) == 2
    assert "Unknown search space field(s) ['learning_rate']" in capsys.readouterr().err


def test_quickstart_study_file_parses():
    from autotransfer.config import load_study_file

    kwargs, train, valid = load_study_file("studies/quickstart.toml")
    assert kwargs["backbones"] == ["efficientnet_lite0", "efficientnet_lite1",
                                   "efficientnet_lite2"]  # ranked, then raced
    assert kwargs["name"] == "quickstart"
    assert kwargs["storage"].endswith(os.path.join("studies", "quickstart.db"))
    assert len(train) == 200 and train.inputs.shape[-1] == 32
    test = kwargs["test"]  # the held-out test set shares no image with train or valid
    assert len(valid) == len(test) == 400
    assert not set(test.index) & (set(valid.index) | set(train.index))


def test_a_study_file_reads_a_csv_of_image_paths(tmp_path, capsys):
    from PIL import Image

    from autotransfer.config import load_study_file

    (tmp_path / "img").mkdir()
    rows = ["path,breed"]
    for i in range(6):
        Image.new("RGB", (30 + i, 20), (40 * i, 0, 0)).save(tmp_path / "img" / f"{i}.jpg")
        rows.append(f"img/{i}.jpg,{'pug' if i % 2 else 'tabby'}")
    (tmp_path / "pets.csv").write_text("\n".join(rows) + "\n")
    study = tmp_path / "pets.toml"
    study.write_text('n_trials = 2\n[data]\ncsv = "pets.csv"\nimage = "path"\nlabel = "breed"\n')
    kwargs, train, valid = load_study_file(study)
    assert valid is None and train.modality == "image" and train.classes == ["pug", "tabby"]
    assert train.source.paths[0] == str(tmp_path / "img" / "0.jpg")  # relative to the CSV
    study.write_text('n_trials = 2\n[data]\ncsv = "pets.csv"\nlabel = "breed"\n')
    assert main(["run", str(study)]) == 2
    assert "one of image = '<path column>' or text = '<text column>'" in capsys.readouterr().err


def test_python_ends_with_the_summary_the_cli_prints_once(tmp_path, capsys):
    data = toy_images(60, classes=3, size=16)
    study = at.search(data, backbones=["tiny_cnn", "tiny_resnet"], n_trials=3,
                      storage=tmp_path / "s.db", name="s", baselines=False,
                      space=at.SearchSpace(epochs=1, image_size=16),
                      test=toy_images(30, classes=3, size=16, seed=5))
    err = capsys.readouterr().err
    best = study.leaderboard().iloc[0]
    assert f"[autotransfer] best: trial {best['trial']} ({best['backbone']}" in err
    assert "test accuracy=" in err and "[autotransfer] transferability before" in err
    assert f"[autotransfer] best model: {study.model_path()}" in err
    at.search(data, backbones=["tiny_cnn"], n_trials=1, storage=tmp_path / "q.db", name="q",
              baselines=False, space=at.SearchSpace(epochs=1, image_size=16), progress=False)
    assert "best: trial" not in capsys.readouterr().err  # progress=False: quiet
    (tmp_path / "cli.toml").write_text(
        'backbones = ["tiny_cnn"]\nn_trials = 2\nbaselines = false\nplugins = '
        '["autotransfer.testing"]\n[data]\ndemo = "digits"\nimage_size = 16\n'
        'per_class = 4\nvalid_per_class = 4\n[space]\nepochs = 1\n')
    assert main(["run", str(tmp_path / "cli.toml"), "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert (printed.out + printed.err).count("best: trial") == 1 and "best model: " in printed.out


def test_the_gp_sampler_searches_with_tpe_for_the_conditional_fields(toy, tmp_path):
    """sampler="gp": Optuna's GPSampler proposes the fields every trial has once its
    startup trials are done; the study runs and records its trials like TPE's."""
    study = _search(toy, tmp_path, sampler="gp", n_trials=5, warm_start=False, baselines=False)
    lb = study.leaderboard()
    assert len(lb) == 5 and (lb["state"] != "failed").all()  # 3 startup, 2 from the GP
