"""The built-in sequence datasets (issue 11, item 6): japanese_vowels (UCI Japanese Vowels,
ragged, with its standard 270/370 split) and airline (monthly passengers 1949-1960, cut
into forecasting windows and split in time order). The numbers asserted here are the
measured facts of the shipped files (built by tools/build_japanese_vowels.py)."""

from __future__ import annotations

import numpy as np
import pytest

from graphdl.data import BUILTINS, load_data
from graphdl.data.sources import BUILTIN_DIR, load_source
from graphdl.data.split import split_config
from graphdl.spec import load_spec

JV_INPUTS = {"x": (("T", 12), "float32"), "lengths": ((), "int64")}


def _vowels(make_spec, split=None, **source):
    return make_spec(source={"type": "builtin", "name": "japanese_vowels", **source},
                     inputs=JV_INPUTS, split=split or {"train": 0.9, "val": 0.1, "test": 0.0})


# ------------------------------------------------------------------ japanese_vowels


def test_japanese_vowels_facts(make_spec):
    raw = load_source(make_spec(), {"type": "builtin", "name": "japanese_vowels"})
    test = raw.test
    assert raw.num_classes == 9 and raw.ragged == ["x"] and raw.lengths == "lengths"
    assert len(raw.fields["y"]) == 270 and len(test.fields["y"]) == 370
    assert raw.fields["x"].shape == (270, 26, 12) and test.fields["x"].shape == (370, 29, 12)
    assert raw.fields["x"].dtype == np.float32 and raw.fields["y"].dtype == np.int64
    lengths = np.concatenate([raw.fields["lengths"], test.fields["lengths"]])
    assert (lengths.min(), lengths.max()) == (7, 29) and lengths.dtype == np.int64
    assert (raw.fields["lengths"].min(), raw.fields["lengths"].max()) == (7, 26)
    assert int(raw.fields["lengths"].sum()) == 4274 and int(test.fields["lengths"].sum()) == 5687
    assert np.bincount(raw.fields["y"]).tolist() == [30] * 9
    assert np.bincount(test.fields["y"]).tolist() == [31, 35, 88, 44, 29, 24, 40, 50, 29]
    # the first frame of the first training utterance, as in JapaneseVowels_TRAIN.ts
    assert raw.fields["x"][0, 0, 0] == np.float32(1.860936)
    assert raw.fields["x"][0, 0, 1] == np.float32(-0.207383)
    x, n = raw.fields["x"], raw.fields["lengths"]
    assert np.all(x[np.arange(x.shape[1])[None, :] >= n[:, None]] == 0)  # padding is 0
    assert np.all(np.abs(x[np.arange(x.shape[1])[None, :] < n[:, None]]).sum(axis=-1) > 0)


def test_japanese_vowels_standard_split(make_spec):
    splits = load_data(_vowels(make_spec))
    assert len(splits.train) + len(splits.val) == 270 and len(splits.test) == 370
    assert len(splits.val) == 27
    assert splits.num_classes == 9
    for ds in (splits.train, splits.val, splits.test):
        assert ds.ragged is not None and ds.ragged.lengths == "lengths"
        assert set(ds.fields) == {"x", "y", "lengths"}


def test_japanese_vowels_split_test_is_refused(make_spec, expect_error):
    spec = _vowels(make_spec, split={"train": 0.8, "val": 0.1, "test": 0.1})
    d = expect_error(lambda: split_config(spec), "E507", spec, "data", "split", "test")
    assert "standard test split of japanese_vowels" in d.message


def test_real_spec_defaults_to_train_and_val_of_the_270(tmp_path):
    path = tmp_path / "jv.yaml"
    path.write_text("graphdl: 1\ndata: {source: {type: builtin, name: japanese_vowels}}\n"
                    "model:\n  inputs:\n    x: {shape: [T, 12]}\n"
                    "    lengths: {shape: [], dtype: int64}\n"
                    "  layers:\n    - {type: flatten, inputs: [x]}\ntrain: {target: y}\n",
                    encoding="utf-8")
    spec = load_spec(path)
    assert spec.model.inputs["x"].shape == ("T", 12) and spec.model.inputs["lengths"].shape == ()
    assert (spec.data["split"]["train"], spec.data["split"]["val"],
            spec.data["split"]["test"]) == (0.9, 0.1, 0.0)


