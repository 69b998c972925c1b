"""The plugin host: entry points, guarded loading, registration rules, lookup by name."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import autotransfer as at
from autotransfer import plugins

ROOT = Path(__file__).resolve().parents[1]


def _fake_distribution(tmp_path, entry_points: str) -> Path:
    """An installed distribution on sys.path declaring ``entry_points`` (what pip writes)."""
    info = tmp_path / "fake_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugins\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[autotransfer]\n{entry_points}\n")
    return tmp_path


def test_a_broken_plugin_is_reported_and_skipped(tmp_path, monkeypatch):
    (tmp_path / "good_plugin.py").write_text(
        "import autotransfer as at\n"
        "@at.hookimpl\n"
        "def register_backbones(register):\n"
        "    register(at.TimmBackbone('good_one', timm_name='test_resnet'))\n"
    )
    (tmp_path / "bad_plugin.py").write_text("raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(_fake_distribution(
        tmp_path, "good = good_plugin\nbad = bad_plugin")))
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV)
    plugins.reset(autoload=True)
    with pytest.warns(UserWarning, match="'bad'.*missing dependency xyz"):
        names = at.list_backbones()
    assert "good_one" in names
    failed = {p.name: p.error for p in at.list_plugins() if p.error}
    assert "bad" in failed and "missing dependency xyz" in failed["bad"]


def test_environment_variable_turns_autoload_off(tmp_path, monkeypatch):
    (tmp_path / "good_plugin.py").write_text(
        "import autotransfer as at\n"
        "@at.hookimpl\n"
        "def register_backbones(register):\n"
        "    register(at.TimmBackbone('good_one', timm_name='test_resnet'))\n"
    )
    monkeypatch.syspath_prepend(str(_fake_distribution(tmp_path, "good = good_plugin")))
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    plugins.reset(autoload=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert at.list_backbones() == []


class _Dup:
    @at.hookimpl
    def register_backbones(self, register):
        register(at.TimmBackbone("tiny_cnn", timm_name="test_resnet"))


def test_duplicate_backbone_name_raises_naming_both_plugins():
    at.register_plugin(_Dup(), name="dup_plugin")
    with pytest.raises(at.PluginError, match="'tiny_cnn'.*autotransfer.testing.*dup_plugin"):
        at.list_backbones()


class _NotABackbone:
    @at.hookimpl
    def register_backbones(self, register):
        register("resnet18")


def test_registering_something_else_than_a_backbone_raises():
    at.register_plugin(_NotABackbone(), name="wrong")
    with pytest.raises(at.PluginError, match="'wrong' registered 'resnet18' as a backbone"):
        at.list_backbones()


def test_a_plugin_with_a_misspelt_hook_is_rejected_at_registration():
    class Misspelt:
        @at.hookimpl
        def register_backbone(self, register):  # missing "s"
            pass

    with pytest.raises(at.PluginError, match="Misspelt|register_backbone"):
        at.register_plugin(Misspelt(), name="misspelt")


def test_unknown_backbone_lists_close_matches():
    with pytest.raises(at.UnknownNameError) as err:
        at.get_backbone("efficientnet_lite9")
    assert "Unknown backbone 'efficientnet_lite9'; close matches: efficientnet_lite0" in str(err.value)


def test_globs_and_modality_filter():
    assert at.list_backbones("tiny_*", modality="image") == ["tiny_cnn", "tiny_resnet"]
    assert plugins.resolve_backbones(["tiny_c*", "tiny_bert"], None) == ["tiny_cnn", "tiny_bert"]
    with pytest.raises(at.UnknownNameError, match="backbone pattern 'nothing\\*'"):
        plugins.resolve_backbones(["nothing*"], None)


def test_default_backbones_are_those_with_weights_here():
    # offline: hub backbones are left out, packaged and random-init ones stay
    names = plugins.resolve_backbones(None, "image")
    assert "efficientnet_lite0" in names and "tiny_cnn" in names
    assert "resnet50" not in names


def test_example_plugin_shows_up_after_pip_install(tmp_path):
    """The third-party example, installed by pip, appears in `autotransfer backbones`."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                    "--target", str(target), str(ROOT / "examples" / "example_plugin")],
                   check=True)
    env = {"PYTHONPATH": str(target), "PATH": str(Path(sys.executable).parent),
           "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "autotransfer.cli", "backbones"],
                         capture_output=True, text=True, env=env, check=True).stdout
    row = next(line for line in out.splitlines() if line.startswith("example_resnet10t"))
    assert row.split()[1:5] == ["example", "timm", "image", "5"]
    assert "efficientnet_lite0" in out  # the first-party ones still load beside it


class _Buggy:
    @at.hookimpl
    def register_backbones(self, register):
        raise KeyError("oops")


def test_a_plugin_whose_hook_raises_is_reported_and_the_rest_load():
    at.register_plugin(_Buggy(), name="buggy")
    with pytest.warns(UserWarning, match="'buggy' failed in register_backbones: KeyError"):
        names = at.list_backbones()
    assert "efficientnet_lite0" in names
    assert any(p.name == "buggy" and "KeyError" in p.error for p in at.list_plugins())
