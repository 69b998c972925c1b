"""Results a user can trust and take away: test scores, refits, exit codes, dashboards."""

import subprocess
import sys
from pathlib import Path

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
                progress=False, keep_checkpoints=2, final="best")  # test_ensemble.py: final
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


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """A searched study whose trials all tie, and whose space searches LoRA: its validation
    set is one image four times, labelled 0, 0, 1, 1, so every model scores 0.5 accuracy."""
    from conftest import first_party_host

    host = first_party_host()
    host.add_backbone(at.TimmBackbone("tiny_vit", timm_name="test_vit", image_size=32,
                                      img_size=32))
    image = toy_images(1, classes=2, size=32, seed=5).inputs
    valid = at.data.Dataset(image.repeat(4, 1, 1, 1), [0, 0, 1, 1], "image")
    path = tmp_path_factory.mktemp("tied") / "t.db"
    with plugins.use(host):
        at.search(toy_images(24, classes=2, size=32), valid=valid, backbones=["tiny_vit"],
                  n_trials=5, storage=path, name="tied", progress=False, baselines=False,
                  warm_start=False, rank=False, keep_checkpoints=2, final="best",
                  space=at.SearchSpace(epochs=1, image_size=32, adapter=["none", "lora"],
                                       lora_rank=[4, 16]))
    return path


def test_a_field_that_does_not_apply_to_a_trial_is_blank(tied):
    study = at.Study.load(tied)
    lb = study.leaderboard()
    lora = lb["adapter"] == "lora"
    assert lora.any() and (~lora).any()  # the search tried LoRA and plain fine-tuning
    assert lb.loc[~lora, "lora_rank"].isna().all()  # not the default rank 8
    ranks = {t.number: t.params["lora_rank"] for t in study.trials() if "lora_rank" in t.params}
    assert dict(zip(lb.loc[lora, "trial"], lb.loc[lora, "lora_rank"])) == ranks
    # Python users keep every column, constant ones too
    assert {"optimizer", "batch_size", "total_params", "device"} <= set(lb.columns)


