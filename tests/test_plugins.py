"""The plugin host: entry points, guarded loading, registration rules, lookup by name."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import autotransfer as at
from autotransfer import plugins
from autotransfer.cli import main

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


def test_a_plugin_with_a_duplicate_name_is_skipped_and_reported_naming_both(capsys):
    at.register_plugin(_Dup(), name="dup_plugin")
    with pytest.warns(UserWarning, match="'tiny_cnn'.*'autotransfer.testing'.*'dup_plugin'"):
        names = at.list_backbones()
    assert "tiny_cnn" in names and "tiny_resnet" in names  # the first registration wins
    assert at.get_backbone("tiny_cnn").timm_name == "test_efficientnet"
    (dup,) = [p for p in at.list_plugins() if p.name == "dup_plugin"]
    assert dup.backbones == () and "already registered by plugin 'autotransfer.testing'" in dup.error
    assert main(["plugins"]) == 0  # the host still lists every plugin
    out = capsys.readouterr().out
    assert "dup_plugin" in out and "duplicate backbone name 'tiny_cnn'" in out


def test_each_test_gets_a_fresh_host(first_party_plugins):
    assert plugins.current() is first_party_plugins
    host = plugins.PluginHost(autoload=False)
    with plugins.use(host):
        assert at.list_backbones() == []
    assert "tiny_cnn" in at.list_backbones()


class _ObjectPlugin:
    @at.hookimpl
    def register_backbones(self, register):
        register(at.TimmBackbone("obj_resnet", timm_name="test_resnet", image_size=16))


def test_a_host_rebuilt_from_its_portable_form_in_another_process(first_party_plugins):
    import cloudpickle

    first_party_plugins.register(_ObjectPlugin(), name="object")
    sent = cloudpickle.dumps(first_party_plugins.portable())
    code = ("import sys, cloudpickle; from autotransfer import plugins; "
            "host = plugins.PluginHost.from_portable(cloudpickle.loads(sys.stdin.buffer.read())); "
            "print(sorted(host.backbones()))")
    out = subprocess.run([sys.executable, "-c", code], input=sent, capture_output=True,
                         check=True, env={**__import__("os").environ,
                                          "PYTHONPATH": str(Path(__file__).parent)}).stdout
    assert "obj_resnet" in out.decode() and "tiny_cnn" in out.decode()


class _NotABackbone:
    @at.hookimpl
    def register_backbones(self, register):
        register("resnet18")


def test_a_plugin_registering_something_else_than_a_backbone_is_skipped():
    at.register_plugin(_NotABackbone(), name="wrong")
    with pytest.warns(UserWarning, match="'wrong' registered 'resnet18' as a backbone"):
        assert "tiny_cnn" in at.list_backbones()
    assert any(p.name == "wrong" and "expected an instance" in p.error for p in at.list_plugins())


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
    assert "Unknown backbone 'efficientnet_lite9'; close matches: efficientnet_lite" in str(err.value)
    assert "efficientnet_lite0" in str(err.value)


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


def test_a_study_names_the_plugins_a_new_process_must_register_to_use_its_model():
    """Modules registered by hand (not installed entry points, which every process loads)
    are what `autotransfer predict ... --plugin M` must name."""
    assert plugins.modules_for(["efficientnet_lite0"], "classification") == []
    assert plugins.modules_for(["tiny_cnn", "efficientnet_lite0"], "classification") == \
        ["autotransfer.testing"]
    assert plugins.modules_for(["tiny_bert"], {"a": "regression", "b": "multilabel"}) == \
        ["autotransfer.testing"]
