"""CSV categorical columns and missing values (issue 10, item 18): `categorical` encodes a
column one-hot or as an index with the categories of the training file, saved with the
weights so predict encodes new rows the same way; an unseen category is an error located
in the new file unless `unknown: ignore`; a missing value is an error at its line and
column, or `missing: {fill: ...}` fills it with a statistic of the train split only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import graphdl
from graphdl.data import read_new_data
from graphdl.errors import GraphdlError

COLORS = ["red", "green", "blue"]


def _table(path: Path, n: int = 60, missing_at: int | None = None, colors=COLORS) -> Path:
    rows = ["size,color,label"]
    for i in range(n):
        color = colors[i % len(colors)]
        size = "" if i == missing_at else f"{(i % 7) / 7:.3f}"
        rows.append(f"{size},{color},{int(color == 'red')}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _spec(tmp: Path, source: dict, n_features: int, split: dict | None = None) -> Path:
    doc = {
        "graphdl": 1, "name": "csv-columns", "seed": 3,
        "data": {"source": {"type": "csv", "path": "train.csv", "target": "label", **source},
                 "split": split or {"train": 0.8, "val": 0.1, "test": 0.1}},
        "model": {"inputs": {"x": {"shape": [n_features]}},
                  "layers": [{"type": "dense", "units": 2}]},
        "train": {"target": "label", "epochs": 3, "batch_size": 8,
                  "loss": {"type": "cross_entropy"}, "optimizer": {"type": "adam", "lr": 0.1}},
    }
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _error(call) -> GraphdlError:
    with pytest.raises(GraphdlError) as info:
        call()
    return info.value


@pytest.mark.parametrize("encoding, width", [("one_hot", 4), ("index", 2)])
def test_categorical_round_trip_through_a_checkpoint(tmp_path, encoding, width):
    _table(tmp_path / "train.csv")
    spec = _spec(tmp_path, {"categorical": {"color": encoding}}, width)
    model = graphdl.load(spec)
    splits = model.data()
    x = splits.train.fields["x"]
    assert x.shape[1] == width
    state = splits.preprocess_state["csv"]
    assert state["categorical"]["color"]["categories"] == sorted(COLORS)
    if encoding == "one_hot":
        assert state["columns"] == ["size", "color=blue", "color=green", "color=red"]
        assert set(np.unique(x[:, 1:])) == {0.0, 1.0} and np.all(x[:, 1:].sum(axis=1) == 1)
    model.fit(tmp_path / "run", progress=False)

    fresh = graphdl.load(spec)
    fresh.load_weights(tmp_path / "run" / "last.ckpt")
    new = tmp_path / "new.csv"
    new.write_text("size,color\n0.5,blue\n0.5,red\n0.1,green\n", encoding="utf-8")
    data = read_new_data(fresh.spec, [new], state=fresh.preprocess_state)
    blue, red, green = (sorted(COLORS).index(c) for c in ("blue", "red", "green"))
    if encoding == "one_hot":
        assert data.fields["x"][:, 1:].argmax(axis=1).tolist() == [blue, red, green]
    else:
        assert data.fields["x"][:, 1].tolist() == [blue, red, green]
    # the same rows as training encodes them give the same outputs
    rows = fresh.predict({"x": data.fields["x"]})
    assert np.allclose(rows, model.predict({"x": data.fields["x"]}), atol=1e-6)


def test_unseen_category_is_located_in_the_new_file(tmp_path):
    _table(tmp_path / "train.csv")
    spec = _spec(tmp_path, {"categorical": {"color": "one_hot"}}, 4)
    model = graphdl.load(spec)
    state = model.data().preprocess_state
    new = tmp_path / "new.csv"
    new.write_text("size,color\n0.5,blue\n0.5,purple\n", encoding="utf-8")
    err = _error(lambda: read_new_data(model.spec, [new], state=state))
    d = err.diagnostics[0]
    assert d.code == "E505" and "'purple'" in d.message and "column 'color'" in d.message
    assert d.file == str(new) and d.line == 3 and d.col == 5
    assert "unknown: ignore" in d.help


def test_unknown_ignore_gives_all_zeros(tmp_path):
    _table(tmp_path / "train.csv")
    spec = _spec(tmp_path, {"categorical": {"color": "one_hot"}, "unknown": "ignore"}, 4)
    model = graphdl.load(spec)
    state = model.data().preprocess_state
    new = tmp_path / "new.csv"
    new.write_text("size,color\n0.5,purple\n", encoding="utf-8")
    x = read_new_data(model.spec, [new], state=state).fields["x"]
    assert x.tolist() == [[0.5, 0.0, 0.0, 0.0]]


def test_categorical_target_gives_class_names(tmp_path):
    (tmp_path / "train.csv").write_text(
        "a,kind\n" + "".join(f"{i % 5},{['cat', 'dog'][i % 2]}\n" for i in range(40)),
        encoding="utf-8")
    doc = yaml.safe_load(_spec(tmp_path, {"target": "kind", "categorical": {"kind": "index"}},
                               1).read_text())
    doc["train"]["target"] = "kind"
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    splits = graphdl.load(tmp_path / "spec.yaml").data()
    assert splits.class_names == ["cat", "dog"] and splits.train.fields["kind"].dtype == np.int64


def test_missing_value_is_a_located_error(tmp_path):
    _table(tmp_path / "train.csv", missing_at=4)
    spec = _spec(tmp_path, {}, 1, split=None)
    doc = yaml.safe_load(spec.read_text())
    doc["data"]["source"]["features"] = ["size"]
    spec.write_text(yaml.safe_dump(doc), encoding="utf-8")
    err = _error(lambda: graphdl.load(spec).data())
    d = err.diagnostics[0]
    assert d.code == "E505" and "csv line 6, column 'size': an empty value (a missing value)" in d.message
    assert "missing: {fill: mean}" in d.help and d.extra["csv_line"] == 6


@pytest.mark.parametrize("token", ["NA", "NaN", "null"])
def test_missing_tokens_are_missing_values(tmp_path, token):
    text = "size,label\n1,0\n" + f"{token},1\n" + "3,0\n"
    (tmp_path / "train.csv").write_text(text, encoding="utf-8")
    spec = _spec(tmp_path, {}, 1)
    err = _error(lambda: graphdl.load(spec).data())
    message = err.diagnostics[0].message
    assert f"csv line 3, column 'size': '{token}' (a missing value)" in message


def test_fill_uses_train_split_statistics_only(tmp_path):
    # the size column is 1.0 in the first 40 rows and 100.0 in the last 10; with shuffle off
    # and train 0.8 the train split is exactly the first 40 rows
    rows = ["size,label"] + [f"1.0,{i % 2}" for i in range(40)] + ["100.0,1"] * 10
    rows[3] = ",1"  # line 4: missing, in the train split
    rows[45] = "NA,0"  # line 46: missing, in the val/test rows
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    spec = _spec(tmp_path, {"missing": {"fill": "mean"}}, 1,
                 split={"train": 0.8, "val": 0.1, "test": 0.1, "shuffle": False})
    splits = graphdl.load(spec).data()
    assert splits.preprocess_state["csv"]["fill_values"] == {"size": 1.0}
    every = np.concatenate([splits.train.fields["x"], splits.val.fields["x"],
                            splits.test.fields["x"]])
    assert np.isfinite(every).all()
    assert splits.train.fields["x"][2, 0] == 1.0 and 1.0 in splits.val.fields["x"][:, 0]


@pytest.mark.parametrize("rule, value", [("zero", 0.0), (7.5, 7.5), ("median", 1.0)])
def test_fill_rules(tmp_path, rule, value):
    (tmp_path / "train.csv").write_text("size,label\n1,0\n,1\n1,0\n5,1\n1,0\n",
                                        encoding="utf-8")
    spec = _spec(tmp_path, {"missing": {"fill": rule}}, 1,
                 split={"train": 1.0, "val": 0.0, "test": 0.0, "shuffle": False})
    doc = yaml.safe_load(spec.read_text())
    doc["evaluate"] = {"split": "train"}
    spec.write_text(yaml.safe_dump(doc), encoding="utf-8")
    splits = graphdl.load(spec).data()
    assert splits.train.fields["x"][1, 0] == pytest.approx(value)


def test_fill_applies_to_new_data_for_predict(tmp_path):
    _table(tmp_path / "train.csv", missing_at=4)
    spec = _spec(tmp_path, {"categorical": {"color": "index"}, "missing": {"fill": "zero"}}, 2)
    model = graphdl.load(spec)
    state = model.data().preprocess_state
    new = tmp_path / "new.csv"
    new.write_text("size,color\n,blue\n", encoding="utf-8")
    assert read_new_data(model.spec, [new], state=state).fields["x"].tolist() == [[0.0, 0.0]]
    err = _error(lambda: read_new_data(model.spec, [new]))
    assert err.diagnostics[0].code == "E508" and "state" in err.diagnostics[0].help


def test_missing_target_is_never_filled(tmp_path):
    (tmp_path / "train.csv").write_text("size,label\n1,0\n2,\n", encoding="utf-8")
    spec = _spec(tmp_path, {"missing": {"fill": "mean"}}, 1)
    err = _error(lambda: graphdl.load(spec).data())
    assert "csv line 3, column 'label': a missing target value" in err.diagnostics[0].message


def test_bad_categorical_settings_are_located(tmp_path):
    _table(tmp_path / "train.csv")
    spec = _spec(tmp_path, {"categorical": {"colour": "one_hot"}}, 4)
    err = _error(lambda: graphdl.load(spec).data())
    d = err.diagnostics[0]
    assert d.code == "E502" and "'colour'" in d.message and "did you mean 'color'" in d.help
    assert d.path == "data.source.categorical.colour" and d.line is not None
