"""The lazy data layer: every source, real image files, bad input, and the pipeline it feeds."""

import math
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

import autotransfer as at
from autotransfer.data import pipeline
from autotransfer.data._demos import PICTURES
from autotransfer.training import features

CLASSES = ("cat", "dog")
SIZES = [(40, 30), (30, 40), (41, 27), (36, 36)]  # (width, height): one folder, many sizes


def _photo(w, h, cls, seed):
    """A small image whose class shows: a bright warm blob (cat) or a dark cool one (dog)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 60, w, dtype=np.float32)[None, :, None]
    base = rng.integers(0, 40, (h, w, 3)).astype(np.float32) + ramp
    im = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    fill = (230, 180, 60) if cls == "cat" else (20, 40, 120)
    ImageDraw.Draw(im).ellipse((w // 5, h // 5, 4 * w // 5, 4 * h // 5), fill=fill)
    return im


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """root/<class>/<i>.{png,jpg}: 8 per class, four sizes, PNG and JPEG."""
    root = tmp_path_factory.mktemp("images")
    rows = []
    for cls in CLASSES:
        (root / cls).mkdir()
        for i in range(8):
            w, h = SIZES[i % len(SIZES)]
            name = f"{i}.png" if i % 2 else f"{i}.jpg"
            _photo(w, h, cls, seed=i).save(root / cls / name)
            rows.append({"path": f"{cls}/{name}", "label": cls, "size": (w, h)})
    table = pd.DataFrame(rows)
    table[["path", "label"]].to_csv(root / "labels.csv", index=False)
    return root, table


def _copy_folder(files, dest):
    root, table = files
    for rel in table["path"]:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes((root / rel).read_bytes())
    return dest


def _find(ds, suffix):
    """The position of the file whose path ends with ``suffix``."""
    return next(i for i, p in enumerate(ds.source.paths) if p.endswith(suffix))


# --- in-memory arrays ---

def test_nhwc_uint8_and_nchw_float_give_the_same_images():
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (5, 9, 7, 3), dtype=np.uint8)
    a = at.data.from_arrays(nhwc, [0, 1, 0, 1, 0])
    b = at.data.from_arrays(torch.from_numpy(nhwc).permute(0, 3, 1, 2).float() / 255, np.arange(5))
    assert a.inputs.shape == (5, 3, 9, 7) and a.inputs.dtype == torch.uint8
    assert torch.equal(a.inputs, b.inputs)
    assert np.array_equal(np.asarray(a[2][0]), nhwc[2])  # ds[i] is the RGB image


def test_grayscale_becomes_three_channels():
    x = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    ds = at.data.from_arrays(x, [0, 1])
    assert ds.inputs.shape == (2, 3, 4, 4)
    assert torch.equal(ds.inputs[:, 0], ds.inputs[:, 2])
    assert torch.equal(ds.inputs[:, 0], torch.from_numpy(x))


def test_strings_make_a_text_dataset():
    ds = at.data.from_arrays(["good", "bad"], ["pos", "neg"])
    assert ds.modality == "text" and ds.inputs == ["good", "bad"]
    assert ds[1] == ("bad", "neg")


def test_a_list_of_varied_size_images_keeps_each_image():
    hwc = np.full((8, 9, 3), 200, np.uint8)
    gray = np.arange(35, dtype=np.uint8).reshape(5, 7)
    chw = torch.zeros(3, 6, 4)
    pil = _photo(11, 13, "cat", 0)
    ds = at.data.from_arrays([hwc, gray, chw, pil], ["a", "b", "a", "b"])
    assert [ds[i][0].size for i in range(4)] == [(9, 8), (7, 5), (4, 6), (11, 13)]
    assert all(ds[i][0].mode == "RGB" for i in range(4))
    assert np.array_equal(np.asarray(ds[1][0])[..., 1], gray)
    assert np.array_equal(np.asarray(ds[3][0]), np.asarray(pil))
    assert len(ds.inputs) == 4 and ds.inputs[0].size == (9, 8)  # decoded on demand


def test_a_short_pil_image_keeps_its_orientation():
    strip = _photo(10, 3, "cat", 0)
    ds = at.data.from_arrays([strip, strip], [0, 1])
    assert ds[0][0].size == (10, 3)


@pytest.mark.parametrize("x,match", [
    (np.zeros((0, 3, 8, 8), np.uint8), "empty"),
    (np.zeros((4, 8), np.uint8), r"got shape \(4, 8\)"),
    (np.zeros((4, 5, 8, 8), np.uint8), r"1, 3 or 4 channels, but got shape \(4, 5, 8, 8\)"),
    (np.zeros((4, 8, 8, 5), np.uint8), r"1, 3 or 4 channels, but got shape \(4, 8, 8, 5\)"),
    (np.zeros((4, 8, 8, 2), np.uint8), r"1, 3 or 4 channels, but got shape \(4, 8, 8, 2\)"),
    (np.zeros((4, 2, 8, 8), np.uint8), r"1, 3 or 4 channels, but got shape \(4, 2, 8, 8\)"),
    ([np.zeros((8, 9, 3)), np.zeros((8, 9, 2))], r"image 1: .*1, 3 or 4 channels, but got shape \(8, 9, 2\)"),
    (np.zeros((4, 8, 8, 3), np.complex64), "must be numeric arrays, but got dtype"),
])
def test_bad_image_arrays(x, match):
    with pytest.raises(at.DataError, match=match):
        at.data.from_arrays(x, np.zeros(len(x)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_pixels_are_rejected_not_rescaled(bad):
    x = np.random.default_rng(0).random((4, 8, 8, 3)).astype(np.float32)
    x[1, 2, 3, 0] = bad
    with pytest.raises(at.DataError, match=r"1 pixel value\(s\) are NaN or infinite"):
        at.data.from_arrays(x, [0, 1, 0, 1])
    with pytest.raises(at.DataError, match="NaN or infinite"):
        at.data.from_arrays(list(x), [0, 1, 0, 1])


def test_inputs_and_labels_must_match():
    with pytest.raises(at.DataError, match="3 inputs but 2 labels"):
        at.data.from_arrays(np.zeros((3, 8, 8), np.uint8), [0, 1])


def test_repr_summarises_instead_of_dumping_tensors():
    ds = at.data.from_arrays(np.zeros((6, 8, 8), np.uint8), ["b", "a"] * 3)
    assert repr(ds) == "Dataset(arrays, image, 6 items, 2 classes: 'a', 'b')"
    assert "tensor" not in repr(ds.subset([0, 1]))


# --- folders of files ---

def test_from_folder_reads_one_class_per_subfolder_lazily(files):
    root, table = files
    ds = at.data.from_folder(root)
    assert repr(ds) == f"Dataset(folder {str(root)!r}, image, 16 items, 2 classes: 'cat', 'dog')"
    assert ds.modality == "image" and ds.classes == ["cat", "dog"] and ds.skipped == []
    # the source holds the paths, nothing decoded
    assert isinstance(ds.source, at.data.Source) and len(ds.source) == 16
    assert sorted(ds.source.paths.tolist()) == sorted(str(root / p) for p in table["path"])
    assert not any(isinstance(v, (torch.Tensor, np.ndarray)) and v.dtype != object
                   for v in vars(ds.source).values())
    for i in range(len(ds)):
        img, label = ds[i]
        row = table[table["path"] == os.path.relpath(ds.source.paths[i], root)].iloc[0]
        assert label == row["label"] and img.mode == "RGB" and img.size == row["size"]
    assert np.array_equal(np.asarray(ds[_find(ds, "cat/1.png")][0]), np.asarray(_photo(30, 40, "cat", 1)))  # exact


def test_from_folder_decodes_when_an_item_is_read(files, tmp_path):
    root = _copy_folder(files, tmp_path)
    ds = at.data.from_folder(root)
    i = _find(ds, "dog/3.png")
    Image.new("RGB", (5, 7), (1, 2, 3)).save(ds.source.paths[i])  # replaced after listing
    assert ds[i][0].size == (5, 7) and ds[i][0].getpixel((0, 0)) == (1, 2, 3)


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((30, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)  # left half red, right half blue
    a[:, 20:] = (0, 0, 255)
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    for cls in CLASSES:
        (tmp_path / cls).mkdir()
        img.save(tmp_path / cls / "plain.jpg", quality=95)
        img.save(tmp_path / cls / "turned.jpg", quality=95, exif=exif)
    ds = at.data.from_folder(tmp_path)
    plain, turned = ds[_find(ds, "cat/plain.jpg")][0], ds[_find(ds, "cat/turned.jpg")][0]
    assert plain.size == (40, 30) and turned.size == (30, 40)
    top_right = np.asarray(turned)[2, -3]
    assert top_right[0] > 200 and top_right[2] < 50  # the red left edge is now the top
    assert np.asarray(plain)[2, -3][2] > 200


def test_a_folder_of_text_files_is_a_text_dataset(tmp_path):
    for cls, words in (("neg", "awful"), ("pos", "lovely")):
        (tmp_path / cls).mkdir()
        for i in range(3):
            (tmp_path / cls / f"{i}.txt").write_text(f"{words} {i}", encoding="utf-8")
    ds = at.data.from_folder(tmp_path)
    assert ds.modality == "text" and len(ds) == 6
    assert repr(ds) == f"Dataset(folder {str(tmp_path)!r}, text, 6 items, 2 classes: 'neg', 'pos')"
    assert ds[0] == ("awful 0", "neg") and ds[5] == ("lovely 2", "pos")


def test_from_folder_errors(tmp_path):
    with pytest.raises(at.DataError, match="'.*missing' does not exist or is not a folder"):
        at.data.from_folder(tmp_path / "missing")
    with pytest.raises(at.DataError, match="has no class subfolders; expected .*/<class>/<file>"):
        at.data.from_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.csv").write_text("x")
    with pytest.raises(at.DataError, match=r"notes.csv \(not an image file \(suffix '.csv'\)\)"):
        at.data.from_folder(tmp_path)
    with pytest.raises(at.DataError, match="No readable image files"):
        at.data.from_folder(tmp_path, on_error="skip")
    with pytest.raises(at.DataError, match=r"on_error must be one of \('raise', 'skip'\), but got on_error='ignore'"):
        at.data.from_folder(tmp_path, on_error="ignore")


def test_an_empty_class_folder_is_named(files, tmp_path):
    root = _copy_folder(files, tmp_path)
    (root / "owl").mkdir()
    with pytest.raises(at.DataError, match=r"Class folder\(s\) \['owl'\] under .* are empty"):
        at.data.from_folder(root)


def test_unreadable_files_are_named_or_skipped(files, tmp_path):
    root = _copy_folder(files, tmp_path)
    (root / "cat" / "garbage.jpg").write_bytes(b"not a jpeg at all " * 20)
    (root / "dog" / "readme.txt").write_text("a note among images")
    with pytest.raises(at.DataError) as err:
        at.data.from_folder(root)
    msg = str(err.value)
    assert "2 file(s)" in msg and "garbage.jpg (UnidentifiedImageError" in msg
    assert "readme.txt (not an image file (suffix '.txt'))" in msg
    assert "Accepted: .png, .jpg" in msg and "on_error='skip'" in msg
    ds = at.data.from_folder(root, on_error="skip")
    assert len(ds) == 16 and sorted(ds.skipped) == [str(root / "cat" / "garbage.jpg"),
                                                     str(root / "dog" / "readme.txt")]
    assert repr(ds).endswith("2 classes: 'cat', 'dog', 2 skipped)")


def _truncate(jpeg):
    """Cut a JPEG halfway through its image data, as an interrupted download does."""
    whole = jpeg.read_bytes()
    scan = whole.index(b"\xff\xda")  # start of scan: the headers before it stay whole
    jpeg.write_bytes(whole[:scan + (len(whole) - scan) // 2])


def test_a_truncated_jpeg_fails_when_read_naming_the_file(files, tmp_path):
    root = _copy_folder(files, tmp_path)
    _truncate(root / "cat" / "0.jpg")
    ds = at.data.from_folder(root)  # only headers are checked when listing
    with pytest.raises(at.DataError, match=r"Cannot read image '.*cat/0.jpg': OSError: image file is truncated"):
        ds[_find(ds, "cat/0.jpg")]


def test_on_error_skip_leaves_no_unreadable_item_or_says_what_to_do(files, tmp_path):
    root = _copy_folder(files, tmp_path)
    _truncate(root / "cat" / "0.jpg")
    ds = at.data.from_folder(root, on_error="skip")
    try:
        for i in range(len(ds)):
            ds[i]
    except at.DataError as exc:
        assert "on_error='skip'" not in str(exc), str(exc)


def test_a_16_bit_png_keeps_its_contrast(tmp_path):
    ramp = np.linspace(0, 65535, 30 * 40).reshape(30, 40).astype(np.uint16)
    for cls in CLASSES:
        (tmp_path / cls).mkdir()
        Image.fromarray(ramp).save(tmp_path / cls / "scan.png")
    got = np.asarray(at.data.from_folder(tmp_path)[0][0])[..., 0].astype(float)
    assert got.min() < 10 and got.max() > 245 and 100 < got.mean() < 155


def test_fingerprint_follows_the_inputs(files, tmp_path):
    a = at.data.from_arrays(np.zeros((3, 4, 4), np.uint8), [0, 1, 0])
    b = at.data.from_arrays(np.ones((3, 4, 4), np.uint8), [0, 1, 0])
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == at.data.from_arrays(np.zeros((3, 4, 4), np.uint8), [1, 1, 0]).fingerprint()
    root = _copy_folder(files, tmp_path)
    before = at.data.from_folder(root).fingerprint()
    assert at.data.from_folder(root).fingerprint() == before
    _photo(41, 27, "dog", 99).save(root / "cat" / "1.png")  # rewritten: new data
    assert at.data.from_folder(root).fingerprint() != before


# --- tables of paths and text ---

def test_from_pandas_resolves_relative_paths_against_root(files, tmp_path, monkeypatch):
    root, table = files
    df = table[["path", "label"]].rename(columns={"path": "file", "label": "animal"})
    ds = at.data.from_pandas(df, image="file", label="animal", root=root)
    assert repr(ds) == "Dataset(column 'file', image, 16 items, 2 classes: 'cat', 'dog')"
    assert ds.source.paths.tolist() == [str(root / p) for p in df["file"]]
    assert ds[3][0].size == table["size"][3] and ds[3][1] == "cat"
    monkeypatch.chdir(root)  # without root=: the working folder
    assert at.data.from_pandas(df, image="file", label="animal").source.paths[0] == \
        str(root / df["file"][0])
    absolute = df.assign(file=[str(root / p) for p in df["file"]])
    assert at.data.from_pandas(absolute, image="file", label="animal", root=tmp_path)[0][0].size == \
        table["size"][0]


def test_from_pandas_names_missing_files(files):
    root, table = files
    df = table[["path", "label"]].copy()
    df.loc[[2, 5, 7, 9, 11], "path"] = ["gone/a.png", "gone/b.png", "gone/c.png", "gone/d.png",
                                        "gone/e.png"]
    with pytest.raises(at.DataError) as err:
        at.data.from_pandas(df, image="path", label="label", root=root)
    msg = str(err.value)
    assert msg.startswith("5 of 16 file(s) in column 'path' do not exist")
    assert str(root / "gone/a.png") in msg and str(root / "gone/c.png") in msg
    assert "gone/d.png" not in msg  # the first few, not all
    assert f"resolved against {str(root)!r}" in msg and "on_error='skip'" in msg
    ds = at.data.from_pandas(df, image="path", label="label", root=root, on_error="skip")
    assert len(ds) == 11 and len(ds.skipped) == 5
    assert ds.labels.tolist() == df.drop(index=[2, 5, 7, 9, 11])["label"].tolist()


def test_from_pandas_names_unreadable_files(files, tmp_path):
    root = _copy_folder(files, tmp_path)
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 50)
    df = pd.DataFrame({"p": ["cat/broken.png", "dog/1.png"], "y": ["cat", "dog"]})
    with pytest.raises(at.DataError, match=r"1 file\(s\) in column 'p' cannot be read as images: .*broken.png"):
        at.data.from_pandas(df, image="p", label="y", root=root)


def test_from_pandas_text_and_column_errors():
    df = pd.DataFrame({"review": ["fine", "poor", "great"], "stars": [4, 1, 5]})
    ds = at.data.from_pandas(df, text="review", label="stars")
    assert ds.modality == "text" and ds.labels.tolist() == [4, 1, 5] and ds[2] == ("great", 5)
    with pytest.raises(at.DataError, match=r"Column 'label' is not in the data frame; columns: \['review', 'stars'\]"):
        at.data.from_pandas(df, text="review", label="label")
    with pytest.raises(at.DataError, match=r"Column 'img' is not in the data frame; columns: \['review', 'stars'\]"):
        at.data.from_pandas(df, image="img", label="stars")
    with pytest.raises(at.DataError, match=r"exactly one of image='<path column>' or text='<text column>'; got both. Columns: \['review', 'stars'\]"):
        at.data.from_pandas(df, image="review", text="review", label="stars")
    with pytest.raises(at.DataError, match="exactly one of .*; got neither"):
        at.data.from_pandas(df, label="stars")


def test_a_text_column_of_image_paths_suggests_image(files):
    _, table = files
    with pytest.raises(at.DataError, match=r"Column 'path' holds image file paths \('cat/0.jpg'\); pass image='path'"):
        at.data.from_pandas(table, text="path", label="label")


def test_from_csv_resolves_paths_against_the_csv_folder(files, tmp_path, monkeypatch):
    root, table = files
    monkeypatch.chdir(tmp_path)  # anywhere but the CSV's folder
    ds = at.data.from_csv(root / "labels.csv", image="path", label="label")
    assert ds.source.paths.tolist() == [str(root / p) for p in table["path"]]
    assert [ds[i][0].size for i in range(4)] == table["size"][:4].tolist()
    with pytest.raises(at.DataError, match="CSV file '.*nope.csv' does not exist"):
        at.data.from_csv(tmp_path / "nope.csv", image="path", label="label")


# --- Hugging Face and torch datasets ---

def _hf_images(files):
    import datasets

    root, table = files
    hf = datasets.Dataset.from_dict({
        "image": [Image.open(root / p) for p in table["path"]],
        "label": [CLASSES.index(c) for c in table["label"]],
        "caption": [f"a photo of a {c}" for c in table["label"]],
    })
    return hf.cast_column("image", datasets.Image()).cast_column(
        "label", datasets.ClassLabel(names=list(CLASSES)))


def test_from_hf_reads_an_image_column_lazily_with_class_names(files):
    _, table = files
    ds = at.data.from_hf(_hf_images(files), input="image", label="label")
    assert repr(ds) == "Dataset(hf column 'image', image, 16 items, 2 classes: 'cat', 'dog')"
    assert ds.labels.tolist() == table["label"].tolist()  # ClassLabel ints -> names
    img, label = ds[2]
    assert img.mode == "RGB" and img.size == table["size"][2] and label == "cat"
    assert ds.source.column == "image" and ds.source.ds.column_names == ["image"]


def test_from_hf_text_and_errors(files):
    import datasets

    hf = _hf_images(files)
    text = at.data.from_hf(hf, input="caption", label="label")
    assert text.modality == "text" and text[9] == ("a photo of a dog", "dog")
    with pytest.raises(at.DataError, match=r"Column 'photo' is not in the dataset; columns: \['image', 'label', 'caption'\]"):
        at.data.from_hf(hf, input="photo", label="label")
    with pytest.raises(at.DataError, match=r"Column 'y' is not in the dataset"):
        at.data.from_hf(hf, input="image", label="y")
    with pytest.raises(at.DataError, match=r"Column 'label' is a ClassLabel\(int64\); from_hf reads an Image column or a string \(text\) column"):
        at.data.from_hf(hf, input="label", label="label")
    with pytest.raises(at.DataError, match="from_hf takes a datasets.Dataset .*but got DatasetDict"):
        at.data.from_hf(datasets.DatasetDict({"train": hf}), input="image", label="label")


def test_a_corrupt_image_in_an_hf_column_is_a_data_error(tmp_path):
    import datasets

    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        _photo(20, 10, "cat", i).save(paths[-1])
    (tmp_path / "2.png").write_bytes(b"garbage" * 10)
    hf = datasets.Dataset.from_dict({"img": paths, "y": [0, 1, 0]}).cast_column("img", datasets.Image())
    ds = at.data.from_hf(hf, input="img", label="y")
    assert ds[1][0].size == (20, 10)
    with pytest.raises(at.DataError, match="row 2 of column 'img'"):
        ds[2]


class _Pairs(torch.utils.data.Dataset):
    """A map-style torch dataset that counts reads."""

    def __init__(self, items, targets=None):
        self.items, self.reads = items, 0
        if targets is not None:
            self.targets = targets

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.reads += 1
        return self.items[i]


def test_from_torch_reads_inputs_when_used(files):
    root, table = files
    images = [Image.open(root / p).convert("RGB") for p in table["path"]]
    pairs = _Pairs([(img, torch.tensor(CLASSES.index(c))) for img, c in zip(images, table["label"])])
    ds = at.data.from_torch(pairs)  # labels from one pass, tensors made plain
    assert ds.labels.tolist() == [CLASSES.index(c) for c in table["label"]]
    assert repr(ds) == "Dataset(torch _Pairs, image, 16 items, 2 classes: 0, 1)"
    assert ds[5][0].size == table["size"][5]
    tv = _Pairs([(img, 0) for img in images], targets=[1] * 8 + [0] * 8)
    ds = at.data.from_torch(tv)
    assert tv.reads == 1 and ds.labels.tolist() == tv.targets  # torchvision's targets, no pass
    ds = at.data.from_torch(tv, labels=np.arange(16) % 2)
    assert ds.labels.tolist() == [0, 1] * 8


def test_from_torch_takes_class_names_from_the_dataset_or_classes(tmp_path):
    from torchvision.datasets import ImageFolder

    for i, name in enumerate(["chelsea", "coffee", "chelsea", "coffee"]):
        (tmp_path / name).mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / name / f"{i}.png")
    folder = ImageFolder(tmp_path)
    ds = at.data.from_torch(folder)  # torchvision's targets are ids; its classes name them
    assert ds.labels.tolist() == [folder.classes[t] for t in folder.targets]
    assert sorted(set(ds.labels.tolist())) == ["chelsea", "coffee"]
    pairs = _Pairs([(torch.zeros(3, 8, 8), i % 2) for i in range(4)])
    assert at.data.from_torch(pairs, classes=["no", "yes"]).labels.tolist() == ["no", "yes"] * 2
    with pytest.raises(at.DataError, match=r"names 1 classes, so labels must be class ids "
                                           r"0..0, but got label 1"):
        at.data.from_torch(pairs, classes=["only"])
    with pytest.raises(at.DataError, match="classes= must be a list of distinct class names"):
        at.data.from_torch(pairs, classes=["a", "a"])


def test_from_torch_accepts_tensors_arrays_and_strings():
    chw = torch.rand(3, 20, 30)
    ds = at.data.from_torch(_Pairs([(chw, 0), (np.zeros((20, 30, 3), np.uint8), 1)]))
    assert ds[0][0].size == (30, 20) and ds[1][0].size == (30, 20)
    assert np.array_equal(np.asarray(ds[0][0]), (chw * 255).round().byte().permute(1, 2, 0).numpy())
    text = at.data.from_torch(_Pairs([("fine", 1), ("poor", 0)]))
    assert text.modality == "text" and text[0] == ("fine", 1)


@pytest.mark.parametrize("item,shown", [
    (torch.zeros(3, 8, 8), "item 0 is a Tensor"),
    ((torch.zeros(3, 8, 8), 1, 2), "item 0 is a tuple of length 3"),
    ({"image": 1, "label": 0}, "item 0 is a dict"),
])
def test_from_torch_needs_input_label_pairs(item, shown):
    with pytest.raises(at.DataError, match=f"needs items that are \\(input, label\\) pairs, but {shown}"):
        at.data.from_torch(_Pairs([item, item]))


def test_from_torch_names_an_input_that_is_not_an_image():
    ds = at.data.from_torch(_Pairs([(torch.zeros(3, 8, 8), 0), ({"x": 1}, 1)]))
    with pytest.raises(at.DataError, match="item 1: expected an image .*but got dict"):
        ds[1]


# --- the Dataset ---

def test_split_is_seeded_and_stratified():
    y = np.array([0] * 80 + [1] * 20)
    ds = at.data.from_arrays(np.zeros((100, 4, 4), np.uint8), y)
    tr, va = ds.split(0.25, seed=3)
    assert len(tr) == 75 and len(va) == 25
    assert (va.labels == 1).sum() == 5  # class balance kept
    tr2, va2 = ds.split(0.25, seed=3)
    assert np.array_equal(va.labels, va2.labels) and torch.equal(va.inputs, va2.inputs)
    assert sorted(tr.index.tolist() + va.index.tolist()) == list(range(100))
    with pytest.raises(at.DataError, match=r"valid_fraction must be in \(0, 1\), but got 1.5"):
        ds.split(1.5)


def test_subset_of_files_reads_the_chosen_items(files):
    full = at.data.from_folder(files[0])
    part = full.subset([15, 2])
    assert len(part) == 2 and part.labels.tolist() == ["dog", "cat"]
    assert part.source is full.source  # the same paths, no copy
    assert np.array_equal(np.asarray(part[0][0]), np.asarray(full[15][0]))


def test_digits_demo():
    train, valid = at.data.demo("digits", image_size=32, per_class=20)
    assert len(train) == 200 and len(valid) == 1597
    assert train.inputs.shape == (200, 3, 32, 32)
    assert np.bincount(train.labels).tolist() == [20] * 10
    with pytest.raises(at.UnknownNameError, match="demo data set 'mnist'"):
        at.data.demo("mnist")


def test_photos_demo_is_seeded_and_stratified():
    train, valid, test = at.data.demo("photos", image_size=16, per_class=2,
                                      valid_per_class=3, test_per_class=1)
    assert (len(train), len(valid), len(test)) == (20, 30, 10)
    assert train.inputs.shape == (20, 3, 16, 16) and sorted(set(train.labels)) == sorted(PICTURES)
    assert pd.Series(valid.labels).value_counts().tolist() == [3] * 10
    again = at.data.demo("photos", image_size=16, per_class=2, valid_per_class=3,
                         test_per_class=1)[0]
    other = at.data.demo("photos", image_size=16, per_class=2, seed=1)[0]
    assert torch.equal(train.inputs, again.inputs) and not torch.equal(train.inputs,
                                                                        other.inputs)


def test_photo_crops_never_mix_training_and_evaluation_tiles():
    """Tiles coloured by their role: a crop's pixels all come from tiles of its own role."""
    from autotransfer.data._demos import GRID, crops

    side = 40
    role = {"white": 0, "black-even": 100, "black-odd": 200}
    image = np.zeros((GRID * side, GRID * side + 7, 3), np.uint8)  # not square: tiles too
    for r in range(GRID):
        for c in range(GRID):
            kind = "white" if (r + c) % 2 == 0 else ("black-even", "black-odd")[r % 2]
            image[r * side:(r + 1) * side, c * (side + 1):(c + 1) * (side + 1)] = role[kind]
    rng = np.random.default_rng(0)
    for kind, value in role.items():
        cut = np.stack(crops(image, kind, 24, 8, rng))
        assert (cut == value).all(), kind
    black = np.stack(crops(image, "black", 24, 8, rng))
    assert set(np.unique(black)) == {100, 200}  # both halves of the black tiles


