"""Data adapters: every image layout, folders, pandas text, splits, and bad input."""

import numpy as np
import pandas as pd
import pytest
import torch

import autotransfer as at


def test_nhwc_uint8_and_nchw_float_give_the_same_images():
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (5, 9, 7, 3), dtype=np.uint8)
    a = at.data.from_arrays(nhwc, [0, 1, 0, 1, 0])
    b = at.data.from_arrays(torch.from_numpy(nhwc).permute(0, 3, 1, 2).float() / 255, np.arange(5))
    assert a.inputs.shape == (5, 3, 9, 7) and a.inputs.dtype == torch.uint8
    assert torch.equal(a.inputs, b.inputs)


def test_grayscale_becomes_three_channels():
    x = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    ds = at.data.from_arrays(x, [0, 1])
    assert ds.inputs.shape == (2, 3, 4, 4)
    assert torch.equal(ds.inputs[:, 0], ds.inputs[:, 2])
    assert torch.equal(ds.inputs[:, 0], torch.from_numpy(x))


def test_strings_make_a_text_dataset():
    ds = at.data.from_arrays(["good", "bad"], ["pos", "neg"])
    assert ds.modality == "text" and ds.inputs == ["good", "bad"]


@pytest.mark.parametrize("x,match", [
    (np.zeros((0, 3, 8, 8), np.uint8), "empty"),
    (np.zeros((4, 8), np.uint8), r"got shape \(4, 8\)"),
    (np.zeros((4, 5, 8, 8), np.uint8), r"1, 3 or 4 channels, but got shape \(4, 5, 8, 8\)"),
])
def test_bad_image_arrays(x, match):
    with pytest.raises(at.DataError, match=match):
        at.data.from_arrays(x, np.zeros(len(x)))


def test_inputs_and_labels_must_match():
    with pytest.raises(at.DataError, match="3 inputs but 2 labels"):
        at.data.from_arrays(np.zeros((3, 8, 8), np.uint8), [0, 1])


def test_from_folder_reads_one_class_per_subfolder(tmp_path):
    from PIL import Image

    for cls, color in (("cat", 200), ("dog", 30)):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (10 + i, 8), (color, color, color)).save(tmp_path / cls / f"{i}.png")
    ds = at.data.from_folder(tmp_path)
    assert ds.modality == "image" and len(ds) == 6
    assert sorted(ds.labels.tolist()) == ["cat"] * 3 + ["dog"] * 3
    pre = at.get_backbone("tiny_cnn").preprocessing(image_size=16)
    x = pre.prepare(ds.inputs)  # varied sizes are resized to one
    assert x.shape == (6, 3, 16, 16)
    assert x[ds.labels == "cat"].float().mean() > 150 > x[ds.labels == "dog"].float().mean()


def test_from_folder_errors(tmp_path):
    with pytest.raises(at.DataError, match="does not exist"):
        at.data.from_folder(tmp_path / "missing")
    with pytest.raises(at.DataError, match="no class subfolders"):
        at.data.from_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.csv").write_text("x")
    with pytest.raises(at.DataError, match="No image files"):
        at.data.from_folder(tmp_path)


def test_from_pandas_text_and_missing_column():
    df = pd.DataFrame({"review": ["fine", "poor", "great"], "stars": [4, 1, 5]})
    ds = at.data.from_pandas(df, text="review", label="stars")
    assert ds.modality == "text" and ds.labels.tolist() == [4, 1, 5]
    with pytest.raises(at.DataError, match=r"Column 'label' is not in the data frame; columns: \['review', 'stars'\]"):
        at.data.from_pandas(df, text="review", label="label")


def test_split_is_seeded_and_stratified():
    y = np.array([0] * 80 + [1] * 20)
    ds = at.data.from_arrays(np.zeros((100, 4, 4), np.uint8), y)
    tr, va = ds.split(0.25, seed=3)
    assert len(tr) == 75 and len(va) == 25
    assert (va.labels == 1).sum() == 5  # class balance kept
    tr2, va2 = ds.split(0.25, seed=3)
    assert np.array_equal(va.labels, va2.labels) and torch.equal(va.inputs, va2.inputs)


def test_digits_demo():
    train, valid = at.data.demo("digits", image_size=32, per_class=20)
    assert len(train) == 200 and len(valid) == 1597
    assert train.inputs.shape == (200, 3, 32, 32)
    assert np.bincount(train.labels).tolist() == [20] * 10
    with pytest.raises(at.UnknownNameError, match="demo data set 'mnist'"):
        at.data.demo("mnist")


def test_fingerprint_follows_the_inputs():
    a = at.data.from_arrays(np.zeros((3, 4, 4), np.uint8), [0, 1, 0])
    b = at.data.from_arrays(np.ones((3, 4, 4), np.uint8), [0, 1, 0])
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == at.data.from_arrays(np.zeros((3, 4, 4), np.uint8), [1, 1, 0]).fingerprint()
