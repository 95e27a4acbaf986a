"""Every data error code, with its location in the spec and a help text."""

from __future__ import annotations

import numpy as np
import pytest

from graphdl.data import apply_preprocess, load_data
from graphdl.errors import GraphdlError

ALL_TRAIN = {"train": 1.0, "val": 0.0, "test": 0.0, "shuffle": False}


# ---------------------------------------------------------------- E501 missing data file


def test_e501_missing_npz_names_resolved_path(make_spec, expect_error, tmp_path):
    spec = make_spec(source={"type": "npz", "path": "nope/data.npz"})
    d = expect_error(lambda: load_data(spec), "E501", spec, "data", "source", "path")
    resolved = str((tmp_path / "nope" / "data.npz").resolve())
    assert resolved in d.message
    assert d.path == "data.source.path"


def test_e501_missing_csv(make_spec, expect_error):
    spec = make_spec(source={"type": "csv", "path": "missing.csv", "target": "y"})
    d = expect_error(lambda: load_data(spec), "E501", spec, "data", "source", "path")
    assert "missing.csv" in d.message and "does not exist" in d.message


def test_e501_unreadable_npz(make_spec, expect_error, tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"this is not a zip archive")
    spec = make_spec(source={"type": "npz", "path": "bad.npz"})
    d = expect_error(lambda: load_data(spec), "E501", spec, "data", "source", "path")
    assert "bad.npz" in d.message


# ---------------------------------------------------------------- E502 missing field


def test_e502_model_input_missing_with_did_you_mean(make_spec, expect_error, tmp_path):
    np.savez(tmp_path / "d.npz", image=np.zeros((4, 64)), y=np.arange(4))
    spec = make_spec(source={"type": "npz", "path": "d.npz"}, inputs={"imag": ((64,), "float32")})
    d = expect_error(lambda: load_data(spec), "E502", spec, "model", "inputs", "imag")
    assert "'imag'" in d.message
    assert "'image'" in d.help and "did you mean 'image'" in d.help and "'y'" in d.help


def test_e502_target_missing(make_spec, expect_error):
    spec = make_spec(target="label")
    d = expect_error(lambda: load_data(spec), "E502", spec, "train", "target")
    assert "'label'" in d.message and "'y'" in d.help


def test_e502_reports_every_missing_field(make_spec):
    spec = make_spec(inputs={"a": ((64,), "float32"), "b": ((1,), "float32")}, target="t")
    with pytest.raises(GraphdlError) as info:
        load_data(spec)
    assert [d.code for d in info.value.diagnostics] == ["E502", "E502", "E502"]
    assert [d.path for d in info.value.diagnostics] == [
        "model.inputs.a",
        "model.inputs.b",
        "train.target",
    ]


def test_e502_npz_mapping_names_missing_array(make_spec, expect_error, tmp_path):
    np.savez(tmp_path / "d.npz", pixels=np.zeros((4, 64)), y=np.arange(4))
    spec = make_spec(source={"type": "npz", "path": "d.npz", "fields": {"x": "pixel", "y": "y"}})
    d = expect_error(lambda: load_data(spec), "E502", spec, "data", "source", "fields", "x")
    assert "did you mean 'pixels'" in d.help


def test_e502_csv_target_column_missing(make_spec, expect_error, tmp_path):
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n")
    spec = make_spec(source={"type": "csv", "path": "d.csv", "target": "labels"})
    d = expect_error(lambda: load_data(spec), "E502", spec, "data", "source", "target")
    assert "did you mean 'label'" in d.help


def test_e502_csv_feature_column_missing(make_spec, expect_error, tmp_path):
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n")
    spec = make_spec(
        source={"type": "csv", "path": "d.csv", "target": "label", "features": ["a", "c"]},
        target="label",
    )
    expect_error(lambda: load_data(spec), "E502", spec, "data", "source", "features", 1)


