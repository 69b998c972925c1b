"""The Ray Tune backend on a real local Ray: one study, one leaderboard."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import autotransfer as at
from autotransfer.testing import toy_images

from helpers import Exploding, ObjectPlugin

pytestmark = pytest.mark.ray
RAY = str(Path(sys.executable).parent / "ray")


def wait_mid_trial(storage: str, name: str, proc, *, min_done: int, min_running: int,
                   timeout: float):
    """Poll the study until enough trials are done and mid-way (this slow cluster drill
    only: where Ray places a trial cannot be paused at a known point from outside)."""
    import optuna

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            trials = optuna.load_study(study_name=name, storage=storage).trials
        except Exception:  # not created yet
            time.sleep(0.2)
            continue
        done = [t for t in trials if t.state.is_finished()]
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING
                   and t.intermediate_values]
        if len(done) >= min_done and len(running) >= min_running:
            return
        time.sleep(0.05)
    raise AssertionError(f"the search never had {min_done} trials done and {min_running} "
                         f"mid-way")


def test_ray_backend_writes_the_same_study(tmp_path):
    from ray.tune import ExperimentAnalysis

    study = at.search(toy_images(200, classes=3, size=16), backbones=["tiny_cnn"], n_trials=8,
                      storage=tmp_path / "r.db", name="r", backend=at.RayBackend(devices=2),
                      space=at.SearchSpace(epochs=4, image_size=16), progress=False,
                      final="best")
    lb = at.Study.load(tmp_path / "r.db").leaderboard()
    assert sorted(lb["trial"]) == list(range(8))
    assert (lb["baseline"] != "").sum() == 3 and (lb[lb["baseline"] != ""]["state"] == "complete").all()
    assert lb["worker"].str.startswith("ray:").all()

    # what each Tune trial reported, epoch by epoch, is what the study holds
    (run,) = list((study.workdir / "ray").iterdir())
    analysis = ExperimentAnalysis(str(run))
    assert len(analysis.trials) == 8
    for trial in analysis.trials:
        reported = analysis.trial_dataframes[trial.trial_id]["value"].tolist()
        row = lb[lb["trial"] == trial.config["trial_number"]].iloc[0]
        stored = study.optuna.trials[int(row["trial"])]
        assert list(stored.intermediate_values.values()) == pytest.approx(reported)
        assert row["accuracy"] == pytest.approx(max(reported))
        assert row["epochs_run"] == len(reported)
        if row["state"] == "complete":
            assert row["epochs_run"] == 4 or row["baseline"] == ""
    best = study.load_best()
    assert best.predict(toy_images(6, classes=3, size=16).inputs).shape == (6,)


@pytest.mark.parametrize("backend", ["optuna", "ray"])
def test_both_backends_judge_trials_with_the_study_pruner(tmp_path, backend):
    """A pruner instance means the same on both backends: here, prune at the first epoch
    (accuracy < 2 always); baselines are references and always finish."""
    import optuna

    at.register_plugin(ObjectPlugin(), name="object")
    study = at.search(toy_images(60, classes=2, size=16), backbones=["obj_cnn"], n_trials=5,
                      storage=tmp_path / "p.db", backend=backend, warm_start=False,
                      pruner=optuna.pruners.ThresholdPruner(lower=2.0),
                      space=at.SearchSpace(epochs=3, image_size=16), progress=False,
                      final="best")
    lb = study.leaderboard()
    searched, refs = lb[lb["baseline"] == ""], lb[lb["baseline"] != ""]
    assert len(searched) == 3 and (searched["state"] == "pruned").all()
    assert (searched["epochs_run"] == 1).all()
    assert len(refs) == 2 and (refs["state"] == "complete").all()  # half of n_trials


def test_ray_fails_a_raising_trial_with_its_reason_and_does_not_retry_it(tmp_path):
    at.register_plugin(Exploding(), name="exploding")
    with pytest.raises(at.SearchFailed, match="All 2 trial.*boom in a plugin"):
        at.search(toy_images(60, classes=2, size=16), backbones=["boom"], n_trials=2,
                  storage=tmp_path / "b.db", backend=at.RayBackend(max_retries=3),
                  space=at.SearchSpace(epochs=2, image_size=16), progress=False)
    lb = at.Study.load(tmp_path / "b.db").leaderboard()
    assert len(lb) == 2  # each failed once, for its own reason: nothing retried
    assert (lb["state"] == "failed").all()
    assert (lb["reason"] == "RuntimeError: boom in a plugin").all()


class _Cluster:
    """What the resource sizing reads from Ray: the cluster's totals."""

    def __init__(self, **total):
        self.total = total

    def cluster_resources(self):
        return self.total


