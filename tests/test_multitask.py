"""Multi-task learning: a label column per task, one shared body, a head and a loss weight
per task, the first task primary."""

import json

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import autotransfer as at
from autotransfer import plugins
from autotransfer.heads.multitask import TaskBlocks, resolve_task
from autotransfer.testing import toy_images
from autotransfer.training.model import build_model

TASK = {"species": "classification", "age": "regression"}
SPACE = at.SearchSpace(epochs=2, image_size=16)


def _table(n: int = 72, seed: int = 0) -> pd.DataFrame:
    """Labels of toy_images(n): the class's name, and an age that grows with the class."""
    cls = np.arange(n) % 3
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"species": np.array(["cat", "dog", "owl"])[cls],
                         "age": cls * 2.0 + rng.normal(0, 0.3, n),
                         "legs": np.where(cls == 2, 2, 4)})


@pytest.fixture
def toy():
    return at.data.from_arrays(toy_images(72, classes=3, size=16).inputs, _table())


def test_from_pandas_gives_a_label_column_per_task(tmp_path):
    from PIL import Image

    df = _table(12)
    df["path"] = [f"{i}.png" for i in range(12)]
    for i in range(12):
        if i != 5:  # row 5's file is missing
            Image.new("RGB", (8, 8), (20 * i, 0, 0)).save(tmp_path / f"{i}.png")
    ds = at.data.from_pandas(df, image="path", label=["species", "age"], root=tmp_path,
                             on_error="skip")
    assert list(ds.labels.columns) == ["species", "age"] and len(ds) == 11
    kept = df.drop(index=5).reset_index(drop=True)
    assert ds.labels["age"].tolist() == kept["age"].tolist()  # rows stay with their files
    assert ds[5][1] == {"species": kept["species"][5], "age": kept["age"][5]}
    assert repr(ds).endswith("label columns: 'species', 'age', 1 skipped)")
    train, valid = ds.split(0.5, seed=0)  # stratified on the first (primary) column
    assert valid.labels["species"].value_counts().tolist() == [2, 2, 2]
    joined = train.concat(valid)
    assert len(joined) == 11 and list(joined.labels.columns) == ["species", "age"]
    with pytest.raises(at.DataError, match=r"Column 'weight' is not in the data frame; "
                                           r"columns: \['species', 'age', 'legs', 'path'\]"):
        at.data.from_pandas(df, image="path", label=["species", "weight"], root=tmp_path)


def test_a_head_per_task_on_one_shared_body(toy):
    head = at.get_head(TASK)
    targets, info = head.encode(toy.labels)
    assert targets.shape == (72, 2)  # a target column per task (class id, standardized age)
    model = build_model(at.Strategy("tiny_cnn"), TASK, info).eval()
    assert isinstance(model.head, TaskBlocks)
    species, age = (block[1] for block in model.head.blocks)
    width = model.body.num_features
    assert (species.in_features, species.out_features) == (width, 3)
    assert (age.in_features, age.out_features) == (width, 1)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        features = model.body(x)
        out = model(x)
        assert out.shape == (4, 4)
        torch.testing.assert_close(out[:, :3], species(features))  # one body, two blocks
        torch.testing.assert_close(out[:, 3:], age(features))


def test_the_loss_is_the_weighted_sum_of_task_losses(toy):
    head = at.get_head(TASK)
    targets, info = head.encode(toy.labels)
    out = torch.randn(72, 4, generator=torch.Generator().manual_seed(0))
    ce = F.cross_entropy(out[:, :3], targets[:, 0].long())
    mse = F.mse_loss(out[:, 3:], targets[:, 1:])
    for w in (0.0, 0.25, 1.0, 4.0):
        strategy = at.Strategy("tiny_cnn", loss_weights={"age": w})
        loss = head.configured(strategy, info).loss(out, targets)
        torch.testing.assert_close(loss, ce + w * mse)
    metrics = head.metrics(out, targets, info)
    assert metrics[head.metric] == metrics["species_accuracy"] and head.direction == "maximize"
    assert {"species_accuracy", "species_macro_f1", "age_r2", "age_mae", "age_mse"} == set(metrics)
    with pytest.raises(at.StrategyError, match=r"loss_weights names 'weight', which is not a "
                                               r"task of this study; tasks: \['species', 'age'\]"):
        head.configured(at.Strategy("tiny_cnn", loss_weights={"weight": 1.0}), info)
    with pytest.raises(at.StrategyError, match="task 'classification' is one task"):
        at.get_head("classification").configured(
            at.Strategy("tiny_cnn", loss_weights={"age": 2.0}), {})


