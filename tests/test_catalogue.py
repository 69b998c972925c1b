"""Backbones by name (``timm/<model>``, ``hf/<repo>``) and as objects, in search and lists.

No network: hub weights are unavailable here (``HF_HUB_OFFLINE=1``), so searches use
random-init catalogue models and objects with local weight files.
"""

import json

import cloudpickle
import pytest
import torch
from safetensors.torch import save_file

import autotransfer as at
from autotransfer import plugins
from autotransfer.cli import main
from autotransfer.testing import toy_images

SPACE = at.SearchSpace(epochs=2, image_size=16)


def test_a_timm_name_is_a_timm_backbone_with_layer_groups():
    b = at.get_backbone("timm/resnet10t")
    assert isinstance(b, at.TimmBackbone)
    assert (b.name, b.timm_name, b.weights, b.modality) == (
        "timm/resnet10t", "resnet10t", "hub", "image")
    assert at.get_backbone("timm/resnet10t") is b  # made once, kept by the host
    body = at.create_backbone("timm/resnet10t", pretrained=False)
    assert body(torch.randn(2, 3, 32, 32)).shape == (2, body.num_features)
    groups = b.layer_groups(body)
    assert len(groups) >= 4
    assert sorted(n for g in groups for n in g) == sorted(n for n, _ in body.named_parameters())
    tagged = at.get_backbone("timm/convnext_atto.d2_in1k")
    assert (tagged.timm_name, tagged.weights) == ("convnext_atto.d2_in1k", "hub")
    # an architecture timm has no weights for is random init, and says so
    assert at.get_backbone("timm/test_vit4").weights is None


def test_hub_weights_offline_fail_naming_the_offline_options(tmp_path):
    assert not at.get_backbone("timm/resnet10t").available()
    with pytest.raises(at.WeightsUnavailableError, match="Offline options: .*weights="):
        at.create_backbone("timm/resnet10t")
    toy = toy_images(24, size=16)
    with pytest.raises(at.WeightsUnavailableError, match="'timm/resnet10t' has no pretrained"):
        at.search(toy, backbones=["timm/resnet10t"], n_trials=1, storage=tmp_path / "s.db",
                  progress=False)
    with pytest.raises(at.WeightsUnavailableError,
                       match=r"No model matching 'timm/resnet1\*' has pretrained weights here"):
        at.search(toy, backbones="timm/resnet1*", n_trials=1, storage=tmp_path / "s.db",
                  progress=False)
    assert not (tmp_path / "s.db").exists()  # refused before any storage


@pytest.mark.parametrize("name,match", [
    ("timm/resnet10", r"Unknown backbone 'timm/resnet10'; close matches: .*timm/resnet10t"),
    ("timm/convnext_atto.in22k", r"Unknown timm pretrained tag .*close matches: "
                                 r"timm/convnext_atto\.d2_in1k"),
    ("convnext_atto", r"Unknown backbone 'convnext_atto'; close matches: timm/convnext_atto"),
])
def test_an_unknown_name_lists_close_matches(name, match):
    with pytest.raises(at.UnknownNameError, match=match):
        at.get_backbone(name)


def _cache_config(root, repo, config):
    """A Hugging Face cache entry holding only ``config.json`` (what a download leaves)."""
    entry = root / f"models--{repo.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text("0" * 40)
    snap = entry / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(config))


