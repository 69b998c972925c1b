"""Bad inputs against model files and exports (issue 21): crafted headers and resource
bombs in a model file are refused from the header, before memory or time is spent; a
failed or refused save or export leaves the earlier files byte-identical (``b.intact``)."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import torch

import autotransfer as at
from autotransfer.predict.modelfile import FORMAT


def add_cases(b) -> None:
    _export_cases(b)
    _export_accepted_cases(b)
    _save_cases(b)
    _crafted_cases(b)
    _header_cases(b)
    _cli_cases(b)


def craft(good: Path, path: Path, change=None, *, config: str | None = None,
          tensors=None) -> Path:
    """A copy of model file ``good`` whose config is changed by ``change(cfg)`` (or is the
    raw text ``config``) and whose tensors are ``tensors(state)``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

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


def _poison(pred) -> None:
    with torch.no_grad():
        next(p for p in pred.model.head.parameters())[0].fill_(float("nan"))


# --------------------------------------------------------------------------- exports
def _export_cases(b) -> None:
    for fmt, name, files in (("onnx", "m.onnx", ("m.onnx", "m.onnx.json")),
                             ("torchscript", "m.pt", ("m.pt", "m.pt.json")),
                             ("timm", "m-timm", ("m-timm",))):
        def case(tmp, fmt=fmt, name=name, files=files):
            pred = b.fixture("pred")
            pred.export(tmp / name, format=fmt)
            _poison(pred)  # NaN weights: the export's check fails
            with b.intact(*[tmp / f for f in files]):
                return pred.export(tmp / name, format=fmt)

        b.api(f"model-export-{fmt}-nan-weights-keeps-the-previous-export", "nan")(case)

    @b.api("model-export-onto-the-studys-own-db", "own.db")
    def _(tmp):
        b.fixture("own_study")
        with b.intact(tmp / "own.db"):
            return b.fixture("pred").export(tmp / "own.db", format="onnx")

    @b.api("model-export-torchscript-onto-a-sqlite-file", "other.db")
    def _(tmp):
        shutil.copy(b.fixture("db"), tmp / "other.db")
        with b.intact(tmp / "other.db"):
            return b.fixture("pred").export(tmp / "other.db", format="torchscript")

    @b.api("model-export-over-a-users-file", "notes.onnx")
    def _(tmp):
        (tmp / "notes.onnx").write_text("my notes")
        with b.intact(tmp / "notes.onnx"):
            return b.fixture("pred").export(tmp / "notes.onnx", format="onnx")

    @b.api("model-export-beside-a-users-json", "m.onnx.json")
    def _(tmp):
        (tmp / "m.onnx.json").write_text('{"mine": true}')
        with b.intact(tmp / "m.onnx.json"):
            return b.fixture("pred").export(tmp / "m.onnx", format="onnx")

    @b.api("model-export-timm-over-a-users-folder", "photos")
    def _(tmp):
        (tmp / "photos").mkdir()
        (tmp / "photos" / "a.jpg").write_bytes(b"\xff\xd8 mine")
        with b.intact(tmp / "photos"):
            return b.fixture("pred").export(tmp / "photos", format="timm")

    @b.api("model-export-format-None", "None")
    def _(tmp):
        return b.fixture("pred").export(tmp / "m.onnx", format=None)

    @b.api("model-export-format-list", "['onnx']")
    def _(tmp):
        return b.fixture("pred").export(tmp / "m.onnx", format=["onnx"])



def _export_accepted_cases(b) -> None:
    def _only(*names):
        def check(result, tmp):
            got = sorted(p.name for p in tmp.iterdir() if p.name != "own.db")
            return None if got == sorted(names) else f"files left: {got}"
        return check

    @b.api("model-export-replaces-its-own-export (accepted)", accepted=True,
           check_ok=_only("m.onnx", "m.onnx.json"))
    def _(tmp):
        pred = b.fixture("pred")
        pred.export(tmp / "m.onnx", format="onnx")
        return pred.export(tmp / "m.onnx", format="onnx")["max_abs_diff"]

    @b.api("model-export-sweeps-a-killed-exports-tmp (accepted)", accepted=True,
           check_ok=_only("m.onnx", "m.onnx.json"))
    def _(tmp):
        (tmp / ".m.onnx.999999999.0123abcd.tmp").write_bytes(b"")  # no such process
        return b.fixture("pred").export(tmp / "m.onnx", format="onnx")["max_abs_diff"]


