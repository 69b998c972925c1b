"""Bad inputs against the data (issue 21): pixel values whose scale the dtype (or a file's
bit depth) does not explain, resource bombs, files that are not what they claim, tables with
duplicate columns, labels that cannot be learned or would merge, texts no tokenizer reads.
Each is refused naming the value and what is accepted, before any storage exists; what must
work (16-bit files, uint16 and bool arrays, rounding noise) decodes to the right pixels."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import autotransfer as at


def add_cases(b) -> None:
    for add in (_scale_cases, _accepted_scale_cases, _bomb_cases, _csv_cases, _column_cases,
                _label_cases, _text_cases):
        add(b)


def normalised(n: int = 24) -> np.ndarray:
    """Images after a mean/std normalisation: values in about [-4, 3.9]."""
    x = np.random.default_rng(0).normal(0, 1.3, (n, 3, 16, 16)).clip(-4, 3.9)
    x[0, 0, 0, :2] = -4.0, 3.9
    return x.astype(np.float32)


def twelve_bit(n: int = 24) -> np.ndarray:
    """A 12-bit scan in an int32 array: values up to 4095."""
    x = np.random.default_rng(0).integers(0, 4096, (n, 16, 16)).astype(np.int32)
    x[0, 0, :2] = 0, 4095
    return x


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid 1-bit PNG of side x side pixels (400 megapixels) in about 50 kB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    z = zlib.compressobj(9)
    row = b"\0" * (1 + side // 8)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def text_bomb_png(path: Path) -> Path:
    """A 16x16 PNG whose compressed text chunk inflates to 64 MB (about 64 kB on disk)."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "\0" * (64 << 20), zip=True)
    Image.new("RGB", (16, 16)).save(path, pnginfo=info)
    return path


def refused_before_storage(b, tmp: Path, fn, keep: str):
    """``b.refused_before_storage`` for a case whose data lives in ``tmp / keep``."""
    try:
        return fn()
    except at.AutotransferError as exc:
        left = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")
                      if p.relative_to(tmp).parts[0] != keep)
        if left:
            raise RuntimeError(f"refused only after writing {left}: {exc}") from exc
        raise


# --------------------------------------------------------------------------- value scales
def _over_one() -> np.ndarray:
    x = np.random.default_rng(0).random((24, 3, 16, 16)).astype(np.float32)
    x[5, 1, 2, 3] = 1.01  # was: the whole batch read as 0-255
    return x


def _as_floats_0_255() -> np.ndarray:
    x = np.random.default_rng(0).integers(0, 255, (24, 3, 16, 16)).astype(np.float32)
    x[0, 0, 0, :2] = 0, 255
    return x


def _object_array() -> np.ndarray:
    o = np.empty(24, dtype=object)
    o[:] = [np.zeros((16, 16 + i % 2)) for i in range(24)]
    return o


def _scale_cases(b) -> None:
    for cid, make, *tokens in (
            ("int32-12-bit-scan", twelve_bit, "[0, 4095]", "4095"),  # was: 94% -> 255
            ("mean-std-normalised-floats", normalised, "[-4, 3.9]", "-4"),  # was: 0-3
            ("float-pixel-at-1.01", _over_one, "1.01"),
            ("float-0-255", _as_floats_0_255, "255", "[0, 255]"),
            ("int8-negative", lambda: np.full((24, 16, 16), -5, np.int8), "-5", "[-5"),
            ("object-array", _object_array, "object")):
        b.api(f"data-from_arrays-{cid}", *tokens)(
            lambda tmp, make=make: at.data.from_arrays(make(), [0, 1] * 12))

    @b.api("data-from_arrays-pil-mode-La", "'La'")
    def _(tmp):
        from PIL import Image

        return at.data.from_arrays([Image.new("La", (16, 16))] * 2, [0, 1])

    for cid, make, *tokens in (("mean-std-normalised-floats", normalised, "[-4, 3.9]", "-4"),
                               ("int32-12-bit-scan", twelve_bit, "[0, 4095]", "4095")):
        b.api(f"data-predict-{cid}", *tokens)(
            lambda tmp, make=make: b.fixture("pred").predict(make(2)))

    @b.api("data-search-unlabeled-mean-std-normalised", "[-4, 3.9]", "-4")
    def _(tmp):
        return b.refused_before_storage(
            tmp, lambda: b.search(unlabeled=torch.from_numpy(normalised(4))))

    @b.api("data-from_torch-normalised-items", "[-4, 3.9]", "-4")
    def _(tmp):
        x = normalised(4)
        return at.data.from_torch([(torch.from_numpy(x[i]), i % 2) for i in range(4)])

    @b.api("data-search-float-tiff-files-2.5", "2.5", "[2.5, 2.5]")
    def _(tmp):
        from PIL import Image

        for cls in ("a", "b"):
            (tmp / "d" / cls).mkdir(parents=True)
            for i in range(10):
                Image.fromarray(np.full((16, 16), 2.5, np.float32)).save(
                    tmp / "d" / cls / f"{i}.tif")
        data = at.data.from_folder(tmp / "d")
        return refused_before_storage(b, tmp, lambda: b.search(data), keep="d")


