"""Sequence sources (issue 11, item 6, first part): the synthetic adding, copy, reverse
and sort tasks, digits as a sequence of rows, and UEA/UCR ``.ts`` files (test_path as the
test split). Ragged sequences (padding, lengths, max_len) are tests/data/test_sequence_data_*.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphdl.data import load_data
from graphdl.data.sequences import BOS, EOS, FIRST_TOKEN, PAD, read_ts
from graphdl.data.sources import load_source
from graphdl.errors import GraphdlError

# ------------------------------------------------------------------ synthetic tasks


def _synthetic(make_spec, seed=0, **source):
    spec = make_spec(source={"type": "synthetic", **source}, seed=seed)
    return load_source(spec, spec.data["source"]).fields


def test_adding_problem_statistics(make_spec):
    fields = _synthetic(make_spec, task="adding", length=50, samples=500)
    x, y = fields["x"], fields["y"]
    assert x.shape == (500, 50, 2) and x.dtype == np.float32
    assert y.shape == (500,) and y.dtype == np.float32
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= 0.0 and values.max() < 1.0
    assert set(np.unique(markers)) == {0.0, 1.0}
    assert np.all(markers.sum(axis=1) == 2)
    assert np.all(markers[:, :25].sum(axis=1) == 1) and np.all(markers[:, 25:].sum(axis=1) == 1)
    assert np.allclose(y, (values * markers).sum(axis=1), atol=1e-6)
    assert abs(float(y.mean()) - 1.0) < 0.05  # two uniform(0, 1) values
    assert abs(float(values.mean()) - 0.5) < 0.01


def test_synthetic_tasks_are_deterministic_in_the_seed(make_spec):
    for source in ({"task": "adding", "length": 10, "samples": 20},
                   {"task": "sort", "vocab": 9, "length": 6, "samples": 20}):
        a = _synthetic(make_spec, seed=3, **source)
        b = _synthetic(make_spec, seed=3, **source)
        c = _synthetic(make_spec, seed=4, **source)
        assert all(np.array_equal(a[k], b[k]) for k in a)
        assert not all(np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("task", ["copy", "reverse", "sort"])
def test_token_tasks(make_spec, task):
    fields = _synthetic(make_spec, task=task, vocab=10, length=7, samples=300)
    src, tgt_in, tgt_out = fields["src"], fields["tgt_in"], fields["tgt_out"]
    assert src.shape == (300, 7) and tgt_in.shape == tgt_out.shape == (300, 8)
    assert src.dtype == tgt_in.dtype == tgt_out.dtype == np.int64
    assert src.min() == FIRST_TOKEN and src.max() == 9  # every token of [3, 10) is drawn
    expected = {"copy": src, "reverse": src[:, ::-1], "sort": np.sort(src, axis=1)}[task]
    assert np.all(tgt_in[:, 0] == BOS) and np.array_equal(tgt_in[:, 1:], expected)
    assert np.all(tgt_out[:, -1] == EOS) and np.array_equal(tgt_out[:, :-1], expected)
    assert not np.isin([PAD, BOS, EOS], src).any()
    assert (PAD, BOS, EOS) == (0, 1, 2)


@pytest.mark.parametrize("task", ["copy", "reverse", "sort"])
def test_token_tasks_of_varying_length(make_spec, task):
    spec = make_spec(source={"type": "synthetic", "task": task, "vocab": 13, "min_len": 4,
                             "max_len": 12, "samples": 400})
    raw = load_source(spec, spec.data["source"])
    f = raw.fields
    src, tgt_in, tgt_out, lengths = f["src"], f["tgt_in"], f["tgt_out"], f[raw.lengths]
    assert src.shape == (400, 12) and tgt_in.shape == tgt_out.shape == (400, 13)
    assert lengths.dtype == np.int64 and lengths.min() == 4 and lengths.max() == 12
    for i in range(400):
        n = lengths[i]
        own = src[i, :n]
        assert np.all(own >= FIRST_TOKEN) and np.all(src[i, n:] == PAD)
        expected = {"copy": own, "reverse": own[::-1], "sort": np.sort(own)}[task]
        assert tgt_in[i, 0] == BOS and np.array_equal(tgt_in[i, 1:n + 1], expected)
        assert np.all(tgt_in[i, n + 1:] == PAD)
        assert np.array_equal(tgt_out[i, :n], expected) and tgt_out[i, n] == EOS
        assert np.all(tgt_out[i, n + 1:] == PAD)


def test_token_task_length_settings_are_checked(make_spec, expect_error):
    for source, key, words in (
            ({"length": 5, "max_len": 9}, "max_len", "both length and max_len"),
            ({"min_len": 3}, "min_len", "max_len"),
            ({"min_len": 9, "max_len": 4}, "min_len", "above max_len"),
            ({"max_len": 6, "truncate": "pre"}, "truncate", "pads its sequences")):
        spec = make_spec(source={"type": "synthetic", "task": "reverse", "vocab": 9, **source})
        d = expect_error(lambda spec=spec: load_source(spec, spec.data["source"]), "E508", spec,
                         "data", "source", key)
        assert words in d.message
    spec = make_spec(source={"type": "synthetic", "task": "adding", "max_len": 9})
    d = expect_error(lambda: load_source(spec, spec.data["source"]), "E508", spec,
                     "data", "source", "max_len")
    assert "length" in d.help


def test_samples_default(make_spec):
    fields = _synthetic(make_spec, task="adding", length=4)
    assert fields["x"].shape == (10000, 4, 2)


def test_bad_synthetic_settings_are_located(make_spec, expect_error):
    spec = make_spec(source={"type": "synthetic", "task": "copy", "length": 5})
    d = expect_error(lambda: load_source(spec, spec.data["source"]), "E508", spec,
                     "data", "source", "task")
    assert "vocab" in d.message
    spec = make_spec(source={"type": "synthetic", "task": "adding", "length": 1})
    expect_error(lambda: load_source(spec, spec.data["source"]), "E508", spec,
                 "data", "source", "length")
    spec = make_spec(source={"type": "synthetic", "task": "adding", "length": 5, "vocab": 9})
    expect_error(lambda: load_source(spec, spec.data["source"]), "E508", spec,
                 "data", "source", "vocab")


def test_adding_fields_check_against_model_inputs(make_spec, expect_error):
    source = {"type": "synthetic", "task": "adding", "length": 20, "samples": 100}
    splits = load_data(make_spec(source=source, inputs={"x": ((20, 2), "float32")}))
    assert splits.train.fields["x"].shape[1:] == (20, 2)
    spec = make_spec(source=source, inputs={"x": ((40,), "float32")})
    d = expect_error(lambda: load_data(spec), "E503", spec, "model", "inputs", "x")
    assert "[20, 2]" in d.message


# ------------------------------------------------------------------ digits as a sequence


def test_digits_as_sequence_is_the_image_by_rows(make_spec):
    seq = load_source(make_spec(), {"type": "builtin", "name": "digits", "as_sequence": True})
    img = load_source(make_spec(), {"type": "builtin", "name": "digits", "as_images": True})
    assert seq.fields["x"].shape == (1797, 8, 8) and seq.fields["x"].dtype == np.float32
    assert np.array_equal(seq.fields["x"], img.fields["image"][:, 0])
    assert np.array_equal(seq.fields["y"], img.fields["label"])
    splits = load_data(make_spec(source={"type": "builtin", "name": "digits",
                                         "as_sequence": True},
                                 inputs={"x": ((8, 8), "float32")}))
    assert splits.train.fields["x"].shape[1:] == (8, 8)


def test_digits_as_sequence_and_as_images_conflict(make_spec, expect_error):
    spec = make_spec(source={"type": "builtin", "name": "digits", "as_sequence": True,
                             "as_images": True})
    expect_error(lambda: load_source(spec, spec.data["source"]), "E508", spec,
                 "data", "source", "as_sequence")


# ------------------------------------------------------------------ .ts files

UNIVARIATE = """# a comment
@problemName Tiny
@timeStamps false
@missing false
@univariate true
@equalLength true
@seriesLength 4
@classLabel true b a c
@data
1,2,3,4:a
5,6,7,8:b
0.5,0.25,-1,2:c
1,1,1,1:a
"""

MULTIVARIATE = """@problemName TinyMulti
@univariate false
@dimensions 2
@equalLength true
@classLabel true no yes
@data
1,2,3:10,20,30:yes
4,5,6:40,50,60:no
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_univariate_ts_in_class_label_order(tmp_path):
    ts = read_ts(_write(tmp_path, "tiny.ts", UNIVARIATE))
    assert ts.x.shape == (4, 4, 1) and ts.x.dtype == np.float32
    assert ts.x[2, :, 0].tolist() == [0.5, 0.25, -1, 2]
    assert ts.class_names == ["b", "a", "c"]  # declared order, not sorted
    assert ts.label.tolist() == [1, 0, 2, 1] and ts.label.dtype == np.int64
    assert ts.lines.tolist() == [10, 11, 12, 13]


