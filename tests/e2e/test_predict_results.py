"""`predict` returns what the loss implies (issue 10, item 2): values for mse, a probability
and a 0/1 decision for bce_with_logits, a class, class probabilities and (where the data
names its classes) a class name for cross_entropy. Each checked against the model's own
evaluation on the same rows, through the Python API and `graphdl predict`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from e2e_helpers import printed_table, read_csv, write_csv
from PIL import Image

import graphdl
import graphdl.api
from graphdl.data import read_fields
from graphdl.data.split import split_config, split_indices
from graphdl.runtime.checkpoint import load_checkpoint


def _tabular_spec(directory: Path, name: str, csv_name: str, target: str, loss: str) -> Path:
    """A one-dense-unit model on a csv of three features (x) and one target column."""
    doc = {
        "graphdl": 1,
        "name": name,
        "seed": 1,
        "data": {
            "source": {"type": "csv", "path": csv_name, "target": target},
            "split": {"train": 0.7, "val": 0.15, "test": 0.15},
        },
        "model": {
            "inputs": {"x": {"shape": [3], "dtype": "float32"}},
            "layers": [{"type": "dense", "units": 1}],
        },
        "train": {
            "target": target,
            "epochs": 2,
            "batch_size": 32,
            "loss": {"type": loss},
            "optimizer": {"type": "adam", "lr": 0.05},
        },
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _features(n: int = 200) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 3))


def _trained_tabular(d: Path, name: str, target: str, loss: str, x, y):
    """(model, spec path, directory): the model of `_tabular_spec` trained on x and y
    (written to <d>/<name>.csv), its run in <d>/run."""
    write_csv(d / f"{name}.csv", ["a", "b", "c", target], np.column_stack([x, y]))
    spec = _tabular_spec(d, name, f"{name}.csv", target, loss)
    model = graphdl.load(spec)
    model.fit(d / "run", progress=False)
    return model, spec, d




# ------------------------------------------------------------------ regression (mse)


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    x = _features()
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.3
    return _trained_tabular(tmp_path_factory.mktemp("regression"), "reg", "y", "mse", x, y)


def test_regression_predicts_values_equal_to_its_evaluation(regression):
    model, _, _ = regression
    test = model.data().test  # no preprocessing: these are the raw rows
    result = model.predict_result(test.fields["x"])
    assert set(result) == {"value"}
    value = result["value"]
    assert value.dtype == np.float32 and value.shape == (len(test),)
    np.testing.assert_array_equal(value, model.predict(test.fields["x"])[:, 0])
    assert np.ptp(value) > 1.0  # values, not a class index
    mse = float(np.mean((value.astype(np.float64) - test.fields["y"]) ** 2))
    assert mse == pytest.approx(model.evaluate("test")["loss"], rel=1e-5)


def test_cli_predict_prints_and_writes_values(regression, cli):
    model, spec, d = regression
    test = model.data().test
    rows = np.column_stack([test.fields["x"][:3], test.fields["y"][:3]])
    write_csv(d / "new.csv", ["a", "b", "c", "y"], rows)
    want = model.predict_result(rows[:, :3].astype(np.float32))["value"]

    args = ("predict", spec, "--weights", d / "run" / "best.ckpt", "--input", d / "new.csv")
    rc, out, err = cli(*args)
    assert rc == 0, err
    table = printed_table(out)
    assert table[0] == ["row", "value"]
    assert [r[0] for r in table[1:]] == ["0", "1", "2"]
    np.testing.assert_allclose([float(r[1]) for r in table[1:]], want, rtol=1e-5)

    rc, out, err = cli(*args, "--output", d / "pred.csv")
    assert rc == 0, err
    assert "(3 rows)" in out
    written = read_csv(d / "pred.csv")
    assert list(written[0]) == ["row", "value"]
    np.testing.assert_array_equal(np.array([float(r["value"]) for r in written], np.float32), want)


# ------------------------------------------------------------------ binary (bce_with_logits)


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    x = _features()
    label = (x[:, 0] + x[:, 1] > 0).astype(np.float64)
    d = tmp_path_factory.mktemp("binary")
    return _trained_tabular(d, "bin", "label", "bce_with_logits", x, label)


def test_binary_predicts_sigmoid_probabilities_and_decisions(binary):
    model, _, _ = binary
    test = model.data().test
    logits = model.predict(test.fields["x"])[:, 0].astype(np.float64)
    result = model.predict_result(test.fields["x"])
    assert set(result) == {"probability", "decision"}
    p, decision = result["probability"], result["decision"]
    assert p.dtype == np.float32 and p.shape == (len(test),)
    assert decision.dtype == np.int64
    np.testing.assert_allclose(p, 1.0 / (1.0 + np.exp(-logits)), rtol=1e-6)
    np.testing.assert_array_equal(decision, (logits > 0).astype(np.int64))
    y = test.fields["label"]
    bce = -np.mean(y * np.log(p.astype(np.float64)) + (1 - y) * np.log1p(-p.astype(np.float64)))
    assert bce == pytest.approx(model.evaluate("test")["loss"], rel=1e-5)


def test_a_positive_logit_is_decision_1(binary, cli):
    """Every row's logit set to the bias: 2.16 -> probability 0.8966, decision 1 (argmax over
    the single output said class 0); -2.16 -> decision 0. Extreme logits stay finite."""
    model, spec, d = binary
    x = model.data().test.fields["x"][:4]
    model.params["dense_1.kernel"][...] = 0.0
    for bias, decision in ((2.16, 1), (-2.16, 0)):
        model.params["dense_1.bias"][...] = bias
        model.sync_to_device()
        result = model.predict_result(x)
        np.testing.assert_allclose(result["probability"], 1 / (1 + np.exp(-bias)), rtol=1e-6)
        assert result["decision"].tolist() == [decision] * 4
    model.params["dense_1.bias"][...] = 2.16
    model.sync_to_device()
    model.save(d / "bias.ckpt")
    write_csv(d / "four.csv", ["a", "b", "c"], x)
    rc, out, err = cli("predict", spec, "--weights", d / "bias.ckpt", "--input", d / "four.csv")
    assert rc == 0, err
    table = printed_table(out)
    assert table[0] == ["row", "probability", "decision"]
    assert table[1:] == [[str(i), "0.8966", "1"] for i in range(4)]

    with np.errstate(over="raise", invalid="raise", divide="raise"):  # a stable sigmoid
        high = graphdl.api.interpret_outputs(
            "bce_with_logits", np.array([[1e4], [-1e4]], np.float32)
        )
    assert high["probability"].tolist() == [1.0, 0.0] and high["decision"].tolist() == [1, 0]


# ------------------------------------------------------------------ digits MLP (cross_entropy)


def _raw_test_rows(model):
    """The test split's rows as they are in the data source, before preprocessing."""
    spec = model.spec
    fields = read_fields(spec, require_target=True)
    cfg = split_config(spec)
    labels = fields["y"] if cfg.stratify else None
    idx = split_indices(len(fields["y"]), cfg, spec.seed, labels)
    x, y = fields["x"][idx[2]], fields["y"][idx[2]]
    np.testing.assert_array_equal(y, model.data().test.fields["y"])  # the same rows
    return x, y


