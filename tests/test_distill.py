"""Knowledge distillation: a study's best model teaches a smaller student."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import autotransfer as at
from autotransfer import plugins
from autotransfer import storage as st
from autotransfer.study import distill as dist
from autotransfer.study import soft_targets as soft
from autotransfer.testing import toy_images
from autotransfer.training.runner import prepare, run_trial

SPACE = at.SearchSpace(epochs=2, image_size=16, frozen_groups=4, lr=1e-2)
# A student whose frozen prefix is cached across trials: seconds per trial on a CPU.
STUDENT = at.Strategy("tiny_cnn", frozen_groups=5, epochs=2, image_size=16, lr=1e-2)


def _data():
    return toy_images(60, classes=3, size=16)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A searched image study keeping its two trials' checkpoints (the teachers)."""
    from conftest import first_party_host

    host = first_party_host()
    path = tmp_path_factory.mktemp("parent") / "s.db"
    with plugins.use(host):
        at.search(_data(), backbones=["tiny_resnet"], n_trials=2, storage=path, name="toy",
                  space=SPACE, progress=False, keep_checkpoints=2, baselines=False,
                  warm_start=False)
    return path


@pytest.fixture
def parent(searched, tmp_path, monkeypatch):
    """The searched study in a storage of this test's own (its teachers' files are shared,
    read only); a few inputs timed once, for speed."""
    monkeypatch.setattr(dist, "TIMED", 8)
    monkeypatch.setattr(dist, "REPEATS", 1)
    shutil.copy(searched, tmp_path / "s.db")
    return at.Study.load(tmp_path / "s.db")


def _names(study):
    return st.study_names(study.optuna._storage)


def test_the_loss_is_hinton_s_and_unlabeled_rows_carry_no_hard_term():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    hard, labelled = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([1, 1, 1, 1, 0, 0])
    targets = soft.pack(hard, labelled, teacher)
    t = 3.0
    kl = F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1),
                  reduction="batchmean") * t * t
    ce = F.cross_entropy(student[:4], hard[:4])
    assert soft.DistillLoss(t, 0.3)(student, targets) == pytest.approx(
        float(0.3 * ce + 0.7 * kl), rel=1e-5)
    # The hard labels of unlabeled rows (pseudo-labels) change nothing.
    other = soft.pack(torch.tensor([0, 1, 2, 0, 0, 0]), labelled, teacher)
    assert soft.DistillLoss(t, 1.0)(student, other) == soft.DistillLoss(t, 1.0)(student, targets)
    # Soft only: no loss when the student already gives the teacher's distribution.
    assert soft.DistillLoss(t, 0.0)(teacher + 5.0, targets) == pytest.approx(0.0, abs=1e-6)
    assert soft.DistillLoss(t, 0.0)(student, targets) == pytest.approx(float(kl), rel=1e-5)


def test_the_student_follows_the_teacher_s_soft_targets_over_the_labels():
    """A teacher that calls every class c 'c + 1': trained on soft targets only (alpha=0)
    the student says what the teacher says; on labels only (alpha=1), what the labels say."""
    train, valid = toy_images(90, classes=3, size=16).split(0.3, seed=0)
    strategy = at.Strategy("tiny_resnet", frozen_groups=3, epochs=4, image_size=16, lr=1e-2)
    agree = {}
    for alpha in (0.0, 1.0):
        prepared = prepare(strategy, train, valid, "classification")
        y = prepared.y_train
        wrong = 8.0 * F.one_hot((y + 1) % 3, 3).float()
        prepared.y_train = soft.pack(y, torch.ones(len(y)), wrong)
        prepared.y_valid = (prepared.y_valid + 1) % 3  # validation scores agreement with it
        result = run_trial(strategy, train, valid, prepared=prepared, patience=None,
                           keep="last", loss=soft.DistillLoss(2.0, alpha))
        agree[alpha] = result.metrics["accuracy"]
    assert agree[0.0] >= 0.6 and agree[1.0] <= 0.34, agree


