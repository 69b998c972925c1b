"""Ensembles of a study's kept trials across backbones: one model whose probabilities are
the members' mean, kept in the study, scored on test beside the best trial, saved,
loaded and exported like any model."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import autotransfer as at
from autotransfer import plugins
from autotransfer.study.ensemble import assembled
from autotransfer.testing import toy_images

SPACE = at.SearchSpace(epochs=2, image_size=16, adapter="none")


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    from conftest import first_party_host

    folder = tmp_path_factory.mktemp("ensemble")
    data = toy_images(90, classes=3, size=16)
    train, valid = data.split(0.3, seed=0)
    with plugins.use(first_party_host()):
        at.search(train, valid=valid, test=toy_images(30, classes=3, size=16, seed=5),
                  backbones=["tiny_cnn", "tiny_resnet"], n_trials=6, space=SPACE,
                  keep_checkpoints=4, storage=folder / "s.db", name="ens",
                  progress=False)  # final="ensemble", the default
    return folder / "s.db", valid


def test_by_default_the_ensemble_is_the_studys_model(searched):
    """search() (final="ensemble" by default): load_best, model_path and the CLI's commands
    give the greedy ensemble, scored on test by the search beside the best trial."""
    from autotransfer.study import summary

    study = at.Study.load(searched[0])
    path = study.model_path()
    assert path == study.final_path() and path.parent.name == "ensemble"
    chosen = study.system_attrs()["autotransfer:ensemble"]["members"]
    assert len(study.load_best().members) == len(chosen) > 1
    assert study.model_path(study.best_trial.number) != path  # a trial's own file still
    lb = study.leaderboard()
    row = lb[lb["state"] == "ensemble"].iloc[0]
    assert row["reason"].startswith("greedy ensemble of trials") and row["test_accuracy"] >= 0
    lines = summary.use_lines(study)
    assert lines[0].startswith("the study's model is its greedy ensemble of trials")
    assert lines[1] == f"best model: {path}"


def test_a_final_that_cannot_be_made_leaves_the_best_trial_and_says_why(tmp_path, caplog):
    data = toy_images(48, classes=2, size=16)
    study = at.search(data, backbones=["tiny_cnn"], n_trials=2, space=SPACE,
                      keep_checkpoints=1, final="soup", storage=tmp_path / "s.db",
                      progress=False)
    assert "final='soup': no soup:" in caplog.text and "keep_checkpoints=" in caplog.text
    assert study.final_path() is None
    assert study.model_path() == study.model_path(study.best_trial.number)


def test_a_resumed_search_makes_its_own_final_model(tmp_path):
    """The study's model is what the last run chose: rerunning a finished search keeps its
    ensemble as it was (nothing new to walk), and an ensemble made before more trials ran
    is not kept as the study's model by a resume with final="best"."""
    data = toy_images(48, classes=2, size=16)
    kwargs = dict(backbones=["tiny_cnn"], space=SPACE, keep_checkpoints=3,
                  storage=tmp_path / "s.db", name="r", progress=False)
    study = at.search(data, n_trials=2, final="ensemble", **kwargs)
    assert study.model_path() == study.final_path() is not None
    made, stamp = study.system_attrs()["autotransfer:ensemble"], study.final_path().stat()
    study = at.search(data, n_trials=2, **kwargs)  # finished: the same ensemble, not remade
    assert study.system_attrs()["autotransfer:ensemble"] == made
    assert study.final_path().stat().st_mtime_ns == stamp.st_mtime_ns
    study = at.search(data, n_trials=3, final="best", **kwargs)
    assert study.final_path() is None
    assert study.model_path() == study.model_path(study.best_trial.number)


def test_a_walk_that_keeps_the_best_alone_leaves_the_best_trial_the_studys_model(
        tmp_path, caplog):
    """Validation inputs on which adding any other kept trial flips the best one's answer:
    the greedy walk keeps the best alone, so no copy of it is saved or listed, and the
    best trial stays the study's model."""
    from conftest import first_party_host

    from autotransfer.search import _make_final
    from autotransfer.study.results import kept_models

    with plugins.use(first_party_host()):
        study = at.search(toy_images(90, classes=3, size=16), n_trials=4, space=SPACE,
                          backbones=["tiny_cnn", "tiny_resnet"], keep_checkpoints=3,
                          final="best", baselines=False, warm_start=False,
                          storage=tmp_path / "s.db", progress=False)
    models = [at.load(m.path) for m in kept_models(study)]
    pool = torch.randint(0, 256, (400, 3, 16, 16), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))  # noise images
    probs = [torch.from_numpy(m.predict_proba(pool, as_pandas=False)) for m in models]
    answer = probs[0].argmax(1)  # the labels: the best trial's answers, so it scores 1.0
    flips = [int(((probs[0] + p).argmax(1) != answer).nonzero()[0]) for p in probs[1:]]
    valid = at.data.Dataset(pool[flips], answer[flips].tolist(), "image")
    _make_final(study, "ensemble", valid, None)
    assert f"the best trial (trial {study.best_trial.number}) is the study's model" in caplog.text
    assert study.final_path() is None and not study.system_attrs()["autotransfer:ensemble"]
    assert study.model_path() == study.model_path(study.best_trial.number)
    assert "ensemble" not in set(study.leaderboard()["state"])
    assert not list((study.workdir / "ensemble").glob("*"))


def test_final_is_checked_before_any_work(tmp_path):
    with pytest.raises(at.AutotransferError, match="Unknown final 'stack'.*ensemble"):
        at.search(toy_images(48, classes=2, size=16), backbones=["tiny_cnn"], n_trials=1,
                  final="stack", storage=tmp_path / "s.db")
    assert not (tmp_path / "s.db").exists()


