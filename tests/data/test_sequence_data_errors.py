"""Sequence data mistakes (issue 11, items 6 and 9): each a located error at the spec key
(file:line:col) with a help line, naming the sample where one is at fault."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphdl.data import load_data
from graphdl.data.sources import load_source

RAGGED_TS = "@classLabel true a b\n@data\n1,2,3:a\n4,5:b\n6,7,8,9:a\n10:b\n"


def _ts_spec(make_spec, tmp_path: Path, inputs=None, **source):
    (tmp_path / "r.ts").write_text(RAGGED_TS, encoding="utf-8")
    inputs = {"x": (("T", 1), "float32"), "lengths": ((), "int64")} if inputs is None else inputs
    return make_spec(source={"type": "ts", "path": "r.ts", **source}, inputs=inputs,
                     target="label", split={"train": 0.5, "val": 0.5, "test": 0.0},
                     spec_dir=tmp_path)


def test_ragged_input_without_a_lengths_input(make_spec, tmp_path, expect_error):
    spec = _ts_spec(make_spec, tmp_path, inputs={"x": (("T", 1), "float32")})
    d = expect_error(lambda: load_data(spec), "E502", spec, "model", "inputs", "x")
    assert "lengths" in d.message and "1 to 4 steps" in d.message
    assert "lengths: {shape: [], dtype: int64}" in d.help


def test_renamed_lengths_input_is_the_one_asked_for(make_spec, tmp_path, expect_error):
    spec = _ts_spec(make_spec, tmp_path, inputs={"x": (("T", 1), "float32")}, lengths="n")
    d = expect_error(lambda: load_data(spec), "E502", spec, "model", "inputs", "x")
    assert "'n'" in d.message and "n: {shape: []" in d.help


def test_lengths_input_must_be_int64_scalar(make_spec, tmp_path, expect_error):
    spec = _ts_spec(make_spec, tmp_path, inputs={"x": (("T", 1), "float32"),
                                                 "lengths": ((), "float32")})
    d = expect_error(lambda: load_data(spec), "E503", spec, "model", "inputs", "lengths")
    assert "int64" in d.help


def test_fixed_steps_for_ragged_sequences(make_spec, tmp_path, expect_error):
    spec = _ts_spec(make_spec, tmp_path, inputs={"x": ((4, 1), "float32"),
                                                 "lengths": ((), "int64")})
    d = expect_error(lambda: load_data(spec), "E503", spec, "model", "inputs", "x")
    assert "1 to 4 steps" in d.message
    assert "shape: [T, 1]" in d.help and "max_len: 4" in d.help


def test_sequence_longer_than_max_len(make_spec, tmp_path, expect_error):
    spec = _ts_spec(make_spec, tmp_path, max_len=3)
    d = expect_error(lambda: load_data(spec), "E503", spec, "data", "source", "max_len")
    assert "sample 2 (r.ts:5)" in d.message and "4 steps" in d.message
    assert "truncate: post" in d.help and "truncate: pre" in d.help


def test_bad_padding_settings(make_spec, tmp_path, expect_error):
    spec = _ts_spec(make_spec, tmp_path, truncate="post")
    d = expect_error(lambda: load_data(spec), "E508", spec, "data", "source", "truncate")
    assert "max_len" in d.help
    spec = _ts_spec(make_spec, tmp_path, max_len=4, truncate="middle")
    expect_error(lambda: load_data(spec), "E508", spec, "data", "source", "truncate")
    spec = _ts_spec(make_spec, tmp_path, max_len=0)
    expect_error(lambda: load_data(spec), "E508", spec, "data", "source", "max_len")


def test_padding_keys_need_ragged_sequences(make_spec, expect_error):
    spec = make_spec(source={"type": "builtin", "name": "digits", "as_sequence": True,
                             "max_len": 10}, inputs={"x": ((8, 8), "float32")})
    d = expect_error(lambda: load_data(spec), "E508", spec, "data", "source", "max_len")
    assert "one length" in d.message
    spec = make_spec(source={"type": "builtin", "name": "digits", "lengths": "n"})
    expect_error(lambda: load_data(spec), "E508", spec, "data", "source", "lengths")
    spec = make_spec(source={"type": "synthetic", "task": "adding", "length": 5,
                             "lengths": "x"}, inputs={"x": ((5, 2), "float32")})
    d = expect_error(lambda: load_source(spec, spec.data["source"]), "E508", spec,
                     "data", "source", "lengths")
    assert "already has" in d.message


def _npz(tmp_path: Path, **arrays) -> None:
    base = {"x": np.zeros((3, 4, 2), np.float32), "y": np.arange(3),
            "lengths": np.array([1, 4, 2])}
    np.savez(tmp_path / "s.npz", **{**base, **arrays})


def _npz_spec(make_spec, tmp_path, **source):
    return make_spec(source={"type": "npz", "path": "s.npz", **source},
                     inputs={"x": (("T", 2), "float32"), "lengths": ((), "int64")},
                     spec_dir=tmp_path)


def test_npz_sequence_mistakes(make_spec, tmp_path, expect_error):
    _npz(tmp_path)
    spec = _npz_spec(make_spec, tmp_path, sequences=["x", "z"])
    d = expect_error(lambda: load_data(spec), "E502", spec, "data", "source", "sequences", 1)
    assert "'z'" in d.message
    spec = _npz_spec(make_spec, tmp_path, sequences=["y"])
    expect_error(lambda: load_data(spec), "E503", spec, "data", "source", "sequences", 0)
    spec = _npz_spec(make_spec, tmp_path, sequences=["x"], lengths="n")
    d = expect_error(lambda: load_data(spec), "E502", spec, "data", "source", "lengths")
    assert "'n'" in d.message
    _npz(tmp_path, lengths=np.array([1, 5, 2]))
    spec = _npz_spec(make_spec, tmp_path, sequences=["x"], lengths="lengths")
    d = expect_error(lambda: load_data(spec), "E503", spec, "data", "source", "lengths")
    assert "sample 1" in d.message and "length 5" in d.message
    _npz(tmp_path, lengths=np.array([1.5, 2, 2]))  # the int64 input cannot hold 1.5
    expect_error(lambda: load_data(spec), "E503", spec, "model", "inputs", "lengths")
    spec = _npz_spec(make_spec, tmp_path, max_len=3)
    d = expect_error(lambda: load_data(spec), "E508", spec, "data", "source", "max_len")
    assert "sequences" in d.message


@pytest.mark.parametrize("body, line, col", [("1,2,x:a", 4, 5), ("1,,3:b", 4, 3),
                                              ("1,2:3,4:a", 4, 1)])
def test_malformed_ts_line_is_located_in_the_file(make_spec, tmp_path, body, line, col):
    from graphdl.errors import GraphdlError

    (tmp_path / "bad.ts").write_text("@classLabel true a b\n@data\n1,2:a\n" + body + "\n",
                                     encoding="utf-8")
    spec = make_spec(source={"type": "ts", "path": "bad.ts"},
                     inputs={"x": (("T", 1), "float32"), "lengths": ((), "int64")},
                     target="label", spec_dir=tmp_path)
    with pytest.raises(GraphdlError) as info:
        load_data(spec)
    d = info.value.diagnostics[0]
    assert (d.code, d.file, d.line, d.col) == ("E505", str(tmp_path / "bad.ts"), line, col)
    assert d.help and "Traceback" not in info.value.format()


def _embedding_spec(make_spec, tmp_path, **source):
    from types import SimpleNamespace

    np.savez(tmp_path / "tok.npz", src=np.array([[3, 4, 0], [5, 0, 0], [6, 7, 8]]),
             y=np.array([0, 1, 0]), lengths=np.array([2, 1, 3]))
    spec = make_spec(source={"type": "npz", "path": "tok.npz", "sequences": ["src"], **source},
                     inputs={"src": (("T",), "int64"), "lengths": ((), "int64")},
                     spec_dir=tmp_path)
    spec.model.layers = [SimpleNamespace(type="embedding", name="emb", inputs=["src"],
                                         params={"vocab": 8}, yaml_path="model.layers[0]",
                                         block_path=None)]
    spec.positions[("model", "layers", 0, "vocab")] = (30, 7, 1)
    return spec


def test_token_id_outside_vocab_names_the_sample_and_step(make_spec, tmp_path, expect_error):
    spec = _embedding_spec(make_spec, tmp_path)
    d = expect_error(lambda: load_data(spec), "E509", spec, "model", "layers", 0, "vocab")
    assert "token id 8 in sample 2, step 2 of data field 'src'" in d.message
    assert "'emb'" in d.message and "above the largest id (8)" in d.help


def test_pad_value_must_be_a_token_id(make_spec, tmp_path, expect_error):
    spec = _embedding_spec(make_spec, tmp_path, pad_value=-1)
    spec.model.layers[0].params["vocab"] = 9
    d = expect_error(lambda: load_data(spec), "E508", spec, "data", "source", "pad_value")
    assert "padding_idx" in d.help


def test_a_sequence_longer_than_positional_encodings_max_len_is_located(make_spec, tmp_path,
                                                                         expect_error):
    from types import SimpleNamespace

    spec = _embedding_spec(make_spec, tmp_path)
    spec.model.layers[0].params["vocab"] = 9
    spec.model.layers.append(SimpleNamespace(
        type="positional_encoding", name="pos", inputs=["emb"], params={"max_len": 2},
        yaml_path="model.layers[1]", block_path=None))
    spec.positions[("model", "layers", 1, "max_len")] = (31, 9, 1)
    d = expect_error(lambda: load_data(spec), "E503", spec, "model", "layers", 1, "max_len")
    assert "sample 2" in d.message and "3 steps" in d.message and "max_len" in d.message
    assert "at least 3" in d.help
    spec.model.layers[1].params["max_len"] = 3
    load_data(spec)