def test_hf_names_are_text_encoders_checked_when_their_config_is_here(tmp_path, monkeypatch):
    b = at.get_backbone("hf/google-bert/bert-base-uncased")  # not cached: accepted lazily
    assert isinstance(b, at.HFBackbone)
    assert (b.hf_name, b.weights, b.modality, b.available()) == (
        "google-bert/bert-base-uncased", "hub", "text", False)

    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    _cache_config(tmp_path, "acme/tiny-bert", {"model_type": "bert", "vocab_size": 100})
    _cache_config(tmp_path, "timm/resnet18.a1_in1k", {"architecture": "resnet18"})
    _cache_config(tmp_path, "acme/t5", {"model_type": "t5", "vocab_size": 100,
                                        "is_encoder_decoder": True})
    assert at.get_backbone("hf/acme/tiny-bert").available()
    assert at.list_backbones("hf/*") == ["hf/acme/tiny-bert"]
    with pytest.raises(at.ConfigError, match="not a transformers model .*use "
                                             "'timm/resnet18.a1_in1k'"):
        at.get_backbone("hf/timm/resnet18.a1_in1k")
    with pytest.raises(at.ConfigError, match="is an encoder-decoder model"):
        at.get_backbone("hf/acme/t5")
    with pytest.raises(at.ConfigError, match="not a Hugging Face repository id"):
        at.get_backbone("hf/not a repo")


def test_list_backbones_globs_the_timm_catalogue():
    every = at.list_backbones("timm/resnet1*", include_unavailable=True)
    assert "timm/resnet10t" in every and all(n.startswith("timm/resnet1") for n in every)
    assert at.list_backbones("timm/resnet1*") == []  # offline: no weights here
    assert at.list_backbones("timm/resnet1*", modality="text", include_unavailable=True) == []
    assert "timm/convnext_atto.d2_in1k" in at.list_backbones("timm/convnext_atto.*",
                                                             include_unavailable=True)
    assert not any(n.startswith("timm/") for n in at.list_backbones())  # registered only