# ---------------------------------------------------------------- E503 shape mismatch


def test_e503_shape_mismatch_message(make_spec, expect_error, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 8, 8)), y=np.arange(6))
    spec = make_spec(source={"type": "npz", "path": "d.npz"}, inputs={"x": ((64,), "float32")})
    d = expect_error(lambda: load_data(spec), "E503", spec, "model", "inputs", "x")
    assert d.message == (
        "model.inputs.x has shape [64] but the data field 'x' has per-sample shape [8, 8]"
    )
    assert "[8, 8]" in d.help


def test_e503_builtin_digits_wrong_shape(make_spec, expect_error):
    spec = make_spec(inputs={"x": ((8, 8), "float32")})
    d = expect_error(lambda: load_data(spec), "E503", spec, "model", "inputs", "x")
    assert "[8, 8]" in d.message and "[64]" in d.message


def test_e503_non_integer_values_for_int64_input(make_spec, expect_error, tmp_path):
    np.savez(tmp_path / "d.npz", tok=np.array([[1.0], [2.5]]), y=np.arange(2))
    spec = make_spec(source={"type": "npz", "path": "d.npz"}, inputs={"tok": ((1,), "int64")})
    d = expect_error(lambda: load_data(spec), "E503", spec, "model", "inputs", "tok")
    assert "sample 1" in d.message


def test_e503_sample_count_mismatch(make_spec, expect_error, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 64)), y=np.arange(4))
    spec = make_spec(source={"type": "npz", "path": "d.npz"})
    d = expect_error(lambda: load_data(spec), "E503", spec, "data", "source")
    assert "'x' has 5" in d.message and "'y' has 4" in d.message


def test_e503_apply_preprocess_shape(make_spec, expect_error):
    spec = make_spec(preprocess=[{"op": "normalize"}])
    state = load_data(spec).preprocess_state
    expect_error(
        lambda: apply_preprocess(spec, {"x": np.zeros((2, 8, 8))}, state),
        "E503",
        spec,
        "model",
        "inputs",
        "x",
    )


# ---------------------------------------------------------------- E504 NaN / inf


def test_e504_nan_in_npz_names_field_sample_column(make_spec, expect_error, tmp_path):
    x = np.ones((10, 64))
    x[7, 13] = np.nan
    x[8, 2] = np.inf
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10))
    spec = make_spec(source={"type": "npz", "path": "d.npz"})
    d = expect_error(lambda: load_data(spec), "E504", spec, "data", "source")
    assert "'x'" in d.message and "NaN" in d.message
    assert "sample 7" in d.message and "column 13" in d.message
    assert d.extra == {"field": "x", "sample": 7, "column": 13}


def test_e504_inf_in_csv_names_line_and_column(make_spec, expect_error, tmp_path):
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,0\n3,-inf,1\n")
    spec = make_spec(
        source={"type": "csv", "path": "d.csv", "target": "y"}, inputs={"x": ((2,), "float32")}
    )
    d = expect_error(lambda: load_data(spec), "E504", spec, "data", "source")
    assert "-inf" in d.message and "sample 1" in d.message and "csv line 3" in d.message
    assert "column 1 ('b')" in d.message


def test_e504_float32_overflow(make_spec, expect_error, tmp_path):
    x = np.ones((3, 64))
    x[2, 0] = 1e300
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(3))
    spec = make_spec(source={"type": "npz", "path": "d.npz"})
    d = expect_error(lambda: load_data(spec), "E504", spec, "data", "source")
    assert "sample 2" in d.message and "too large for float32" in d.note


# ---------------------------------------------------------------- E505 bad csv


def test_e505_ragged_row_names_csv_line(make_spec, expect_error, tmp_path):
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,0\n\n3,4\n5,6,1\n")
    spec = make_spec(
        source={"type": "csv", "path": "d.csv", "target": "y"}, inputs={"x": ((2,), "float32")}
    )
    d = expect_error(lambda: load_data(spec), "E505", spec, "data", "source", "path")
    assert "csv line 4" in d.message and "2 values" in d.message and "3 columns" in d.message
    assert d.extra["csv_line"] == 4


