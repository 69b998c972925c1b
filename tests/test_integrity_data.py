"""Data is never silently corrupted: pixel scales come from the dtype (and a file's bit
depth), never from the values; what cannot be read as data is refused, naming the value and
what is accepted, before any storage exists (issue 21)."""

import os
import re
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import autotransfer as at
from autotransfer.data._sources import Texts
from autotransfer.inputs import unlabeled

ACCEPTED = re.escape("Accepted: uint8 0-255, uint16 0-65535, float in [0, 1]")


def _search(data, tmp_path, **kw):
    kw = {"task": "classification", **kw}
    return at.search(data, backbones=["tiny_cnn"], n_trials=1, progress=False,
                     space=at.SearchSpace(epochs=1, image_size=16),
                     storage=str(tmp_path / "s.db"), **kw)


@pytest.fixture(scope="module")
def model():
    from autotransfer import plugins
    from autotransfer.training.model import build_model

    plugins.reset(autoload=False)  # module fixtures set up before the per-test plugins do
    for name in ("autotransfer_plugins.heads", "autotransfer_plugins.techniques",
                 "autotransfer.testing"):
        at.register_plugin(name)
    x = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    ds = at.data.from_arrays(x, [0, 1] * 4)
    r = at.run_trial(at.Strategy("tiny_cnn", epochs=1, image_size=16), ds, ds, patience=None)
    net = build_model(r.strategy, r.task, r.info)
    net.load_state_dict(r.state_dict)
    return at.Predictor(net, r.strategy, r.task, r.info, r.preprocessing)


# --- in-memory arrays: the dtype says the scale ---

def test_wide_integers_beyond_8_bits_are_refused_not_clamped():
    x = np.random.default_rng(0).integers(0, 4096, (4, 16, 16)).astype(np.int32)
    x[0, 0, :2] = 0, 4095  # a 12-bit scan: clamping made 94% of its pixels 255
    with pytest.raises(at.DataError, match=r"int32 images are read as 8-bit \(0-255\), but hold "
                                           r"values in \[0, 4095\]; cast them to uint16"):
        at.data.from_arrays(x, [0, 1, 0, 1])
    small = x % 256  # int32 holding 0-255: the same images as uint8
    assert torch.equal(at.data.from_arrays(small, [0, 1, 0, 1]).inputs,
                       at.data.from_arrays(small.astype(np.uint8), [0, 1, 0, 1]).inputs)


def test_mean_std_normalised_floats_are_refused_everywhere(model):
    x = np.random.default_rng(0).normal(0, 1.3, (4, 3, 16, 16)).clip(-4, 3.9).astype(np.float32)
    said = r"float images must lie in \[0, 1\]; got values in \[-4, 3\.\d+\].*before mean/std"
    with pytest.raises(at.DataError, match=said):
        at.data.from_arrays(x, [0, 1, 0, 1])
    with pytest.raises(at.DataError, match=said):
        model.predict(x)
    with pytest.raises(at.DataError, match=said):
        model.predict(torch.from_numpy(x[0]))
    with pytest.raises(at.DataError, match="unlabeled: .*" + said):
        unlabeled(x, "image")
    with pytest.raises(at.DataError, match="item 0: " + said):
        at.data.from_torch([(torch.from_numpy(x[i]), i % 2) for i in range(4)])


def test_one_pixel_over_1_does_not_rescale_the_batch():
    x = np.random.default_rng(0).random((4, 3, 16, 16)).astype(np.float32)
    x[2, 0, 3, 3] = 1.01
    with pytest.raises(at.DataError, match=r"got values in \[0\.\d+, 1\.01\].*clip them to "
                                           r"\[0, 1\].*" + ACCEPTED):
        at.data.from_arrays(x, [0, 1, 0, 1])
    x[2, 0, 3, 3] = 1.0005  # rounding noise within half an 8-bit step is read as 1
    got = at.data.from_arrays(x, [0, 1, 0, 1]).inputs
    assert got[2, 0, 3, 3] == 255
    assert torch.equal(got[0], (torch.from_numpy(x[0]) * 255).round().byte())


