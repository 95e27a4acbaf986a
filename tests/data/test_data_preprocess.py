"""Preprocessing: statistics from the train split only; re-applying them for predict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphdl.data import apply_preprocess, load_data

NO_SHUFFLE = {"train": 0.8, "val": 0.1, "test": 0.1, "shuffle": False}


@pytest.fixture
def digits_raw(make_spec):
    """Unpreprocessed digits splits (same split as the specs below: no shuffle, seed 0)."""
    return load_data(make_spec(split=NO_SHUFFLE))


def test_zscore_statistics_come_from_train_only(make_spec, digits_raw):
    spec = make_spec(split=NO_SHUFFLE, preprocess=[{"op": "normalize", "mode": "zscore"}])
    s = load_data(spec)
    x_train = digits_raw.train.fields["x"].astype(np.float64)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    st = s.preprocess_state["normalize.0"]
    assert st["fields"] == ["x"] and st["mode"] == "zscore"
    np.testing.assert_allclose(st["stats"]["x"]["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(st["stats"]["x"]["std"], std, rtol=1e-12)
    # train/val/test all use the train statistics
    safe = np.where(std < 1e-8, 1.0, std)  # a constant feature is scaled by 1
    for name in ("train", "val", "test"):
        raw = digits_raw.get(name).fields["x"].astype(np.float64)
        out = s.get(name).fields["x"]
        assert out.dtype == np.float32 and out.flags.c_contiguous
        np.testing.assert_allclose(out, (raw - mean) / safe, rtol=1e-5, atol=1e-5)
    # not the full-data statistics
    x_all = np.concatenate([digits_raw.get(n).fields["x"] for n in ("train", "val", "test")])
    assert not np.allclose(mean, x_all.mean(axis=0))
    # the train split is standardised; constant columns (digits has some) become 0, not NaN
    out = s.train.fields["x"]
    assert np.all(np.isfinite(out))
    const = std == 0
    assert const.any() and np.all(out[:, const] == 0)
    np.testing.assert_allclose(out[:, ~const].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(out[:, ~const].std(axis=0), 1, atol=1e-4)
    # labels untouched
    np.testing.assert_array_equal(s.train.fields["y"], digits_raw.train.fields["y"])


def test_minmax_uses_train_range(make_spec, digits_raw):
    spec = make_spec(split=NO_SHUFFLE, preprocess=[{"op": "normalize", "mode": "minmax"}])
    s = load_data(spec)
    x = digits_raw.train.fields["x"].astype(np.float64)
    lo, hi = x.min(axis=0), x.max(axis=0)
    st = s.preprocess_state["normalize.0"]["stats"]["x"]
    np.testing.assert_array_equal(st["min"], lo)
    np.testing.assert_array_equal(st["max"], hi)
    out = s.train.fields["x"]
    assert out.min() >= 0 and out.max() <= 1 and np.isfinite(out).all()
    raw_val = digits_raw.val.fields["x"].astype(np.float64)
    np.testing.assert_allclose(
        s.val.fields["x"], (raw_val - lo) / np.where(hi - lo < 1e-8, 1.0, hi - lo), rtol=1e-6
    )


@pytest.mark.parametrize("mode", ["zscore", "minmax"])
def test_a_feature_constant_in_training_is_not_blown_up(make_spec, mode):
    """A pixel that is always 0 in the train split but 16 in a new sample: scaled by 1 (as
    scikit-learn does), not divided by 1e-8 (which made test losses of 756 with exit 0)."""
    spec = make_spec(split=NO_SHUFFLE, preprocess=[{"op": "normalize", "mode": mode}])
    s = load_data(spec)
    stats = s.preprocess_state["normalize.0"]["stats"]["x"]
    lo = np.asarray(stats["mean"] if mode == "zscore" else stats["min"])
    spread = np.asarray(stats["std"]) if mode == "zscore" else np.asarray(stats["max"]) - lo
    const = np.flatnonzero(spread == 0)
    assert const.size
    x = np.zeros((1, 64), np.float32)
    x[0, const] = 16.0
    out = apply_preprocess(spec, {"x": x}, s.preprocess_state)["x"]
    np.testing.assert_allclose(out[0, const], 16.0 - lo[const], rtol=1e-6)


def test_scale_then_normalize_in_order(make_spec, digits_raw):
    steps = [{"op": "scale", "factor": 0.0625}, {"op": "normalize", "mode": "zscore"}]
    s = load_data(make_spec(split=NO_SHUFFLE, preprocess=steps))
    assert list(s.preprocess_state) == ["scale.0", "normalize.1"]
    assert s.preprocess_state["scale.0"] == {"op": "scale", "factor": 0.0625, "fields": ["x"]}
    scaled = digits_raw.train.fields["x"].astype(np.float64) * 0.0625
    np.testing.assert_allclose(
        s.preprocess_state["normalize.1"]["stats"]["x"]["mean"], scaled.mean(axis=0), rtol=1e-7
    )


def test_scale_only(make_spec, digits_raw):
    s = load_data(make_spec(split=NO_SHUFFLE, preprocess=[{"op": "scale", "factor": 0.5}]))
    np.testing.assert_array_equal(s.test.fields["x"], digits_raw.test.fields["x"] * 0.5)


def test_state_is_json_and_apply_preprocess_reproduces_the_transform(make_spec, digits_raw):
    steps = [
        {"op": "scale", "factor": 1 / 16},
        {"op": "normalize", "mode": "zscore", "stats": "from_train"},
        {"op": "normalize", "mode": "minmax", "fields": ["x"]},
    ]
    spec = make_spec(split=NO_SHUFFLE, preprocess=steps)
    s = load_data(spec)
    state = json.loads(json.dumps(s.preprocess_state))  # as saved next to a checkpoint
    # "new" data for predict: the raw test split, without the target, as float64
    new = {"x": digits_raw.test.fields["x"].astype(np.float64)}
    before = new["x"].copy()
    out = apply_preprocess(spec, new, state)
    assert set(out) == {"x"}
    assert out["x"].dtype == np.float32 and out["x"].flags.c_contiguous
    np.testing.assert_array_equal(out["x"], s.test.fields["x"])  # bit-identical
    np.testing.assert_array_equal(new["x"], before)  # inputs not modified
    # with the target present it passes through as int64
    out2 = apply_preprocess(spec, {"x": new["x"], "y": digits_raw.test.fields["y"]}, state)
    np.testing.assert_array_equal(out2["y"], digits_raw.test.fields["y"])
    assert out2["y"].dtype == np.int64


def test_apply_preprocess_casts_integer_images(make_spec, digits_raw):
    spec = make_spec(split=NO_SHUFFLE, preprocess=[{"op": "normalize"}])
    s = load_data(spec)
    raw_u8 = digits_raw.val.fields["x"].astype(np.uint8)
    out = apply_preprocess(spec, {"x": raw_u8}, s.preprocess_state)
    np.testing.assert_array_equal(out["x"], s.val.fields["x"])


def test_explicit_fields_and_float_target_excluded_by_default(make_spec, tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(5, 2, size=(200, 3))
    b = rng.normal(-1, 4, size=(200, 2))
    y = rng.normal(size=200)
    np.savez(tmp_path / "d.npz", a=a, b=b, y=y)
    spec = make_spec(
        source={"type": "npz", "path": "d.npz"},
        inputs={"a": ((3,), "float32"), "b": ((2,), "float32")},
        split={"train": 1.0, "val": 0, "test": 0, "shuffle": False},
        preprocess=[{"op": "normalize", "fields": ["b"]}, {"op": "scale", "factor": 2.0}],
    )
    s = load_data(spec)
    assert s.num_classes is None  # float target
    assert s.preprocess_state["normalize.0"]["fields"] == ["b"]
    assert s.preprocess_state["scale.1"]["fields"] == ["a", "b"]  # not the target y
    np.testing.assert_allclose(s.train.fields["a"], a * 2, rtol=1e-6)
    np.testing.assert_allclose(s.train.fields["y"], y, rtol=1e-6)
    np.testing.assert_allclose(
        s.train.fields["b"], (b - b.mean(0)) / b.std(0) * 2, rtol=1e-5, atol=1e-5
    )