def test_e505_non_numeric_names_line_and_column(make_spec, expect_error, tmp_path):
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,0\n3,4,1\n5,abc,1\n6,,x\n")
    spec = make_spec(
        source={"type": "csv", "path": "d.csv", "target": "y"}, inputs={"x": ((2,), "float32")}
    )
    d = expect_error(lambda: load_data(spec), "E505", spec, "data", "source", "path")
    assert "csv line 4" in d.message and "column 'b'" in d.message and "'abc'" in d.message


def test_e505_non_numeric_target(make_spec, expect_error, tmp_path):
    (tmp_path / "d.csv").write_text("a,species\n1,setosa\n")
    spec = make_spec(
        source={"type": "csv", "path": "d.csv", "target": "species"},
        inputs={"x": ((1,), "float32")},
        target="species",
    )
    d = expect_error(lambda: load_data(spec), "E505", spec, "data", "source", "path")
    assert "csv line 2" in d.message and "column 'species'" in d.message


def test_e505_empty_value(make_spec, expect_error, tmp_path):
    (tmp_path / "d.csv").write_text("a,b,y\n1,,0\n")
    spec = make_spec(
        source={"type": "csv", "path": "d.csv", "target": "y"}, inputs={"x": ((2,), "float32")}
    )
    d = expect_error(lambda: load_data(spec), "E505", spec, "data", "source", "path")
    assert "empty value" in d.message and "csv line 2" in d.message


@pytest.mark.parametrize(
    "text, needle",
    [("", "empty"), ("a,b,y\n", "no data rows"), ("a,a,y\n1,2,3\n", "'a' twice")],
)
def test_e505_header_problems(make_spec, expect_error, tmp_path, text, needle):
    (tmp_path / "d.csv").write_text(text)
    spec = make_spec(source={"type": "csv", "path": "d.csv", "target": "y"})
    d = expect_error(lambda: load_data(spec), "E505", spec, "data", "source", "path")
    assert needle in d.message


# ---------------------------------------------------------------- E506 unknown builtin


def test_e506_unknown_builtin(make_spec, expect_error):
    spec = make_spec(source={"type": "builtin", "name": "digit"})
    d = expect_error(lambda: load_data(spec), "E506", spec, "data", "source", "name")
    assert "'digit'" in d.message and "did you mean 'digits'" in d.help


# ---------------------------------------------------------------- E507 split fractions


@pytest.mark.parametrize(
    "split, where",
    [
        ({"train": 0.8, "val": 0.2, "test": 0.1}, ("data", "split")),
        ({"train": 1.2, "val": 0.0, "test": 0.0}, ("data", "split", "train")),
        ({"val": -0.1}, ("data", "split", "val")),
        ({"test": "lots"}, ("data", "split", "test")),
        ({"train": 0.0, "val": 0.5, "test": 0.5}, ("data", "split", "train")),
    ],
)
def test_e507_bad_fractions(make_spec, expect_error, split, where):
    spec = make_spec(split=split)
    expect_error(lambda: load_data(spec), "E507", spec, *where)


def test_e507_sum_tolerance(make_spec):
    spec = make_spec(split={"train": 0.7, "val": 0.2, "test": 0.1 + 5e-7})
    s = load_data(spec)
    assert len(s.train) + len(s.val) + len(s.test) == 1797


def test_e507_stratify_needs_integer_target(make_spec, expect_error, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 64)), y=np.linspace(0, 1, 10))
    spec = make_spec(source={"type": "npz", "path": "d.npz"}, split={"stratify": True})
    expect_error(lambda: load_data(spec), "E507", spec, "data", "split", "stratify")