def test_multivariate_ts_is_steps_by_channels(tmp_path):
    ts = read_ts(_write(tmp_path, "multi.ts", MULTIVARIATE))
    assert ts.x.shape == (2, 3, 2)
    assert ts.x[0].tolist() == [[1, 10], [2, 20], [3, 30]]
    assert ts.label.tolist() == [1, 0]


def test_ts_without_class_labels(tmp_path):
    ts = read_ts(_write(tmp_path, "x.ts", "@classLabel false\n@data\n1,2\n3,4\n"))
    assert ts.label is None and ts.x.shape == (2, 2, 1)


def _located(path: Path, fn=None):
    with pytest.raises(GraphdlError) as info:
        (fn or (lambda: read_ts(path)))()
    d = info.value.diagnostics[0]
    assert d.code == "E505" and d.file == str(path) and d.help, d
    assert "Traceback" not in info.value.format()
    return d


def test_malformed_value_is_located_at_line_and_column(tmp_path):
    path = _write(tmp_path, "bad.ts", UNIVARIATE.replace("5,6,7,8:b", "5,6,x7,8:b"))
    d = _located(path)
    assert (d.line, d.col, d.span) == (11, 5, 2) and "'x7'" in d.message


def test_undeclared_class_is_located(tmp_path):
    path = _write(tmp_path, "bad.ts", UNIVARIATE.replace("1,1,1,1:a", "1,1,1,1:z"))
    d = _located(path)
    assert (d.line, d.col) == (13, 9) and "'z'" in d.message


