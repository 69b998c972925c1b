"""Model soups of a study's kept trials: one model whose weights are the members' mean,
kept in the study, scored on test beside the best trial, predicted and exported like any
model (Wortsman et al. 2022)."""

import numpy as np
import pytest
import torch

import autotransfer as at
from autotransfer.testing import toy_images

SPACE = at.SearchSpace(epochs=2, image_size=16, adapter="none")


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    from conftest import first_party_host

    from autotransfer import plugins

    folder = tmp_path_factory.mktemp("soup")
    data = toy_images(90, classes=3, size=16)
    train, valid = data.split(0.3, seed=0)
    with plugins.use(first_party_host()):
        at.search(train, valid=valid, backbones=["tiny_cnn"], n_trials=6, space=SPACE,
                  keep_checkpoints=4, storage=folder / "s.db", name="soup", progress=False)
    return folder / "s.db", valid


def test_a_uniform_soup_is_the_mean_of_its_members_and_a_model_like_any(searched, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    db, valid = searched
    study = at.Study.load(db)
    souped = study.soup(3, method="uniform")
    record = study.system_attrs()["autotransfer:soup"]
    members = [at.load(study.model_path(n)) for n in record["members"]]
    assert len(members) == 3 and record["best"] == study.best_trial.number
    name, w = next((k, v) for k, v in souped.model.state_dict().items() if v.is_floating_point())
    mean = torch.stack([m.model.state_dict()[name] for m in members]).mean(0)
    torch.testing.assert_close(w, mean)
    # kept in the study: a soup row, scored on test beside the best trial
    test = toy_images(30, classes=3, size=16, seed=5)
    scores = study.evaluate(test, record=True)
    assert "soup" in set(scores["model"])
    lb = study.leaderboard()
    row = lb[lb["state"] == "soup"].iloc[0]
    assert row["reason"] == f"uniform soup of trials {', '.join(map(str, record['members']))}"
    assert not np.isnan(row["test_accuracy"]) and lb["test_accuracy"].notna().sum() >= 2
    # predicts, saves, exports: ONNX Runtime agrees with torch
    x = test.inputs[:5]
    report = souped.export(tmp_path / "soup.onnx", format="onnx")
    assert report["max_abs_diff"] < 1e-4
    session = ort.InferenceSession(str(tmp_path / "soup.onnx"),
                                   providers=["CPUExecutionProvider"])
    logits = session.run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(torch.from_numpy(logits).softmax(1).numpy(),
                               souped.predict_proba(x, as_pandas=False), atol=1e-5)
    again = at.load(souped.save(tmp_path / "soup.safetensors"))
    assert (again.predict(x) == souped.predict(x)).all()


def test_a_greedy_soup_never_scores_below_its_best_member_on_validation(searched):
    db, valid = searched
    study = at.Study.load(db)
    souped = study.soup(method="greedy", valid=valid)
    record = study.system_attrs()["autotransfer:soup"]
    assert record["members"][0] == study.best_trial.number
    best = at.load(study.model_path()).evaluate(valid)["accuracy"]
    assert record["valid"] >= best
    assert souped.evaluate(valid)["accuracy"] == pytest.approx(record["valid"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="greedy"), "give valid="),
    (dict(method="average"), "Unknown soup method 'average'"),
    (dict(k=1, method="uniform"), "k"),
])
def test_soup_mistakes_are_named(searched, kwargs, match):
    with pytest.raises(at.AutotransferError, match=match):
        at.Study.load(searched[0]).soup(**kwargs)
