"""Trials across device slots: parallel CPU worker processes, device requests, dead workers."""

import os
import signal
import subprocess
import sys
import textwrap

import optuna
import pytest

import autotransfer as at
from autotransfer.testing import toy_images
from autotransfer.training.devices import resolve

from helpers import wait_for_pause


def test_two_cpu_workers_share_one_study(tmp_path):
    study = at.search(toy_images(200, classes=3, size=16), backbones=["tiny_cnn"], n_trials=10,
                      storage=tmp_path / "p.db", name="par", backend=at.OptunaBackend(devices=2),
                      progress=False, final="best", space=at.SearchSpace(epochs=4, image_size=16))
    lb = study.leaderboard()
    assert sorted(lb["trial"]) == list(range(10))  # none duplicated, none lost
    assert set(lb["worker"]) == {0, 1}  # both workers ran trials
    assert set(lb["device"]) == {"cpu"}
    assert (lb["state"] != "failed").all()
    assert (lb["baseline"] != "").sum() == 3


@pytest.mark.parametrize("devices,tpd,gpus,want", [
    ("auto", 1, 0, ["cpu"]),
    ("auto", 1, 2, ["cuda:0", "cuda:1"]),
    (2, 1, 0, ["cpu", "cpu"]),
    (["cuda:0", "cuda:2"], 2, 3, ["cuda:0", "cuda:0", "cuda:2", "cuda:2"]),
    (1, 3, 1, ["cuda:0"] * 3),
])
def test_device_slots(devices, tpd, gpus, want):
    slots = resolve(devices, tpd, gpus=gpus, cpus=8)
    assert [s.device for s in slots] == want
    assert [s.gpu for s in slots] == [None if d == "cpu" else int(d[-1]) for d in want]


def test_cpu_workers_split_the_cores():
    assert [s.threads for s in resolve(2, gpus=0, cpus=8)] == [4, 4]
    assert [s.threads for s in resolve("cpu", gpus=0, cpus=8)] == [8]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_the_cores_are_those_the_process_may_use_not_the_machines():
    """A process pinned to one core (``taskset -c 0``) gets one thread per CPU worker and
    cannot start two; the machine's count (``os.cpu_count``) would say otherwise."""
    script = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
              "import autotransfer as at; from autotransfer.training.devices import resolve; "
              "print(resolve('cpu', gpus=0)[0].threads)\n"
              "try:\n    resolve(2, gpus=0)\nexcept at.DeviceError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == "1"
    assert "Asked for 2 CPU worker processes" in out[1] and "may use 1 core(s)" in out[1]


@pytest.mark.parametrize("devices,tpd,gpus,match", [
    (3, 1, 2, r"Asked for 3 GPUs, but this machine has 2 \(cuda:0, cuda:1\)"),
    (["cuda:1"], 1, 0, "Device 'cuda:1' does not exist here; this machine has no GPU"),
    ("auto", 0, 0, "trials_per_device must be an integer >= 1, but got trials_per_device=0"),
    (99, 1, 0, "Asked for 99 CPU worker processes .* may use 2 core"),
    ("tpu", 1, 0, "devices must be 'auto', 'cpu', a count, or a list"),
])
def test_bad_device_requests(devices, tpd, gpus, match):
    with pytest.raises(at.DeviceError, match=match):
        resolve(devices, tpd, gpus=gpus, cpus=2)


def test_search_refuses_gpus_this_machine_lacks(tmp_path):
    with pytest.raises(at.DeviceError, match="'cuda:0' does not exist here"):
        at.search(toy_images(30), backbones=["tiny_cnn"], n_trials=2, storage=tmp_path / "x.db",
                  backend=at.OptunaBackend(devices=["cuda:0"]), progress=False)


_SCRIPT = textwrap.dedent("""
    import sys
    import autotransfer as at
    from autotransfer.testing import PauseAt, toy_images
    for m in ["autotransfer_plugins.heads", "autotransfer_plugins.techniques",
              "autotransfer.testing"]:
        at.register_plugin(m)
    at.register_plugin(PauseAt(sys.argv[2], after=1 * 4 + 2), name="pause")  # reaches workers
    at.search(toy_images(200, classes=4, size=16), backbones=["tiny_cnn"], n_trials=8,
              task="paused", storage=sys.argv[1], name="w", pruner="none", patience=None,
              backend=at.OptunaBackend(devices=2), progress=False, final="best",
              space=at.SearchSpace(epochs=4, image_size=16, mixup=0.0))
""")


def test_a_dead_worker_loses_its_trial_only_and_the_study_finishes(tmp_path):
    script, marker = tmp_path / "run.py", tmp_path / "paused"
    script.write_text(_SCRIPT)
    storage = f"sqlite:///{tmp_path / 'w.db'}"
    parent = subprocess.Popen([sys.executable, str(script), storage, str(marker)])
    victim_pid = wait_for_pause(marker, parent)  # a worker: one trial done, one an epoch in
    (victim,) = [t for t in optuna.load_study(study_name="w", storage=storage).trials
                 if t.system_attrs.get("autotransfer:pid") == victim_pid
                 and t.state == optuna.trial.TrialState.RUNNING]
    os.kill(victim_pid, signal.SIGKILL)
    assert parent.wait(timeout=600) == 0  # the search itself carried on and finished

    lb = at.Study.load(tmp_path / "w.db").leaderboard()
    killed = lb[lb["trial"] == victim.number].iloc[0]
    assert killed["state"] == "interrupted" and "interrupted: its process" in killed["reason"]
    assert (lb["state"] == "complete").sum() == 8  # replaced: n_trials reached
    assert sorted(lb["trial"]) == list(range(9))
    assert not list((tmp_path / "w.db.d").rglob("job-*"))  # no job file, ever