def _decodes(expect: dict[int, int]):
    """check_ok: the dataset's item i decodes to pixel value expect[i] everywhere."""
    def check(ds, tmp):
        for i, v in expect.items():
            got = np.unique(np.asarray(ds[i][0]))
            if got.tolist() != [v]:
                return f"item {i} decoded to {got.tolist()[:5]}, not {v}"
        return None
    return check


def _accepted_scale_cases(b) -> None:
    api = b.api

    def sixteen_bit_folder(tmp, suffix):
        from PIL import Image

        for cls, top in (("a", 255), ("b", 65535)):  # per-image scaling read 200 two ways
            (tmp / "d" / cls).mkdir(parents=True)
            a = np.full((16, 16), 200, np.uint16)
            a[0, 0] = top
            Image.fromarray(a[:, :8]).save(tmp / "d" / cls / f"x{suffix}")  # 16x8: no corner
            Image.fromarray(np.full((16, 16), 200, np.uint16)).save(tmp / "d" / cls / f"y{suffix}")
        return at.data.from_folder(tmp / "d")

    for suffix in (".png", ".tif"):
        api(f"data-from_folder-16-bit{suffix}-files-alike", accepted=True,
            check_ok=_decodes({1: 1, 3: 1}))(lambda tmp, s=suffix: sixteen_bit_folder(tmp, s))

    @api("data-from_arrays-uint16-whole-range", accepted=True,
         check_ok=_decodes({0: 0, 1: 1, 2: 255}))
    def _(tmp):
        return at.data.from_arrays(np.stack([np.full((16, 16), v, np.uint16)
                                             for v in (0, 257, 65535)]), [0, 1, 0])

    @api("data-from_arrays-bool-images", accepted=True, check_ok=_decodes({0: 0, 1: 255}))
    def _(tmp):
        return at.data.from_arrays(np.stack([np.zeros((16, 16), bool), np.ones((16, 16), bool)]),
                                   [0, 1])

    @api("data-from_arrays-int64-holding-0-255", accepted=True,
         check_ok=_decodes({0: 0, 1: 200}))
    def _(tmp):
        return at.data.from_arrays(np.stack([np.zeros((16, 16)), np.full((16, 16), 200)])
                                   .astype(np.int64), [0, 1])

    @api("data-from_arrays-float-rounding-noise", accepted=True,
         check_ok=_decodes({0: 255, 1: 0}))
    def _(tmp):
        return at.data.from_arrays(np.stack([np.full((16, 16), 1.0005), np.full((16, 16), -1e-4)])
                                   .astype(np.float32), [0, 1])


# --------------------------------------------------------------------------- resource bombs
def _bomb_cases(b) -> None:
    api = b.api

    @api("data-predict-400-megapixel-png", "bomb.png", "400000000")
    def _(tmp):
        return b.fixture("pred").predict(bomb_png(tmp / "bomb.png"))

    @api("data-predict-folder-with-a-400-megapixel-png", "bomb.png", "400000000")
    def _(tmp):
        b.write_pngs(tmp / "in", 3)
        bomb_png(tmp / "in" / "bomb.png")
        return b.fixture("pred").predict(tmp / "in")

    @api("data-from_folder-400-megapixel-png", "bomb.png", "400000000")
    def _(tmp):
        b.write_pngs(tmp / "d" / "a", 3)
        b.write_pngs(tmp / "d" / "b", 3)
        bomb_png(tmp / "d" / "b" / "bomb.png")
        return at.data.from_folder(tmp / "d")

    @api("data-predict-png-text-chunk-bomb", "ztxt.png")
    def _(tmp):
        return b.fixture("pred").predict(text_bomb_png(tmp / "ztxt.png"))

    def bomb_argv(tmp):
        bomb_png(tmp / "bomb.png")
        return ["predict", str(b.fixture("model")), "bomb.png"]

    b.cli("data-cli-predict-400-megapixel-png", bomb_argv, "bomb.png", "400000000",
          autoload=True)