def test_distill_trains_a_student_in_a_resumable_sub_study_of_the_parent_s_storage(
        parent, tmp_path):
    data, extra = _data(), toy_images(30, classes=3, size=16, seed=5).inputs
    test = toy_images(30, classes=3, size=16, seed=9)
    r = parent.distill(STUDENT, data, extra, test=test, n_trials=1, progress=False)
    assert _names(parent) == ["toy", "toy:distill:tiny_cnn"]
    sub = at.Study.load(tmp_path / "s.db", name="toy:distill:tiny_cnn")
    lb = sub.leaderboard()
    assert list(lb["state"]) == ["complete"] and lb.loc[0, "backbone"] == "tiny_cnn"
    assert {"temperature", "alpha", "lr", "accuracy"} <= set(lb.columns)
    assert lb.loc[0, "n_unlabeled"] == 30  # the unlabeled inputs joined the training rows
    assert lb.loc[0, "n_train"] == parent.meta["n_train"]  # the search's own split
    # Teacher and student side by side, measured on the same held-out examples.
    c = r.compare.set_index("model")
    assert list(c.index) == ["teacher", "student"]
    assert list(c["backbone"]) == ["tiny_resnet", "tiny_cnn"]
    assert c.loc["teacher", "params"] == r.teacher.params > c.loc["student", "params"] \
        == r.student.model.param_counts()[1]
    assert c.loc["teacher", "accuracy"] == pytest.approx(parent.best_trial.value)
    assert c.loc["student", "accuracy"] == pytest.approx(r.study.best_trial.value)
    assert c.loc["student", "test_accuracy"] == pytest.approx(r.student.evaluate(test)["accuracy"])
    assert (c["inputs_per_s"] > 0).all()
    assert r.teacher.trials == (parent.best_trial.number,)
    # The best student is a model file in the parent's folder.
    assert r.path == parent.workdir / "distill" / "tiny_cnn" / "student.safetensors"
    assert (at.load(r.path).predict(test) == r.student.predict(test)).all()
    # A rerun continues the sub-study: the finished trial is not trained again.
    first = [(t.number, t.datetime_complete) for t in r.study.trials()]
    more = parent.distill(STUDENT, data, extra, n_trials=2, progress=False)
    trials = [(t.number, t.datetime_complete) for t in more.study.trials()]
    assert len(trials) == 2 and trials[:1] == first
    # Another teacher (or other data) under the same name would mix two experiments.
    with pytest.raises(at.ConfigError, match=r"teacher=\[\d\], not \[\d, \d\]; .* pass name="):
        parent.distill(STUDENT, data, extra, top_k=2, n_trials=2, progress=False)


def test_the_top_k_teacher_averages_the_kept_models(parent):
    valid = toy_images(24, classes=3, size=16, seed=3)
    r = parent.distill(STUDENT, _data(), valid=valid, top_k=2, n_trials=1, progress=False,
                       name="pair")
    members = [at.load(p) for p in r.teacher.paths]
    assert sorted(r.teacher.trials) == [0, 1] and r.study.name == "pair"
    proba = np.mean([m.predict_proba(valid, as_pandas=False) for m in members], axis=0)
    accuracy = (np.asarray(members[0].classes)[proba.argmax(1)] == valid.labels).mean()
    teacher = r.compare.set_index("model").loc["teacher"]
    assert teacher["accuracy"] == pytest.approx(accuracy)
    assert teacher["params"] == sum(m.model.param_counts()[1] for m in members)
    assert teacher["backbone"] == "tiny_resnet+tiny_resnet"


def test_the_student_strategy_follows_the_teacher():
    teacher = at.Strategy("tiny_resnet", frozen_groups=3, epochs=7, batch_size=16,
                          image_size=24, augment="flip", mixup=0.2, lr=3e-3)
    same = dist._student("tiny_resnet", teacher, "image")
    assert same == teacher.replace(augment="none", mixup=0.0)
    other = dist._student("tiny_cnn", teacher, "image")
    assert (other.backbone, other.frozen_groups, other.epochs, other.batch_size,
            other.image_size) == ("tiny_cnn", 0, 7, 16, 24)


TEXTS = ["a b c", "d e f", "g h i"]


