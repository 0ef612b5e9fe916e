"""Image files: reading PNG/JPEG as CIFAR-layout rows, ImageFolder trees, training from one."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klayer.data.images import (
    infer_image_shape,
    list_files,
    load_image_folder,
    model_image_shape,
    read_image,
    row_to_image,
)
from klayer.data.prepare import DataConfig, load_dataset, load_raw
from klayer.errors import ConfigError, DataError
from klayer.runs import load_model

Image = pytest.importorskip("PIL.Image")

COLOURS = {"blue": (20, 40, 220), "green": (30, 200, 40), "red": (230, 30, 20)}


def save(path, array, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path, format=fmt)
    return path


def noisy(rng, colour, size=(40, 40)):
    return np.clip(np.array(colour) + rng.normal(0, 25, (*size, 3)), 0, 255)


def make_folder(root, rng, per_class=10, test=False):
    for name, colour in COLOURS.items():
        for i in range(per_class):
            fmt = "png" if i % 2 else "jpeg"
            save(root / ("train" if test else ".") / name / f"{i}.{fmt[:3]}", noisy(rng, colour), fmt.upper())
            if test and i < 3:
                save(root / "test" / name / f"t{i}.png", noisy(rng, colour))
    return root


# -- one image -----------------------------------------------------------------------------------
def test_row_is_channel_major_like_cifar(tmp_path, rng):
    img = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    row = read_image(save(tmp_path / "a.png", img), (3, 32, 32))
    assert row.dtype == np.uint8 and row.shape == (3072,)
    np.testing.assert_array_equal(row[:1024].reshape(32, 32), img[:, :, 0])  # the red plane first
    np.testing.assert_array_equal(row[1024:2048].reshape(32, 32), img[:, :, 1])
    np.testing.assert_array_equal(row[2048:].reshape(32, 32), img[:, :, 2])
    np.testing.assert_array_equal(row_to_image(row, (3, 32, 32)), img)


def test_cifar_rows_survive_a_round_trip_through_png(tmp_path, cifar_raw):
    X, _ = cifar_raw.batches["test_batch"]
    for i in range(3):
        path = save(tmp_path / f"{i}.png", row_to_image(X[i], (3, 32, 32)))
        np.testing.assert_array_equal(read_image(path, (3, 32, 32)), X[i])


def test_resize_crops_the_centre_to_the_aspect_ratio(tmp_path):
    img = np.zeros((40, 80, 3), np.uint8)  # a wide image: left quarter black, middle white, right black
    img[:, 20:60] = 255
    row = read_image(save(tmp_path / "wide.png", img), (3, 16, 16))
    plane = row[:256].reshape(16, 16)
    assert plane.min() >= 200  # the centred 40x40 crop is white (a stretched image would have black sides)


def test_grey_models_get_one_channel(tmp_path, rng):
    img = rng.integers(0, 256, (28, 28, 3)).astype(np.uint8)
    row = read_image(save(tmp_path / "c.png", img), (1, 28, 28))
    expected = np.asarray(Image.fromarray(img).convert("L"))
    np.testing.assert_array_equal(row.reshape(28, 28), expected)


def test_alpha_and_palette_images_become_rgb(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    p = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(p)
    assert read_image(p, (3, 8, 8))[:64].min() == 200
    pal = Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(tmp_path / "p.gif")
    assert set(read_image(tmp_path / "p.gif", (3, 8, 8)).tolist()) == {90}


# -- float images (Pillow mode "F") -----------------------------------------------------------------
def save_float(path, values):
    """A float image Pillow opens in its float mode "F": a 32-bit float TIFF or PFM (by suffix,
    written by Pillow), or a 64-bit float FITS file (written by hand: Pillow reads, not writes,
    FITS; its rows go bottom-up)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(values, np.float64)
    if path.suffix == ".fits":
        cards = ["SIMPLE  =                    T", "BITPIX  =                  -64", "NAXIS   =                    2"]
        cards += [f"NAXIS1  = {a.shape[1]:20d}", f"NAXIS2  = {a.shape[0]:20d}", "END"]
        data = a[::-1].astype(">f8").tobytes()
        path.write_bytes("".join(c.ljust(80) for c in cards).ljust(2880).encode() + data + bytes(-len(data) % 2880))
    else:
        Image.fromarray(a.astype(np.float32)).save(path)
    with Image.open(path) as im:
        assert im.mode == "F"  # the mode these tests are about
    return path


FLOAT_FORMATS = ["tif", "pfm", "fits"]


