"""Image data: digits as images, npz image arrays, image folders, image preprocessing run
through the engine, and the checks of model inputs against the preprocessed shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from graphdl.data import apply_preprocess, load_data, read_fields
from graphdl.ops.registry import get_op

ALL_TRAIN = {"train": 1.0, "val": 0.0, "test": 0.0, "shuffle": False}
NO_SHUFFLE = {"train": 0.8, "val": 0.1, "test": 0.1, "shuffle": False}
DIGITS_IMAGES = {"type": "builtin", "name": "digits", "as_images": True}


def _ref(op, x, **attrs):
    opdef = get_op(op)
    return opdef.reference(opdef.check_attrs(attrs), x)


# ---------------------------------------------------------------- sources


def test_digits_as_images(make_spec):
    plain = load_data(make_spec(split=ALL_TRAIN))
    spec = make_spec(source=DIGITS_IMAGES, inputs={"image": ((1, 8, 8), "float32")},
                     target="label", split=ALL_TRAIN)
    s = load_data(spec)
    image, label = s.train.fields["image"], s.train.fields["label"]
    assert set(s.train.fields) == {"image", "label"}
    assert image.dtype == np.float32 and image.shape == (1797, 1, 8, 8)
    assert label.dtype == np.int64 and s.num_classes == 10
    np.testing.assert_array_equal(image.reshape(1797, 64), plain.train.fields["x"])
    np.testing.assert_array_equal(label, plain.train.fields["y"])


def _write_folder(root, sizes=None, mode="RGB", suffix=".png"):
    """root/<class>/img<k>.png for classes cat, ant, bee (3, 2 and 2 images)."""
    r = np.random.default_rng(0)
    pixels = {}
    for name, count in (("cat", 3), ("ant", 2), ("bee", 2)):
        (root / name).mkdir(parents=True)
        for k in range(count):
            h, w = (sizes or {}).get((name, k), (6, 5))
            shape = (h, w, 3) if mode == "RGB" else (h, w)
            arr = r.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(arr, mode=mode).save(root / name / f"img{k}{suffix}")
            pixels[(name, k)] = arr
    (root / "notes.txt").write_text("not a class")
    (root / "ant" / "readme.md").write_text("not an image")
    return pixels


def test_image_folder_reads_classes_in_sorted_order(make_spec, tmp_path):
    pixels = _write_folder(tmp_path / "imgs")
    spec = make_spec(source={"type": "image_folder", "path": "imgs"},
                     inputs={"image": ((3, 6, 5), "float32")}, target="label", split=ALL_TRAIN)
    s = load_data(spec)
    image, label = s.train.fields["image"], s.train.fields["label"]
    assert image.dtype == np.float32 and image.shape == (7, 3, 6, 5)
    assert label.tolist() == [0, 0, 1, 1, 2, 2, 2]  # ant, bee, cat
    assert s.class_names == ["ant", "bee", "cat"] and s.num_classes == 3
    np.testing.assert_array_equal(image[4], pixels[("cat", 0)].transpose(2, 0, 1))
    assert image.max() > 200 and image.min() >= 0  # 0..255, not rescaled


def test_image_folder_grayscale_and_size(make_spec, tmp_path):
    _write_folder(tmp_path / "imgs", sizes={("cat", 1): (9, 7)}, suffix=".jpg")
    source = {"type": "image_folder", "path": "imgs", "mode": "grayscale", "size": [4, 3]}
    spec = make_spec(source=source, inputs={"image": ((1, 4, 3), "float32")}, target="label",
                     split=ALL_TRAIN)
    image = load_data(spec).train.fields["image"]
    assert image.shape == (7, 1, 4, 3)
    path = tmp_path / "imgs" / "ant" / "img0.jpg"
    want = np.asarray(Image.open(path).convert("L").resize((3, 4), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(image[0, 0], want)


def test_image_folder_different_sizes_need_size(make_spec, expect_error, tmp_path):
    _write_folder(tmp_path / "imgs", sizes={("cat", 1): (9, 7)})
    spec = make_spec(source={"type": "image_folder", "path": "imgs"},
                     inputs={"image": ((3, 6, 5), "float32")}, target="label")
    d = expect_error(lambda: load_data(spec), "E503", spec, "data", "source")
    assert "different sizes" in d.message and "cat/img1.png" in d.message
    assert "size:" in d.help


@pytest.mark.parametrize("problem", ["missing", "no_classes", "empty_class", "bad_image"])
def test_image_folder_errors(make_spec, expect_error, tmp_path, problem):
    root = tmp_path / "imgs"
    if problem != "missing":
        root.mkdir()
    if problem in ("empty_class", "bad_image"):
        _write_folder(root / "x")
        root = root / "x"
    if problem == "empty_class":
        (root / "dog").mkdir()
    if problem == "bad_image":
        (root / "cat" / "broken.png").write_bytes(b"not a png")
    spec = make_spec(source={"type": "image_folder", "path": str(root)},
                     inputs={"image": ((3, 6, 5), "float32")}, target="label")
    d = expect_error(lambda: load_data(spec), "E501", spec, "data", "source", "path")
    needle = {"missing": "does not exist", "no_classes": "no class folders",
              "empty_class": "holds no .png", "bad_image": "broken.png"}[problem]
    assert needle in d.message


def test_image_folder_bad_settings(make_spec, expect_error, tmp_path):
    _write_folder(tmp_path / "imgs")
    for key, value in (("mode", "rgba"), ("size", [0, 4])):
        spec = make_spec(source={"type": "image_folder", "path": "imgs", key: value},
                         inputs={"image": ((3, 6, 5), "float32")}, target="label")
        expect_error(lambda spec=spec: load_data(spec), "E508", spec, "data", "source", key)


# ---------------------------------------------------------------- image preprocessing

LENET_STEPS = [
    {"op": "scale", "factor": 0.0625},
    {"op": "resize", "size": 16, "interpolation": "bilinear"},
    {"op": "median_filter", "kernel": 3},
    {"op": "gaussian_blur", "kernel": 3, "sigma": 0.8},
    {"op": "normalize", "mode": "zscore", "stats": "from_train"},
]


@pytest.fixture
def lenet_like(make_spec):
    spec = make_spec(source=DIGITS_IMAGES, inputs={"image": ((1, 16, 16), "float32")},
                     target="label", split=NO_SHUFFLE, preprocess=LENET_STEPS)
    raw = load_data(make_spec(source=DIGITS_IMAGES, inputs={"image": ((1, 8, 8), "float32")},
                              target="label", split=NO_SHUFFLE))
    return spec, load_data(spec), raw


def test_image_steps_match_the_op_references(lenet_like):
    _, s, raw = lenet_like
    st = s.preprocess_state
    assert list(st) == ["scale.0", "resize.1", "median_filter.2", "gaussian_blur.3",
                        "normalize.4"]
    assert st["resize.1"] == {"op": "resize", "size": [16, 16], "interpolation": "bilinear",
                              "fields": ["image"]}
    assert st["normalize.4"]["stats"]["image"]["per"] == "channel"

    def steps(x):
        x = (x.astype(np.float64) * 0.0625).astype(np.float32)
        x = _ref("resize", x, size=(16, 16))
        x = _ref("median_filter", x, kernel=3)
        return _ref("gaussian_blur", x, kernel=3, sigma=0.8)

    train = steps(raw.train.fields["image"])
    mean, std = train.astype(np.float64).mean(), train.astype(np.float64).std()
    norm = st["normalize.4"]["stats"]["image"]
    np.testing.assert_allclose(norm["mean"], [mean], rtol=1e-9)
    np.testing.assert_allclose(norm["std"], [std], rtol=1e-9)
    for name in ("train", "val", "test"):
        want = (steps(raw.get(name).fields["image"]).astype(np.float64) - mean) / std
        got = s.get(name).fields["image"]
        assert got.shape == (len(want), 1, 16, 16) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=2e-6)
        np.testing.assert_array_equal(s.get(name).fields["label"], raw.get(name).fields["label"])


def test_apply_preprocess_repeats_image_steps(lenet_like, make_spec):
    spec, s, raw = lenet_like
    state = json.loads(json.dumps(s.preprocess_state))
    out = apply_preprocess(spec, {"image": raw.test.fields["image"].astype(np.float64)}, state)
    np.testing.assert_array_equal(out["image"], s.test.fields["image"])
    # new data comes in stored shape; read_fields checks it against the preprocessed shape
    fields = read_fields(spec)
    assert fields["image"].shape == (1797, 1, 8, 8)


def test_apply_preprocess_wrong_image_shape(lenet_like, expect_error):
    spec, s, _ = lenet_like
    d = expect_error(
        lambda: apply_preprocess(spec, {"image": np.zeros((2, 3, 8, 8))}, s.preprocess_state),
        "E503", spec, "model", "inputs", "image")
    assert "normalize was fitted on images with 1 channels" in d.message


def test_per_channel_normalize_on_rgb_npz(make_spec, tmp_path):
    r = np.random.default_rng(3)
    x = r.normal([[[1.0]], [[5.0]], [[-3.0]]], [[[1.0]], [[2.0]], [[0.5]]], size=(50, 3, 4, 5))
    np.savez(tmp_path / "rgb.npz", x=x, y=np.arange(50) % 2)
    spec = make_spec(source={"type": "npz", "path": "rgb.npz"},
                     inputs={"x": ((3, 4, 5), "float32")}, split=ALL_TRAIN,
                     preprocess=[{"op": "normalize", "mode": "minmax"}])
    s = load_data(spec)
    st = s.preprocess_state["normalize.0"]["stats"]["x"]
    x32 = x.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(st["min"], x32.min(axis=(0, 2, 3)))
    out = s.train.fields["x"]
    np.testing.assert_allclose(out.min(axis=(0, 2, 3)), 0, atol=1e-7)
    np.testing.assert_allclose(out.max(axis=(0, 2, 3)), 1, atol=1e-6)


def test_colour_steps_on_npz_images(make_spec, tmp_path):
    r = np.random.default_rng(4)
    x = r.integers(0, 256, size=(12, 3, 8, 8)).astype(np.uint8)
    np.savez(tmp_path / "rgb.npz", image=x, label=np.arange(12) % 3)
    steps = [{"op": "rgb_to_yuv"}, {"op": "select_channels", "channels": [0]},
             {"op": "resize", "size": [4, 6], "interpolation": "nearest"}]
    spec = make_spec(source={"type": "npz", "path": "rgb.npz"},
                     inputs={"image": ((1, 4, 6), "float32")}, target="label",
                     split=ALL_TRAIN, preprocess=steps)
    out = load_data(spec).train.fields["image"]
    gray = _ref("grayscale", x.astype(np.float32))
    np.testing.assert_allclose(out, _ref("resize", gray, size=(4, 6), interpolation="nearest"),
                               atol=1e-4)


def test_preprocessed_shape_is_checked_against_the_model(make_spec, expect_error):
    spec = make_spec(source=DIGITS_IMAGES, inputs={"image": ((1, 28, 28), "float32")},
                     target="label", preprocess=[{"op": "resize", "size": 32}])
    d = expect_error(lambda: load_data(spec), "E503", spec, "model", "inputs", "image")
    assert d.message == ("model.inputs.image has shape [1, 28, 28] but the data field 'image' "
                         "has per-sample shape [1, 32, 32] after data.preprocess (stored: "
                         "[1, 8, 8])")
    assert "[1, 32, 32]" in d.help and "resize" in d.help


@pytest.mark.parametrize(
    "source, inputs, steps, where, needle",
    [
        (None, {"x": ((64,), "float32")}, [{"op": "resize", "size": 16}],
         ("data", "preprocess", 0, "op"), "no float image field"),
        (None, {"x": ((64,), "float32")}, [{"op": "median_filter", "kernel": 3,
                                            "fields": ["x"]}],
         ("data", "preprocess", 0, "fields", 0), "works on images [C, H, W]"),
        (DIGITS_IMAGES, {"image": ((1, 8, 8), "float32")}, [{"op": "grayscale"}],
         ("data", "preprocess", 0), "needs 3 channels"),
        (DIGITS_IMAGES, {"image": ((1, 8, 8), "float32")},
         [{"op": "select_channels", "channels": [1]}], ("data", "preprocess", 0),
         "channel 1 does not exist"),
        (DIGITS_IMAGES, {"image": ((1, 8, 8), "float32")},
         [{"op": "gaussian_blur", "kernel": 4, "sigma": 1.0}],
         ("data", "preprocess", 0, "kernel"), "odd integer"),
        (DIGITS_IMAGES, {"image": ((1, 8, 8), "float32")},
         [{"op": "gaussian_blur", "kernel": 3, "sigma": 0}],
         ("data", "preprocess", 0, "sigma"), "positive number"),
        (DIGITS_IMAGES, {"image": ((1, 8, 8), "float32")}, [{"op": "resize", "size": [8]}],
         ("data", "preprocess", 0, "size"), "[height, width]"),
        (DIGITS_IMAGES, {"image": ((1, 8, 8), "float32")},
         [{"op": "resize", "size": 8, "interpolation": "bicubic"}],
         ("data", "preprocess", 0, "interpolation"), "unknown resize interpolation"),
        (DIGITS_IMAGES, {"image": ((1, 8, 8), "float32")},
         [{"op": "select_channels", "channels": []}], ("data", "preprocess", 0, "channels"),
         "non-empty list"),
        (DIGITS_IMAGES, {"image": ((1, 8, 8), "float32")}, [{"op": "median"}],
         ("data", "preprocess", 0, "op"), "unknown preprocess op"),
    ],
)
def test_e508_image_steps(make_spec, expect_error, source, inputs, steps, where, needle):
    spec = make_spec(source=source, inputs=inputs, preprocess=steps,
                     target="label" if source else "y")
    d = expect_error(lambda: load_data(spec), "E508", spec, *where)
    assert needle in d.message


def test_pca_step(make_spec, expect_error):
    spec = make_spec(preprocess=[{"op": "scale", "factor": 0.0625},
                                 {"op": "pca", "components": 20}],
                     inputs={"x": ((20,), "float32")})
    s = load_data(spec)
    assert s.train.fields["x"].shape == (len(s.train), 20)
    state = json.loads(json.dumps(s.preprocess_state))
    raw = load_data(make_spec())  # the same split, not preprocessed
    out = apply_preprocess(spec, {"x": raw.test.fields["x"]}, state)
    np.testing.assert_array_equal(out["x"], s.test.fields["x"])


# ---------------------------------------------------------------- augment settings


@pytest.mark.parametrize(
    "source, inputs, steps, where, needle",
    [
        (DIGITS_IMAGES, {"image": ((1, 8, 8), "float32")}, [{"op": "random_rotate"}],
         ("data", "augment", 0, "op"), "unknown augment op"),
        (DIGITS_IMAGES, {"image": ((1, 8, 8), "float32")},
         [{"op": "random_rotation", "degrees": 200}], ("data", "augment", 0, "degrees"),
         "[0, 180]"),
        (DIGITS_IMAGES, {"image": ((1, 8, 8), "float32")}, [{"op": "gaussian_noise"}],
         ("data", "augment", 0, "op"), "needs 'std'"),
        (DIGITS_IMAGES, {"image": ((1, 8, 8), "float32")},
         [{"op": "random_flip", "horizontal": False}], ("data", "augment", 0, "horizontal"),
         "flips nothing"),
        (DIGITS_IMAGES, {"image": ((1, 8, 8), "float32")},
         [{"op": "gaussian_noise", "std": 0.1, "p": 2}], ("data", "augment", 0, "p"), "p must"),
        (None, {"x": ((64,), "float32")},
         [{"op": "gaussian_noise", "std": 0.1}, {"op": "random_rotation", "degrees": 10}],
         ("data", "augment", 1, "op"), "no float model input is an image"),
    ],
)
def test_e508_augment_steps(make_spec, expect_error, source, inputs, steps, where, needle):
    spec = make_spec(source=source, inputs=inputs, augment=steps,
                     target="label" if source else "y")
    d = expect_error(lambda: load_data(spec), "E508", spec, *where)
    assert needle in d.message


def test_valid_augment_leaves_the_data_alone(make_spec):
    steps = [{"op": "random_rotation", "degrees": 10, "p": 0.5},
             {"op": "random_flip"}, {"op": "gaussian_noise", "std": 0.05},
             {"op": "salt_pepper_noise", "amount": 0.02}]
    spec = make_spec(source=DIGITS_IMAGES, inputs={"image": ((1, 8, 8), "float32")},
                     target="label", augment=steps, split=ALL_TRAIN)
    s = load_data(spec)  # augmentation happens in the train graph, not here
    assert float(s.train.fields["image"].max()) == 16.0