@pytest.mark.parametrize("student, kwargs, error, match", [
    ("tiny_bert", {}, at.ModalityError,
     r"Student 'tiny_bert' takes text inputs, but the teacher was trained on image; "
     r"image backbones: .*tiny_cnn"),
    ("tiny_cnx", {}, at.UnknownNameError, r"Unknown backbone 'tiny_cnx'; close matches: tiny_cnn"),
    ("tiny_cnn", {"unlabeled": TEXTS}, at.ModalityError, r"unlabeled holds text, but data holds image"),
    ("tiny_cnn", {"top_k": 3}, at.ConfigError, r"top_k=3, .* keeps 2 .* accepted: top_k in 1\.\.2"),
    ("tiny_cnn", {"n_trials": 0}, at.ConfigError, r"n_trials must be an integer >= 1"),
    (at.Strategy("tiny_cnn", augment="flip"), {}, at.StrategyError, r"augment='flip' does not apply"),
    (at.Strategy("tiny_cnn", frozen_groups=9), {}, at.StrategyError,
     r"frozen_groups=9, but backbone 'tiny_cnn' has 6 layer groups; accepted: 0\.\.6"),
    ("tiny_cnn", {"data": "texts"}, at.ModalityError, r"data holds text, but the models were trained on image"),
    ("tiny_cnn", {"data": "four classes"}, at.DataError, r"data: Label 3 is not among the training classes"),
    ("tiny_cnn", {"data": "train only"}, at.ConfigError, r"data has 48 examples, as many as study 'toy' "
     r"trained on: .* pass the same valid= here"),
])
def test_bad_input_is_refused_before_anything_is_stored(parent, student, kwargs, error, match):
    data = {"texts": at.data.from_pandas(pd.DataFrame({"t": TEXTS, "y": [0, 1, 2]}), text="t",
                                         label="y"),
            "four classes": toy_images(20, classes=4, size=16),
            "train only": toy_images(48, classes=3, size=16)}.get(kwargs.pop("data", ""), _data())
    with pytest.raises(error, match=match):
        parent.distill(student, data, progress=False, **kwargs)
    assert _names(parent) == ["toy"] and not (parent.workdir / "distill").exists()


def test_only_classification_studies_distil(tmp_path):
    data = at.data.from_arrays(toy_images(24, size=16).inputs, np.linspace(0, 1, 24))
    study = at.search(data, task="regression", backbones=["tiny_resnet"], n_trials=1,
                      storage=tmp_path / "r.db", name="reg", progress=False, baselines=False,
                      warm_start=False, space=at.SearchSpace(epochs=1, image_size=16,
                                                             frozen_groups=4))
    with pytest.raises(at.ConfigError, match=r"applies to task 'classification' .* 'reg' is a "
                                             r"'regression' study"):
        study.distill("tiny_cnn", data)
    assert _names(study) == ["reg"]


@pytest.mark.parametrize("backend", [
    pytest.param(lambda: at.OptunaBackend(devices=2), id="optuna-two-workers"),
    # 20 s: Ray's own trial path is covered by test_ray.py; this one runs with -m slow
    pytest.param(lambda: at.RayBackend(devices=2), id="ray",
                 marks=[pytest.mark.ray, pytest.mark.slow]),
])
def test_distillation_runs_its_trials_on_any_backend(parent, backend):
    """The sub-study's trials go through the backends' one lifecycle: worker processes
    (or Ray workers) train them and record them as a search's trials are recorded."""
    r = parent.distill(STUDENT, _data(), n_trials=3, backend=backend(), progress=False)
    lb = r.study.leaderboard()
    assert sorted(lb["trial"]) == [0, 1, 2] and (lb["state"] == "complete").all()
    assert {"temperature", "alpha", "lr", "n_unlabeled", "worker"} <= set(lb.columns)
    pids = {t.system_attrs[st.PID] for t in r.study.trials()}
    assert os.getpid() not in pids  # trained in other processes
    first = r.study.trials()[0]  # the enqueued first point, then sampled ones
    assert (first.params["temperature"], first.params["alpha"]) == (4.0, 0.5)
    kept = list((r.path.parent / "checkpoints").glob("trial_*"))
    assert len(kept) == 1 and kept[0].name == f"trial_{r.study.best_trial.number}.safetensors"
    assert r.compare.set_index("model").loc["student", "accuracy"] == pytest.approx(
        r.study.best_trial.value)