def test_the_cli_table_shows_the_same_columns_whatever_top(tied, capsys):
    assert main(["leaderboard", str(tied)]) == 0
    full = capsys.readouterr().out.splitlines()
    header = full[0].split()
    assert {"adapter", "lora_rank", "lr", "frozen_groups", "accuracy"} <= set(header)
    assert not {"optimizer", "batch_size"} & set(header)  # one value, never searched
    for top in ("1", "2"):
        assert main(["leaderboard", str(tied), "--top", top]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == header
        assert [line.split()[1] for line in lines[1:1 + int(top)]] == \
            [line.split()[1] for line in full[1:1 + int(top)]]


def test_the_cli_leaderboard_columns_option(tied, capsys):
    assert main(["leaderboard", str(tied), "--columns", "trial,adapter,lora_rank"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["trial", "adapter", "lora_rank"]
    assert main(["leaderboard", str(tied), "--columns", "trial, lora_rank", "--format",
                 "csv", "--top", "3"]) == 0
    printed = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert list(printed.columns) == ["trial", "lora_rank"] and len(printed) == 3
    assert main(["leaderboard", str(tied), "--columns", "trial,lora_rnk"]) == 2
    err = capsys.readouterr().err
    assert "Unknown leaderboard column 'lora_rnk' (close: lora_rank" in err
    assert "available: rank, trial, state, " in err and "adapter" in err
    with pytest.raises(SystemExit) as exc:
        main(["leaderboard", str(tied), "--columns", "trial", "--all-columns"])
    assert exc.value.code == 2


def test_ties_are_ranked_by_a_stated_rule_and_flagged(tied, capsys):
    study = at.Study.load(tied)
    lb = study.leaderboard()
    assert (lb["state"] == "complete").all() and (lb["accuracy"] == 0.5).all()
    assert lb["tied"].all()
    order = list(zip(lb["val_loss"], lb["duration_s"], lb["trial"]))
    assert order == sorted(order)  # the lower validation loss, the cheaper, the lower number
    best = int(lb["trial"].iloc[0])
    assert study.best_trial.number == best
    assert lb.attrs["n_valid"] == 4 and lb.attrs["resolution"] == 0.25
    kept = [n for n in lb["trial"]
            if Path(study.optuna.trials[n].system_attrs.get(st.CHECKPOINT, "-")).is_file()]
    assert study.model_path() == Path(study.optuna.trials[kept[0]].system_attrs[st.CHECKPOINT])
    assert main(["leaderboard", str(tied)]) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 120
    words = " ".join(out.split())
    assert "validation: 4 examples, so one example = 0.25 accuracy." in words
    assert "tie with the best (accuracy 0.5); ties on the validation score go to the lower " \
           "validation loss (where recorded), then the fewer seconds, then the lower trial " \
           f"number, so trial {best} ranks first." in words


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


def _labelled_files(data, folder: Path) -> tuple[Path, Path]:
    """``data`` as PNG files: a folder of class subfolders, and a CSV listing them in
    ``data``'s order (paths relative to the CSV's folder)."""
    from PIL import Image

    rows = []
    for i, (x, y) in enumerate(zip(data.inputs, data.labels)):
        (folder / "classes" / str(y)).mkdir(parents=True, exist_ok=True)
        name = f"classes/{y}/{i:03d}.png"
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(folder / name)
        rows.append(f"{name},{y}\n")
    (folder / "labels.csv").write_text("file,digit\n" + "".join(rows))
    return folder / "classes", folder / "labels.csv"


def test_cli_evaluate_scores_a_study_s_best_or_a_trial_s_model_on_a_folder_or_a_csv(
        tested, tmp_path, capsys):
    import json

    from autotransfer.study.results import score

    study = at.Study.load(tested)
    data = toy_images(30, classes=3, size=16, seed=11)
    folder, table = _labelled_files(data, tmp_path)
    best = at.load(study.model_path())
    metrics, se = score(best, data)  # what the CLI must print, from the same images

    csv_args = [str(table), "--image", "file", "--label", "digit", "--format", "json"]
    assert main(["evaluate", str(tested), *csv_args]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"model": str(study.model_path()), "n": 30, **metrics, "accuracy_se": se}
    assert 0 < se < 0.2 and set(metrics) >= {"accuracy", "macro_f1"}
    # The model file itself gives the same scores as the study's storage.
    assert main(["evaluate", str(study.model_path()), *csv_args]) == 0
    assert json.loads(capsys.readouterr().out) == out

    # A folder: its names ("0", "1", "2") read as the model's classes (0, 1, 2).
    assert main(["evaluate", str(tested), str(folder), "--format", "csv"]) == 0
    printed = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert list(printed.columns) == ["model", "n", *metrics, "accuracy_se"]
    assert printed.loc[0, "accuracy"] == pytest.approx(metrics["accuracy"])
    assert printed.loc[0, "macro_f1"] == pytest.approx(metrics["macro_f1"])

    # --trial K scores that trial's kept model; the table names the metric, value and SE.
    lb = study.leaderboard()
    other = int(lb[lb["test_accuracy"].notna()]["trial"].iloc[1])
    expected, expected_se = score(at.load(study.model_path(other)), data)
    assert main(["evaluate", str(tested), str(table), "--image", "file", "--label", "digit",
                 "--trial", str(other)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"model: {study.model_path(other)}"
    assert lines[2].split() == ["metric", "value", "se"]
    assert lines[3].split() == ["accuracy", f"{expected['accuracy']:.4g}", f"{expected_se:.4g}"]
    assert lines[4].split() == ["macro_f1", f"{expected['macro_f1']:.4g}", "-"]


def test_cli_evaluate_mistakes_exit_2_naming_the_value_and_what_is_accepted(tested, tmp_path,
                                                                           capsys):
    folder, table = _labelled_files(toy_images(6, classes=3, size=16), tmp_path)
    csv = [str(table), "--image", "file", "--label", "digit"]
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "zebra" / "zebra").mkdir(parents=True)
    import shutil

    shutil.copy(next(folder.glob("0/*.png")), tmp_path / "zebra" / "zebra" / "a.png")
    cases = [
        ([str(tmp_path / "missing")], "DATA '" + str(tmp_path / "missing") + "' does not "
         "exist; give a folder with one subfolder of examples per class, or a .csv file"),
        ([str(tmp_path / "notes.txt")], "is neither a folder nor a .csv file"),
        ([str(table), "--label", "digit"], "is a CSV file: it needs --label COLUMN and "
         "exactly one of --image COLUMN or --text COLUMN, but got --label."),
        ([str(table), "--image", "path", "--label", "digit"],
         "Column 'path' is not in the data frame; columns: ['file', 'digit']."),
        ([str(table), "--image", "file", "--label", "stars"], "Column 'stars' is not in"),
        ([str(folder), "--label", "digit"], "--label names a CSV file's columns, but DATA"),
        ([str(tmp_path / "zebra")], "Label 'zebra' is not among the training classes"),
        ([*csv, "--trial", "99"], "has no completed trial 99; completed: ["),
    ]
    for args, message in cases:
        assert main(["evaluate", str(tested), *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (args, err)
    model = at.Study.load(tested).model_path()
    assert main(["evaluate", str(model), *csv, "--trial", "0"]) == 2
    assert "--name and --trial choose a model from a study's storage" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: --image and --text together
        main(["evaluate", str(tested), *csv, "--text", "file"])
    assert exc.value.code == 2


def test_the_cli_summary_ends_with_the_commands_that_use_the_best_model(tested):
    from autotransfer.study import summary

    study = at.Study.load(tested)
    loads = f"{tested} --plugin autotransfer.testing"  # tiny_cnn's plugin, registered by hand
    assert summary.use_lines(study) == [
        f"best model: {study.model_path()}", f"  autotransfer best {tested}",
        f"  autotransfer predict {loads} IMAGES...",
        f"  autotransfer evaluate {loads} LABELLED_FOLDER",
        f"  autotransfer export {loads} --format onnx",
        f"  python: at.register_plugin('autotransfer.testing'); "
        f"at.Study.load({str(tested)!r}, name='toy').load_best()"]