def test_float_images_in_0_1_are_scaled_and_in_0_255_taken_as_they_are(tmp_path, rng):
    """A float TIFF with values in 0..1 was read as if 0..255 (Pillow's convert clips), so it came
    out nearly black (every value 0 or 1). All values within [0, 1]: times 255; within [0, 255]:
    as they are; rounded; 32-bit TIFF and PFM, 64-bit FITS, grey and RGB models alike."""
    grey = rng.integers(0, 256, (8, 8)).astype(np.uint8)
    grey[0, :2] = (0, 255)  # the whole range
    want = grey.reshape(-1)
    for fmt in FLOAT_FORMATS:
        unit = save_float(tmp_path / f"unit.{fmt}", grey / 255.0)
        wide = save_float(tmp_path / f"wide.{fmt}", grey.astype(np.float64))
        for p in (unit, wide):
            np.testing.assert_array_equal(read_image(p, (1, 8, 8)), want, err_msg=str(p))
            np.testing.assert_array_equal(read_image(p, (3, 8, 8)), np.tile(want, 3), err_msg=str(p))
    png = save(tmp_path / "same.png", grey)
    np.testing.assert_array_equal(read_image(png, (1, 8, 8)), read_image(tmp_path / "unit.tif", (1, 8, 8)))
    half = save_float(tmp_path / "half.tif", np.full((8, 8), 0.5))
    assert set(read_image(half, (1, 8, 8)).tolist()) == {128}  # 127.5 rounded (to even)
    frac = save_float(tmp_path / "frac.tif", np.full((8, 8), 7.4))  # above 1: not scaled
    assert set(read_image(frac, (1, 8, 8)).tolist()) == {7}


@pytest.mark.parametrize(
    "values,found",
    [
        ((0.0, -0.25), "values from -0.25 to 0;"),
        ((0.0, 255.5), "values from 0 to 255.5;"),
        ((-3.0, 300.0), "values from -3 to 300;"),
        ((np.nan, 0.5), "1 NaN or infinite value(s) among 64 pixels;"),
        ((np.inf, -np.inf), "64 NaN or infinite value(s) among 64 pixels;"),
    ],
)
@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_float_images_out_of_range_or_not_finite_are_refused_in_one_line(tmp_path, rng, values, found, fmt):
    """A float image with NaN, infinity or values outside [0, 255] was clipped without a word; it
    is refused in one line naming the file and what was found (an image folder skips it and says
    so)."""
    a = np.where(np.arange(64).reshape(8, 8) % 2, values[0], values[1])
    if np.isnan(values[0]):
        a = np.full((8, 8), values[1])
        a[3, 3] = np.nan
    p = save_float(tmp_path / f"f.{fmt}", a)
    with pytest.raises(DataError) as e:
        read_image(p, (1, 8, 8))
    msg = str(e.value)
    assert msg == (
        f"{p}: float image with {found} float images are read with every value within [0, 1] (scaled by 255) "
        "or within [0, 255]"
    )
    root = make_folder(tmp_path / "folder", rng, per_class=4)
    bad = save_float(root / "red" / f"bad.{fmt}", a)
    said = []
    raw = load_image_folder(root, (3, 8, 8), log=said.append)
    assert said == [f"{bad}: float image with {found} " + msg.split(f"{found} ", 1)[1] + " (skipped)"]
    assert "1 unreadable files skipped" in raw.source


@pytest.mark.parametrize(
    "content,message",
    [
        (b"not an image at all", "not an image Pillow can read"),
        (None, "no such file"),
    ],
)
def test_unreadable_files_are_one_line_data_errors(tmp_path, content, message):
    p = tmp_path / "x.png"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        read_image(p, (3, 32, 32))
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_truncated_jpeg_is_a_data_error(tmp_path, rng):
    p = save(tmp_path / "t.jpg", noisy(rng, (1, 2, 3), (64, 64)), "JPEG")
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(DataError, match="unreadable image"):
        read_image(p, (3, 32, 32))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=400), prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a"])
)
def test_fuzzed_bytes_give_only_klayer_errors(tmp_path, data, prefix):
    p = tmp_path / "f.img"
    p.write_bytes(prefix + data)
    try:
        row = read_image(p, (3, 8, 8))
    except DataError as e:
        assert "\n" not in str(e)
    else:
        assert row.shape == (192,) and row.dtype == np.uint8


