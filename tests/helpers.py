"""Shared by tests that drive a search in another process.

They synchronise on a file the search writes when it reaches a known point (see
``autotransfer.testing.paused_head``), never on how fast it runs: the time limit below
is only a safety net for a search that is broken, not a guess at its speed.
"""

import time
from pathlib import Path

import autotransfer as at

SAFETY_NET_S = 900


def wait_for_pause(marker: Path, proc) -> int:
    """Block until the search in ``proc`` has paused (``marker`` exists); its process id."""
    deadline = time.monotonic() + SAFETY_NET_S
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the search exited with code {proc.returncode} before "
                                 f"pausing")
        if time.monotonic() > deadline:
            raise AssertionError("the search never paused (broken, not slow)")
        time.sleep(0.05)
    while not marker.read_text():  # created, pid being written
        time.sleep(0.01)
    return int(marker.read_text())


def pause_plugin(folder: Path, marker: Path, after: int) -> str:
    """Write a plugin module registering task 'paused'; returns its module name."""
    (folder / "pause_plugin.py").write_text(
        "import autotransfer as at\n"
        "from autotransfer.testing import paused_head\n\n\n"
        "@at.hookimpl\n"
        "def register_heads(register):\n"
        f"    register(paused_head({str(marker)!r}, {after}))\n")
    return "pause_plugin"


class Exploding:
    """A plugin whose backbone raises while loading pretrained weights (a plugin bug)."""

    @at.hookimpl
    def register_backbones(self, register):
        class Boom(at.TimmBackbone):
            def build(self, *, pretrained=True, drop_path=0.0):
                if pretrained:
                    raise RuntimeError("boom in a plugin")
                return super().build(pretrained=False)

        register(Boom("boom", timm_name="test_efficientnet", image_size=16))


class ObjectPlugin:
    """A plugin that is an object, not a module: it must reach worker processes and Ray
    actors (registers backbone ``obj_cnn``)."""

    @at.hookimpl
    def register_backbones(self, register):
        register(at.TimmBackbone("obj_cnn", timm_name="test_efficientnet", image_size=16))
