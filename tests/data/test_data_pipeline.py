"""graphdl.data.pipeline: preprocessing runs as compiled graphs, in batches, segment by
segment, and computes what NumPy computes."""

from __future__ import annotations

import numpy as np

from graphdl.backends.reference import run_reference
from graphdl.data import apply_preprocess, load_data
from graphdl.data import pipeline as pl
from graphdl.data.preprocess import STD_FLOOR

NO_SHUFFLE = {"train": 0.8, "val": 0.1, "test": 0.1, "shuffle": False}
SCALE_NORMALIZE = [{"op": "scale", "factor": 1 / 16}, {"op": "normalize", "mode": "zscore"},
                   {"op": "scale", "factor": 3.0}]


def _numpy_path(train, splits):
    """The former NumPy implementation: float64 math, float32 after every step."""
    def scale(x, f):
        return (x.astype(np.float64) * f).astype(np.float32)

    t = scale(train, 1 / 16)
    mean, std = t.astype(np.float64).mean(0), np.maximum(t.astype(np.float64).std(0), STD_FLOOR)
    return [scale(((scale(x, 1 / 16).astype(np.float64) - mean) / std).astype(np.float32), 3.0)
            for x in splits]


def test_scale_normalize_equal_the_numpy_path(make_spec):
    raw = load_data(make_spec(split=NO_SHUFFLE))
    s = load_data(make_spec(split=NO_SHUFFLE, preprocess=SCALE_NORMALIZE))
    names = ("train", "val", "test")
    want = _numpy_path(raw.train.fields["x"], [raw.get(n).fields["x"] for n in names])
    for name, w in zip(names, want):
        got = s.get(name).fields["x"]
        assert np.abs(got.astype(np.float64) - w).max() <= 1e-6
        assert np.mean(got == w) > 0.99  # all but a few roundings bit-identical


def test_segments_cut_before_fitted_steps():
    ops = ["scale", "resize", "normalize", "median_filter", "pca", "normalize"]
    assert pl.segments([{"op": o} for o in ops]) == [[0, 1], [2, 3], [4], [5]]
    assert pl.segments([{"op": "normalize"}]) == [[0]]
    assert pl.segments([]) == []


def test_batches_do_not_change_the_result():
    entries = [{"op": "resize", "size": [5, 7], "interpolation": "bilinear", "fields": ["a"]},
               {"op": "gaussian_blur", "kernel": 3, "sigma": 1.0, "fields": ["a"]}]
    x = np.random.default_rng(0).random((23, 2, 4, 4)).astype(np.float32)
    g = pl.build_graph(entries, "a", (2, 4, 4))
    whole = pl.run_graph(g, x)
    np.testing.assert_array_equal(pl.run_graph(g, x, batch=5), whole)
    ref, _, _ = run_reference(g, {"x": x})
    np.testing.assert_allclose(whole, ref["y"], atol=1e-6)
    assert pl.run_graph(g, x[:0]).shape == (0, 2, 5, 7)


def test_programs_are_reused_in_process(make_spec):
    spec = make_spec(preprocess=SCALE_NORMALIZE)
    load_data(spec)
    before = dict(pl._PROGRAMS)
    load_data(spec)
    assert dict(pl._PROGRAMS).keys() == before.keys()
    assert all(pl._PROGRAMS[k] is before[k] for k in before)


def test_old_state_without_per_is_per_feature(make_spec):
    spec = make_spec(preprocess=[{"op": "normalize"}])
    s = load_data(spec)
    state = {"normalize.0": dict(s.preprocess_state["normalize.0"])}
    stats = {k: v for k, v in state["normalize.0"]["stats"]["x"].items() if k != "per"}
    state["normalize.0"]["stats"] = {"x": stats}  # as saved before images existed
    out = apply_preprocess(spec, {"x": load_data(make_spec()).test.fields["x"]}, state)
    np.testing.assert_array_equal(out["x"], s.test.fields["x"])


def test_vector_fields_of_any_rank(make_spec, tmp_path):
    r = np.random.default_rng(1)
    a = r.normal(2, 3, size=(40, 2, 3))
    w = r.normal(-1, 2, size=40)
    np.savez(tmp_path / "d.npz", a=a, w=w, y=np.arange(40) % 2)
    spec = make_spec(source={"type": "npz", "path": "d.npz"},
                     inputs={"a": ((2, 3), "float32")},
                     split={"train": 1.0, "val": 0, "test": 0, "shuffle": False},
                     preprocess=[{"op": "normalize"}])
    s = load_data(spec)
    st = s.preprocess_state["normalize.0"]["stats"]
    assert np.shape(st["a"]["mean"]) == (2, 3) and np.shape(st["w"]["mean"]) == ()
    a32 = a.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(s.train.fields["a"], (a32 - a32.mean(0)) / a32.std(0), atol=1e-6)
    w32 = w.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(s.train.fields["w"], (w32 - w32.mean()) / w32.std(), atol=1e-6)