def test_image_shapes_inferred_from_the_input_size():
    assert infer_image_shape(3072) == (3, 32, 32)
    assert infer_image_shape(784) == (1, 28, 28)
    assert infer_image_shape(12288) == (3, 64, 64)
    assert infer_image_shape(100) == (1, 10, 10)
    assert infer_image_shape(64) == (1, 8, 8) and infer_image_shape(192) == (3, 8, 8)
    assert infer_image_shape(4) is None and infer_image_shape(48) is None  # 2x2, 4x4: features, not images
    assert infer_image_shape(6) is None and infer_image_shape(3 * 32 * 16) is None
    assert model_image_shape({"image_shape": [3, 16, 64]}, 3072) == (3, 16, 64)
    assert model_image_shape({"image_shape": [3, 16, 16]}, 3072) == (3, 32, 32)  # inconsistent: ignored
    assert model_image_shape({}, 3072) == (3, 32, 32)


def test_list_files_recurses_sorted_and_skips_hidden(tmp_path):
    for name in ("b/2.png", "a.png", "b/1.png", ".hidden/x.png", "b/.DS_Store"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert list_files(tmp_path) == [tmp_path / "a.png", tmp_path / "b/1.png", tmp_path / "b/2.png"]
    assert list_files(tmp_path / "a.png") == [tmp_path / "a.png"]


# -- image folders ---------------------------------------------------------------------------------
def test_image_folder_classes_split_and_layout(tmp_path, rng):
    root = make_folder(tmp_path / "colours", rng, per_class=10)
    raw = load_image_folder(root, (3, 16, 16), test_fraction=0.2, seed=0, log=pytest.fail)
    assert raw.classes == ("blue", "green", "red") and raw.n_classes == 3  # sorted folder names
    assert raw.layout == "images" and raw.image_shape == (3, 16, 16)
    Xtr, ytr = raw.batches["train"]
    Xte, yte = raw.batches["test"]
    assert Xtr.shape == (24, 768) and Xte.shape == (6, 768) and Xtr.dtype == np.uint8
    assert np.bincount(yte).tolist() == [2, 2, 2]  # stratified: 20% of each class
    assert np.bincount(ytr).tolist() == [8, 8, 8]
    assert list(ytr) != sorted(ytr)  # shuffled, so a validation tail is a random sample
    # the labels follow the folders: red images have a large red plane
    red = Xtr[ytr == 2]
    assert red[:, :256].mean() > 150 and red[:, 512:].mean() < 100
    raw2 = load_image_folder(root, (3, 16, 16), test_fraction=0.2, seed=0, log=pytest.fail)
    np.testing.assert_array_equal(raw2.batches["test"][0], Xte)  # seeded


def test_image_folder_with_train_and_test_subfolders(tmp_path, rng):
    root = make_folder(tmp_path / "tt", rng, per_class=4, test=True)
    raw = load_image_folder(root, (3, 8, 8), log=pytest.fail)
    assert raw.batches["train"][0].shape[0] == 12 and raw.batches["test"][0].shape[0] == 9
    assert sorted(raw.batches["test"][1].tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_corrupt_and_non_image_files_are_skipped_with_one_line_each(tmp_path, rng):
    root = make_folder(tmp_path / "c", rng, per_class=5)
    (root / "red" / "notes.txt").write_text("hello")
    (root / "green" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    lines = []
    raw = load_image_folder(root, (3, 8, 8), log=lines.append)
    assert len(lines) == 2 and all("skipped" in ln and "\n" not in ln for ln in lines)
    assert any("notes.txt" in ln for ln in lines) and any("broken.png" in ln for ln in lines)
    assert "2 unreadable files skipped" in raw.source
    assert len(raw.batches["train"][1]) + len(raw.batches["test"][1]) == 15


@pytest.mark.parametrize("case", ["empty_class", "unreadable_class", "no_classes", "missing", "one_class"])
def test_bad_image_folders_are_one_line_errors(tmp_path, rng, case):
    root = tmp_path / "bad"
    if case != "missing":
        make_folder(root, rng, per_class=3)
    if case == "empty_class":
        (root / "zebra").mkdir()
        match = "zebra: class folder holds no files"
    elif case == "unreadable_class":
        (root / "zebra").mkdir()
        (root / "zebra" / "z.txt").write_text("no")
        match = "zebra: class folder holds no readable images"
    elif case == "no_classes":
        root = tmp_path / "flat"
        save(root / "a.png", np.zeros((4, 4, 3)))
        match = "found 0"
    elif case == "one_class":
        root = tmp_path / "one"
        save(root / "cat" / "a.png", np.zeros((4, 4, 3)))
        match = "found 1"
    else:
        match = "image folder not found"
    with pytest.raises(DataError, match=match) as e:
        load_image_folder(root, (3, 8, 8), log=lambda m: None)
    assert "\n" not in str(e.value)


def test_test_class_not_in_train_is_refused(tmp_path, rng):
    root = make_folder(tmp_path / "tt", rng, per_class=2, test=True)
    save(root / "test" / "zebra" / "z.png", np.zeros((4, 4, 3)))
    with pytest.raises(DataError, match="zebra: class folder not in train/"):
        load_image_folder(root, (3, 8, 8))


def test_dataset_kind_images_in_the_data_config(tmp_path, rng):
    root = make_folder(tmp_path / "colours", rng, per_class=10)
    cfg = DataConfig(dataset="images", path=str(root), n_val=3, image_shape=(3, 8, 8))
    ds = load_dataset(cfg)
    assert ds.sizes() == {"train": 21, "val": 3, "test": 6}
    assert ds.classes == ("blue", "green", "red") and ds.image_shape == (3, 8, 8) and ds.input_size == 192
    np.testing.assert_allclose(ds.mean, ds.X_train.mean(axis=0))  # training statistics only
    with pytest.raises(ConfigError, match="must name the image folder"):
        load_raw(DataConfig(dataset="images"))
    with pytest.raises(ConfigError, match="CIFAR-10 only"):
        load_dataset(DataConfig(dataset="images", path=str(root), split="batch1"))
    with pytest.raises(ConfigError, match="one of cifar10, idx, images"):
        DataConfig(dataset="imagenet")


TRAIN_EXP = """
name = "colours"
[model]
hidden = [16]
[data]
dataset = "images"
path = "{root}"
n_val = 3
image_shape = [3, 8, 8]
[train]
batch_size = 6
n_s = 20
n_cycles = 1
eta_max = 0.05
evals_per_cycle = 2
checkpoint_every = 0
"""


def test_train_from_an_image_folder_and_predict_its_images(tmp_path, rng, capsys):
    from klayer.cli import main

    root = make_folder(tmp_path / "colours", rng, per_class=10)
    exp = tmp_path / "colours.toml"
    exp.write_text(TRAIN_EXP.format(root=root))
    assert main(["train", str(exp), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["classes"] == ["blue", "green", "red"] and res["test_accuracy"] == 1.0
    capsys.readouterr()
    save(tmp_path / "new" / "r.png", noisy(rng, COLOURS["red"], (50, 70)))
    save(tmp_path / "new" / "b.jpg", noisy(rng, COLOURS["blue"], (64, 64)), "JPEG")
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "new"), "--format", "json", "--top-k", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["input"].split("/")[-1], r["top"][0]["class"]) for r in out] == [("b.jpg", "blue"), ("r.png", "red")]
    # a float image refused by the rule is named in one line; the other inputs are still predicted
    bad = save_float(tmp_path / "mixed" / "a.tif", np.full((8, 8), np.nan))
    save(tmp_path / "mixed" / "b.jpg", noisy(rng, COLOURS["blue"], (64, 64)), "JPEG")
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "mixed"), "--format", "json", "--top-k", "1"]) == 1
    captured = capsys.readouterr()
    assert [r["top"][0]["class"] for r in json.loads(captured.out)] == ["blue"]
    assert captured.err.count("\n") == 1 and f"{bad}: float image with 64 NaN or infinite value(s)" in captured.err


