"""npz and csv sources."""

from __future__ import annotations

import numpy as np

from graphdl.data import load_data, read_fields

ALL_TRAIN = {"train": 1.0, "val": 0.0, "test": 0.0, "shuffle": False}


def test_npz_default_fields_are_every_array(make_spec, tmp_path):
    x = np.arange(40, dtype=np.float64).reshape(10, 4)
    y = np.array([0, 1, 2, 1, 0, 2, 2, 1, 0, 4], dtype=np.int32)
    w = np.linspace(0, 1, 10)
    np.savez(tmp_path / "data.npz", x=x, y=y, w=w)
    spec = make_spec(source={"type": "npz", "path": "data.npz"}, inputs={"x": ((4,), "float32")})
    s = load_data(make_spec(**{**_kw(spec), "split": ALL_TRAIN}))
    f = s.train.fields
    assert set(f) == {"x", "y", "w"}
    assert f["x"].dtype == np.float32 and f["y"].dtype == np.int64 and f["w"].dtype == np.float32
    np.testing.assert_array_equal(f["x"], x)
    np.testing.assert_array_equal(f["y"], y)
    assert s.num_classes == 5  # max label + 1


def _kw(spec):
    return {
        "source": {k: v for k, v in spec.data["source"].items()},
        "inputs": {n: (i.shape, i.dtype) for n, i in spec.model.inputs.items()},
        "target": spec.train["target"],
    }


def test_npz_field_mapping_and_unusable_extras_dropped(make_spec, tmp_path):
    feats = np.random.default_rng(0).random((12, 2, 3))
    labels = np.arange(12) % 3
    names = np.array(["a", "b", "c"])  # not per-sample, not numeric: ignored by default
    np.savez(tmp_path / "d.npz", feats=feats, labels=labels, class_names=names)
    spec = make_spec(
        source={"type": "npz", "path": "d.npz", "fields": {"img": "feats", "y": "labels"}},
        inputs={"img": ((2, 3), "float32")},
        split=ALL_TRAIN,
    )
    s = load_data(spec)
    assert set(s.train.fields) == {"img", "y"}
    np.testing.assert_allclose(s.train.fields["img"], feats.astype(np.float32))
    # default mapping drops class_names instead of failing
    spec2 = make_spec(
        source={"type": "npz", "path": "d.npz"},
        inputs={"feats": ((2, 3), "float32")},
        target="labels",
        split=ALL_TRAIN,
    )
    assert set(load_data(spec2).train.fields) == {"feats", "labels"}


def test_npz_int64_input_and_absolute_path(make_spec, tmp_path):
    tokens = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    path = tmp_path / "sub" / "t.npz"
    path.parent.mkdir()
    np.savez(path, tokens=tokens, y=np.array([0.5, 1.5, 2.5, 3.5]))
    spec = make_spec(
        source={"type": "npz", "path": str(path)},
        inputs={"tokens": ((2,), "int64")},
        split=ALL_TRAIN,
        spec_dir=tmp_path / "elsewhere",
    )
    s = load_data(spec)
    assert s.train.fields["tokens"].dtype == np.int64
    assert s.train.fields["y"].dtype == np.float32


def test_relative_path_is_relative_to_the_spec_file(make_spec, tmp_path, monkeypatch):
    (tmp_path / "proj" / "data").mkdir(parents=True)
    np.savez(tmp_path / "proj" / "data" / "d.npz", x=np.zeros((5, 1)), y=np.zeros(5, int))
    monkeypatch.chdir(tmp_path)  # cwd is not the spec's directory
    spec = make_spec(
        source={"type": "npz", "path": "data/d.npz"},
        inputs={"x": ((1,), "float32")},
        spec_dir=tmp_path / "proj",
    )
    s = load_data(spec)
    assert len(s.train) + len(s.val) + len(s.test) == 5 and len(s.test) == 1


def _write_csv(path, text):
    path.write_text(text, encoding="utf-8")
    return path


IRIS_LIKE = """\
sepal_len,sepal_wid,petal_len,species
5.1,3.5,1.4,0
4.9,3.0,1.4,0

6.3,3.3,6.0,2
5.8,2.7,5.1,2
6.4,3.2,4.5,1
"""


def test_csv_default_features_are_all_other_columns(make_spec, tmp_path):
    _write_csv(tmp_path / "iris.csv", IRIS_LIKE)
    spec = make_spec(
        source={"type": "csv", "path": "iris.csv", "target": "species"},
        inputs={"x": ((3,), "float32")},
        target="species",
        split=ALL_TRAIN,
    )
    s = load_data(spec)
    f = s.train.fields
    assert set(f) == {"x", "species"}
    assert f["x"].dtype == np.float32 and f["x"].shape == (5, 3)
    np.testing.assert_allclose(f["x"][2], [6.3, 3.3, 6.0], rtol=1e-6)  # blank line skipped
    assert f["species"].dtype == np.int64
    np.testing.assert_array_equal(f["species"], [0, 0, 2, 2, 1])
    assert s.num_classes == 3


