"""Nothing lost, nothing shared: study folders, many processes on one study, bad data
refused before the study exists, a failed search that does not block the corrected rerun,
plugin objects in worker processes, and the baseline policy."""

import subprocess
import sys
import textwrap

import numpy as np
import optuna
import pytest
import torch

import autotransfer as at
from autotransfer import storage as st
from autotransfer.backends._enqueue import enqueue_due_baselines
from autotransfer.backends._job import SearchJob, TrialContext
from autotransfer.testing import toy_images

from helpers import ObjectPlugin

SPACE = at.SearchSpace(epochs=2, image_size=16)


def _search(data, **kw):
    args = dict(backbones=["tiny_cnn"], n_trials=4, space=SPACE, progress=False,
                final="best")  # the trials' lifecycle; test_ensemble.py: the final model
    return at.search(data, **{**args, **kw})


def test_two_studies_in_one_folder_keep_their_own_best_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = _search(toy_images(60, classes=3, size=16), storage="pets_a.db")
    b = _search(toy_images(60, classes=2, size=16, seed=1), storage="pets_b.db")
    assert a.workdir != b.workdir and list((a.workdir / "checkpoints").glob("*.safetensors"))
    assert a.load_best().classes == [0, 1, 2] and b.load_best().classes == [0, 1]
    assert not (tmp_path / "autotransfer").exists()  # nothing shadows the package
    # a checkpoint file of another study is refused, never silently used
    best = a.optuna.trials[int(a.leaderboard()["trial"][0])].system_attrs[st.CHECKPOINT]
    other = next((b.workdir / "checkpoints").glob("*.safetensors"))
    other.replace(best)
    with pytest.raises(at.StorageError, match="holds a model of another study"):
        a.load_best()