@pytest.mark.parametrize("kw,total,want", [
    (dict(devices="cpu"), dict(CPU=16, GPU=4), (1, {"cpu": 16, "gpu": 0})),
    (dict(devices="auto"), dict(CPU=16, GPU=4), (4, {"cpu": 1, "gpu": 1})),
    (dict(devices=2, trials_per_device=2), dict(CPU=16, GPU=4), (4, {"cpu": 1, "gpu": 0.5})),
    (dict(devices="auto"), dict(CPU=8), (1, {"cpu": 8, "gpu": 0})),
    (dict(devices="auto", address="h:1"), dict(CPU=8), (8, {"cpu": 1, "gpu": 0})),
    (dict(resources={"cpu": 4, "gpu": 0.5}), dict(CPU=16, GPU=4), (None, {"cpu": 4, "gpu": 0.5})),
])
def test_ray_trial_resources(kw, total, want):
    from autotransfer.backends._ray_parts import resources

    assert resources(_Cluster(**total), at.RayBackend(**kw)) == want


@pytest.mark.parametrize("kw,total,match", [
    (dict(devices=5), dict(CPU=16, GPU=4), "Asked for 5 GPUs, but the Ray cluster has 4"),
    (dict(devices=["cuda:0"]), dict(CPU=16), "devices must be 'auto', 'cpu' or a count"),
    (dict(devices=9), dict(CPU=8), "9 concurrent CPU trials, but the Ray cluster has 8 CPUs"),
    (dict(resources={"gpu": -1}), dict(CPU=8), "resources must be a dict"),
])
def test_ray_refuses_what_the_cluster_cannot_do(kw, total, match):
    from autotransfer.backends._ray_parts import resources

    with pytest.raises(at.DeviceError, match=match):
        resources(_Cluster(**total), at.RayBackend(**kw))


def test_unreachable_ray_address_says_how_to_start_one(tmp_path):
    with pytest.raises(at.DeviceError, match=r"Cannot reach a Ray cluster at address='127.0.0.1:1'.*ray start --head"):
        at.search(toy_images(30), backbones=["tiny_cnn"], n_trials=2, storage=tmp_path / "x.db",
                  backend=at.RayBackend(address="127.0.0.1:1"), progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_DRIVER = textwrap.dedent("""
    import sys
    import autotransfer as at
    from autotransfer.testing import toy_images
    for m in ["autotransfer_plugins.heads", "autotransfer_plugins.techniques",
              "autotransfer.testing"]:
        at.register_plugin(m)
    at.search(toy_images(400, classes=4, size=32), backbones=["tiny_cnn"], n_trials=9,
              storage=sys.argv[1], name="cluster", backend=at.RayBackend(address=sys.argv[2], devices=3,
                                                         max_retries=3), pruner="none", patience=None, progress=False,
              final="best", space=at.SearchSpace(epochs=12, image_size=32, mixup=0.0))
""")


@pytest.mark.slow
def test_two_node_cluster_survives_losing_its_worker_node(tmp_path):
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=1",
                    "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True)
    node = subprocess.Popen([RAY, "start", f"--address={address}", "--num-cpus=2", "--block",
                             "--disable-usage-stats"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(8)  # the worker node joins
        script = tmp_path / "driver.py"
        script.write_text(_DRIVER)
        storage = f"sqlite:///{tmp_path / 'c.db'}"
        driver = subprocess.Popen([sys.executable, str(script), storage, address], env=env)
        # the head has one CPU, so with two trials mid-way one runs on the worker node
        wait_mid_trial(storage, "cluster", driver, min_done=1, min_running=2, timeout=300)
        os.killpg(node.pid, signal.SIGKILL)
        assert driver.wait(timeout=600) == 0
        lb = at.Study.load(tmp_path / "c.db").leaderboard()
        assert sorted(lb["trial"]) == list(range(9))
        assert (lb["state"] == "complete").sum() == 9  # the lost trials were retried
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGKILL)