# --- the pipeline end to end ---

def _source(name, files):
    root, table = files
    if name == "folder":
        return at.data.from_folder(root)
    if name == "pandas":
        return at.data.from_pandas(table, image="path", label="label", root=root)
    if name == "csv":
        return at.data.from_csv(root / "labels.csv", image="path", label="label")
    if name == "hf":
        return at.data.from_hf(_hf_images(files), input="image", label="label")
    images = [np.asarray(Image.open(root / p).convert("RGB")) for p in table["path"]]
    if name == "torch":
        return at.data.from_torch(_Pairs([(torch.from_numpy(a).permute(2, 0, 1), c)
                                          for a, c in zip(images, table["label"])]))
    return at.data.from_arrays(images, table["label"])  # varied sizes


@pytest.mark.parametrize("name", ["folder", "pandas", "csv", "hf", "torch", "arrays"])
def test_a_trial_trains_on_every_image_source(name, files):
    train, valid = _source(name, files).split(0.5, seed=0)
    r = at.run_trial(at.Strategy("tiny_cnn", epochs=1, image_size=16), train, valid)
    assert isinstance(r, at.TrialResult) and r.epochs_run == 1
    assert math.isfinite(r.value) and 0 <= r.value <= 1
    assert r.info["classes"] == ["cat", "dog"]


