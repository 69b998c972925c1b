"""Results a user can trust and take away: test scores, refits, exit codes, dashboards."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import autotransfer as at
from autotransfer import plugins
from autotransfer import storage as st
from autotransfer.cli import main
from autotransfer.study.results import optimism
from autotransfer.testing import toy_images

SPACE = at.SearchSpace(epochs=3, image_size=16)


def _search(data, path, **kw):
    args = dict(backbones=["tiny_cnn"], n_trials=5, storage=path, name="toy", space=SPACE,
                progress=False, keep_checkpoints=2)
    args.update(kw)
    return at.search(data, **args)


@pytest.fixture(scope="module")
def tested(tmp_path_factory):
    """One searched study with a held-out test set (trials never see it)."""
    from conftest import first_party_host

    host = first_party_host()
    path = tmp_path_factory.mktemp("tested") / "s.db"
    with plugins.use(host):
        _search(toy_images(120, classes=3, size=16), path,
                test=toy_images(60, classes=3, size=16, seed=7))
    return path


def test_the_kept_models_are_scored_on_the_test_set_after_the_search(tested, tmp_path):
    study = at.Study.load(tested)
    lb = study.leaderboard()
    kept = lb[lb["test_accuracy"].notna()]
    assert len(kept) == 2 and (kept["state"] == "complete").all()  # keep_checkpoints=2
    assert kept["trial"].tolist() == lb[lb["state"] == "complete"]["trial"][:2].tolist()
    assert ((kept["test_accuracy_se"] > 0) & (kept["test_accuracy_se"] < 0.2)).all()
    again = study.evaluate(toy_images(60, classes=3, size=16, seed=7))
    assert again["model"].tolist()[0] in {str(t) for t in kept["trial"]}
    assert dict(zip(again["trial"], again["accuracy"])) == pytest.approx(
        dict(zip(kept["trial"], kept["test_accuracy"])))
    # The test set changes no choice: the same search without it runs the same trials.
    plain = _search(toy_images(120, classes=3, size=16), tmp_path / "plain.db")
    assert plain.leaderboard()["accuracy"].tolist() == pytest.approx(lb["accuracy"].tolist())
    assert "test_accuracy" not in plain.leaderboard()


def test_evaluate_scores_any_labelled_data_without_recording_it(tested):
    study = at.Study.load(tested)
    before = study.leaderboard()["test_accuracy"].tolist()
    df = study.evaluate(toy_images(30, classes=3, size=16, seed=11))
    assert list(df.columns[:4]) == ["model", "trial", "kind", "backbone"]
    assert {"accuracy", "macro_f1", "accuracy_se", "n"} <= set(df.columns)
    assert df["accuracy"].is_monotonic_decreasing and (df["n"] == 30).all()
    assert study.leaderboard()["test_accuracy"].tolist() == pytest.approx(before, nan_ok=True)
    with pytest.raises(at.DataError, match=r"data: Label 3 is not among the training classes \[0, 1, 2\]"):
        study.evaluate(at.data.from_arrays(toy_images(6, classes=6).inputs, np.arange(6)))


def test_test_data_that_does_not_fit_is_refused_before_the_study_exists(tmp_path):
    train = toy_images(60, classes=3, size=16)
    with pytest.raises(at.DataError, match=r"test: Label 3 is not among the training classes \[0, 1, 2\]"):
        _search(train, tmp_path / "a.db", test=toy_images(40, classes=4, size=16))
    texts = at.data.from_pandas(pd.DataFrame({"t": ["a b", "c d"], "y": [0, 1]}),
                                text="t", label="y")
    with pytest.raises(at.ModalityError, match="test holds text, but the models were trained on image"):
        _search(train, tmp_path / "a.db", test=texts)
    with pytest.raises(at.DataError, match="test must be an autotransfer Dataset"):
        _search(train, tmp_path / "a.db", test=[1, 2, 3])
    assert not (tmp_path / "a.db").exists()


def test_a_best_trial_whose_validation_overstates_its_test_score_is_flagged(tested):
    study = at.Study.load(tested)
    best = study.best_trial
    recorded = study.system_attrs()[st.TEST]
    try:
        # within the noise: two standard errors of the difference are ~0.17 here
        study.set_system_attr(st.TEST, {str(best.number): {
            "accuracy": best.value - 0.1, "se": 0.05, "n": 60}})
        assert optimism(study) is None
        study.set_system_attr(st.TEST, {str(best.number): {
            "accuracy": best.value - 0.3, "se": 0.05, "n": 60}})
        warning = optimism(study)
        assert f"The best trial ({best.number}) scores accuracy={best.value:.4f} on validation" in warning
        assert "more than two standard errors" in warning
    finally:
        study.set_system_attr(st.TEST, recorded)


def test_refit_retrains_the_best_strategy_on_train_and_valid(tmp_path):
    train, valid = toy_images(90, classes=3, size=16), toy_images(30, classes=3, seed=3)
    study = _search(train, tmp_path / "s.db", valid=valid)
    best = study.best_trial
    model = study.refit(train, valid)
    assert model.strategy.epochs == best.user_attrs["best_epoch"]
    assert model.strategy.replace(epochs=3) == study.best_strategy
    assert model.classes == [0, 1, 2]
    lb = at.Study.load(tmp_path / "s.db").leaderboard()  # recorded in the study
    row = lb[lb["state"] == "refit"].iloc[0]
    assert row["trial"] == best.number and pd.isna(row["accuracy"])
    assert row["epochs"] == best.user_attrs["best_epoch"]
    assert study.system_attrs()[st.REFIT][str(best.number)]["n_train"] == 120
    scores = study.evaluate(toy_images(30, classes=3, size=16, seed=5), record=True)
    assert f"refit:{best.number}" in scores["model"].tolist()
    lb = study.leaderboard()
    assert lb.loc[lb["state"] == "refit", "test_accuracy"].notna().all()
    second = next(t.number for t in study.trials() if t.number != best.number and t.value)
    other = study.refit(train, trial=second, epochs=1)
    assert other.strategy.epochs == 1 and len(study.leaderboard().query("state == 'refit'")) == 2


def test_refit_bad_inputs(tmp_path):
    from helpers import Exploding

    plugins.current().register(Exploding())
    train = toy_images(60, classes=3, size=16)
    with pytest.raises(at.SearchFailed):
        _search(train, tmp_path / "f.db", backbones=["boom"], n_trials=3, baselines=False)
    failed = at.Study.load(tmp_path / "f.db")
    with pytest.raises(at.StorageError, match="Cannot refit: Study 'toy' has no completed trial"):
        failed.refit(train)
    study = _search(train, tmp_path / "s.db", n_trials=3)
    with pytest.raises(at.ConfigError, match=r"Cannot refit trial 99: .*completed trials: \[0, 1, 2\]"):
        study.refit(train, trial=99)
    with pytest.raises(at.ConfigError, match="epochs must be 'best'"):
        study.refit(train, epochs="many")
    with pytest.raises(at.ConfigError, match=r"epochs must be an integer in \[1, 1000\], but got epochs=0"):
        study.refit(train, epochs=0)
    texts = at.data.from_pandas(pd.DataFrame({"t": ["a", "b"], "y": [0, 1]}), text="t", label="y")
    with pytest.raises(at.DataError, match="Can only join image data with image data, but got text"):
        study.refit(train, texts)
    with pytest.raises(at.ModalityError, match="train holds text, but study 'toy' searched image; give image data"):
        study.refit(texts)


def test_dashboards_see_the_metric_name_every_field_and_the_history(tested):
    study = at.Study.load(tested)
    assert study.optuna.metric_names == ["accuracy"]  # not "Objective 0"
    t = next(t for t in study.trials() if t.user_attrs.get("epochs_run"))
    for field in ("epochs", "batch_size", "image_size", "optimizer", "lr", "frozen_groups"):
        assert f"strategy.{field}" in t.user_attrs, field
    assert t.user_attrs["strategy.epochs"] == 3
    for metric in ("accuracy", "macro_f1", "train_loss"):
        assert len(t.user_attrs[f"history.{metric}"]) == t.user_attrs["epochs_run"]
    assert not [c for c in study.leaderboard() if c.startswith(("strategy.", "history."))]


def test_cli_leaderboard_fits_120_columns_and_shows_test_scores(tested, capsys):
    assert main(["leaderboard", str(tested)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 120
    # the metric and test score lead; a column with one value (the only backbone) goes last
    assert {"rank", "trial", "accuracy", "test_accuracy", "frozen_groups"} <= set(lines[0].split())
    assert main(["leaderboard", str(tested), "--all-columns"]) == 0
    assert max(map(len, capsys.readouterr().out.splitlines())) > 120


def test_cli_version_and_exit_codes(tmp_path, capsys):
    out = subprocess.run([sys.executable, "-m", "autotransfer.cli", "--version"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"autotransfer {at.__version__}"
    with pytest.raises(SystemExit) as exc:
        main(["leaderboard", "--top", "0", "x.db"])
    assert exc.value.code == 2  # a usage mistake
    assert main(["leaderboard", str(tmp_path / "missing.db")]) == 2  # a wrong path given
    (tmp_path / "t.csv").write_text("sentence,label\ngood,1\nbad,0\n")
    for data, token in (('label = "stars"', "stars"), ('label = "label"\nlr = 1', "lr")):
        (tmp_path / "t.toml").write_text(f'[data]\ncsv = "t.csv"\ntext = "sentence"\n{data}\n')
        assert main(["run", str(tmp_path / "t.toml")]) == 2  # a column, a key: both 2
        assert token in capsys.readouterr().err


def test_a_cli_search_whose_every_trial_fails_exits_1_with_the_reason(tmp_path, monkeypatch,
                                                                       capsys):
    (tmp_path / "boomplug.py").write_text(
        "import autotransfer as at\n"
        "from helpers import Exploding\n"
        "register_backbones = Exploding().register_backbones\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    study = tmp_path / "boom.toml"
    study.write_text('plugins = ["boomplug"]\nbackbones = ["boom"]\nn_trials = 3\n'
                     'baselines = false\n[data]\ndemo = "digits"\nimage_size = 16\n'
                     'per_class = 4\nvalid_per_class = 4\n[space]\nepochs = 1\n')
    assert main(["run", str(study), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "error: All 3 trial(s) of this search failed, 3 of them with: RuntimeError: boom in a plugin" in err


def test_cli_predicts_exports_and_reports(tested, tmp_path, capsys):
    from PIL import Image

    model = at.Study.load(tested).load_best()
    path = model.save(tmp_path / "toy.safetensors")
    images = toy_images(4, classes=3, size=16, seed=9).inputs
    (tmp_path / "in").mkdir()
    for i, x in enumerate(images):
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(tmp_path / "in" / f"{i}.png")
    assert main(["predict", str(path), str(tmp_path / "in"), "--proba", "--format", "csv"]) == 0
    printed = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    files = [str(tmp_path / "in" / f"{i}.png") for i in range(4)]
    assert printed["input"].tolist() == files
    assert printed["prediction"].tolist() == model.predict(files).tolist()
    assert list(printed.columns[2:]) == ["0", "1", "2"]  # a probability per class
    assert main(["export", str(path), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "toy.onnx").is_file() and "max_abs_diff: " in out
    assert main(["report", str(tested), "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 100_000  # plotly.js is inlined
    assert main(["report", str(tested), "-o", str(tmp_path / "no" / "r.html")]) == 2
    assert main(["predict", str(tmp_path / "in" / "0.png"), "x.png"]) == 2
    assert "is not a readable model file" in capsys.readouterr().err


def test_the_cli_goes_from_a_study_to_its_best_model(tested, tmp_path, capsys):
    """`autotransfer best` prints the best model's file; predict and export take the
    study's storage itself (best by default, --trial K's), as they take a model file."""
    from PIL import Image

    study = at.Study.load(tested)
    assert main(["best", str(tested)]) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(study.model_path()) and path.endswith(".safetensors")
    assert at.load(path).predict(toy_images(2, classes=3, size=16).inputs).shape == (2,)
    image = tmp_path / "x.png"
    Image.fromarray(toy_images(1, classes=3, size=16, seed=9).inputs[0].permute(1, 2, 0)
                    .numpy()).save(image)
    assert main(["predict", str(tested), str(image), "--format", "csv"]) == 0
    by_study = capsys.readouterr().out
    assert main(["predict", path, str(image), "--format", "csv"]) == 0
    assert capsys.readouterr().out == by_study
    assert main(["predict", str(tested), str(image), "--proba"]) == 0  # the table format
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[2:] == ["0", "1", "2"] and "-" not in row.split()[2:]
    lb = study.leaderboard()
    kept = lb[lb["test_accuracy"].notna()]["trial"].tolist()  # the two kept checkpoints
    assert main(["best", str(tested), "--trial", str(kept[1])]) == 0
    assert capsys.readouterr().out.strip() == str(study.model_path(kept[1]))
    unkept = lb[(lb["state"] == "complete") & lb["test_accuracy"].isna()]["trial"].iloc[0]
    assert main(["best", str(tested), "--trial", str(unkept)]) == 2
    assert f"Trial {unkept} of study" in capsys.readouterr().err
    assert main(["export", str(tested), "--format", "onnx", "-o", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").is_file()
    assert main(["predict", path, str(image), "--trial", "0"]) == 2
    assert "--name and --trial choose a model from a study's storage" in capsys.readouterr().err


def test_a_refit_keeps_the_last_epoch_not_the_best_on_its_monitor_data():
    train, valid = toy_images(60, classes=3, size=16), toy_images(30, classes=3, seed=3)
    s = at.Strategy("tiny_cnn", frozen_groups=0, lr=0.05, epochs=4, image_size=16)
    best = at.run_trial(s, train, valid, patience=None)
    last = at.run_trial(s, train, valid, patience=None, keep="last")
    assert [h["accuracy"] for h in best.history] == [h["accuracy"] for h in last.history]
    assert last.best_epoch == 4 and last.value == last.history[-1]["accuracy"]
    assert best.value == max(h["accuracy"] for h in best.history)
    with pytest.raises(at.StrategyError, match="keep must be 'best' or 'last', but got keep='first'"):
        at.run_trial(s, train, valid, keep="first")


def test_the_cli_loads_a_model_whose_backbone_comes_from_a_plugin_module(tested, tmp_path):
    import os

    from PIL import Image

    path = at.Study.load(tested).load_best().save(tmp_path / "toy.safetensors")
    Image.new("RGB", (16, 16), (200, 0, 0)).save(tmp_path / "x.png")
    env = {**os.environ, "AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD": "1"}
    cmd = [sys.executable, "-m", "autotransfer.cli", "predict", str(path), str(tmp_path / "x.png")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 2  # the plugin was not named: a mistake in what was given
    assert "needs backbone 'tiny_cnn' and task 'classification'" in out.stderr
    assert "--plugin module on the command line" in out.stderr
    plugins_ = ["--plugin", "autotransfer_plugins.heads", "--plugin",
                "autotransfer_plugins.techniques", "--plugin", "autotransfer.testing"]
    out = subprocess.run(cmd + plugins_, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].split()[0] == str(tmp_path / "x.png")