def test_uint16_and_bool_arrays_use_their_whole_range():
    x = (np.arange(4 * 8 * 8).reshape(4, 8, 8) % 256 * 257).astype(np.uint16)
    expect = torch.from_numpy(x // 257).to(torch.uint8)
    assert torch.equal(at.data.from_arrays(x, [0, 1, 0, 1]).inputs[:, 0], expect)
    assert torch.equal(at.data.from_arrays(torch.from_numpy(x), [0, 1, 0, 1]).inputs[:, 0], expect)
    mask = np.eye(8, dtype=bool)[None].repeat(2, 0)
    assert set(at.data.from_arrays(mask, [0, 1]).inputs.unique().tolist()) == {0, 255}


def test_non_image_dtypes_are_refused():
    o = np.empty(2, dtype=object)
    o[0], o[1] = np.zeros((8, 8)), np.zeros((8, 9))
    with pytest.raises(at.DataError, match="dtype object .*give a list"):
        at.data.from_arrays(o, [0, 1])
    with pytest.raises(at.DataError, match="DataFrame with columns"):
        at.data.from_arrays(pd.DataFrame(np.zeros((2, 2)), columns=["a", "a"]), [0, 1])


# --- files: the declared bit depth says the scale ---

def test_16_bit_files_are_scaled_alike_in_every_image(tmp_path):
    for cls, top in (("a", 255), ("b", 65535)):  # scaling per image made 200 -> 200 and -> 1
        (tmp_path / cls).mkdir()
        a = np.full((8, 8), 200, np.uint16)
        a[0, 0] = top
        Image.fromarray(a).save(tmp_path / cls / "x.png")
        Image.fromarray(a).save(tmp_path / cls / "x.tif")
    ds = at.data.from_folder(tmp_path)
    got = {os.path.basename(os.path.dirname(p)) + p[-4:]: np.asarray(ds[i][0])[1, 1]
           for i, p in enumerate(ds.source.paths)}
    assert len(got) == 4 and all((v == 1).all() for v in got.values()), got  # 200/257 -> 1
    pgm = tmp_path / "x.pgm"  # a 16-bit PGM: PIL widens it to mode "I", still 0-65535
    pgm.write_bytes(b"P5 8 8 65535\n" + np.full(64, 200, ">u2").tobytes())
    assert (np.asarray(at.data.from_arrays([Image.open(pgm)], [0])[0][0]) == 1).all()


def test_float_and_32_bit_files_outside_their_range_are_refused(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
    Image.fromarray(np.full((8, 8), 2.5, np.float32)).save(tmp_path / "a" / "f.tif")
    Image.fromarray(np.full((8, 8), 4095, np.int32)).save(tmp_path / "b" / "i.tif")
    ds = at.data.from_folder(tmp_path)
    for i, said in ((0, r"f.tif': float images must lie in \[0, 1\]; got values in \[2.5, 2.5\]"),
                    (1, r"i.tif': int32 images are read as 8-bit .*\[4095, 4095\]")):
        with pytest.raises(at.DataError, match=f"^image '.*{said}.*{ACCEPTED}"):
            ds[i]


def _bomb(path, side=20000):
    """A valid 1-bit PNG of side x side pixels (400 megapixels), about 50 kB."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z = zlib.compressobj(9)
    row = b"\0" * (1 + side // 8)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_named_with_its_size_and_the_limit(model, tmp_path):
    (tmp_path / "pics" / "b").mkdir(parents=True)
    bomb = tmp_path / "pics" / "bomb.png"
    _bomb(bomb)
    Image.new("RGB", (16, 16)).save(tmp_path / "pics" / "b" / "ok.png")
    said = r"Image '.*bomb.png' is too large to decode: .*400000000 pixels.* limit is 178,956,970"
    for inputs in (bomb, str(tmp_path / "pics"), [bomb, bomb]):
        with pytest.raises(at.DataError, match=said):
            model.predict(inputs)
    os.replace(bomb, tmp_path / "pics" / "b" / "bomb.png")
    with pytest.raises(at.DataError, match=said):
        at.data.from_folder(tmp_path / "pics")


# --- tables and CSV files ---

@pytest.mark.parametrize("content,said", [
    (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "is binary"),
    (b"\0" * 4096, r"is binary \(a NUL byte at offset 0\)"),
    ("path,y\ncaf\xe9,1\n".encode("latin-1"), "is not UTF-8 text"),
    (b"", "EmptyDataError"),
])
def test_csv_files_that_are_not_text_are_refused(tmp_path, content, said):
    (tmp_path / "d.csv").write_bytes(content)
    with pytest.raises(at.DataError, match=f"'.*d.csv'.*{said}.*give the path of a UTF-8 CSV"):
        at.data.from_csv(tmp_path / "d.csv", text="path", label="y")


def test_a_csv_path_that_is_a_device_or_a_fifo_is_refused_without_reading(tmp_path):
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.csv")  # opening it would wait for a writer forever
    for name, kind in (("zero.csv", r"\(a link to '/dev/zero'\) is not a regular file but a "
                                    r"character device"), ("fifo.csv", "FIFO")):
        with pytest.raises(at.DataError, match=f"{name}'.*{kind}"):
            at.data.from_csv(tmp_path / name, text="t", label="y")


def test_duplicate_column_names_are_refused(model, tmp_path):
    df = pd.DataFrame([["a", 0, 1], ["b", 1, 0]], columns=["t", "y", "y"])
    said = r"Column 'y' occurs 2 times in the .*; column names must be unique"
    with pytest.raises(at.DataError, match=said):
        at.data.from_pandas(df, text="t", label="y")  # was: a 2-D label of both columns
    with pytest.raises(at.DataError, match=said):
        at.data.from_arrays(["a", "b"], df[["y"]])
    paths = pd.DataFrame([[str(tmp_path / "a.png")] * 2], columns=["y", "y"])
    with pytest.raises(at.DataError, match=said):
        model.predict(paths, column="y")


def test_missing_texts_are_not_read_as_the_word_nan():
    df = pd.DataFrame({"t": ["fine", None, "poor"], "y": [0, 1, 0]})
    with pytest.raises(at.DataError, match=r"Text column 't' has 1 missing value\(s\), e.g. row 1"):
        at.data.from_pandas(df, text="t", label="y")


# --- labels and texts: refused before any storage exists ---

@pytest.mark.parametrize("bad,said", [
    (1e300, r"regression target 1e\+300 \(item 3\) is not a finite number within \+-1e\+15; "
            r"targets must be finite numbers"),
    (-1e300, r"regression target -1e\+300 \(item 3\)"),
    (np.inf, r"regression target inf \(item 3\) is not a finite number"),
])
def test_regression_targets_beyond_float32_are_refused_up_front(tmp_path, bad, said):
    x = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    y = np.linspace(0, 1, 16)
    y[3] = bad
    with pytest.raises(at.DataError, match=said):
        _search(at.data.from_arrays(x, y), tmp_path, task="regression")
    assert not (tmp_path / "s.db").exists()


def test_a_constant_regression_target_is_refused(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(at.DataError, match=r"all 12 regression targets are 2\.5: a constant "
                                           r"cannot be learned and R\^2 is undefined"):
        _search(at.data.from_arrays(x, np.full(16, 2.5)), tmp_path, task="regression")
    labels = pd.DataFrame({"c": [0, 1] * 8, "r": np.full(16, 3.0)})
    with pytest.raises(at.DataError, match=r"regression targets in column 'r' are 3\.0"):
        _search(at.data.from_arrays(x, labels), tmp_path,
                task={"c": "classification", "r": "regression"})
    assert not (tmp_path / "s.db").exists()


def test_bool_and_int_labels_are_not_merged():
    for labels in ([True, 1, 0, False], pd.Series([np.True_, 1, 0, np.False_], dtype=object)):
        with pytest.raises(at.DataError, match=r"mix kinds \(bool like (np\.)?True_?, number "
                                               r"like 1\)"):
            at.data.from_arrays(np.zeros((4, 8, 8), np.uint8), labels)
    assert at.data.from_arrays(np.zeros((4, 8, 8), np.uint8), [True, False] * 2).classes \
        == [False, True]


def test_float_class_ids_beyond_2_53_are_refused(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    y = np.asarray([0.0, 1.0, 1e20, 2e20] * 4)  # 1e20 and 2e20 were both cast to -2**63
    with pytest.raises(at.DataError, match=r"class id [12]e\+20 \(item \d+\) is beyond \+-2\*\*53"):
        _search(at.data.from_arrays(x, y), tmp_path)
    assert not (tmp_path / "s.db").exists()


def test_a_lone_surrogate_is_refused_naming_the_item():
    said = r"Text 1 holds '\\ud800' at character 4, a lone surrogate"
    with pytest.raises(at.DataError, match=said):
        at.data.from_texts(["fine", "bad \ud800 x"], [0, 1])
    with pytest.raises(at.DataError, match=said):
        texts = pd.Series(["fine", "bad \ud800 x"], dtype=object)  # pyarrow refuses it
        at.data.from_pandas(pd.DataFrame({"t": texts, "y": [0, 1]}), text="t", label="y")
    with pytest.raises(at.DataError, match="Text 1 is NoneType"):
        Texts(["fine", None])


def test_hugging_face_unlabelled_rows_are_not_read_as_the_last_class():
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["neg", "pos"])})
    ds = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, -1]}, features=feats)
    with pytest.raises(at.DataError, match=r"holds -1 at row 2 .*must be 0-1"):
        at.data.from_hf(ds, input="text", label="label")


# --- fingerprints: two data sets never share feature-cache entries ---

def test_fingerprints_of_different_data_differ(tmp_path):
    def fp(x):
        return at.data.from_arrays(x, [0, 1]).fingerprint()

    assert fp(["spam\0ham", "eggs"]) != fp(["spam", "ham\0eggs"])
    flat = np.arange(2 * 3 * 4 * 8, dtype=np.uint8)  # the same bytes, another shape
    assert fp(flat.reshape(2, 3, 4, 8)) != fp(flat.reshape(2, 3, 8, 4))
    for k, d in enumerate(("one", "two")):  # the same relative path, size and mtime
        for c, v in (("a", 10), ("b", 20)):
            (tmp_path / d / c).mkdir(parents=True)
            Image.new("RGB", (8, 8), (v + k, v, v)).save(tmp_path / d / c / "x.png")
            os.utime(tmp_path / d / c / "x.png", ns=(10**18, 10**18))
    assert (tmp_path / "one/a/x.png").stat().st_size == (tmp_path / "two/a/x.png").stat().st_size
    here = os.getcwd()
    prints = []
    try:
        for d in ("one", "two"):
            os.chdir(tmp_path / d)
            prints.append(at.data.from_folder(".").fingerprint())
    finally:
        os.chdir(here)
    assert prints[0] != prints[1]


def test_a_dataset_of_tensors_takes_only_uint8_images():
    with pytest.raises(at.DataError, match=r"must be uint8 \(3, H, W\) each, but got "
                                           r"torch.float32 \(3, 8, 8\); use at.data.from_arrays"):
        at.data.Dataset([torch.rand(3, 8, 8)] * 2, [0, 1])  # was: a raw error when read