@pytest.mark.parametrize("name", ["folder", "hf"])
def test_a_trial_trains_on_text_sources(name, tmp_path):
    import datasets

    texts = {"neg": ["awful film", "dull and slow", "a waste"], "pos": ["lovely", "great fun", "moving"]}
    if name == "folder":
        for cls, items in texts.items():
            (tmp_path / cls).mkdir()
            for i, t in enumerate(items):
                (tmp_path / cls / f"{i}.txt").write_text(t)
        ds = at.data.from_folder(tmp_path)
    else:
        hf = datasets.Dataset.from_dict({"text": texts["neg"] + texts["pos"], "y": [0, 0, 0, 1, 1, 1]})
        ds = at.data.from_hf(hf.cast_column("y", datasets.ClassLabel(names=["neg", "pos"])),
                             input="text", label="y")
    train, valid = ds.split(0.5, seed=0)
    r = at.run_trial(at.Strategy("tiny_bert", epochs=1, batch_size=4), train, valid)
    assert math.isfinite(r.value) and r.info["classes"] == ["neg", "pos"]


def _ready(pre, train, valid, hold=True, monkeypatch=None):
    """Readied data: held in memory, or streamed (HOLD_BYTES 0 while readying)."""
    y_train = torch.as_tensor(np.asarray(train.labels) == "dog").long()
    y_valid = torch.as_tensor(np.asarray(valid.labels) == "dog").long()
    if hold:
        return pipeline.ready(pre, train, valid, y_train, y_valid, {})
    with monkeypatch.context() as m:
        m.setattr(pipeline, "HOLD_BYTES", 0)
        return pipeline.ready(pre, train, valid, y_train, y_valid, {})