# --------------------------------------------------------------------------- CSV files
def _csv_cases(b) -> None:
    api = b.api

    def from_csv(path):
        return at.data.from_csv(path, image="path", label="y")

    for name, content, *tokens in (
            ("rand.csv", np.random.default_rng(0).bytes(4096), "rand.csv", "binary"),
            ("nul.csv", b"\0" * 4096, "nul.csv", "NUL"),
            ("latin.csv", "path,y\ncaf\xe9.png,1\n".encode("latin-1"), "0xe9", "latin.csv"),
            ("empty.csv", b"", "empty.csv")):
        def case(tmp, name=name, content=content):
            (tmp / name).write_bytes(content)
            return from_csv(tmp / name)
        api(f"data-from_csv-{name}", *tokens)(case)

    for cid, make, *tokens in (  # reading /dev/zero never ends; a FIFO waits for a writer
            ("symlink-to-dev-zero", lambda p: p.symlink_to("/dev/zero"), "'/dev/zero'"),
            ("fifo", os.mkfifo, "FIFO"), ("a-folder", Path.mkdir, "folder")):
        def case(tmp, make=make):
            make(tmp / "x.csv")
            return from_csv(tmp / "x.csv")
        api(f"data-from_csv-{cid}", *tokens)(case)

    def csv_toml(name):
        return b.study_toml(data={"csv": name, "image": "path", "label": "y"}, own_data=True)

    def zero_argv(tmp):
        (tmp / "zero.csv").symlink_to("/dev/zero")
        return ["run", "study.toml", "--no-progress"]

    b.cli("data-toml-csv-symlink-to-dev-zero", zero_argv, "'/dev/zero'", "zero.csv",
          files={"study.toml": csv_toml("zero.csv")}, storage="t.db")
    b.cli("data-toml-csv-binary", ["run", "study.toml", "--no-progress"], "bin.csv",
          files={"study.toml": csv_toml("bin.csv"), "bin.csv": "path,y\n\0\0\0,1\n"},
          storage="t.db")


# --------------------------------------------------------------------------- table columns
def _column_cases(b) -> None:
    api = b.api

    def paths(tmp, n=4):
        b.write_pngs(tmp / "p", n)
        return [str(tmp / "p" / f"{i}.png") for i in range(n)]

    @api("data-from_pandas-duplicate-label-column", "'y'")
    def _(tmp):
        df = pd.DataFrame({"path": paths(tmp), "y": [0, 1] * 2, "z": [1, 0] * 2})
        df.columns = ["path", "y", "y"]  # was: both glued into a 2-D label
        return at.data.from_pandas(df, image="path", label="y")

    @api("data-from_pandas-duplicate-image-column", "'path'")
    def _(tmp):
        p = paths(tmp)
        df = pd.DataFrame({"a": p, "b": p[::-1], "y": [0, 1] * 2})
        df.columns = ["path", "path", "y"]
        return at.data.from_pandas(df, image="path", label="y")

    @api("data-from_pandas-label-is-the-input-column", "'path'")
    def _(tmp):
        df = pd.DataFrame({"path": paths(tmp), "y": [0, 1] * 2})
        return at.data.from_pandas(df, image="path", label="path")

    @api("data-from_arrays-label-table-duplicate-columns", "'y'")
    def _(tmp):
        labels = pd.DataFrame([[0, 1], [1, 0]] * 12, columns=["y", "y"])
        return at.data.from_arrays(b.images(), labels)

    @api("data-from_arrays-dataframe-as-images", "DataFrame", "['a', 'a']")
    def _(tmp):
        return at.data.from_arrays(pd.DataFrame(np.zeros((24, 2)), columns=["a", "a"]),
                                   [0, 1] * 12)

    @api("data-predict-dataframe-duplicate-column", "'path'")
    def _(tmp):
        p = paths(tmp, 2)
        df = pd.DataFrame([p, p[::-1]], columns=["path", "path"])
        return b.fixture("pred").predict(df, column="path")

    @api("data-from_pandas-missing-text", "row 1", "nan", "None")
    def _(tmp):
        df = pd.DataFrame({"t": ["fine", None, "poor", "dull"], "y": [0, 1] * 2})
        return at.data.from_pandas(df, text="t", label="y")  # was: the text "nan"