def test_loss_weights_are_sampled_per_non_primary_task():
    task = {"species": "classification", "age": "regression", "legs": "classification"}
    trial = optuna.create_study().ask()
    s = at.SearchSpace().sample(trial, "tiny_cnn", 6, modality="image", task=task,
                                supports_drop_path=False)
    weights = {k: v for k, v in trial.params.items() if k.startswith("loss_weight")}
    assert set(weights) == {"loss_weight.age", "loss_weight.legs"}  # the primary stays at 1
    assert all(0.1 <= w <= 10 for w in weights.values())
    assert dict(s.loss_weights) == {"age": weights["loss_weight.age"],
                                    "legs": weights["loss_weight.legs"]}
    assert at.Strategy.from_dict(json.loads(json.dumps(s.to_dict()))) == s and hash(s)
    single = optuna.create_study().ask()
    plain = at.SearchSpace().sample(single, "tiny_cnn", 6, modality="image",
                                    task="classification", supports_drop_path=False)
    assert plain.loss_weights == () and not any("loss_weight" in k for k in single.params)
    fixed = at.SearchSpace(loss_weight=0.5).sample(optuna.create_study().ask(), "tiny_cnn", 6,
                                                   modality="image", task=task,
                                                   supports_drop_path=False)
    assert dict(fixed.loss_weights) == {"age": 0.5, "legs": 0.5}


