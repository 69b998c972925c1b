"""Model files and exports: never half-written, never over another file, and a crafted
model file is refused from its header, before it costs memory or time."""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import autotransfer as at
from autotransfer import plugins
from autotransfer.cli import main
from autotransfer.predict.export._export import export
from autotransfer.predict.modelfile import FORMAT
from autotransfer.training.model import build_model

from helpers import wait_for_pause

CLASSES = ["cat", "dog", "owl"]
ROOT = Path(__file__).resolve().parents[1]


def _predictor(backbone="tiny_cnn", **strategy):
    torch.manual_seed(0)
    s = at.Strategy(backbone, pretrained=False, image_size=16, **strategy)
    model = build_model(s, "classification", {"classes": CLASSES})
    pre = plugins.get_backbone(backbone).preprocessing(image_size=16)
    return at.Predictor(model, s, "classification", {"classes": CLASSES}, pre)


@pytest.fixture
def model():
    return _predictor()


def digest(path: Path) -> str | None:
    """SHA-256 of a file, or of a folder's names and files; None when absent."""
    path = Path(path)
    if not path.exists():
        return None
    h = hashlib.sha256()
    for p in sorted([path] if path.is_file() else path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path.parent)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _poison(predictor):
    with torch.no_grad():
        predictor.model.head[-1].weight[0, 0] = float("nan")


EXPORTS = {"onnx": ("m.onnx", ["m.onnx", "m.onnx.json"]),
           "torchscript": ("m.pt", ["m.pt", "m.pt.json"]),
           "timm": ("m-timm", ["m-timm"])}


# --- atomic exports ---

@pytest.mark.parametrize("format", list(EXPORTS))
def test_a_failed_export_leaves_the_previous_one_byte_identical(format, model, tmp_path):
    if format == "onnx":
        pytest.importorskip("onnxruntime")
    name, files = EXPORTS[format]
    export(model, tmp_path / name, format=format)
    before = {f: digest(tmp_path / f) for f in files}
    _poison(model)  # NaN weights: the export's check fails
    with pytest.raises(at.ExportError, match="not faithful"):
        export(model, tmp_path / name, format=format)
    assert {f: digest(tmp_path / f) for f in files} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)  # no temporary left


def _sqlite_storage(path: Path) -> Path:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=f"sqlite:///{path}", study_name="s")
    return path


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_an_export_over_a_study_or_a_foreign_file_is_refused(format, model, tmp_path):
    db = _sqlite_storage(tmp_path / "study.db")
    foreign = tmp_path / "notes.onnx"
    foreign.write_text("my own notes")
    export(model, tmp_path / "good.onnx", format=format)
    (tmp_path / "other.onnx").write_bytes(b"")  # a graph of ours needs our description
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    with pytest.raises(at.StorageError, match="study.db.*SQLite database.*choose another"):
        model.export(db, format=format)
    with pytest.raises(at.StorageError, match="notes.onnx.*did not write it"):
        export(model, foreign, format=format)
    with pytest.raises(at.StorageError, match="other.onnx.*did not write it"):
        export(model, tmp_path / "other.onnx", format=format)
    (tmp_path / "x.onnx.json").write_text('{"mine": 1}')  # a description that is not ours
    with pytest.raises(at.StorageError, match="x.onnx.json.*did not write it"):
        export(model, tmp_path / "x.onnx", format=format)
    before["x.onnx.json"] = digest(tmp_path / "x.onnx.json")
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == before
    export(model, tmp_path / "good.onnx", format=format)  # an export of ours is replaced


def test_a_folder_export_replaces_only_an_earlier_export_or_an_empty_folder(model, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"\xff\xd8 precious")
    before = digest(tmp_path / "photos")
    with pytest.raises(at.StorageError, match="photos.*did not write it"):
        export(model, tmp_path / "photos", format="timm")
    assert digest(tmp_path / "photos") == before
    (tmp_path / "empty").mkdir()
    export(model, tmp_path / "empty", format="timm")
    export(model, tmp_path / "empty", format="timm")  # ours now: replaced
    config = json.loads((tmp_path / "empty" / "config.json").read_text())
    assert config["autotransfer"]["task"] == "classification"


def test_save_refuses_a_study_storage_and_foreign_files_and_replaces_its_own(model, tmp_path):
    db = _sqlite_storage(tmp_path / "study.db")
    notes = tmp_path / "notes.safetensors"
    save_file({"w": torch.zeros(2)}, str(notes))  # safetensors, but not a model file
    before = {p: digest(p) for p in (db, notes)}
    with pytest.raises(at.StorageError, match="study.db.*SQLite"):
        model.save(db)
    with pytest.raises(at.StorageError, match="notes.safetensors.*did not write it"):
        model.save(notes)
    assert {p: digest(p) for p in (db, notes)} == before
    path = model.save(tmp_path / "m.safetensors")
    model.save(path)  # its own file: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "notes.safetensors",
                                                          "study.db"]
    assert at.load(path).classes == CLASSES