def test_a_folder_of_splits_is_never_read_as_classes(tmp_path, rng):
    """train/ and val/ without test/ was read as a data set of two classes named 'train' and 'val';
    sub-folders that are all split names are a split layout, which needs train/ and test/ (one
    line otherwise); a val/ beside them is not read and a line says so; a class named 'train' among
    other classes stays a class."""
    import shutil

    root = make_folder(tmp_path / "tv", rng, per_class=4, test=True)
    shutil.move(root / "test", root / "val")
    with pytest.raises(DataError, match=r"tv: holds the splits train/, val/ but no test/: a split image folder needs"):
        load_image_folder(root, (3, 8, 8), log=pytest.fail)
    shutil.move(root / "train", root / "validation")
    with pytest.raises(DataError, match=r"tv: holds the splits val/, validation/ but no train/"):
        load_image_folder(root, (3, 8, 8), log=pytest.fail)
    root = make_folder(tmp_path / "tvt", rng, per_class=4, test=True)
    shutil.copytree(root / "test", root / "val")
    lines = []
    raw = load_image_folder(root, (3, 8, 8), log=lines.append)
    assert raw.classes == tuple(sorted(COLOURS)) and len(raw.batches["test"][1]) == 3 * len(COLOURS)
    assert lines == [f"{root / 'val'}: not read; the validation images are held out of train/ (data.n_val)"]
    root = make_folder(tmp_path / "vehicles", rng, per_class=4)
    shutil.copytree(root / sorted(COLOURS)[0], root / "train")  # a class of trains
    raw = load_image_folder(root, (3, 8, 8), log=pytest.fail)
    assert "train" in raw.classes and len(raw.classes) == len(COLOURS) + 1