def test_an_ensemble_averages_its_members_probabilities_and_is_a_model_like_any(
        searched, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    db, _ = searched
    study = at.Study.load(db)
    combined = study.ensemble(4, method="uniform")
    record = study.system_attrs()["autotransfer:ensemble"]
    assert record["best"] == study.best_trial.number == record["members"][0]
    assert len(record["members"]) == len(combined.members) >= 2
    test = toy_images(30, classes=3, size=16, seed=5)
    x = test.inputs[:8]
    members = [at.load(study.model_path(n)) for n in record["members"]]
    mean = np.mean([m.predict_proba(x, as_pandas=False) for m in members], 0)
    np.testing.assert_allclose(combined.predict_proba(x, as_pandas=False), mean, atol=1e-6)
    # kept in the study: an ensemble row, scored on test beside the best trial
    scores = study.evaluate(test, record=True)
    assert "ensemble" in set(scores["model"])
    lb = study.leaderboard()
    row = lb[lb["state"] == "ensemble"].iloc[0]
    assert row["reason"].startswith(
        f"uniform ensemble of trials {', '.join(map(str, record['members']))}")
    best = lb[lb["trial"] == study.best_trial.number].iloc[0]
    assert not np.isnan(row["test_accuracy"]) and not np.isnan(best["test_accuracy"])
    # one model file that loads as one model, and one ONNX graph that agrees with it
    again = at.load(combined.save(tmp_path / "ensemble.safetensors"))
    assert again.members == combined.members
    np.testing.assert_allclose(again.predict_proba(x, as_pandas=False), mean, atol=1e-6)
    report = combined.export(tmp_path / "ensemble.onnx", format="onnx")
    assert report["max_abs_diff"] < 1e-4
    described = json.loads((tmp_path / "ensemble.onnx.json").read_text())
    assert [m["backbone"] for m in described["ensemble"]] == \
        [s.backbone for s, _ in combined.members]
    session = ort.InferenceSession(str(tmp_path / "ensemble.onnx"),
                                   providers=["CPUExecutionProvider"])
    logits = session.run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(torch.from_numpy(logits).softmax(1).numpy(), mean, atol=1e-5)


def test_a_greedy_ensemble_never_scores_below_its_best_member_on_validation(searched):
    db, valid = searched
    study = at.Study.load(db)
    combined = study.ensemble(valid=valid)
    record = study.system_attrs()["autotransfer:ensemble"]
    assert record["members"][0] == study.best_trial.number
    best = at.load(study.model_path(study.best_trial.number)).evaluate(valid)["accuracy"]
    assert record["valid"] >= best
    assert combined.evaluate(valid)["accuracy"] == pytest.approx(record["valid"])


def test_members_normalized_differently_each_see_their_own_normalization(searched):
    """A member trained on inputs scaled another way gets them scaled its way inside the
    ensemble, so the ensemble's probabilities are still the members' own, averaged."""
    study = at.Study.load(searched[0])
    first = at.load(study.model_path())
    other = at.load(study.model_path())
    other.preprocessing = dataclasses.replace(other.preprocessing, mean=(0.2, 0.4, 0.6),
                                              std=(0.3, 0.2, 0.25))
    x = toy_images(6, classes=3, size=16, seed=9).inputs
    mean = (first.predict_proba(x, as_pandas=False) + other.predict_proba(x, as_pandas=False)) / 2
    assert not np.allclose(first.predict_proba(x, as_pandas=False), mean, atol=1e-3)
    combined = assembled([first, other])
    np.testing.assert_allclose(combined.predict_proba(x, as_pandas=False), mean, atol=1e-6)


def test_heads_combine_outputs_as_the_mean_of_what_they_mean():
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    cls = plugins.get_head("classification").combine([a, b], {"classes": list("abcd")})
    torch.testing.assert_close(cls.softmax(1), (a.softmax(1) + b.softmax(1)) / 2)
    multi = plugins.get_head("multilabel").combine([a, b], {"classes": list("abcd")})
    torch.testing.assert_close(multi.sigmoid(), (a.sigmoid() + b.sigmoid()) / 2)
    reg = plugins.get_head("regression").combine([a, b], {"n_targets": 4})
    torch.testing.assert_close(reg, (a + b) / 2)


def test_a_model_file_whose_members_take_other_inputs_is_refused(searched, tmp_path):
    """A crafted ensemble file whose second member takes another image size is refused
    before anything is built."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    study = at.Study.load(searched[0])
    path = study.ensemble(2, method="uniform").save(tmp_path / "e.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    config["members"][1]["preprocessing"]["size"] = 24
    save_file(state, str(tmp_path / "bad.safetensors"),
              metadata={**meta, "config": json.dumps(config)})
    with pytest.raises(at.AutotransferError, match="member 1 cannot share .* size is 24"):
        at.load(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="greedy"), "give valid="),
    (dict(method="stacked"), "Unknown ensemble method 'stacked'"),
    (dict(k=1, method="uniform"), r"k must be an integer in \[2, 32\], but got k=1"),
    (dict(k=33, method="uniform"), r"k must be an integer in \[2, 32\], but got k=33"),
])
def test_ensemble_mistakes_are_named(searched, kwargs, match):
    with pytest.raises(at.AutotransferError, match=match):
        at.Study.load(searched[0]).ensemble(**kwargs)


def test_an_ensemble_exports_only_to_formats_that_hold_every_member(searched, tmp_path):
    combined = at.Study.load(searched[0]).ensemble(2, method="uniform")
    with pytest.raises(at.AutotransferError, match="ensemble of 2; formats that hold"):
        combined.export(tmp_path / "timm", format="timm")