def test_csv_explicit_features_field_delimiter_and_float_target(make_spec, tmp_path):
    text = "a;b;c;price\n1;2;3;10.5\n4;5;6;11\n7;8;9;12.25\n"
    _write_csv(tmp_path / "p.csv", text)
    spec = make_spec(
        source={
            "type": "csv",
            "path": "p.csv",
            "target": "price",
            "features": ["c", "a"],
            "feature_field": "feats",
            "delimiter": ";",
        },
        inputs={"feats": ((2,), "float32")},
        target="price",
        split=ALL_TRAIN,
    )
    s = load_data(spec)
    np.testing.assert_array_equal(s.train.fields["feats"], [[3, 1], [6, 4], [9, 7]])
    assert s.train.fields["price"].dtype == np.float32
    np.testing.assert_allclose(s.train.fields["price"], [10.5, 11, 12.25])
    assert s.num_classes is None


def test_csv_quoted_header_and_bom(make_spec, tmp_path):
    text = '\ufeff"f 1","f 2",label\n1,2,1\n3,4,0\n'
    _write_csv(tmp_path / "q.csv", text)
    spec = make_spec(
        source={"type": "csv", "path": "q.csv", "target": "label"},
        inputs={"x": ((2,), "float32")},
        target="label",
        split=ALL_TRAIN,
    )
    s = load_data(spec)
    np.testing.assert_array_equal(s.train.fields["x"], [[1, 2], [3, 4]])


def test_read_fields_for_predict_without_target(make_spec, tmp_path):
    np.savez(tmp_path / "new.npz", x=np.ones((3, 64), dtype=np.uint8))
    spec = make_spec()
    fields = read_fields(spec, {"type": "npz", "path": str(tmp_path / "new.npz")})
    assert set(fields) == {"x"} and fields["x"].dtype == np.float32


def test_read_fields_csv_without_label_column(make_spec, tmp_path):
    (tmp_path / "train.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    (tmp_path / "new.csv").write_text("a,b\n5,6\n")
    spec = make_spec(
        source={"type": "csv", "path": "train.csv", "target": "label"},
        inputs={"x": ((2,), "float32")},
        target="label",
    )
    new = read_fields(spec, {**spec.data["source"], "path": "new.csv"})
    assert set(new) == {"x"}
    np.testing.assert_array_equal(new["x"], [[5, 6]])


def test_npz_object_array_skipped_by_default(make_spec, tmp_path):
    np.savez(
        tmp_path / "d.npz",
        x=np.zeros((3, 64)),
        y=np.arange(3),
        meta=np.array([{"a": 1}], dtype=object),
    )
    spec = make_spec(source={"type": "npz", "path": "d.npz"}, split=ALL_TRAIN)
    assert set(load_data(spec).train.fields) == {"x", "y"}


def test_csv_unused_text_column_and_crlf(make_spec, tmp_path):
    text = "id,a,b,y\r\nfirst,1.5,2,0\r\nsecond,3,4.25,1\r\n\r\nthird,5,6,1\r\n"
    (tmp_path / "d.csv").write_bytes(text.encode())
    spec = make_spec(
        source={"type": "csv", "path": "d.csv", "target": "y", "features": ["a", "b"]},
        inputs={"x": ((2,), "float32")},
        split=ALL_TRAIN,
    )
    s = load_data(spec)
    np.testing.assert_array_equal(s.train.fields["x"], [[1.5, 2], [3, 4.25], [5, 6]])
    np.testing.assert_array_equal(s.train.fields["y"], [0, 1, 1])


def test_csv_large_file_is_fast(make_spec, tmp_path):
    import time

    rng = np.random.default_rng(0)
    x = np.round(rng.random((20000, 10)), 4)
    y = rng.integers(0, 3, 20000)
    header = ",".join([f"f{i}" for i in range(10)] + ["label"])
    body = "\n".join(",".join(map(str, r)) + f",{c}" for r, c in zip(x.tolist(), y.tolist()))
    (tmp_path / "big.csv").write_text(header + "\n" + body + "\n")
    spec = make_spec(
        source={"type": "csv", "path": "big.csv", "target": "label"},
        inputs={"x": ((10,), "float32")},
        target="label",
        split=ALL_TRAIN,
    )
    t0 = time.perf_counter()
    s = load_data(spec)
    assert time.perf_counter() - t0 < 1.0
    np.testing.assert_allclose(s.train.fields["x"], x.astype(np.float32))
    np.testing.assert_array_equal(s.train.fields["label"], y)