# --------------------------------------------------------------------------- save
def _save_cases(b) -> None:
    @b.api("model-save-onto-the-studys-own-db", "own.db")
    def _(tmp):
        b.fixture("own_study")
        with b.intact(tmp / "own.db"):
            return b.fixture("pred").save(tmp / "own.db")

    @b.api("model-save-over-a-users-file", "notes.txt")
    def _(tmp):
        (tmp / "notes.txt").write_text("mine")
        with b.intact(tmp / "notes.txt"):
            return b.fixture("pred").save(tmp / "notes.txt")

    @b.api("model-save-over-a-plain-safetensors-file", "plain.safetensors")
    def _(tmp):
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(3)}, str(tmp / "plain.safetensors"))
        with b.intact(tmp / "plain.safetensors"):
            return b.fixture("pred").save(tmp / "plain.safetensors")

    @b.api("model-save-onto-a-symlink-to-dev-zero", "m.safetensors", "/dev/zero")
    def _(tmp):
        (tmp / "m.safetensors").symlink_to("/dev/zero")
        return b.fixture("pred").save(tmp / "m.safetensors")

    def _loads(result, tmp):
        return None if at.load(result).classes == b.fixture("pred").classes else "not loaded"

    @b.api("model-save-replaces-its-own-model-file (accepted)", accepted=True, check_ok=_loads)
    def _(tmp):
        pred = b.fixture("pred")
        pred.save(tmp / "m.safetensors")
        return pred.save(tmp / "m.safetensors")


# --------------------------------------------------------------------------- crafted configs
def _set(where: list[str], key: str, value):
    def change(cfg):
        node = cfg
        for k in where:
            node = node[k]
        if value is KeyError:
            del node[key]
        else:
            node[key] = value
    return change


def _reshape(state):
    key = [k for k in state if k.startswith("head.")][0]
    return {**state, key: torch.zeros(7, *state[key].shape[1:])}


CRAFTED = [  # (case id, craft arguments, tokens)
    ("config-is-a-json-list", dict(config="[1, 2]"), ("JSON list",)),
    ("config-is-empty", dict(config="{}"), ("'strategy'",)),
    ("config-100k-deep", dict(config="[" * 100_000 + "]" * 100_000), ("nested too deeply",)),
    ("config-20MB", dict(config='"' + "x" * 20_000_000 + '"'), ("20,000,002",)),
    ("unknown-preprocessing-key", dict(change=_set(["preprocessing"], "sharpen", 1)),
     ("'sharpen'",)),
    ("missing-task-key", dict(change=_set([], "task", KeyError)), ("['task']",)),
    ("missing-preprocessing-size", dict(change=_set(["preprocessing"], "size", KeyError)),
     ("['size']",)),
    ("strategy-lr-string", dict(change=_set(["strategy"], "lr", "fast")), ("'fast'",)),
    ("strategy-backbone-list", dict(change=_set(["strategy"], "backbone", [1])), ("[1]",)),
    ("strategy-frozen-groups-99", dict(change=_set(["strategy"], "frozen_groups", 99)),
     ("frozen_groups=99",)),
    ("image-size-1e9", dict(change=_set(["preprocessing"], "size", 10**9)), ("1000000000",)),
    ("crop-pct-resize-bomb", dict(change=_set(["preprocessing"], "crop_pct", 1e-9)),
     ("1e-09",)),
    ("std-zero", dict(change=_set(["preprocessing"], "std", [0, 0, 0])), ("'std'",)),
    ("interpolation-unknown", dict(change=_set(["preprocessing"], "interpolation", "magic")),
     ("'magic'",)),
    ("modality-audio", dict(change=_set(["preprocessing"], "modality", "audio")),
     ("'audio'",)),
    ("classes-not-a-list", dict(change=_set(["info"], "classes", 3)), ("'classes'",)),
    ("classes-repeated", dict(change=_set(["info"], "classes", [0, 0])), ("[0, 0]",)),
    ("classes-do-not-fit-the-head", dict(change=_set(["info"], "classes", [0, 1, 2])),
     ("head.1.weight",)),
    ("tensor-of-another-shape", dict(tensors=_reshape), ("head.1.bias", "head.1.weight")),
    ("tensor-extra", dict(tensors=lambda s: {**s, "body.trojan": torch.zeros(1)}),
     ("'body.trojan'",)),
    ("integer-weights", dict(tensors=lambda s: {k: v.to(torch.int8) if k.startswith("head.")
                                                else v for k, v in s.items()}),
     ("(integer)",)),
    ("catalogue-architecture-vit-large",
     dict(change=_set(["strategy"], "backbone", "timm/vit_large_patch16_224")),
     ("'timm/vit_large_patch16_224'",)),
    ("task-a-number", dict(change=_set([], "task", 7)), ("7",)),
    ("regression-without-scales", dict(change=_set([], "task", "regression")),
     ("'regression'",)),
    ("study-id-a-list", dict(change=_set([], "study", [1])), ("[1]",)),
]