def test_unequal_lengths_are_read_padded_with_their_lengths(tmp_path):
    ts = read_ts(_write(tmp_path, "ragged.ts", UNIVARIATE.replace("5,6,7,8:b", "5,6,7:b")))
    assert ts.x.shape == (4, 4, 1) and ts.lengths.tolist() == [4, 3, 4, 4]
    assert ts.x[1, :, 0].tolist() == [5, 6, 7, 0]  # padded with 0 after the last step
    ts = read_ts(_write(tmp_path, "flag.ts", UNIVARIATE.replace("@equalLength true",
                                                                 "@equalLength false")))
    assert ts.lengths.tolist() == [4, 4, 4, 4]
    ragged_dims = MULTIVARIATE.replace("1,2,3:10,20,30:yes", "1,2,3:10,20:yes")
    d = _located(_write(tmp_path, "dims.ts", ragged_dims))
    assert d.line == 7 and "different lengths" in d.message and "same number" in d.help


def test_other_malformed_files(tmp_path):
    d = _located(_write(tmp_path, "nodata.ts", "@problemName X\n@classLabel true 1 2\n"))
    assert "@data" in d.message
    d = _located(_write(tmp_path, "stray.ts", "@problemName X\n1,2,3\n@data\n"))
    assert d.line == 2
    d = _located(_write(tmp_path, "dims.ts", MULTIVARIATE.replace("4,5,6:40,50,60:no",
                                                                   "4,5,6:no")))
    assert d.line == 8 and "dimensions" in d.message
    d = _located(_write(tmp_path, "reg.ts", "@targetlabel true\n@data\n1,2:0.5\n"))
    assert d.line == 1 and "regression" in d.message


def _ts_spec(make_spec, tmp_path, **source):
    return make_spec(source={"type": "ts", "path": "train.ts", **source},
                     inputs={"x": ((4, 1), "float32")}, target="label",
                     split={"train": 0.5, "val": 0.5, "test": 0.0} if "test_path" in source
                     else None, spec_dir=tmp_path)


def test_ts_source_in_load_data(make_spec, tmp_path):
    rows = "".join(f"{i},{i + 1},{i + 2},{i + 3}:{'abc'[i % 3]}\n" for i in range(30))
    _write(tmp_path, "train.ts", "@classLabel true c b a\n@data\n" + rows)
    splits = load_data(_ts_spec(make_spec, tmp_path))
    assert splits.num_classes == 3 and splits.class_names == ["c", "b", "a"]
    total = sum(len(s) for s in (splits.train, splits.val, splits.test))
    assert total == 30
    x, label = splits.train.fields["x"], splits.train.fields["label"]
    assert np.all(np.array(["c", "b", "a"])[label] == np.array(["abc"[int(v) % 3] for v in
                                                                 x[:, 0, 0]]))


def test_ts_test_path_is_the_test_split(make_spec, tmp_path):
    rows = "".join(f"{i},{i},{i},{i}:{'ab'[i % 2]}\n" for i in range(20))
    _write(tmp_path, "train.ts", "@classLabel true a b\n@data\n" + rows)
    # the test file declares its classes in another order: matched by name
    _write(tmp_path, "test.ts", "@classLabel true b a\n@data\n7,7,7,7:a\n8,8,8,8:b\n9,9,9,9:b\n")
    splits = load_data(_ts_spec(make_spec, tmp_path, test_path="test.ts"))
    assert len(splits.train) + len(splits.val) == 20
    assert splits.test.fields["x"][:, 0, 0].tolist() == [7, 8, 9]
    assert splits.test.fields["label"].tolist() == [0, 1, 1]  # a = 0, b = 1 as in train.ts


def test_ts_test_path_errors_are_in_the_test_file(make_spec, tmp_path):
    _write(tmp_path, "train.ts", "@classLabel true a b\n@data\n" + "1,2,3,4:a\n2,3,4,5:b\n" * 5)
    test = _write(tmp_path, "test.ts", "@classLabel true a b\n@data\n1,2,3,4:a\n1,2,x:b\n")
    spec = _ts_spec(make_spec, tmp_path, test_path="test.ts")
    d = _located(test, lambda: load_data(spec))
    assert d.line == 4 and "'x'" in d.message
    _write(tmp_path, "test.ts", "@classLabel true a b z\n@data\n1,2,3,4:z\n")
    with pytest.raises(GraphdlError) as info:
        load_data(spec)
    assert "class 'z'" in str(info.value)