def test_digits_classes_probabilities_and_accuracy(trained_run):
    spec, run_dir, rc, _ = trained_run
    assert rc == 0
    model = graphdl.load(spec)
    model.load_weights(run_dir / "best.ckpt")
    x, y = _raw_test_rows(model)
    result = model.predict_result(x)
    assert set(result) == {"class", "probabilities"}  # the digits do not name their classes
    cls, probs = result["class"], result["probabilities"]
    assert cls.dtype == np.int64 and cls.shape == (len(x),)
    assert probs.dtype == np.float32 and probs.shape == (len(x), 10)
    np.testing.assert_array_equal(cls, model.predict(x).argmax(axis=1))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()
    np.testing.assert_array_equal(probs.argmax(axis=1), cls)
    accuracy = float((cls == y).mean())
    assert accuracy == pytest.approx(model.evaluate("test")["accuracy"], abs=1e-12)


def test_cli_digits_prints_class_and_probability(trained_run, tmp_path, cli):
    spec, run_dir, _, _ = trained_run
    model = graphdl.load(spec)
    model.load_weights(run_dir / "best.ckpt")
    x, _ = _raw_test_rows(model)
    want = model.predict_result(x[:3])
    np.savez(tmp_path / "three.npz", x=x[:3])
    args = ("predict", spec, "--weights", run_dir / "best.ckpt", "--input", tmp_path / "three.npz")

    rc, out, err = cli(*args)
    assert rc == 0, err
    table = printed_table(out)
    assert table[0] == ["row", "class", "probability"]
    assert [int(r[1]) for r in table[1:]] == want["class"].tolist()
    top = want["probabilities"][np.arange(3), want["class"]]
    np.testing.assert_allclose([float(r[2]) for r in table[1:]], top, atol=5e-5)

    rc, out, err = cli(*args, "--output", tmp_path / "pred.npz")
    assert rc == 0, err
    with np.load(tmp_path / "pred.npz") as pred:
        assert set(pred.files) == {"class", "probabilities", "logits"}
        np.testing.assert_array_equal(pred["class"], want["class"])
        np.testing.assert_array_equal(pred["probabilities"], want["probabilities"])
        np.testing.assert_array_equal(pred["logits"], model.predict(x[:3]))

    rc, out, err = cli(*args, "--output", tmp_path / "pred.csv")
    assert rc == 0, err
    written = read_csv(tmp_path / "pred.csv")
    assert list(written[0]) == ["row", "class", "probability"] + [
        f"probability_{k}" for k in range(10)
    ]
    assert [int(r["class"]) for r in written] == want["class"].tolist()

    rc, _, err = cli(*args, "--output", tmp_path / "pred.txt")
    assert rc == 2 and "error[E704]" in err and ".csv" in err


