"""data.source.test_path (issue 10, item 18): a held-out file or folder, read with the
settings of data.source.path, is the test split; data.split divides path into train and
val only, and a test fraction beside it is a located error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import graphdl
from graphdl.errors import GraphdlError


def _csv(path: Path, n: int, offset: int = 0) -> Path:
    rows = ["a,b,label"] + [f"{(i + offset) % 5},{(i * 3) % 7},{i % 2}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _spec(tmp: Path, source: dict, inputs: dict, layers: list, target: str,
          split: dict | None = None) -> Path:
    doc = {
        "graphdl": 1, "name": "test-path", "seed": 2,
        "data": {"source": source, **({"split": split} if split is not None else {})},
        "model": {"inputs": inputs, "layers": layers},
        "train": {"target": target, "epochs": 1, "batch_size": 8,
                  "loss": {"type": "cross_entropy"}, "optimizer": {"type": "adam", "lr": 0.05}},
    }
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _csv_spec(tmp: Path, split: dict | None = None, **source) -> Path:
    return _spec(tmp, {"type": "csv", "path": "train.csv", "target": "label",
                       "test_path": "held_out.csv", **source},
                 {"x": {"shape": [2]}}, [{"type": "dense", "units": 2}], "label", split)


def test_csv_test_path_is_the_test_split(tmp_path):
    _csv(tmp_path / "train.csv", 50)
    _csv(tmp_path / "held_out.csv", 13, offset=2)
    model = graphdl.load(_csv_spec(tmp_path))
    assert model.spec.data["split"]["test"] == 0.0
    splits = model.data()
    assert len(splits.test) == 13 and len(splits.train) + len(splits.val) == 50
    assert len(splits.val) == 5  # train 0.9, val 0.1 of path when data.split is not given
    expected = np.loadtxt(tmp_path / "held_out.csv", delimiter=",", skiprows=1)
    assert np.array_equal(splits.test.fields["x"], expected[:, :2].astype(np.float32))
    assert np.array_equal(splits.test.fields["label"], expected[:, 2].astype(np.int64))
    model.fit(tmp_path / "run", progress=False)
    # evaluate reports on exactly the held-out rows
    result = model.evaluate("test")
    logits = model.predict({"x": expected[:, :2].astype(np.float32)})
    accuracy = float(np.mean(logits.argmax(axis=1) == expected[:, 2]))
    assert result["accuracy"] == pytest.approx(accuracy)


def test_test_path_with_categories_and_fill(tmp_path):
    (tmp_path / "train.csv").write_text(
        "a,c,label\n" + "".join(f"{i % 4},{'xyz'[i % 3]},{i % 2}\n" for i in range(30)),
        encoding="utf-8")
    (tmp_path / "held_out.csv").write_text("a,c,label\n,y,1\n2,x,0\n", encoding="utf-8")
    spec = _spec(tmp_path, {"type": "csv", "path": "train.csv", "target": "label",
                            "test_path": "held_out.csv", "categorical": {"c": "one_hot"},
                            "missing": {"fill": "median"}},
                 {"x": {"shape": [4]}}, [{"type": "dense", "units": 2}], "label")
    splits = graphdl.load(spec).data()
    fill = splits.preprocess_state["csv"]["fill_values"]["a"]
    assert splits.test.fields["x"].tolist() == [[fill, 0, 1, 0], [2, 1, 0, 0]]


def test_unseen_category_in_test_path_is_located_in_that_file(tmp_path):
    (tmp_path / "train.csv").write_text(
        "a,c,label\n" + "".join(f"{i % 4},{'xy'[i % 2]},{i % 2}\n" for i in range(20)),
        encoding="utf-8")
    (tmp_path / "held_out.csv").write_text("a,c,label\n1,x,0\n2,q,1\n", encoding="utf-8")
    spec = _csv_spec(tmp_path, categorical={"c": "index"})
    with pytest.raises(GraphdlError) as info:
        graphdl.load(spec).data()
    d = info.value.diagnostics[0]
    assert d.code == "E505" and "'q'" in d.message
    assert d.file == str(tmp_path / "held_out.csv") and d.line == 3 and d.col == 3


def test_test_fraction_beside_test_path_is_refused(tmp_path):
    _csv(tmp_path / "train.csv", 20)
    _csv(tmp_path / "held_out.csv", 5)
    spec = _csv_spec(tmp_path, split={"train": 0.8, "val": 0.1, "test": 0.1})
    with pytest.raises(GraphdlError) as info:
        graphdl.load(spec).data()
    d = info.value.diagnostics[0]
    assert d.code == "E507" and d.path == "data.split.test" and d.line is not None
    assert "test_path" in d.message


def test_missing_test_path_is_located_at_the_key(tmp_path):
    _csv(tmp_path / "train.csv", 20)
    spec = _csv_spec(tmp_path)
    with pytest.raises(GraphdlError) as info:
        graphdl.load(spec).data()
    d = info.value.diagnostics[0]
    assert d.code == "E501" and "held_out.csv" in d.message and "does not exist" in d.message
    assert d.path == "data.source.test_path" and d.file == str(spec) and d.line is not None
    assert "data.source.test_path" in d.help


def _images(root: Path, classes: dict[str, int], size: int = 6) -> Path:
    rng = np.random.default_rng(len(classes))
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 255, (size, size), dtype=np.uint8)
            Image.fromarray(pixels, "L").save(root / name / f"{i}.png")
    return root


def _image_spec(tmp: Path) -> Path:
    return _spec(tmp, {"type": "image_folder", "path": "train", "test_path": "test",
                       "mode": "grayscale"},
                 {"image": {"shape": [1, 6, 6]}},
                 [{"type": "flatten"}, {"type": "dense", "units": 3}], "label")


def test_image_folder_test_path(tmp_path):
    _images(tmp_path / "train", {"ant": 6, "bee": 6, "cat": 6})
    _images(tmp_path / "test", {"bee": 2, "cat": 3})  # a subset of the classes
    model = graphdl.load(_image_spec(tmp_path))
    splits = model.data()
    assert splits.class_names == ["ant", "bee", "cat"]
    assert splits.test.fields["label"].tolist() == [1, 1, 2, 2, 2]
    model.fit(tmp_path / "run", progress=False)
    assert 0.0 <= model.evaluate("test")["accuracy"] <= 1.0


def test_image_test_path_with_an_unknown_class_is_located(tmp_path):
    _images(tmp_path / "train", {"ant": 4, "bee": 4})
    _images(tmp_path / "test", {"bea": 2})
    with pytest.raises(GraphdlError) as info:
        graphdl.load(_image_spec(tmp_path)).data()
    d = info.value.diagnostics[0]
    assert d.code == "E501" and "'bea'" in d.message and "did you mean 'bee'" in d.help
    assert d.path == "data.source.test_path"