# --------------------------------------------------------------------------- labels
def _label_cases(b) -> None:
    api = b.api

    def regression(tmp, y, **kw):
        data = at.data.from_arrays(b.images(), y)
        return b.refused_before_storage(tmp, lambda: b.search(data, task="regression", **kw))

    for cid, bad, token in (("1e300", 1e300, "1e+300"), ("minus-1e300", -1e300, "-1e+300"),
                            ("inf", np.inf, "inf"), ("1e20", 1e20, "1e+20")):
        def case(tmp, bad=bad):
            y = np.linspace(0, 1, 24)
            y[3] = bad  # was: NaN metrics only after the storage existed and a trial ran
            return regression(tmp, y)
        api(f"data-search-regression-target-{cid}", token, "item 3")(case)

    @api("data-search-regression-constant-target", "2.5")
    def _(tmp):
        return regression(tmp, np.full(24, 2.5))

    @api("data-search-multitask-constant-regression-column", "'r'", "3.0")
    def _(tmp):
        labels = pd.DataFrame({"c": [0, 1] * 12, "r": np.full(24, 3.0)})
        data = at.data.from_arrays(b.images(), labels)
        return b.refused_before_storage(
            tmp, lambda: b.search(data, task={"c": "classification", "r": "regression"}))

    @api("data-labels-bool-and-int-merged", "True", "1")
    def _(tmp):
        return at.data.from_arrays(b.images(), [True, 1, 0, False] * 6)

    @api("data-search-float-class-ids-beyond-2-53", "1e+20", "2e+20")
    def _(tmp):
        data = at.data.from_arrays(b.images(), [0.0, 1.0, 1e20, 2e20] * 6)
        return b.refused_before_storage(tmp, lambda: b.search(data))

    @api("data-from_hf-label-minus-1", "-1")
    def _(tmp):
        import datasets

        feats = datasets.Features({"text": datasets.Value("string"),
                                   "label": datasets.ClassLabel(names=["neg", "pos"])})
        ds = datasets.Dataset.from_dict({"text": ["a", "b", "c", "d"], "label": [0, 1, -1, 1]},
                                        features=feats)
        return at.data.from_hf(ds, input="text", label="label")  # was: -1 read as "pos"


# --------------------------------------------------------------------------- texts
def _text_cases(b) -> None:
    api = b.api

    @api("data-from_texts-lone-surrogate", "'\\ud800'", "Text 1")
    def _(tmp):
        return at.data.from_texts(["fine", "bad \ud800 x", "dull", "good"], [0, 1] * 2)

    @api("data-from_hf-text-none", "None", "NoneType", "Text 1")
    def _(tmp):
        import datasets

        ds = datasets.Dataset.from_dict({"text": ["fine", None, "dull", "good"],
                                         "label": [0, 1] * 2})
        return at.data.from_hf(ds, input="text", label="label")

    @api("data-search-unlabeled-text-lone-surrogate", "'\\udfff'", "Text 1")
    def _(tmp):
        return b.refused_before_storage(tmp, lambda: b.search(
            b.texts(), backbones=["tiny_bert"], unlabeled=["fine", "\udfff"],
            space=at.SearchSpace(epochs=1)))

    def differ(pair, tmp):
        a, c = pair
        return None if a != c else f"both fingerprints are {a}"

    @api("data-fingerprint-texts-with-nul", accepted=True, check_ok=differ)
    def _(tmp):
        return tuple(at.data.from_texts(t, [0, 1]).fingerprint()
                     for t in (["spam\0ham", "eggs"], ["spam", "ham\0eggs"]))

    @api("data-fingerprint-same-bytes-other-shape", accepted=True, check_ok=differ)
    def _(tmp):
        flat = np.arange(2 * 3 * 8 * 16, dtype=np.uint8)
        return tuple(at.data.from_arrays(flat.reshape(s), [0, 1]).fingerprint()
                     for s in ((2, 3, 8, 16), (2, 3, 16, 8)))
