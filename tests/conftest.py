"""Tests load plugins explicitly: no entry-point autoload, so nothing installed leaks in."""

import os

os.environ["AUTOTRANSFER_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from autotransfer import plugins  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

FIRST_PARTY = [
    "autotransfer_plugins.heads",
    "autotransfer_plugins.packaged_backbones",
    "autotransfer_plugins.timm_backbones",
    "autotransfer_plugins.hf_backbones",
    "autotransfer_plugins.techniques",
    "autotransfer.testing",
]


def first_party_host() -> plugins.PluginHost:
    """A fresh plugin host with the first-party plugins and the tiny test backbones (for
    module-scoped fixtures, which run outside any one test's host)."""
    host = plugins.PluginHost(autoload=False)
    for name in FIRST_PARTY:
        host.register(name)
    return host


@pytest.fixture(autouse=True)
def first_party_plugins():
    """Every test gets a fresh plugin host with the first-party plugins and the tiny test
    backbones; nothing a test registers leaks into the next."""
    with plugins.use(host := first_party_host()):
        yield host