def test_class_and_run_names_with_dollar_signs_are_drawn_as_they_are(tmp_path, rng, capsys):
    # matplotlib reads the text between two "$" as mathtext: a class folder "a$_$b" (or a run named
    # so) raised a ValueError while the confusion matrix and curves were drawn, after the last
    # update: a traceback, and no model file
    from klayer.cli import main

    root = tmp_path / "dollars"
    for name, colour in (("a$_$b", (230, 30, 20)), ("$\\frac$", (20, 40, 220)), ("c", (30, 200, 40))):
        for i in range(8):
            save(root / name / f"{i}.png", noisy(rng, colour))
    exp = tmp_path / "dollars.toml"
    exp.write_text(TRAIN_EXP.format(root=root).replace('name = "colours"', 'name = "run$_$x"'))
    assert main(["train", str(exp), "--out", str(tmp_path / "run"), "--quiet"]) == 0, capsys.readouterr().err
    for f in ("model.safetensors", "confusion.png", "cost.png"):
        assert (tmp_path / "run" / f).is_file()
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["classes"] == ["$\\frac$", "a$_$b", "c"]
    assert main(["evaluate", str(tmp_path / "run"), "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    import matplotlib

    assert matplotlib.rcParams["text.parse_math"]  # the user's own setting is left as it was


def test_class_folders_named_in_another_encoding_give_printable_class_names(tmp_path, rng, capsys):
    # a class folder named in Latin-1 ("caf\xe9") became the class name "caf\udce9" (Python's
    # surrogate escape), which cannot be drawn or printed: klayer train ended in a traceback while
    # drawing the confusion matrix, after the last update, with no model file
    import os

    from klayer.cli import main

    root = tmp_path / "latin"
    for name, colour in ((b"caf\xe9", (230, 30, 20)), (b"the", (20, 40, 220))):
        folder = os.fsdecode(os.path.join(os.fsencode(root), name))
        for i in range(8):
            save(Path(folder) / f"{i}.png", noisy(rng, colour))
    assert load_image_folder(root, (3, 8, 8)).classes == ("caf\\xe9", "the")
    exp = tmp_path / "latin.toml"
    exp.write_text(TRAIN_EXP.format(root=root))
    assert main(["train", str(exp), "--out", str(tmp_path / "run"), "--quiet"]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "results.json").read_text())["classes"] == ["caf\\xe9", "the"]
    assert load_model(tmp_path / "run" / "model.safetensors").classes == ("caf\\xe9", "the")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run")]) == 0  # the test split is found again by folder
    assert "caf\\xe9" in capsys.readouterr().out


def test_snapshot_models_of_an_image_folder_know_their_image_shape(tmp_path, rng, capsys):
    # snapshots/cycle<c>.safetensors had no image_shape field: klayer predict inferred the shape
    # from the input width, and 3 x 12 x 16 = 576 = 24 x 24 was read as a 24 x 24 grey image
    from klayer.cli import main

    root = make_folder(tmp_path / "colours", rng, per_class=10)
    exp = tmp_path / "colours.toml"
    exp.write_text(
        TRAIN_EXP.format(root=root)
        .replace("[3, 8, 8]", "[3, 12, 16]")
        .replace("n_cycles = 1", "n_cycles = 1\nsnapshots = true")
    )
    assert main(["train", str(exp), "--out", str(tmp_path / "run"), "--quiet"]) == 0, capsys.readouterr().err
    snapshot = tmp_path / "run" / "snapshots" / "cycle1.safetensors"
    m = load_model(snapshot)
    assert (
        m.meta["image_shape"] == [3, 12, 16] == load_model(tmp_path / "run" / "model.safetensors").meta["image_shape"]
    )
    photo = save(tmp_path / "new" / "r.png", noisy(rng, COLOURS["red"], (30, 40)))
    capsys.readouterr()
    assert main(["predict", str(snapshot), str(photo), "--format", "json", "--top-k", "3"]) == 0
    top = {t["class"]: t["probability"] for t in json.loads(capsys.readouterr().out)[0]["top"]}
    p = m.predict_proba(read_image(photo, (3, 12, 16))[None].astype(np.float64))[0]
    np.testing.assert_allclose([top[c] for c in m.classes], p, rtol=1e-6)
