"""Experiment trackers: search(callbacks=[...]) calls Optuna callbacks once per trial as it
ends, in the caller's process, with each trial's per-epoch metrics; a broken tracker never
touches the search. A real MLflow (local file store) through optuna-integration's
MLflowCallback, as docs/tracking.md shows it."""

import pytest

import autotransfer as at
from autotransfer.study.trackers import epoch_metrics
from autotransfer.testing import toy_images

SPACE = at.SearchSpace(epochs=2, image_size=16)


def _search(tmp_path, **kw):
    args = dict(backbones=["tiny_cnn"], n_trials=4, space=SPACE, storage=tmp_path / "s.db",
                name="tracked", progress=False, final="best")  # no ensemble row
    return at.search(toy_images(60, classes=3, size=16), **{**args, **kw})


def test_every_trial_reaches_the_callbacks_once_with_its_epochs(tmp_path):
    seen = []

    def record(study, trial):
        seen.append((study.study_name, trial.number, trial.state.name, epoch_metrics(trial)))

    study = _search(tmp_path, callbacks=[record])
    assert sorted(n for _, n, _, _ in seen) == [0, 1, 2, 3]  # each once
    assert {name for name, *_ in seen} == {"tracked"}
    lb = study.leaderboard().set_index("trial")
    for _, number, state, epochs in seen:
        assert state.lower() == lb.loc[number, "state"]
        if state == "COMPLETE":  # every metric of every epoch, as the study recorded them
            history = study.optuna.trials[number].user_attrs["history.accuracy"]
            assert [e for e, _ in epochs] == list(range(1, len(history) + 1))
            assert [m["accuracy"] for _, m in epochs] == history
            assert {"macro_f1", "train_loss", "val_loss"} <= set(epochs[-1][1])
    # a rerun tells only its own trials
    seen.clear()
    _search(tmp_path, n_trials=5, callbacks=[record])
    assert [n for _, n, _, _ in seen] == [4]


def test_a_broken_callback_is_dropped_with_a_warning_and_the_others_go_on(tmp_path, capsys):
    told = []

    def broken(study, trial):
        raise RuntimeError("tracker down")

    study = _search(tmp_path, callbacks=[broken, lambda s, t: told.append(t.number)])
    assert (study.leaderboard()["state"] == "complete").sum() == 4
    assert sorted(told) == [0, 1, 2, 3]
    err = capsys.readouterr().err
    assert err.count("tracker down") == 1 and "is not called again in this search" in err


@pytest.mark.parametrize("callbacks", [print, [1], "mlflow"])
def test_callbacks_that_cannot_be_called_are_refused_before_any_storage(tmp_path, callbacks):
    with pytest.raises(at.ConfigError, match="callback"):
        _search(tmp_path, callbacks=callbacks)
    assert not (tmp_path / "s.db").exists()


def test_mlflow_records_each_trial_with_its_params_and_training_curve(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from optuna_integration.mlflow import MLflowCallback

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a local store (MLflow 3 retired ./mlruns)

    def curves(study, trial):  # the per-epoch metrics, as steps of the same run
        run = mlflow.search_runs(experiment_names=[study.study_name], output_format="list",
                                 filter_string=f"tags.number = '{trial.number}'")[0]
        with mlflow.start_run(run_id=run.info.run_id):
            for epoch, metrics in epoch_metrics(trial):
                mlflow.log_metrics({f"epoch/{k}": v for k, v in metrics.items()}, step=epoch)

    mlflow.set_tracking_uri(uri)
    _search(tmp_path, callbacks=[MLflowCallback(tracking_uri=uri, metric_name="accuracy"),
                                 curves])
    runs = mlflow.search_runs(experiment_names=["tracked"], output_format="list")
    assert len(runs) == 4
    client = mlflow.MlflowClient(uri)
    study = at.Study.load(tmp_path / "s.db")
    for run in runs:  # MLflowCallback: params and the trial's value; curves: each epoch
        trial = study.optuna.trials[int(run.data.tags["number"])]
        assert run.data.params["backbone"] == "tiny_cnn"
        steps = {m.step: m.value
                 for m in client.get_metric_history(run.info.run_id, "epoch/val_loss")}
        assert steps == {e: m["val_loss"] for e, m in epoch_metrics(trial)}
        # MLflowCallback logs the trial's value (its kept epoch's), which stays the latest
        assert run.data.metrics["accuracy"] == pytest.approx(trial.value)