def test_a_multi_task_search_optimizes_the_primary_task(toy, tmp_path, capsys):
    data, test = toy.split(0.25, seed=1)
    study = at.search(data, task=TASK, backbones=["tiny_cnn"], n_trials=5, space=SPACE,
                      storage=tmp_path / "s.db", name="mt", progress=False, test=test)
    assert study.task == TASK and study.metric == "species_accuracy" and study.maximize
    lb = study.leaderboard()
    for col in ["species_accuracy", "species_macro_f1", "age_r2", "age_mae", "age_mse",
                "loss_weight.age", "test_species_accuracy", "test_age_r2"]:
        assert col in lb.columns, col
    complete = [t for t in study.trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 5
    for t in complete:  # the study's value is the primary task's metric
        assert t.value == pytest.approx(t.user_attrs["species_accuracy"], abs=1e-6)
        assert "loss_weight.species" not in t.params
    searched = [t for t in complete if not t.user_attrs.get("baseline")]
    assert searched and all("loss_weight.age" in t.params for t in searched)
    for t in searched:
        row = lb[lb["trial"] == t.number].iloc[0]
        assert row["loss_weight.age"] == pytest.approx(t.params["loss_weight.age"])
    assert (lb[lb["baseline"] != ""]["loss_weight.age"] == 1.0).all()  # equal weights

    model = study.load_best()
    pred = model.predict(test)
    assert list(pred.columns) == ["species", "age"] and len(pred) == len(test)
    assert set(pred["species"]) <= {"cat", "dog", "owl"} and pred["age"].dtype == float
    model.save(tmp_path / "m.safetensors")
    loaded = at.load(tmp_path / "m.safetensors")
    assert loaded.task == TASK and loaded.predict(test).equals(pred)
    one = loaded.predict(test.inputs[0])
    assert one["species"] == pred["species"][0] and one["age"] == pytest.approx(pred["age"][0])
    proba = loaded.predict_proba(test)
    assert list(proba) == ["species"] and list(proba["species"].columns) == ["cat", "dog", "owl"]
    assert set(loaded.evaluate(test)) == {"species_accuracy", "species_macro_f1", "age_r2",
                                          "age_mae", "age_mse"}

    with pytest.raises(at.ConfigError, match="made for other data or settings: task="):  # the primary is fixed
        at.search(data, task={"age": "regression", "species": "classification"},
                  backbones=["tiny_cnn"], n_trials=5, space=SPACE, storage=tmp_path / "s.db",
                  name="mt", progress=False)


def test_ranking_scores_the_primary_task(toy):
    torch.manual_seed(0)  # the tiny backbones' weights are random
    both = at.rank_backbones(toy, backbones=["tiny_cnn", "tiny_resnet"], task=TASK)
    alone = at.data.from_arrays(toy.inputs, toy.labels["species"].to_numpy())
    torch.manual_seed(0)
    primary = at.rank_backbones(alone, backbones=["tiny_cnn", "tiny_resnet"])
    assert both["score"].tolist() == primary["score"].tolist()


def test_tasks_are_inferred_per_column_and_said(capsys):
    labels = _table(60)
    assert resolve_task("classification", labels, plugins.head_registry()) == {
        "species": "classification", "age": "regression", "legs": "classification"}
    said = capsys.readouterr().err
    assert "tasks inferred per column (species: classification, age: regression, " \
           "legs: classification)" in said and "'species', is the primary one" in said
    assert resolve_task("regression", labels, plugins.head_registry()) == "regression"  # several targets of one task
    assert resolve_task(TASK, labels, plugins.head_registry()) == TASK and capsys.readouterr().err == ""


@pytest.mark.parametrize("task,labels,error,match", [
    ({"species": "classification", "weight": "regression"}, None, at.DataError,
     r"Label column 'weight' \(task 'regression'\) is not in the labels; label columns: "
     r"\['species', 'age', 'legs'\]"),
    ({"species": "regression"}, None, at.DataError,
     r"Label column 'species' \(task 'regression'\): Regression labels must be numbers, but "
     r"got object values like '(cat|dog|owl)'; for categories use task='classification'"),
    ({"age": "classification", "species": "classification"}, None, at.DataError,
     r"Label column 'age' \(task 'classification'\): Classification labels must be class ids "
     r"or names, but got .*; for continuous targets use task='regression'"),
    ({"species": "classification", "id": "classification"}, "ids", at.DataError,
     r"Label column 'id' \(task 'classification'\) has a different value in every one of its "
     r"\d+ rows .* want task 'regression'"),
    ({"species": "classifcation"}, None, at.UnknownNameError,
     r"Unknown task for label column 'species': 'classifcation'; close matches: classification"),
    ({}, None, at.ConfigError, r"must be a non-empty dict \{label column: task\}"),
    (TASK, "plain", at.DataError, r"names label columns, but the labels are not a table .*"
                                  r"label=\['species', 'age'\]"),
    (5, None, at.ConfigError, r"task must be a task name .* or a dict \{label column: task\}"),
])
def test_bad_multi_task_input_raises_before_storage(toy, tmp_path, task, labels, error, match):
    data = toy
    if labels == "ids":
        data = at.data.from_arrays(toy.inputs, toy.labels.assign(id=np.arange(72.0)))
    elif labels == "plain":
        data = at.data.from_arrays(toy.inputs, toy.labels["species"].to_numpy())
    with pytest.raises(error, match=match):
        at.search(data, task=task, backbones=["tiny_cnn"], n_trials=2, space=SPACE,
                  storage=tmp_path / "s.db", name="bad", progress=False)
    assert list(tmp_path.iterdir()) == []  # no storage, no work folder


@pytest.mark.parametrize("value,match", [
    (-1.0, r"SearchSpace loss_weight=-1.0 is out of range: loss_weights must be"),
    ((0.0, 2.0), r"SearchSpace loss_weight=\[0.0, 2.0\]: a log range needs low > 0"),
])
def test_bad_loss_weight_ranges(value, match):
    with pytest.raises(at.ConfigError, match=match):
        at.SearchSpace(loss_weight=value)