@pytest.mark.parametrize("pattern,data,error,match", [
    ("timm/resnt5*", "image", at.UnknownNameError,
     r"Unknown backbone pattern 'timm/resnt5\*': no timm model matches it "
     r"\(timm.list_models\('resnt5\*'\) is empty\); close matches: timm/resnet50.*use "
     r"`autotransfer backbones 'timm/\*' --all`"),
    ("timm/resnet18.nosuch*", "image", at.UnknownNameError,
     r"timm.list_pretrained\('resnet18.nosuch\*'\) is empty\); close matches: timm/resnet18\."),
    ("hf/*", "text", at.UnknownNameError,
     r"Unknown backbone pattern 'hf/\*': no transformers text encoder in the local Hugging "
     r"Face cache matches it .*e.g. 'hf/google-bert/bert-base-uncased'"),
    ("hf/*", "image", at.ModalityError,
     r"No image backbone matches 'hf/\*': hf/... names take text inputs, but the data holds "
     r"image; image backbones: .*tiny_cnn"),
    ("tiny_b*", "image", at.ModalityError, r"No image backbone matches 'tiny_b\*'"),
])
def test_a_glob_that_lists_nothing_says_why(pattern, data, error, match, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(error, match=match):
        plugins.resolve_backbones([pattern], data)


def test_an_object_named_like_a_catalogue_model_must_be_that_model():
    with pytest.raises(at.ConfigError, match=r"named 'timm/resnet18', but names starting with "
                                             r"'timm/' or 'hf/' mean the catalogue's models.*"
                                             r"e.g. 'resnet18_mine'"):
        plugins.resolve_backbones([at.TimmBackbone("timm/resnet18", timm_name="test_resnet")],
                                  "image")
    with pytest.raises(at.ConfigError, match="'timm/nosuch', but names starting with"):
        plugins.resolve_backbones([at.TimmBackbone("timm/nosuch", timm_name="resnet18")], "image")
    made = at.get_backbone("timm/test_vit4")  # the catalogue's own object, or an equal one
    assert plugins.resolve_backbones([made], "image") == ["timm/test_vit4"]
    equal = at.TimmBackbone("timm/test_vit4", timm_name="test_vit4")
    assert plugins.resolve_backbones([equal, "tiny_cnn"], "image") == ["timm/test_vit4",
                                                                        "tiny_cnn"]
    assert at.get_backbone("timm/test_vit4") is made  # nothing was added in its place


def test_cli_lists_catalogue_models_without_building_them(capsys):
    assert main(["backbones", "timm/resnet1*", "--all"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    assert rows["name"] == ["plugin", "family", "modality", "groups", "params", "weights",
                            "available"]
    assert rows["timm/resnet10t"] == ["catalogue", "timm", "image", "-", "-", "hub", "no"]
    assert main(["backbones", "timm/resnet1*"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "(none)" and "--all lists them" in out.err
    assert main(["backbones", "timm/resnet_1*"]) == 2  # matches no model at all: a typo
    assert "close matches: timm/resnet1" in capsys.readouterr().err


@pytest.mark.parametrize("bad,match", [
    ([3], r"backbones\[0\] must be .* got 3 \(int\)\. Accepted: .*'timm/<model>'.*"
          r"'hf/<repo>'.*Backbone objects"),
    (["tiny_cnn", torch.nn.Linear(2, 2)], r"backbones\[1\] .*\(Linear\).*A torch module is "
                                          r"not a backbone: wrap"),
    ([], "non-empty list"),
])
def test_backbones_of_the_wrong_type_say_what_is_accepted(bad, match, tmp_path):
    with pytest.raises(at.ConfigError, match=match):
        at.search(toy_images(24, size=16), backbones=bad, n_trials=1,
                  storage=tmp_path / "s.db", progress=False)


def test_two_backbones_with_one_name_are_refused_naming_both():
    clash = at.TimmBackbone("tiny_cnn", timm_name="test_resnet")
    with pytest.raises(at.ConfigError, match=r"Two backbones are named 'tiny_cnn': "
                                             r"TimmBackbone\('tiny_cnn'.*plugin "
                                             r"'autotransfer.testing'"):
        plugins.resolve_backbones([clash], "image")
    a = at.TimmBackbone("mine", timm_name="test_resnet")
    b = at.TimmBackbone("mine", timm_name="test_efficientnet")
    with pytest.raises(at.ConfigError, match="Two backbones in backbones= are named 'mine'"):
        plugins.resolve_backbones([a, b], "image")
    assert plugins.resolve_backbones([a, a, "mine", "tiny_*"], "image") == [
        "mine", "tiny_cnn", "tiny_resnet"]  # the same object twice is one backbone
    assert at.get_backbone("mine") is a
    plugins.resolve_backbones([b], "image")  # a later object of that name replaces it
    assert at.get_backbone("mine") is b


def test_an_object_backbone_travels_with_the_plugins():
    mine = at.TimmBackbone("mine", timm_name="test_resnet")
    plugins.current().add_backbone(mine)
    shipped = cloudpickle.loads(cloudpickle.dumps(plugins.current().portable()))
    worker = plugins.PluginHost.from_portable(shipped)
    assert worker.backbone("mine").timm_name == "test_resnet"
    assert "tiny_cnn" in worker.backbones()


def test_a_search_runs_objects_and_catalogue_names_in_worker_processes(tmp_path):
    weights = tmp_path / "mine.safetensors"
    source = at.TimmBackbone("src", timm_name="test_efficientnet").build(pretrained=False)
    save_file(source.state_dict(), str(weights))
    mine = at.TimmBackbone("mine", timm_name="test_efficientnet", weights=str(weights),
                           image_size=16)
    study = at.search(toy_images(48, size=16), backbones=[mine, "timm/test_mambaout"],
                      n_trials=6, storage=tmp_path / "s.db", name="objects", space=SPACE,
                      backend=at.OptunaBackend(devices=2), progress=False, final="best")
    lb = study.leaderboard()  # the trials alone: no ensemble row (final="best")
    assert set(lb["backbone"]) == {"mine", "timm/test_mambaout"}
    assert (lb["state"] == "complete").all(), lb[["backbone", "state", "reason"]]
    assert set(lb["worker"]) == {0, 1}
