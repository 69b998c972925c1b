"""Predictions on anything a user holds: one input gives one answer, many give one each."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

import autotransfer as at
from autotransfer import plugins
from autotransfer.training.model import build_model

CLASSES = ["cat", "dog", "owl"]
COLORS = {"cat": (230, 180, 60), "dog": (20, 40, 200), "owl": (60, 200, 60)}


def _photo(w, h, cls, seed):
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 60, (h, w, 3), dtype=np.uint8))
    ImageDraw.Draw(im).ellipse((w // 5, h // 5, 4 * w // 5, 4 * h // 5), fill=COLORS[cls])
    return im


def _predictor(result):
    model = build_model(result.strategy, result.task, result.info)
    model.load_state_dict(result.state_dict)
    return at.Predictor(model, result.strategy, result.task, result.info, result.preprocessing)


def _train(strategy, train, valid):
    plugins.reset(autoload=False)  # module fixtures set up before the per-test plugins do
    for name in ("autotransfer_plugins.heads", "autotransfer_plugins.techniques",
                 "autotransfer.testing"):
        at.register_plugin(name)
    return _predictor(at.run_trial(strategy, train, valid, patience=None))


@pytest.fixture(scope="module")
def image_model():
    labels = [CLASSES[i % 3] for i in range(24)]
    images = [np.asarray(_photo(40, 30, c, i)) for i, c in enumerate(labels)]
    train, valid = at.data.from_arrays(images, labels).split(0.5, seed=0)
    return _train(at.Strategy("tiny_cnn", epochs=8, image_size=16, lr=1e-2, batch_size=4), train, valid)


@pytest.fixture(scope="module")
def text_model():
    texts = ["awful film", "dull and slow", "a waste", "lovely", "great fun", "moving story"]
    ds = at.data.from_arrays(texts, ["neg"] * 3 + ["pos"] * 3)
    return _train(at.Strategy("tiny_bert", epochs=1, batch_size=4), ds, ds)


@pytest.fixture(scope="module")
def photo():
    return _photo(41, 27, "dog", 7)  # 41 wide, 27 tall: not 27 answers


def _proba(model, x, **kw):
    return model.predict_proba(x, as_pandas=False, **kw)


# --- one input, one answer ---

def test_one_image_in_any_form_gives_one_answer(image_model, photo, tmp_path):
    hwc = np.asarray(photo)
    png = tmp_path / "photo.png"
    photo.save(png)
    want = _proba(image_model, photo)
    assert want.shape == (3,)
    forms = {
        "HWC array": hwc, "CHW array": hwc.transpose(2, 0, 1),
        "CHW float tensor": torch.from_numpy(hwc).permute(2, 0, 1).float() / 255,
        "path str": str(png), "Path": png,
    }
    for what, x in forms.items():
        pred = image_model.predict(x)
        assert np.ndim(pred) == 0 and pred in CLASSES, what  # a class label, not per-row answers
        np.testing.assert_allclose(_proba(image_model, x), want, atol=1e-6, err_msg=what)
    assert image_model.predict(photo) == CLASSES[int(want.argmax())]


def test_a_grayscale_image_gives_one_answer(image_model, photo):
    gray = np.asarray(photo.convert("L"))
    assert gray.shape == (27, 41)
    pred = image_model.predict(gray)
    assert np.ndim(pred) == 0 and pred in CLASSES
    np.testing.assert_allclose(_proba(image_model, gray),
                               _proba(image_model, np.stack([gray] * 3, -1)), atol=1e-6)


def test_many_images_give_one_answer_each(image_model, photo, tmp_path):
    varied = [photo, np.asarray(_photo(30, 40, "cat", 1)),
              np.asarray(_photo(25, 20, "owl", 2)).transpose(2, 0, 1),
              np.asarray(_photo(33, 33, "dog", 3).convert("L"))]
    want = np.stack([_proba(image_model, x) for x in varied])
    pred = image_model.predict(varied)
    assert isinstance(pred, np.ndarray) and pred.shape == (4,)
    assert pred.tolist() == [CLASSES[i] for i in want.argmax(1)]
    np.testing.assert_allclose(_proba(image_model, varied), want, atol=1e-6)
    paths = []
    for i, x in enumerate(varied[:2]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.asarray(x)).save(paths[-1])
    assert image_model.predict([str(paths[0]), paths[1]]).tolist() == pred[:2].tolist()


def test_a_batch_array_gives_one_answer_per_image(image_model):
    nhwc = np.stack([np.asarray(_photo(41, 27, c, i)) for i, c in enumerate(CLASSES * 2)])
    want = np.stack([_proba(image_model, x) for x in nhwc])
    for what, batch in {"NHWC": nhwc, "NCHW": nhwc.transpose(0, 3, 1, 2),
                        "float NCHW": torch.from_numpy(nhwc).permute(0, 3, 1, 2) / 255.0}.items():
        np.testing.assert_allclose(_proba(image_model, batch, batch_size=4), want, atol=1e-6,
                                   err_msg=what)
    pred = image_model.predict(nhwc, batch_size=2)
    assert pred.shape == (6,) and pred.tolist() == [CLASSES[i] for i in want.argmax(1)]
    gray = nhwc[..., 0]  # (N, H, W): five or more grayscale images
    assert image_model.predict(gray[:5]).shape == (5,)


def test_a_folder_gives_one_answer_per_file(image_model, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, c in enumerate(CLASSES):
        _photo(30 + i, 28, c, i).save(flat / f"{c}.png")
    (flat / "notes.txt").write_text("not an image")
    files = sorted(flat.glob("*.png"))
    want = [image_model.predict(f) for f in files]
    assert image_model.predict(flat).tolist() == want
    assert image_model.predict(str(flat)).tolist() == want
    nested = tmp_path / "nested"  # the training layout: class subfolders
    for f in files:
        (nested / f.stem).mkdir(parents=True)
        (nested / f.stem / "a.png").write_bytes(f.read_bytes())
    assert image_model.predict(nested).tolist() == want  # sorted by path
    (tmp_path / "empty").mkdir()
    with pytest.raises(at.DataError, match="No image files .* under '.*empty'"):
        image_model.predict(tmp_path / "empty")


def test_a_dataframe_column_of_paths(image_model, tmp_path):
    paths = []
    for i, c in enumerate(CLASSES):
        paths.append(str(tmp_path / f"{c}.png"))
        _photo(40, 30, c, i).save(paths[-1])
    df = pd.DataFrame({"file": paths, "note": ["x", "y", "z"]}, index=["r1", "r2", "r3"])
    want = image_model.predict(paths)
    assert image_model.predict(df, column="file").tolist() == want.tolist()
    assert image_model.predict(df[["file"]]).tolist() == want.tolist()  # one column: no column=
    assert image_model.predict(df["file"]).tolist() == want.tolist()  # a Series
    proba = image_model.predict_proba(df, column="file")
    assert proba.index.tolist() == ["r1", "r2", "r3"] and proba.columns.tolist() == CLASSES
    with pytest.raises(at.DataError, match=r"Pass column= to say which DataFrame column holds the inputs; columns: \['file', 'note'\]"):
        image_model.predict(df)
    with pytest.raises(at.DataError, match=r"Column 'path' is not in the DataFrame; columns: \['file', 'note'\]"):
        image_model.predict(df, column="path")


def test_a_dataset_gives_one_answer_per_item(image_model):
    ds = at.data.from_arrays([np.asarray(_photo(40, 30, c, 50 + i)) for i, c in enumerate(CLASSES)],
                             CLASSES)
    assert image_model.predict(ds).tolist() == image_model.predict(list(ds.inputs)).tolist()
    with pytest.raises(at.ModalityError, match="takes image inputs, but the dataset holds text"):
        image_model.predict(at.data.from_arrays(["a", "b"], [0, 1]))


# --- rows tied to their inputs ---

def test_predictions_on_files_are_indexed_by_their_paths(image_model, tmp_path):
    folder = tmp_path / "new_photos"
    (folder / "b").mkdir(parents=True)
    for i, (name, c) in enumerate([("z.png", "cat"), ("a.png", "owl"), ("b/m.png", "dog")]):
        _photo(30 + i, 28, c, i).save(folder / name)
    files = sorted(str(f) for f in folder.rglob("*.png"))
    one_by_one = [image_model.predict(f) for f in files]
    pred = image_model.predict(folder)
    assert isinstance(pred, pd.Series) and pred.name == "prediction"
    assert pred.index.name == "path" and pred.index.tolist() == files
    assert pred.to_dict() == dict(zip(files, one_by_one))  # each row is its file's answer
    proba = image_model.predict_proba(str(folder))
    assert proba.index.tolist() == files and proba.columns.tolist() == CLASSES
    assert proba.idxmax(axis=1).to_dict() == pred.to_dict()
    given = [Path(files[2]), files[0]]  # a list keeps its order; Path objects become strings
    listed = image_model.predict(given)
    assert listed.index.tolist() == [files[2], files[0]]
    assert listed.tolist() == [one_by_one[2], one_by_one[0]]
    assert image_model.predict_proba(given).index.tolist() == [files[2], files[0]]
    bare = image_model.predict(folder, as_pandas=False)
    assert isinstance(bare, np.ndarray) and bare.tolist() == one_by_one
    assert image_model.predict(files[1]) == one_by_one[1]  # one file: one answer, as before


def test_predictions_on_a_dataframe_or_series_keep_its_index(image_model, text_model, tmp_path):
    paths = []
    for i, c in enumerate(CLASSES):
        paths.append(str(tmp_path / f"{c}.png"))
        _photo(40, 30, c, i).save(paths[-1])
    df = pd.DataFrame({"file": paths, "id": [7, 8, 9]}, index=pd.Index([30, 10, 20], name="row"))
    want = image_model.predict(paths).tolist()
    pred = image_model.predict(df, column="file")
    assert pred.index.tolist() == [30, 10, 20] and pred.index.name == "row"
    assert pred.tolist() == want
    series = df.set_index("id")["file"]
    assert image_model.predict(series).index.tolist() == [7, 8, 9]
    assert image_model.predict_proba(series).index.tolist() == [7, 8, 9]
    reviews = pd.DataFrame({"review": ["great fun", "a waste"]}, index=["r1", "r2"])
    texts = text_model.predict(reviews)
    assert texts.index.tolist() == ["r1", "r2"]
    assert texts.tolist() == text_model.predict(["great fun", "a waste"]).tolist()
    assert text_model.predict_proba(reviews).index.tolist() == ["r1", "r2"]


def test_inputs_without_names_give_the_array_and_numbered_rows(image_model, text_model, photo):
    batch = np.stack([np.asarray(_photo(41, 27, c, i)) for i, c in enumerate(CLASSES)])
    pred = image_model.predict(batch)
    assert isinstance(pred, np.ndarray) and pred.shape == (3,)
    assert isinstance(image_model.predict([photo, batch[0]]), np.ndarray)
    assert isinstance(text_model.predict(["great fun", "a waste"]), np.ndarray)
    proba = image_model.predict_proba(batch)
    assert isinstance(proba.index, pd.RangeIndex) and proba.index.tolist() == [0, 1, 2]


# --- probabilities ---

def test_predict_proba_has_a_column_per_class(image_model, photo):
    batch = [photo, np.asarray(_photo(40, 30, "cat", 3)), np.asarray(_photo(40, 30, "owl", 4))]
    proba = image_model.predict_proba(batch)
    assert isinstance(proba, pd.DataFrame) and proba.columns.tolist() == CLASSES
    assert proba.shape == (3, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert proba.idxmax(axis=1).tolist() == image_model.predict(batch).tolist()
    one = image_model.predict_proba(photo)
    assert isinstance(one, pd.Series) and one.index.tolist() == CLASSES
    assert one.sum() == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(one.to_numpy(), proba.iloc[0].to_numpy(), atol=1e-6)
    arr = image_model.predict_proba(batch, as_pandas=False)
    assert isinstance(arr, np.ndarray) and arr.shape == (3, 3)
    np.testing.assert_allclose(arr, proba.to_numpy())


def test_the_model_learned_the_classes(image_model):
    fresh = [_photo(40, 30, c, 100 + i) for i, c in enumerate(CLASSES * 3)]
    assert np.mean(image_model.predict(fresh) == np.array(CLASSES * 3)) >= 2 / 3


# --- text ---

def test_text_one_string_one_answer_many_one_each(text_model):
    pred = text_model.predict("great fun")
    assert np.ndim(pred) == 0 and pred in ("neg", "pos")
    texts = ["great fun", "a waste", "dull and slow but moving"]
    many = text_model.predict(texts)
    assert many.shape == (3,) and many.tolist() == [text_model.predict(t) for t in texts]
    proba = text_model.predict_proba(texts)
    assert proba.columns.tolist() == ["neg", "pos"]
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)
    df = pd.DataFrame({"review": texts})
    assert text_model.predict(df).tolist() == many.tolist()
    one = text_model.predict_proba("great fun")
    assert isinstance(one, pd.Series) and one.index.tolist() == ["neg", "pos"]


# --- the wrong inputs ---

def test_inputs_of_the_wrong_modality_say_what_is_accepted(image_model, text_model, photo):
    with pytest.raises(at.ModalityError, match="takes text: a string or a list of strings, but got an? Image"):
        text_model.predict(photo)
    with pytest.raises(at.ModalityError, match=r"takes text: .*but got an? ndarray of shape \(27, 41, 3\)"):
        text_model.predict(np.asarray(photo))
    with pytest.raises(at.ModalityError, match="takes images, but got the string 'a lovely day', which is not an image file or folder"):
        image_model.predict("a lovely day")
    with pytest.raises(at.ModalityError, match=r"takes images; 2 of the given strings are not image files, e.g. \['lovely', 'awful'\]"):
        image_model.predict(["lovely", "awful"])
    with pytest.raises(at.ModalityError, match=r"takes images \(a PIL image, an array, a path, a folder, a list of them, a DataFrame column or a Dataset\), but got an? int"):
        image_model.predict(3)
    with pytest.raises(at.ModalityError, match="takes image inputs, but the dataset holds text"):
        image_model.predict(at.data.from_arrays(["x", "y"], [0, 1]))
    with pytest.raises(at.ModalityError, match="takes text inputs, but the dataset holds image"):
        text_model.predict(at.data.from_arrays(np.zeros((2, 8, 8), np.uint8), [0, 1]))


def test_bad_image_inputs_are_data_errors(image_model, tmp_path):
    with pytest.raises(at.DataError, match="Nothing to predict: the inputs are empty"):
        image_model.predict([])
    with pytest.raises(at.DataError, match="Nothing to predict"):
        image_model.predict(np.zeros((0, 8, 8, 3), np.uint8))
    nan = np.full((27, 41, 3), 0.5, np.float32)
    nan[3, 4, 0] = np.nan
    with pytest.raises(at.DataError, match=r"1 pixel value\(s\) are NaN or infinite"):
        image_model.predict(nan)
    with pytest.raises(at.DataError, match=r"An image array must be \(H, W\), \(C, H, W\), \(H, W, C\) or a batch \(N, \.\.\.\) of those, but got shape \(2, 3, 4, 5, 6\)"):
        image_model.predict(np.zeros((2, 3, 4, 5, 6), np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(at.DataError, match=r"Cannot read image '.*bad.png'"):
        image_model.predict(bad)


@pytest.mark.parametrize("channels", [2, 5])
def test_one_image_with_2_or_5_channels_is_rejected(image_model, channels):
    with pytest.raises(at.DataError, match="1, 3 or 4 channels"):
        image_model.predict(np.zeros((27, 41, channels), np.uint8))


def test_a_short_pil_image_predicts_like_its_file(image_model, tmp_path):
    strip = _photo(41, 3, "cat", 0)
    strip.save(tmp_path / "strip.png")
    np.testing.assert_allclose(_proba(image_model, strip),
                               _proba(image_model, tmp_path / "strip.png"), atol=1e-6)


def test_a_list_mixing_images_and_paths_gives_one_answer_each(image_model, photo, tmp_path):
    photo.save(tmp_path / "p.png")
    assert image_model.predict([photo, tmp_path / "p.png"]).shape == (2,)


# --- saved and reloaded ---

@pytest.mark.parametrize("which", ["image", "text"])
def test_a_saved_model_predicts_the_same_after_loading(which, image_model, text_model, photo,
                                                       tmp_path):
    model = image_model if which == "image" else text_model
    inputs = [photo, np.asarray(_photo(30, 40, "owl", 9))] if which == "image" \
        else ["great fun", "a waste of time"]
    path = model.save(tmp_path / "sub" / "model.safetensors")
    again = at.load(path)
    assert again.strategy == model.strategy and again.classes == model.classes
    assert again.preprocessing == model.preprocessing
    assert again.predict(inputs).tolist() == model.predict(inputs).tolist()
    np.testing.assert_allclose(_proba(again, inputs), _proba(model, inputs), atol=1e-6)


def test_loading_something_that_is_not_a_model(image_model, tmp_path):
    with pytest.raises(at.StorageError, match="Model file '.*missing.safetensors' does not exist"):
        at.load(tmp_path / "missing.safetensors")
    (tmp_path / "notes.txt").write_text("hello, not a model")
    with pytest.raises(at.StorageError, match=r"'.*notes.txt' is not a readable model file \(autotransfer-model/2\)"):
        at.load(tmp_path / "notes.txt")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, tmp_path / "plain.safetensors")
    with pytest.raises(at.StorageError, match="a safetensors file but not an autotransfer model file"):
        at.load(tmp_path / "plain.safetensors")
    whole = image_model.save(tmp_path / "whole.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(at.StorageError, match="not a readable model file.*truncated"):
        at.load(tmp_path / "cut.safetensors")


def test_an_old_pickle_model_file_is_refused_with_the_reason(tmp_path):
    torch.save({"format": "autotransfer-model/1", "state_dict": {}}, tmp_path / "old.pt")
    with pytest.raises(at.StorageError, match=r"'.*old.pt' is a pickle .*autotransfer 0.1.*not loaded, since loading a pickle can run code"):
        at.load(tmp_path / "old.pt")


class _Payload:
    """A pickle that, when loaded, writes a file: what a received model file could do."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_crafted_model_file_runs_no_code_on_load(how, tmp_path):
    import pickle

    target = tmp_path / "written_by_the_payload.txt"
    path = tmp_path / "model.bin"  # (torch.load reads a .safetensors name as safetensors)
    if how == "torch.save":
        torch.save({"format": "autotransfer-model/1", "payload": _Payload(target)}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload(target)))
    with pytest.raises(at.StorageError, match="is a pickle"):
        at.load(path)
    assert not target.exists()
    # The payload is real: an unpickling load (what 0.1's format invited) writes the file.
    if how == "pickle":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert target.read_text() == "pwned"


def test_a_model_file_is_plain_safetensors_with_a_json_config(image_model, tmp_path):
    import json

    from safetensors import safe_open

    path = image_model.save(tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    config = json.loads(meta["config"])
    assert meta["format"] == "autotransfer-model/2"
    assert config["strategy"]["backbone"] == image_model.strategy.backbone
    assert config["info"]["classes"] == image_model.classes
    assert keys == set(image_model.model.state_dict())