def test_shipped_files_carry_licence_and_source():
    licence = (BUILTIN_DIR / "japanese_vowels_LICENSE.txt").read_text(encoding="utf-8")
    assert "CC BY 4.0" in licence and "archive.ics.uci.edu" in licence and "sktime" in licence
    assert "Kudo" in licence
    airline = (BUILTIN_DIR / "airline_LICENSE.txt").read_text(encoding="utf-8")
    assert "Box" in airline and "Series G" in airline and "sktime" in airline
    assert {"digits", "japanese_vowels", "airline"} <= set(BUILTINS)


# ------------------------------------------------------------------ airline


def test_airline_series_facts():
    with np.load(BUILTIN_DIR / "airline.npz") as npz:
        passengers, month = npz["passengers"], npz["month"]
    assert passengers.shape == (144,) and month.tolist()[:2] == [194901, 194902]
    assert month[-1] == 196012
    assert passengers[:12].tolist() == [112, 118, 132, 129, 121, 135, 148, 148, 136, 119,
                                        104, 118]
    assert (int(passengers.min()), int(passengers.max()), int(passengers.sum())) == (104, 622,
                                                                                      40363)


def _airline(make_spec, window, split=None):
    return make_spec(source={"type": "builtin", "name": "airline", "window": window},
                     inputs={"x": (("T", 1), "float32")}, split=split)


def test_airline_windows(make_spec):
    raw = load_source(make_spec(), {"type": "builtin", "name": "airline",
                                    "window": {"input": 24, "horizon": 1}})
    x, y = raw.fields["x"], raw.fields["y"]
    assert x.shape == (120, 24, 1) and y.shape == (120, 1)
    assert x.dtype == y.dtype == np.float32
    assert x[0, :3, 0].tolist() == [112, 118, 132] and y[0, 0] == 145  # January 1951
    assert np.array_equal(x[1:, :-1], x[:-1, 1:]) and np.array_equal(y[:-1, 0], x[1:, -1, 0])
    assert y[-1, 0] == 432 and raw.fields["lengths"].tolist() == [24] * 120


def test_airline_split_keeps_time_order(make_spec):
    splits = load_data(_airline(make_spec, {"input": 24, "horizon": 1}))
    train, val, test = (s.fields["y"][:, 0] for s in (splits.train, splits.val, splits.test))
    assert (len(train), len(val), len(test)) == (96, 12, 12)
    series = np.concatenate([train, val, test])
    with np.load(BUILTIN_DIR / "airline.npz") as npz:
        assert series.tolist() == npz["passengers"][24:].tolist()  # in order, none shuffled


def test_airline_horizon_leaves_no_target_in_two_splits(make_spec):
    splits = load_data(_airline(make_spec, {"input": 12, "horizon": 3}))
    # 144 - 12 - 3 + 1 = 130 windows: 104 / 13 / 13, then val and test start 2 windows later
    assert (len(splits.train), len(splits.val), len(splits.test)) == (104, 11, 11)
    with np.load(BUILTIN_DIR / "airline.npz") as npz:
        p = npz["passengers"].astype(np.float32)
    windows = {"train": range(104), "val": range(106, 117), "test": range(119, 130)}
    for name, starts in windows.items():
        ds = getattr(splits, name)
        assert ds.fields["x"][:, :, 0].tolist() == [p[i:i + 12].tolist() for i in starts]
        assert ds.fields["y"].tolist() == [p[i + 12:i + 15].tolist() for i in starts]
    # the last train target is month 103 + 12 + 2 = 117; the first val target month 118


@pytest.mark.parametrize("key", ["shuffle", "stratify"])
def test_airline_refuses_a_shuffled_split(make_spec, expect_error, key):
    spec = _airline(make_spec, {"input": 24}, split={key: True})
    d = expect_error(lambda: load_data(spec), "E507", spec, "data", "split", key)
    assert "time order" in d.message


def test_airline_needs_a_window(make_spec, expect_error):
    spec = make_spec(source={"type": "builtin", "name": "airline"})
    d = expect_error(lambda: load_data(spec), "E508", spec, "data", "source", "name")
    assert "window" in d.help
    spec = _airline(make_spec, {"input": 200})
    expect_error(lambda: load_data(spec), "E508", spec, "data", "source", "window")
    spec = make_spec(source={"type": "builtin", "name": "digits", "window": {"input": 3}})
    expect_error(lambda: load_data(spec), "E508", spec, "data", "source", "window")
