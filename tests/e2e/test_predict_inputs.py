"""`graphdl predict` reads new data as training reads data.source (issue 10, item 8): a csv
with the spec's delimiter, feature columns and feature field (target column optional), an
npz with the spec's array names, and for an image_folder spec an image file, a list of
images or a folder, decoded, converted and resized as the training images are. Each is
checked against the model's own output on the same rows read through the training source;
a bad new file is an error located in that file, not in the spec.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from e2e_helpers import printed_table, read_csv, write_csv
from PIL import Image

import graphdl
from graphdl.data import read_fields


def _write_spec(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _spec(name: str, source: dict, inputs: dict, layers: list, target: str, loss: str,
          split: dict | None = None) -> dict:
    return {
        "graphdl": 1,
        "name": name,
        "seed": 1,
        "data": {"source": source,
                 "split": split or {"train": 0.7, "val": 0.15, "test": 0.15}},
        "model": {"inputs": inputs, "layers": layers},
        "train": {
            "target": target,
            "epochs": 2,
            "batch_size": 16,
            "loss": {"type": loss},
            "optimizer": {"type": "adam", "lr": 0.05},
        },
    }


def _trained(spec: Path, run_dir: Path):
    """The spec trained into run_dir, then a fresh model holding run_dir/last.ckpt (the
    weights `graphdl predict --weights` reads)."""
    graphdl.load(spec).fit(run_dir, progress=False)
    model = graphdl.load(spec)
    model.load_weights(run_dir / "last.ckpt")
    return model





# ------------------------------------------------------------------ csv: the spec's settings


@pytest.fixture(scope="module")
def csv_model(tmp_path_factory):
    """Regression on columns c and a (in that order) of a ';'-separated csv with two unused
    columns, into the feature field 'feat'."""
    d = tmp_path_factory.mktemp("csv_settings")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 4))  # columns a, b, c, d
    y = 2.0 * x[:, 2] - x[:, 0] + 0.5
    write_csv(d / "train.csv", ["a", "b", "c", "d", "y"], np.column_stack([x, y]), ";")
    source = {"type": "csv", "path": "train.csv", "target": "y", "delimiter": ";",
              "features": ["c", "a"], "feature_field": "feat"}
    spec = _write_spec(d / "reg.yaml", _spec(
        "csv_settings", source, {"feat": {"shape": [2], "dtype": "float32"}},
        [{"type": "dense", "units": 1}], "y", "mse"))
    return _trained(spec, d / "run"), spec, d


def _new_rows(model) -> tuple[np.ndarray, np.ndarray]:
    """The test split as csv rows a, b, c, d (b and d are noise the model never reads)."""
    test = model.data().test  # no data.preprocess: these are the rows as stored
    feat, y = test.fields["feat"], test.fields["y"]
    noise = np.random.default_rng(1).normal(size=(len(feat), 2)) * 100
    return np.column_stack([feat[:, 1], noise[:, 0], feat[:, 0], noise[:, 1]]), y


@pytest.mark.parametrize("with_target", [True, False])
def test_csv_uses_the_spec_columns_delimiter_and_feature_field(csv_model, cli, with_target):
    model, spec, d = csv_model
    rows, y = _new_rows(model)
    header = ["a", "b", "c", "d"] + (["y"] if with_target else [])
    table = np.column_stack([rows, y]) if with_target else rows
    new = write_csv(d / f"new_{with_target}.csv", header, table, ";")
    want = model.predict({"feat": model.data().test.fields["feat"]})[:, 0]

    rc, _, err = cli("predict", spec, "--weights", d / "run" / "last.ckpt", "--input", new,
                     "--output", d / f"pred_{with_target}.csv")
    assert rc == 0, err
    written = read_csv(d / f"pred_{with_target}.csv")
    assert list(written[0]) == ["row", "value"]
    value = np.array([float(r["value"]) for r in written], np.float32)
    np.testing.assert_allclose(value, want, rtol=1e-6, atol=1e-6)
    # the model's own evaluation of the same rows
    mse = float(np.mean((value.astype(np.float64) - y) ** 2))
    assert mse == pytest.approx(model.evaluate("test")["loss"], rel=1e-5)


def test_a_bad_csv_cell_is_located_in_the_new_file(csv_model, cli):
    model, spec, d = csv_model
    rows, _ = _new_rows(model)
    new = write_csv(d / "bad.csv", ["a", "b", "c", "d"], rows[:3], ";")
    lines = new.read_text(encoding="utf-8").splitlines()
    cells = lines[2].split(";")
    cells[2] = "oops"  # column c of line 3
    lines[2] = ";".join(cells)
    new.write_text("\n".join(lines) + "\n", encoding="utf-8")

    rc, _, err = cli("predict", spec, "--weights", d / "run" / "last.ckpt", "--input", new)
    assert rc == 2
    col = len(cells[0]) + len(cells[1]) + 3
    assert f"{new}:3:{col}: error[E505]" in err
    assert "column 'c'" in err and "oops" in err
    assert f"{spec}:" not in err.split("\n")[0]  # located in the new file, not the spec

    write_csv(d / "no_c.csv", ["a", "b", "d"], rows[:3, [0, 1, 3]], ";")
    rc, _, err = cli("predict", spec, "--weights", d / "run" / "last.ckpt",
                     "--input", d / "no_c.csv")
    assert rc == 2
    assert err.startswith(f"{d / 'no_c.csv'}: error[E502]")
    assert "no column 'c'" in err and "data.source.features" in err

    rc, _, err = cli("predict", spec, "--weights", d / "run" / "last.ckpt",
                     "--input", d / "missing.csv")
    assert rc == 2 and err.startswith(f"{d / 'missing.csv'}: error[E501]")


# ------------------------------------------------------------------ npz: the spec's array names


def test_npz_uses_the_spec_array_names(tmp_path, cli):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    labels = (x[:, 0] > x[:, 1]).astype(np.int64)
    np.savez(tmp_path / "train.npz", pixels=x, classes=labels)
    source = {"type": "npz", "path": "train.npz", "fields": {"x": "pixels", "y": "classes"}}
    spec = _write_spec(tmp_path / "npz.yaml", _spec(
        "npz_fields", source, {"x": {"shape": [4], "dtype": "float32"}},
        [{"type": "dense", "units": 2}], "y", "cross_entropy"))
    model = _trained(spec, tmp_path / "run")
    new_x = rng.normal(size=(5, 4)).astype(np.float32)
    np.savez(tmp_path / "new.npz", pixels=new_x)  # no labels
    want = model.predict_result(new_x)

    rc, _, err = cli("predict", spec, "--weights", tmp_path / "run" / "last.ckpt",
                     "--input", tmp_path / "new.npz", "--output", tmp_path / "pred.npz")
    assert rc == 0, err
    with np.load(tmp_path / "pred.npz") as pred:
        np.testing.assert_array_equal(pred["class"], want["class"])
        np.testing.assert_array_equal(pred["logits"], model.predict(new_x))

    np.savez(tmp_path / "renamed.npz", x=new_x)  # the model input's name, not the file's
    rc, _, err = cli("predict", spec, "--weights", tmp_path / "run" / "last.ckpt",
                     "--input", tmp_path / "renamed.npz")
    assert rc == 2
    assert err.startswith(f"{tmp_path / 'renamed.npz'}: error[E502]")
    assert "no array 'pixels'" in err


# ------------------------------------------------------------------ images: files and folders


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    """RGB 8x8 images in pets/cat (dark) and pets/dog (bright), read as grayscale 6x6."""
    d = tmp_path_factory.mktemp("image_inputs")
    rng = np.random.default_rng(3)
    for name, low in (("cat", 0), ("dog", 150)):
        (d / "pets" / name).mkdir(parents=True)
        for k in range(6):
            pixels = rng.integers(low, low + 100, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels, mode="RGB").save(d / "pets" / name / f"img{k}.png")
    source = {"type": "image_folder", "path": "pets", "mode": "grayscale", "size": [6, 6]}
    doc = _spec("image_inputs", source, {"image": {"shape": [1, 6, 6], "dtype": "float32"}},
                [{"type": "flatten"}, {"type": "dense", "units": 2}], "label", "cross_entropy",
                split={"train": 0.5, "val": 0.25, "test": 0.25, "stratify": True})
    doc["data"]["preprocess"] = [{"op": "scale", "factor": 1 / 255}]
    spec = _write_spec(d / "pets.yaml", doc)
    model = _trained(spec, d / "run")
    # the training source's reading of every image (sorted classes, sorted files)
    images = read_fields(model.spec, require_target=True)["image"]
    files = [f"{c}/img{k}.png" for c in ("cat", "dog") for k in range(6)]
    return model, spec, d, images, files


def _predict_images(cli, spec, d, *inputs) -> list[dict]:
    out_file = d / "pred.csv"
    rc, _, err = cli("predict", spec, "--weights", d / "run" / "last.ckpt",
                     "--input", *inputs, "--output", out_file)
    assert rc == 0, err
    return read_csv(out_file)


def _probabilities(model, images: np.ndarray) -> np.ndarray:
    return model.predict_result(images)["probabilities"]


def test_image_file_list_and_folder(image_model, cli):
    model, spec, d, images, files = image_model

    one = _predict_images(cli, spec, d, d / "pets" / "dog" / "img2.png")
    assert [r["file"] for r in one] == ["img2.png"]
    want = _probabilities(model, images[[8]])
    np.testing.assert_allclose([float(one[0]["probability_cat"]),
                                float(one[0]["probability_dog"])], want[0], rtol=1e-6)

    picked = [files.index("cat/img1.png"), files.index("dog/img4.png")]
    two = _predict_images(cli, spec, d, d / "pets" / "cat" / "img1.png",
                          d / "pets" / "dog" / "img4.png")
    assert [r["file"] for r in two] == ["img1.png", "img4.png"]
    np.testing.assert_allclose([[float(r["probability_cat"]), float(r["probability_dog"])]
                                for r in two], _probabilities(model, images[picked]), rtol=1e-6)

    every = _predict_images(cli, spec, d, d / "pets")
    assert [r["file"] for r in every] == files
    result = model.predict_result(images)
    assert [r["class_name"] for r in every] == result["class_name"].tolist()
    np.testing.assert_allclose([[float(r["probability_cat"]), float(r["probability_dog"])]
                                for r in every], result["probabilities"], rtol=1e-6)


def test_image_table_names_files_and_bad_images_are_located(image_model, cli, tmp_path):
    _, spec, d, _, _ = image_model
    rc, out, err = cli("predict", spec, "--weights", d / "run" / "last.ckpt",
                       "--input", d / "pets" / "cat")
    assert rc == 0, err
    table = printed_table(out)
    assert table[0] == ["row", "file", "class", "class_name", "probability"]
    assert [r[1] for r in table[1:]] == [f"img{k}.png" for k in range(6)]

    (tmp_path / "broken.png").write_bytes(b"not a png")
    rc, _, err = cli("predict", spec, "--weights", d / "run" / "last.ckpt",
                     "--input", d / "pets" / "cat" / "img0.png", tmp_path / "broken.png")
    assert rc == 2
    assert err.startswith(f"{tmp_path / 'broken.png'}: error[E501]")

    (tmp_path / "empty").mkdir()
    rc, _, err = cli("predict", spec, "--weights", d / "run" / "last.ckpt",
                     "--input", tmp_path / "empty")
    assert rc == 2
    assert err.startswith(f"{tmp_path / 'empty'}: error[E501]") and "no .png" in err