# ------------------------------------------------------------------ image folder: class names


def _image_folder(root: Path) -> None:
    """root/cat (dark) and root/dog (bright): 8 grayscale 6x6 images each."""
    rng = np.random.default_rng(0)
    for name, low in (("cat", 0), ("dog", 160)):
        (root / name).mkdir(parents=True)
        for k in range(8):
            pixels = rng.integers(low, low + 96, size=(6, 6), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / name / f"img{k}.png")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    _image_folder(d / "pets")
    doc = {
        "graphdl": 1,
        "name": "pets",
        "seed": 0,
        "data": {
            "source": {"type": "image_folder", "path": "pets", "mode": "grayscale"},
            "split": {"train": 0.5, "val": 0.25, "test": 0.25, "stratify": True},
            "preprocess": [{"op": "scale", "factor": 1 / 255}],
        },
        "model": {
            "inputs": {"image": {"shape": [1, 6, 6], "dtype": "float32"}},
            "layers": [{"type": "flatten"}, {"type": "dense", "units": 2}],
        },
        "train": {
            "target": "label",
            "epochs": 2,
            "batch_size": 4,
            "loss": {"type": "cross_entropy"},
            "optimizer": {"type": "adam", "lr": 0.05},
        },
    }
    spec = d / "pets.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    model = graphdl.load(spec)
    model.fit(d / "run", progress=False)
    return model, spec, d


def test_image_folder_predicts_class_names(images):
    model, _, _ = images
    fields = read_fields(model.spec, require_target=True)  # the folder's images, raw
    result = model.predict_result(fields["image"])
    assert set(result) == {"class", "probabilities", "class_name"}
    np.testing.assert_array_equal(result["class_name"], np.array(["cat", "dog"])[result["class"]])
    assert (result["class"] == fields["label"]).mean() >= 0.75


def test_class_names_come_with_the_checkpoint(images, cli):
    """predict in a new process: the class names are in the checkpoint, so the training
    images are not read again."""
    model, spec, d = images
    _, meta = load_checkpoint(d / "run" / "best.ckpt")
    assert meta["class_names"] == ["cat", "dog"]
    fresh = graphdl.load(spec)
    fresh.load_weights(d / "run" / "best.ckpt")
    x = read_fields(model.spec, require_target=True)["image"][[0, 15]]
    result = fresh.predict_result(x)
    assert fresh.splits is None
    np.testing.assert_array_equal(result["class_name"], np.array(["cat", "dog"])[result["class"]])

    np.savez(d / "two.npz", image=x)
    args = ("predict", spec, "--weights", d / "run" / "best.ckpt", "--input", d / "two.npz")
    rc, out, err = cli(*args)
    assert rc == 0, err
    table = printed_table(out)
    assert table[0] == ["row", "class", "class_name", "probability"]
    assert [r[2] for r in table[1:]] == result["class_name"].tolist()

    rc, out, err = cli(*args, "--output", d / "two.csv")
    assert rc == 0, err
    written = read_csv(d / "two.csv")
    assert list(written[0]) == [
        "row",
        "class",
        "class_name",
        "probability",
        "probability_cat",
        "probability_dog",
    ]
    assert [r["class_name"] for r in written] == result["class_name"].tolist()