_CHILD = """
import os, sys, threading
os.environ["AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD"] = "1"
import torch
import autotransfer as at
for name in ("autotransfer_plugins.heads", "autotransfer_plugins.techniques",
             "autotransfer_plugins.timm_backbones",
             "autotransfer.testing"):
    at.register_plugin(name)
model, target, marker = sys.argv[1:]
real = torch.onnx.export

def export_then_hang(*args, **kwargs):  # the graph is written; the kill comes before rename
    real(*args, **kwargs)
    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    threading.Event().wait()

torch.onnx.export = export_then_hang
at.load(model).export(target, format="onnx")
"""


def test_a_killed_export_keeps_the_previous_one_and_the_next_sweeps_its_leftovers(model,
                                                                                  tmp_path):
    pytest.importorskip("onnxruntime")
    target = tmp_path / "out" / "m.onnx"
    target.parent.mkdir()
    export(model, target, format="onnx")
    files = [target, target.with_name("m.onnx.json")]
    before = [digest(f) for f in files]
    saved = model.save(tmp_path / "m.safetensors")
    marker = tmp_path / "exporting"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(saved), str(target), str(marker)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        pid = wait_for_pause(marker, proc)
        os.kill(pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [digest(f) for f in files] == before
    left = [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")]
    assert left and all(n.startswith(f".m.onnx.{pid}.") for n in left), left
    export(model, target, format="onnx")
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.onnx", "m.onnx.json"]


def test_onnx_external_weights_are_renamed_with_their_graph(tmp_path):
    """Over 2 GB the exporter writes ``<graph>.data``; the graph names that file, and a
    temporary graph is pointed at its final weights file before the rename."""
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from autotransfer.predict.export.graph import _relocate

    linear = torch.nn.Linear(4, 2)
    torch.onnx.export(linear, (torch.ones(1, 4),), str(tmp_path / "g.onnx"), dynamo=False,
                      input_names=["x"])
    proto = onnx.load(str(tmp_path / "g.onnx"))
    onnx.save_model(proto, str(tmp_path / "t.onnx"), save_as_external_data=True,
                    location="t.onnx.data", size_threshold=0)
    (tmp_path / "t.onnx.data").rename(tmp_path / "final.onnx.data")
    _relocate(tmp_path / "t.onnx", "final.onnx.data")
    out = ort.InferenceSession(str(tmp_path / "t.onnx")).run(None, {"x": [[1.0] * 4]})[0]
    torch.testing.assert_close(torch.from_numpy(out), linear(torch.ones(1, 4)).detach())


def test_an_export_format_that_is_not_a_string_is_named(model, tmp_path):
    with pytest.raises(at.ConfigError, match="format=None.*onnx, torchscript"):
        model.export(tmp_path / "m.onnx", format=None)
    assert not list(tmp_path.iterdir())


# --- crafted model files ---

def craft(good: Path, path: Path, change=None, *, config=None, tensors=None) -> Path:
    """A copy of ``good`` with its config changed by ``change(config)`` (or replaced by the
    raw text ``config``) and its tensors by ``tensors(state)``."""
    with safe_open(str(good), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    if config is None:
        cfg = json.loads(meta["config"])
        if change:
            change(cfg)
        config = json.dumps(cfg)
    save_file(tensors(state) if tensors else state, str(path),
              metadata={"format": FORMAT, "config": config})
    return path


def _set(where, key, value):
    def change(cfg):
        node = cfg
        for k in where:
            node = node[k]
        if value is KeyError:
            del node[key]
        else:
            node[key] = value
    return change


def _reshape_head(state):
    return {**state, "head.1.weight": torch.zeros(5, state["head.1.weight"].shape[1])}


CRAFTED = {  # case: (craft kwargs, what the message must say)
    "config is a list": (dict(config="[1, 2]"), r"JSON object.*it is a JSON list"),
    "config is empty": (dict(config="{}"), r"lacks key\(s\) \['strategy', 'task', 'info'"),
    "config 100k deep": (dict(config="[" * 100_000 + "]" * 100_000), "nested too deeply"),
    "config not JSON": (dict(config="{strategy: 1"), "damaged model config.*must be JSON"),
    "unknown preprocessing key": (dict(change=_set(["preprocessing"], "sharpen", 2)),
                                  r"unknown preprocessing key\(s\) \['sharpen'\].*accepted"),
    "missing key": (dict(change=_set([], "task", KeyError)), r"lacks key\(s\) \['task'\]"),
    "missing preprocessing key": (dict(change=_set(["preprocessing"], "size", KeyError)),
                                  r"preprocessing lacks key\(s\) \['size'\]"),
    "unknown strategy field": (dict(change=_set(["strategy"], "speed", "fast")), "'speed'"),
    "lr a string": (dict(change=_set(["strategy"], "lr", "fast")), "lr='fast'"),
    "backbone not a string": (dict(change=_set(["strategy"], "backbone", [1])),
                              "'backbone' must be a backbone name"),
    "huge image size": (dict(change=_set(["preprocessing"], "size", 10**9)),
                        "'size' must be an integer from 8 to"),
    "crop_pct resize bomb": (dict(change=_set(["preprocessing"], "crop_pct", 1e-9)),
                             "'crop_pct' must be"),
    "std zero": (dict(change=_set(["preprocessing"], "std", [0, 0, 0])), "'std' must be"),
    "classes not a list": (dict(change=_set(["info"], "classes", 3)), "'classes' must be"),
    "classes repeated": (dict(change=_set(["info"], "classes", ["a", "a", "b"])),
                         "must be distinct"),
    "classes do not fit the head": (dict(change=_set(["info"], "classes", ["a", "b"])),
                                    r"'head.1.weight' has shape \(3, 256\).*needs \(2, 256\)"),
    "tensor of another shape": (dict(tensors=_reshape_head),
                                r"'head.1.weight' has shape \(5, 256\).*needs \(3, 256\)"),
    "tensor missing": (dict(tensors=lambda s: {k: v for k, v in s.items() if k != "head.1.bias"}),
                       r"'head.1.bias' \(3,\) is missing"),
    "tensor extra": (dict(tensors=lambda s: {**s, "body.trojan": torch.zeros(1)}),
                     "'body.trojan' is not part of it"),
    "integer weights": (dict(tensors=lambda s: {**s, "head.1.weight": s["head.1.weight"].to(
        torch.int32)}), r"'head.1.weight' has shape \(3, 256\) \(integer\).*\(float\)"),
    "frozen_groups beyond the backbone": (dict(change=_set(["strategy"], "frozen_groups", 99)),
                                          "frozen_groups=99 is out of range"),
    "task of another type": (dict(change=_set([], "task", 7)), "'task' must be"),
    "regression scales missing": (dict(change=_set([], "task", "regression")),
                                  "info does not fit task 'regression'"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_model_file_is_refused_naming_what_is_wrong(case, model, tmp_path):
    kwargs, message = CRAFTED[case]
    good = model.save(tmp_path / "good.safetensors")
    path = craft(good, tmp_path / "crafted.safetensors", **kwargs)
    with pytest.raises(at.StorageError, match=message) as err:
        at.load(path)
    assert "crafted.safetensors" in str(err.value) and "Give a file" in str(err.value)


def test_the_cli_prints_an_error_for_a_crafted_file_not_a_traceback(model, tmp_path, capsys):
    good = model.save(tmp_path / "good.safetensors")
    path = craft(good, tmp_path / "crafted.safetensors", config="[" * 100_000)
    assert main(["predict", str(path), "x.png"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo"])
def test_a_device_or_fifo_as_a_model_file_is_refused_at_once(kind, tmp_path):
    path = tmp_path / "m.safetensors"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    with pytest.raises(at.StorageError, match="is a (device|FIFO).*not a regular file"):
        at.load(path)
    with pytest.raises(at.StorageError):  # nor written over
        _predictor().save(path)


_BIG = """
import os, resource, sys, time
os.environ["AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
import autotransfer as at
for name in ("autotransfer_plugins.heads", "autotransfer_plugins.techniques",
             "autotransfer_plugins.timm_backbones",
             "autotransfer.testing"):
    at.register_plugin(name)
import timm  # imported before the baseline, as any load imports it
before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
try:
    at.load(sys.argv[1])
    print("LOADED")
except at.StorageError as exc:
    print("REFUSED", exc)
print("SECONDS", time.perf_counter() - start)
print("PEAK_MB", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_a_small_file_naming_a_large_architecture_is_refused_before_building_it(model,
                                                                                tmp_path):
    """vit_large has 303M parameters (1.2 GB): a 60 kB file naming it must not build it."""
    good = model.save(tmp_path / "good.safetensors")
    path = craft(good, tmp_path / "vit.safetensors",
                 _set(["strategy"], "backbone", "timm/vit_large_patch16_224"))
    out = subprocess.run([sys.executable, "-c", _BIG, str(path)], cwd=ROOT, text=True,
                         capture_output=True, check=True).stdout
    assert "REFUSED" in out and "'timm/vit_large_patch16_224'" in out, out
    assert "'body.cls_token' (1, 1, 1024) is missing" in out
    extra_mb = float(out.split("PEAK_MB")[1])
    assert extra_mb < 200, out  # building it takes > 1,200 MB
    print(out.splitlines()[-2:])