def _crafted_cases(b) -> None:
    for cid, kwargs, tokens in CRAFTED:
        def case(tmp, kwargs=kwargs):
            good = b.fixture("pred").save(tmp / "good.safetensors")
            return at.load(craft(good, tmp / "crafted.safetensors", **kwargs))

        b.api(f"model-load-{cid}", *tokens)(case)


# --------------------------------------------------------------------------- raw headers
def _raw(path: Path, header: dict | bytes, data: bytes = b"", length: int | None = None):
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


META = {"format": FORMAT, "config": "{}"}


def _header_cases(b) -> None:
    @b.api("model-load-symlink-to-dev-zero", "/dev/zero", "m.safetensors")
    def _(tmp):
        (tmp / "m.safetensors").symlink_to("/dev/zero")
        return at.load(tmp / "m.safetensors")

    @b.api("model-load-fifo", "FIFO", "m.safetensors")
    def _(tmp):
        os.mkfifo(tmp / "m.safetensors")
        return at.load(tmp / "m.safetensors")

    @b.api("model-load-a-folder", "m.safetensors")
    def _(tmp):
        (tmp / "m.safetensors").mkdir()
        return at.load(tmp / "m.safetensors")

    @b.api("model-load-header-declares-huge-shape", "m.safetensors")
    def _(tmp):
        head = {"w": {"dtype": "F32", "shape": [2**31, 2**31], "data_offsets": [0, 4]},
                "__metadata__": META}
        return at.load(_raw(tmp / "m.safetensors", head, b"\0" * 4))

    @b.api("model-load-header-length-2-63", "m.safetensors")
    def _(tmp):
        return at.load(_raw(tmp / "m.safetensors", b"{}", length=2**63))

    @b.api("model-load-header-unknown-dtype", "m.safetensors")
    def _(tmp):
        head = {"w": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]},
                "__metadata__": META}
        return at.load(_raw(tmp / "m.safetensors", head, b"\0" * 4))

    @b.api("model-load-header-overlapping-offsets", "m.safetensors")
    def _(tmp):
        head = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "__metadata__": META}
        return at.load(_raw(tmp / "m.safetensors", head, b"\0" * 8))

    @b.api("model-load-100k-empty-tensors", "body.t0")
    def _(tmp):
        head = {f"body.t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
                for i in range(100_000)}
        good = json.loads(_good_config(b, tmp))
        head["__metadata__"] = {"format": FORMAT, "config": json.dumps(good)}
        return at.load(_raw(tmp / "m.safetensors", head))


def _good_config(b, tmp: Path) -> str:
    from safetensors import safe_open

    good = b.fixture("pred").save(tmp / "good.safetensors")
    with safe_open(str(good), framework="pt") as f:
        return f.metadata()["config"]


# --------------------------------------------------------------------------- the CLI
def _cli_cases(b) -> None:
    def crafted(**kwargs):
        def argv(tmp):
            return ["predict", str(craft(b.fixture("model"), tmp / "crafted.safetensors",
                                         **kwargs)), "x.png"]
        return argv

    b.cli("model-cli-predict-config-100k-deep", crafted(config="[" * 100_000),
          "crafted.safetensors", autoload=True)
    b.cli("model-cli-predict-unknown-preprocessing-key",
          crafted(change=_set(["preprocessing"], "sharpen", 1)), "'sharpen'", autoload=True)
    b.cli("model-cli-predict-config-is-a-list", crafted(config="[]"), "JSON list",
          autoload=True)
    b.cli("model-cli-predict-classes-do-not-fit-the-head",
          crafted(change=_set(["info"], "classes", [0, 1, 2])), "crafted.safetensors",
          autoload=True)

    def dev_zero(tmp):
        (tmp / "m.safetensors").symlink_to("/dev/zero")
        return ["predict", "m.safetensors", "x.png"]

    b.cli("model-cli-predict-symlink-to-dev-zero", dev_zero, "/dev/zero", autoload=True)

    def onto_db(tmp):
        shutil.copy(b.fixture("db"), tmp / "s.db")
        return ["export", str(b.fixture("model")), "--format", "onnx", "-o", "s.db"]

    b.cli("model-cli-export-onto-a-study-db", onto_db, "s.db", autoload=True)
