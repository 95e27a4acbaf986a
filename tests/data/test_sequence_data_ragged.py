"""Ragged sequences (issue 11, item 6): padded per batch to the batch's longest sequence or
to data.source.max_len (truncate pre|post), an int64 lengths field, per-step targets padded
with train.loss.ignore_index, model.inputs shapes starting with T, and preprocessing that
reads only the steps the sequences have."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphdl.data import apply_preprocess, load_data
from graphdl.data.dataset import Dataset
from graphdl.data.ragged import Ragged, pad_to, stack_steps, step_mask, take, truncate, valid_steps
from graphdl.data.sources import load_source
from graphdl.runtime.trainer import epoch_order

# 7 univariate samples of lengths 3, 5, 2, 5, 4, 1, 3: sample i's step t is 10 * (i + 1) + t
LENGTHS = [3, 5, 2, 5, 4, 1, 3]


def _ts_text(lengths=LENGTHS) -> str:
    rows = "".join(",".join(str(10 * (i + 1) + t) for t in range(n)) + f":{'ab'[i % 2]}\n"
                   for i, n in enumerate(lengths))
    return "@problemName R\n@equalLength false\n@classLabel true a b\n@data\n" + rows


def _write_ts(tmp_path: Path, name: str = "r.ts", lengths=LENGTHS) -> Path:
    path = tmp_path / name
    path.write_text(_ts_text(lengths), encoding="utf-8")
    return path


def _ts_spec(make_spec, tmp_path, inputs=None, split=None, **source):
    _write_ts(tmp_path)
    inputs = {"x": (("T", 1), "float32"), "lengths": ((), "int64")} if inputs is None else inputs
    return make_spec(source={"type": "ts", "path": "r.ts", **source}, inputs=inputs,
                     target="label", split=split or {"train": 1.0, "val": 0.0, "test": 0.0,
                                                     "shuffle": False},
                     spec_dir=tmp_path)


def _steps(x: np.ndarray, i: int) -> list:
    return x[i, :, 0].tolist()


# ------------------------------------------------------------------ padding and batches


def test_ragged_ts_is_padded_to_the_longest_with_its_lengths(make_spec, tmp_path):
    splits = load_data(_ts_spec(make_spec, tmp_path))
    train = splits.train
    x, lengths = train.fields["x"], train.fields["lengths"]
    assert x.shape == (7, 5, 1) and lengths.dtype == np.int64
    assert lengths.tolist() == LENGTHS
    assert _steps(x, 2) == [30, 31, 0, 0, 0] and _steps(x, 5) == [60, 0, 0, 0, 0]
    assert train.ragged == Ragged(lengths="lengths", pads={"x": 0.0}, max_len=None)
    assert train.steps() == 5


@pytest.mark.parametrize("shuffle", [False, True])
def test_each_batch_is_padded_to_its_own_longest(make_spec, tmp_path, shuffle):
    train = load_data(_ts_spec(make_spec, tmp_path)).train
    order = epoch_order(0, 0, len(train), shuffle)
    for b in range(0, len(train), 3):
        idx = order[b:b + 3]
        feeds = train.batch(idx, ["x", "lengths", "label"])
        longest = max(LENGTHS[i] for i in idx)
        assert feeds["x"].shape == (len(idx), longest, 1)
        assert feeds["x"].flags.c_contiguous and feeds["lengths"].tolist() == [LENGTHS[i]
                                                                              for i in idx]
        for row, i in enumerate(idx):
            real = [10 * (i + 1) + t for t in range(LENGTHS[i])]
            assert _steps(feeds["x"], row) == real + [0] * (longest - LENGTHS[i])


def test_batches_by_slice_as_evaluate_and_predict_take_them(make_spec, tmp_path):
    train = load_data(_ts_spec(make_spec, tmp_path)).train
    assert train.batch(slice(0, 3), ["x"])["x"].shape == (3, 5, 1)  # lengths 3, 5, 2
    assert train.batch(slice(4, 7), ["x"])["x"].shape == (3, 4, 1)  # lengths 4, 1, 3
    assert train.batch(slice(5, 6), ["x", "label"])["x"].shape == (1, 1, 1)


def test_max_len_pads_every_batch_to_it(make_spec, tmp_path):
    train = load_data(_ts_spec(make_spec, tmp_path, max_len=8, pad_value=-1)).train
    assert train.fields["x"].shape == (7, 8, 1)
    assert _steps(train.fields["x"], 2) == [30, 31, -1, -1, -1, -1, -1, -1]
    assert train.batch(np.array([2, 5]), ["x"])["x"].shape == (2, 8, 1)


@pytest.mark.parametrize("side, sample1", [("post", [20, 21, 22]), ("pre", [22, 23, 24])])
def test_truncate_keeps_the_first_or_last_steps(make_spec, tmp_path, side, sample1):
    train = load_data(_ts_spec(make_spec, tmp_path, max_len=3, truncate=side)).train
    x, lengths = train.fields["x"], train.fields["lengths"]
    assert x.shape == (7, 3, 1)
    assert lengths.tolist() == [min(n, 3) for n in LENGTHS]
    assert _steps(x, 1) == sample1
    assert _steps(x, 0) == [10, 11, 12] and _steps(x, 2) == [30, 31, 0]


def test_fixed_length_model_input_with_max_len(make_spec, tmp_path):
    spec = _ts_spec(make_spec, tmp_path, inputs={"x": ((6, 1), "float32"),
                                                 "lengths": ((), "int64")}, max_len=6)
    assert load_data(spec).train.fields["x"].shape == (7, 6, 1)


def test_equal_length_ts_needs_no_lengths_input(make_spec, tmp_path):
    _write_ts(tmp_path, "r.ts", lengths=[4] * 6)
    spec = make_spec(source={"type": "ts", "path": "r.ts"}, inputs={"x": ((4, 1), "float32")},
                     target="label", spec_dir=tmp_path)
    splits = load_data(spec)
    assert splits.train.fields["x"].shape[1:] == (4, 1)
    assert set(splits.train.fields["lengths"].tolist()) == {4}


def test_lengths_field_can_be_renamed(make_spec, tmp_path):
    spec = _ts_spec(make_spec, tmp_path, inputs={"x": (("T", 1), "float32"),
                                                 "steps": ((), "int64")}, lengths="steps")
    train = load_data(spec).train
    assert train.fields["steps"].tolist() == LENGTHS and "lengths" not in train.fields
    assert train.batch(np.array([2, 5]), ["x"])["x"].shape == (2, 2, 1)


def test_test_path_may_hold_longer_sequences(make_spec, tmp_path):
    _write_ts(tmp_path, "t.ts", lengths=[9, 2])
    spec = _ts_spec(make_spec, tmp_path, test_path="t.ts",
                    split={"train": 1.0, "val": 0.0, "test": 0.0, "shuffle": False})
    splits = load_data(spec)
    assert splits.train.fields["x"].shape == (7, 5, 1)
    assert splits.test.fields["x"].shape == (2, 9, 1)
    assert splits.test.batch(np.array([1]), ["x"])["x"].shape == (1, 2, 1)


# ------------------------------------------------------------------ fixed-length sources


def test_fixed_length_sources_give_lengths_and_take_a_T_input(make_spec):
    spec = make_spec(source={"type": "builtin", "name": "digits", "as_sequence": True},
                     inputs={"x": (("T", 8), "float32"), "lengths": ((), "int64")})
    splits = load_data(spec)
    assert splits.train.fields["x"].shape[1:] == (8, 8)
    assert set(splits.train.fields["lengths"].tolist()) == {8}
    assert splits.train.ragged is None  # one length: nothing is cut per batch
    synthetic = load_source(make_spec(), {"type": "synthetic", "task": "copy", "vocab": 9,
                                          "length": 6, "samples": 5})
    assert synthetic.fields["lengths"].tolist() == [6] * 5
    assert synthetic.fields["lengths"].dtype == np.int64


# ------------------------------------------------------------------ npz, per-step targets


def _npz_seq(tmp_path: Path, y_int: bool = True) -> None:
    lengths = np.array([2, 4, 3, 1])
    x = np.zeros((4, 4, 2), np.float32)
    y = np.zeros((4, 4), np.int64 if y_int else np.float32)
    for i, n in enumerate(lengths):
        x[i, :n] = i + 1
        y[i, :n] = np.arange(n) + 1
    x[0, 3] = 99  # garbage past a length is padding all the same
    np.savez(tmp_path / "seq.npz", x=x, y=y, lengths=lengths, extra=np.arange(4))


def test_npz_sequences_pad_a_per_step_target_with_ignore_index(make_spec, tmp_path):
    _npz_seq(tmp_path)
    spec = make_spec(source={"type": "npz", "path": "seq.npz", "sequences": ["x", "y"]},
                     inputs={"x": (("T", 2), "float32"), "lengths": ((), "int64")},
                     split={"train": 1.0, "val": 0.0, "test": 0.0, "shuffle": False},
                     spec_dir=tmp_path)
    train = load_data(spec).train
    assert train.ragged.pads == {"x": 0.0, "y": -100}
    assert train.fields["y"][0].tolist() == [1, 2, -100, -100]
    assert train.fields["x"][0, :, 0].tolist() == [1, 1, 0, 0]
    feeds = train.batch(np.array([0, 3]), ["x", "y", "lengths"])
    assert feeds["y"].tolist() == [[1, 2], [1, -100]]
    spec.train["loss"] = {"type": "cross_entropy", "ignore_index": -1}
    assert load_data(spec).train.fields["y"][3].tolist() == [1, -1, -1, -1]


def test_float_per_step_target_is_padded_with_pad_value(make_spec, tmp_path):
    _npz_seq(tmp_path, y_int=False)
    spec = make_spec(source={"type": "npz", "path": "seq.npz", "sequences": ["x", "y"],
                             "pad_value": 0.5},
                     inputs={"x": (("T", 2), "float32"), "lengths": ((), "int64")},
                     split={"train": 1.0, "val": 0.0, "test": 0.0}, spec_dir=tmp_path)
    train = load_data(spec).train
    row = train.fields["lengths"].tolist().index(1)
    assert train.fields["y"][row].tolist() == [1.0, 0.5, 0.5, 0.5]


# ------------------------------------------------------------------ preprocessing


def test_normalize_uses_only_real_steps_and_keeps_padding(make_spec, tmp_path):
    spec = _ts_spec(make_spec, tmp_path, pad_value=-7)
    spec.data["preprocess"] = [{"op": "normalize"}]
    splits = load_data(spec)
    x, lengths = splits.train.fields["x"], splits.train.fields["lengths"]
    real = np.concatenate([[10 * (i + 1) + t for t in range(n)] for i, n in enumerate(LENGTHS)])
    stats = splits.preprocess_state["normalize.0"]["stats"]["x"]
    assert stats["per"] == "step_feature" and stats["step"] == [1]
    assert np.allclose(stats["mean"], [real.mean()]) and np.allclose(stats["std"], [real.std()])
    mask = step_mask(lengths, x.shape[1])
    assert np.allclose(x[mask][:, 0], (real - real.mean()) / real.std(), atol=1e-5)
    assert np.all(x[~mask] == -7)
    # predict: new sequences of another length, normalized with the same statistics
    new = {"x": np.array([[[10.0], [20.0], [0.0], [0.0], [0.0], [0.0]]], np.float32),
           "lengths": np.array([2])}
    out = apply_preprocess(spec, new, splits.preprocess_state)
    assert out["x"].shape == (1, 2, 1)  # padded to the new data's own longest
    assert np.allclose(out["x"][0, :, 0], (np.array([10, 20]) - real.mean()) / real.std(),
                       atol=1e-5)


def test_steps_other_than_scale_and_normalize_refuse_ragged_fields(make_spec, tmp_path,
                                                                   expect_error):
    spec = _ts_spec(make_spec, tmp_path)
    spec.data["preprocess"] = [{"op": "pca", "components": 1}]
    spec.positions[("data", "preprocess", 0)] = (1, 1, 1)
    d = expect_error(lambda: load_data(spec), "E508", spec, "data", "preprocess", 0)
    assert "ragged" in d.message


def test_predict_data_is_cut_to_max_len(make_spec, tmp_path):
    spec = _ts_spec(make_spec, tmp_path, max_len=3, truncate="pre")
    state = load_data(spec).preprocess_state
    out = apply_preprocess(spec, {"x": np.arange(5, dtype=np.float32).reshape(1, 5, 1),
                                  "lengths": np.array([5])}, state)
    assert out["x"][0, :, 0].tolist() == [2, 3, 4] and out["lengths"].tolist() == [3]


# ------------------------------------------------------------------ the pieces


def test_pad_truncate_take_stack_and_valid_steps():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    lengths = np.array([4, 2, 3])
    assert pad_to(x, lengths, 5, -1).tolist() == [[0, 1, 2, 3, -1], [4, 5, -1, -1, -1],
                                                  [8, 9, 10, -1, -1]]
    assert truncate(x, lengths, 2, "pre")[:, :2].tolist() == [[2, 3], [4, 5], [9, 10]]
    assert truncate(x, lengths, 2, "post")[:, :2].tolist() == [[0, 1], [4, 5], [8, 9]]
    ragged = Ragged("n", {"x": 0.0})
    fields = {"x": pad_to(x, lengths, 4, 0), "n": lengths}
    assert take(fields, np.array([1]), ["x", "n"], ragged)["x"].shape == (1, 2)
    assert take(fields, slice(0, 3), ["x"], Ragged("n", {"x": 0.0}, max_len=6))["x"].shape == (3, 6)
    ds = Dataset(fields, ragged)
    assert ds.subset(np.array([1, 2])).ragged is ragged and ds.steps() == 4
    out = stack_steps([np.ones((2, 3, 5)), np.ones((1, 1, 5))])
    assert out.shape == (3, 3, 5) and out[2, 1:].sum() == 0
    assert stack_steps([np.ones((2, 9)), np.ones((1, 9))]).shape == (3, 9)
    outputs = np.arange(3 * 3 * 2, dtype=np.float32).reshape(3, 3, 2)
    targets = np.array([[1, 1, -100, -100], [0, -100, -100, -100], [1, 0, 1, -100]])
    got_out, got_t = valid_steps(outputs, targets, np.array([2, 1, 3]), -100)
    assert got_t.tolist() == [1, 1, 0, 1, 0, 1] and got_out.shape == (6, 2)


def test_predict_reads_a_ts_file_with_its_lengths(make_spec, tmp_path):
    from graphdl.data import read_new_data

    spec = _ts_spec(make_spec, tmp_path)
    new = read_new_data(spec, [_write_ts(tmp_path, "new.ts", lengths=[2, 6])])
    assert new.fields["x"].shape == (2, 6, 1) and new.fields["lengths"].tolist() == [2, 6]
    assert new.sample_names == ["new.ts:5", "new.ts:6"]