def test_a_name_cannot_escape_the_storage_folder(tmp_path):
    study = _search(toy_images(40, classes=2, size=16), storage=tmp_path / "in" / "s.db",
                    name="../../x", n_trials=1)
    assert study.workdir.is_relative_to(tmp_path / "in" / "s.db.d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    assert study.name == "../../x"


_MANY = textwrap.dedent("""
    import sys
    import autotransfer as at
    from autotransfer.testing import toy_images
    for m in ["autotransfer_plugins.heads", "autotransfer_plugins.techniques",
              "autotransfer.testing"]:
        at.register_plugin(m)
    at.search(toy_images(48, classes=2, size=16), backbones=["tiny_cnn"], n_trials=24,
              storage=sys.argv[1], name="many", space=at.SearchSpace(epochs=2, image_size=16),
              progress=False)
""")


def test_four_processes_start_one_new_sqlite_study_and_run_each_trial_once(tmp_path):
    script, storage = tmp_path / "many.py", tmp_path / "many.db"
    script.write_text(_MANY)
    procs = [subprocess.Popen([sys.executable, str(script), str(storage)],
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors

    trials = optuna.load_study(study_name="many", storage=f"sqlite:///{storage}").trials
    assert len(trials) == 24 and all(t.state.is_finished() for t in trials)  # none lost
    enqueued = [t.system_attrs["fixed_params"] for t in trials
                if "fixed_params" in t.system_attrs]
    kinds = sorted(t.user_attrs["baseline"] for t in trials if t.user_attrs.get("baseline"))
    assert kinds == ["default_finetune", "linear_probe", "scratch"]  # each baseline once
    assert len(enqueued) == 3 + 3  # the baselines and the warm-start portfolio
    assert len({repr(sorted(p.items())) for p in enqueued}) == len(enqueued)  # none twice


@pytest.mark.parametrize("labels,task,match", [
    (np.r_[np.zeros(20), np.nan, np.ones(19)], "classification", "class ids or names, but got nan"),
    (np.zeros(40, dtype=int), "classification", "at least two classes, but every label is 0"),
    (["a", "b"] * 20, "regression", "Regression labels must be numbers"),
    ([None] * 40, "classification", "Label 0 is None"),
    ([0, "cat"] * 20, "classification", "Labels mix kinds"),
])
def test_bad_labels_are_refused_before_the_study_exists(tmp_path, labels, task, match):
    x = toy_images(40, classes=2, size=16).inputs
    with pytest.raises(at.DataError, match=match):
        _search(at.data.from_arrays(x, labels), task=task, storage=tmp_path / "s.db")
    assert list(tmp_path.iterdir()) == []  # no storage, no folder


def test_too_few_examples_are_refused_before_the_study_exists(tmp_path):
    with pytest.raises(at.DataError, match="at least 4 examples, but got 2"):
        _search(toy_images(3, classes=2, size=16), storage=tmp_path / "s.db")
    assert list(tmp_path.iterdir()) == []


class _Records(torch.utils.data.Dataset):
    """A torch dataset with one unreadable record (item 7), until it is fixed."""

    def __init__(self, broken: bool) -> None:
        self.x, self.targets = toy_images(40, classes=2, size=16).inputs, [i % 2 for i in range(40)]
        self.broken = broken

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i):
        if self.broken and i == 7:
            raise OSError("record 7 is truncated")
        return self.x[i], self.targets[i]


def test_a_failed_search_does_not_block_the_corrected_rerun(tmp_path):
    kw = dict(storage=tmp_path / "s.db", name="fix", n_trials=10, valid_fraction=0.25)
    with pytest.raises(at.SearchFailed, match="All 3 trial.*record 7 is truncated.*rerun"):
        _search(at.data.from_torch(_Records(broken=True)), **kw)  # stops after 3, not 10
    study = _search(at.data.from_torch(_Records(broken=False)), **kw)
    lb = study.leaderboard()
    assert (lb["state"] == "complete").sum() == 10  # the rerun ran its whole budget
    assert (lb["state"] == "failed").sum() == 3  # the failures stay on the record


def test_an_object_plugin_reaches_every_worker_process(tmp_path):
    at.register_plugin(ObjectPlugin(), name="object")
    study = _search(toy_images(60, classes=2, size=16), backbones=["obj_cnn"], n_trials=4,
                    storage=tmp_path / "s.db", backend=at.OptunaBackend(devices=2))
    lb = study.leaderboard()
    assert (lb["state"] == "complete").all() and len(lb) == 4
    assert set(lb["worker"]) == {0, 1}


def _context(tmp_path, n_trials):
    data = toy_images(40, classes=2, size=16)
    job = SearchJob(storage=st.resolve(tmp_path / "s.db", "d"), study_name="d",
                    task="classification", modality="image", backbones=["tiny_cnn"],
                    space=SPACE, n_trials=n_trials, timeout=None, seed=0,
                    workdir=str(tmp_path), direction="maximize", run="r")
    return TrialContext(job, *data.split(0.25))


def _waiting(study):
    return sorted(t.user_attrs.get("baseline", "") for t in study.trials
                  if t.state == optuna.trial.TrialState.WAITING)


def test_full_training_baselines_wait_for_searched_trials(tmp_path):
    ctx, study = _context(tmp_path, n_trials=20), optuna.create_study(direction="maximize")
    enqueue_due_baselines(study, ctx)
    assert _waiting(study) == ["linear_probe"]  # the cheap reference at once
    study.tell(study.ask(), 0.5)  # the probe ran
    for value in (0.6, 0.7):
        study.tell(study.ask({"backbone": optuna.distributions.CategoricalDistribution(
            ["tiny_cnn"])}), value)
    enqueue_due_baselines(study, ctx)
    assert _waiting(study) == []  # 2 searched trials: not yet
    study.tell(study.ask(), 0.8)
    enqueue_due_baselines(study, ctx)
    enqueue_due_baselines(study, ctx)  # idempotent
    assert _waiting(study) == ["default_finetune", "scratch"]


def test_baselines_run_at_once_when_the_budget_only_fits_them(tmp_path):
    # 4 trials plan 2 references (half: the probe, the default fine-tune); after 2 searched
    # trials (fewer than DEFER_AFTER) the 2 left only fit them: both are due at once
    ctx, study = _context(tmp_path, n_trials=4), optuna.create_study(direction="maximize")
    for value in (0.6, 0.7):
        study.tell(study.ask({"backbone": optuna.distributions.CategoricalDistribution(
            ["tiny_cnn"])}), value)
    enqueue_due_baselines(study, ctx)
    assert _waiting(study) == ["default_finetune", "linear_probe"]
