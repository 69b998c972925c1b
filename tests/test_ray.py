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

from helpers import wait_mid_trial

pytestmark = pytest.mark.ray
RAY = str(Path(sys.executable).parent / "ray")


def test_ray_backend_writes_the_same_study(tmp_path):
    from ray.tune import ExperimentAnalysis

    study = at.search(toy_images(200, classes=3, size=16), backbones=["tiny_cnn"], n_trials=8,
                      storage=tmp_path / "r.db", name="r", backend="ray", devices=2,
                      space=at.SearchSpace(epochs=4, image_size=16), progress=False)
    lb = at.Study.load(tmp_path / "r.db").leaderboard()
    assert sorted(lb["trial"]) == list(range(8))
    assert (lb["baseline"] != "").sum() == 3 and (lb[lb["baseline"] != ""]["state"] == "complete").all()
    assert lb["worker"].str.startswith("ray:").all()

    # what each Tune trial reported, epoch by epoch, is what the study holds
    (run,) = list((tmp_path / "r" / "ray").iterdir())
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


def test_unreachable_ray_address_says_how_to_start_one(tmp_path):
    with pytest.raises(at.DeviceError, match=r"Cannot reach a Ray cluster at address='127.0.0.1:1'.*ray start --head"):
        at.search(toy_images(30), backbones=["tiny_cnn"], n_trials=2, storage=tmp_path / "x.db",
                  backend="ray", address="127.0.0.1:1", progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_DRIVER = textwrap.dedent("""
    import sys
    import autotransfer as at
    from autotransfer.testing import toy_images
    for m in ["autotransfer_plugins.heads", "autotransfer.testing"]:
        at.register_plugin(m)
    at.search(toy_images(400, classes=4, size=32), backbones=["tiny_cnn"], n_trials=9,
              storage=sys.argv[1], name="cluster", backend="ray", address=sys.argv[2],
              devices=3, max_retries=3, pruner="none", patience=None, progress=False,
              space=at.SearchSpace(epochs=12, image_size=32, mixup=0.0))
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