def _batches(p, split, augment="none", seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([x for x, _ in pipeline.loader(p, split, 8, augment=augment, generator=gen)])


def test_hold_bytes_decides_held_or_streamed(files, monkeypatch):
    pre = at.get_backbone("tiny_cnn").preprocessing(image_size=16)
    ds = at.data.from_folder(files[0])
    held = _ready(pre, ds, ds)
    assert held.held and held.x_train.images.dtype == torch.uint8
    assert held.x_train.images.shape == (16, 3, pre.size, pre.size)
    assert not held.x_train.complete  # nothing is decoded before a loader reads it
    list(pipeline.loader(held, "train", 5))
    assert held.x_train.complete
    monkeypatch.setattr(pipeline, "HOLD_BYTES", 16 * 3 * pre.size ** 2 * 2 - 1)  # one byte short
    assert not pipeline.ready(pre, ds, ds, held.y_train, held.y_valid, {}).held
    monkeypatch.setattr(pipeline, "HOLD_BYTES", 16 * 3 * pre.size ** 2 * 2)
    assert pipeline.ready(pre, ds, ds, held.y_train, held.y_valid, {}).held


@pytest.mark.parametrize("image_size,shape", [
    (16, "photos"), (32, (40, 40)), (32, (40, 30)), (32, (30, 40)), (24, (33, 17)),
    (32, (41, 27)),
], ids=str)
def test_held_and_streamed_images_give_the_same_validation_batches(image_size, shape, files,
                                                                   monkeypatch):
    pre = at.get_backbone("tiny_cnn").preprocessing(image_size=image_size)
    if shape == "photos":
        ds = at.data.from_folder(files[0])
    else:
        ds = at.data.from_arrays([np.asarray(_photo(*shape, c, i)) for i, c in
                                  enumerate(CLASSES * 2)], list(CLASSES * 2))
    held, streamed = _ready(pre, ds, ds), _ready(pre, ds, ds, hold=False, monkeypatch=monkeypatch)
    assert held.held and not streamed.held
    a, b = _batches(held, "valid"), _batches(streamed, "valid")
    assert a.shape == (len(ds), 3, image_size, image_size) and a.dtype == torch.uint8
    assert torch.equal(a, b)


def test_training_on_streamed_images_matches_held_ones(files, monkeypatch):
    train, valid = at.data.from_folder(files[0]).split(0.5, seed=0)
    strategy = at.Strategy("tiny_cnn", epochs=2, image_size=16)
    held = at.run_trial(strategy, train, valid)
    monkeypatch.setattr(pipeline, "HOLD_BYTES", 0)
    streamed = at.run_trial(strategy, train, valid)
    for a, b in zip(held.history, streamed.history):
        assert a == pytest.approx(b, rel=1e-4)


@pytest.mark.parametrize("hold", [True, False])
@pytest.mark.parametrize("augment", ["flip", "trivial", "randaugment"])
def test_augmentation_draws_new_views_each_pass(augment, hold, files, monkeypatch):
    pre = at.get_backbone("tiny_cnn").preprocessing(image_size=16)
    ds = at.data.from_folder(files[0])
    p = _ready(pre, ds, ds, hold=hold, monkeypatch=monkeypatch)
    plain = _batches(p, "train")
    assert torch.equal(plain, _batches(p, "train"))  # no augmentation: the same every pass
    first, second = _batches(p, "train", augment), _batches(p, "train", augment, seed=1)
    assert first.shape == plain.shape == (16, 3, 16, 16) and first.dtype == torch.uint8
    assert not torch.equal(first, second) and not torch.equal(first, plain)


def test_augmented_trials_run_and_say_how_the_prefix_ran(files, monkeypatch):
    train, valid = at.data.from_folder(files[0]).split(0.5, seed=0)
    base = at.Strategy("tiny_cnn", epochs=1, image_size=16, frozen_groups=3)
    runs = {
        "plain": base,
        "flip": base.replace(augment="flip"),
        "cutmix": base.replace(augment="trivial", cutmix=1.0),
        "mixup": base.replace(augment="randaugment", mixup=0.2, frozen_groups=0),
    }
    r = {k: at.run_trial(s, train, valid) for k, s in runs.items()}
    assert all(math.isfinite(x.value) for x in r.values())
    assert (r["plain"].cached, r["plain"].cache_source) == (True, "computed")
    views = features.AUG_VIEWS
    assert (r["flip"].cached, r["flip"].cache_source) == (True, f"computed ({views} views, augment=flip)")
    assert (r["cutmix"].cached, r["cutmix"].cache_source) == (False, "no (cutmix)")
    assert (r["mixup"].cached, r["mixup"].cache_source) == (False, "no (nothing frozen)")
    monkeypatch.setattr(features, "AUG_VIEWS", 0)  # fresh views every batch instead
    live = at.run_trial(runs["flip"], train, valid)
    assert (live.cached, live.cache_source) == (False, "no (augment=flip)")
    assert math.isfinite(live.value)


def test_text_batches_are_padded_to_their_longest_input():
    pre = at.get_backbone("tiny_bert").preprocessing()
    texts = ["hi", "a somewhat longer sentence", "word " * 50]
    lengths = [len(e["input_ids"]) for e in pre.encode(texts)]
    assert lengths[0] < lengths[1] < lengths[2] == pre.max_length  # max_length truncates
    train = at.data.from_arrays(texts, [0, 1, 0])
    p = pipeline.ready(pre, train, train.subset([0, 1]), torch.tensor([0, 1, 0]),
                       torch.tensor([0, 1]), {})
    (x, y), = list(pipeline.loader(p, "valid", 8))
    assert x["input_ids"].shape == (2, lengths[1])  # the batch's longest, not max_length
    assert x["attention_mask"].sum(1).tolist() == lengths[:2] and y.tolist() == [0, 1]
    widths = [x["input_ids"].shape[1] for x, _ in pipeline.loader(p, "train", 1)]
    assert widths == lengths