def test_e507_get_empty_split(make_spec, expect_error):
    spec = make_spec(split={"train": 0.9, "val": 0.1, "test": 0.0})
    s = load_data(spec)
    assert len(s.get("val")) > 0
    d = expect_error(lambda: s.get("test"), "E507", spec, "data", "split", "test")
    assert "'test'" in d.message
    expect_error(lambda: s.get("validation"), "E507", spec, "data", "split")


# ---------------------------------------------------------------- E508 bad settings


@pytest.mark.parametrize(
    "steps, where",
    [
        ([{"op": "standardize"}], ("data", "preprocess", 0, "op")),
        (
            [{"op": "scale", "factor": 0.5}, {"op": "normalize", "mode": "l2"}],
            ("data", "preprocess", 1, "mode"),
        ),
        ([{"op": "scale", "factor": "big"}], ("data", "preprocess", 0, "factor")),
        ([{"op": "normalize", "stats": "from_all"}], ("data", "preprocess", 0, "stats")),
        ([{"op": "normalize", "fields": ["xx"]}], ("data", "preprocess", 0, "fields", 0)),
        ([{"op": "normalize", "fields": ["x", "y"]}], ("data", "preprocess", 0, "fields", 1)),
    ],
)
def test_e508_bad_preprocess(make_spec, expect_error, steps, where):
    spec = make_spec(preprocess=steps)
    expect_error(lambda: load_data(spec), "E508", spec, *where)


def test_e508_unknown_source_type(make_spec, expect_error):
    spec = make_spec(source={"type": "parquet", "path": "x.parquet"})
    expect_error(lambda: load_data(spec), "E508", spec, "data", "source", "type")


def test_e508_state_missing_entry(make_spec, expect_error):
    spec = make_spec(preprocess=[{"op": "normalize"}])
    expect_error(
        lambda: apply_preprocess(spec, {"x": np.zeros((1, 64))}, {}),
        "E508",
        spec,
        "data",
        "preprocess",
        0,
    )


def test_location_falls_back_to_written_parent(make_spec):
    # data.split was not written: a bad default-filled value is reported at data.split's
    # nearest written ancestor (data), not at a made-up position
    spec = make_spec()
    spec.data["split"]["val"] = 0.5
    with pytest.raises(GraphdlError) as info:
        load_data(spec)
    d = info.value.diagnostics[0]
    assert d.code == "E507" and d.path == "data.split"
    assert d.line == spec.loc("data").line


def test_e508_bad_delimiter(make_spec, expect_error, tmp_path):
    (tmp_path / "d.csv").write_text("a,y\n1,0\n")
    spec = make_spec(source={"type": "csv", "path": "d.csv", "target": "y", "delimiter": ",,"})
    expect_error(lambda: load_data(spec), "E508", spec, "data", "source", "delimiter")


def test_tab_delimited_csv(make_spec, tmp_path):
    (tmp_path / "d.tsv").write_text("a\tb\ty\n1\t2\t0\n3\t4\t1\n")
    spec = make_spec(
        source={"type": "csv", "path": "d.tsv", "target": "y", "delimiter": "\t"},
        inputs={"x": ((2,), "float32")},
        split=ALL_TRAIN,
    )
    assert load_data(spec).train.fields["x"].tolist() == [[1, 2], [3, 4]]


def test_e503_scalar_field_when_mapped(make_spec, expect_error, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 64)), y=np.arange(3), lr=np.array(0.1))
    spec = make_spec(source={"type": "npz", "path": "d.npz"}, split=ALL_TRAIN)
    assert set(load_data(spec).train.fields) == {"x", "y"}  # unmapped scalar: ignored
    spec = make_spec(
        source={"type": "npz", "path": "d.npz", "fields": {"x": "x", "y": "y", "lr": "lr"}},
        split=ALL_TRAIN,
    )
    d = expect_error(lambda: load_data(spec), "E503", spec, "data", "source")
    assert "scalar" in d.message
