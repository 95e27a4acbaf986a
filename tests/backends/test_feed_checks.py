"""A compiled program checks every feed against its input's type before any kernel runs:
shape (symbols bound consistently across inputs), dtype, a C-contiguous ndarray. A wrong
feed is a GraphdlError E510 naming the field, never an out-of-bounds read."""

from __future__ import annotations

import numpy as np
import pytest
from graph_builders import T

from graphdl.compiler import compile_graph
from graphdl.errors import GraphdlError
from graphdl.ir.graph import Graph


def ce_graph() -> Graph:
    """loss = softmax_cross_entropy(x @ w, y) with x [N, 4], w [4, 3] fed, y int64 [N]."""
    g = Graph()
    x = g.input("x", T("N", 4))
    w = g.input("w", T(4, 3))
    y = g.input("y", T("N", dtype="int64"))
    logits = g.op("matmul", x, w)
    g.outputs["loss"] = g.op("softmax_cross_entropy", logits, y, label_smoothing=0.0,
                             ignore_index=-100)
    return g


def feeds(n=5, **over):
    r = np.random.default_rng(0)
    f = {"x": r.standard_normal((n, 4)).astype(np.float32),
         "w": r.standard_normal((4, 3)).astype(np.float32),
         "y": r.integers(0, 3, n).astype(np.int64)}
    f.update(over)
    return f


@pytest.fixture(scope="module")
def program():
    p = compile_graph(ce_graph(), "cpu")
    p.bind_params({}, {})
    return p


def feed_error(program, f) -> str:
    with pytest.raises(GraphdlError) as e:
        program(f)
    (d,) = e.value.diagnostics
    assert d.code == "E510", d
    return d.message


def test_good_feeds_run(program):
    assert np.isfinite(program(feeds())["loss"][0])
    assert np.isfinite(program(feeds(n=9))["loss"][0])


def test_a_target_of_another_shape_is_refused(program):
    msg = feed_error(program, feeds(y=np.zeros((5, 3), np.int64)))
    assert "'y'" in msg and "int64[N]" in msg and "int64[5, 3]" in msg, msg


def test_a_fixed_dim_is_checked(program):
    msg = feed_error(program, feeds(w=np.zeros((4, 2), np.float32)))
    assert "'w'" in msg and "float32[4, 3]" in msg and "float32[4, 2]" in msg, msg


def test_a_dtype_is_checked(program):
    msg = feed_error(program, feeds(y=np.zeros(5, np.float32)))
    assert "'y'" in msg and "int64" in msg and "float32[5]" in msg, msg
    msg = feed_error(program, feeds(x=np.zeros((5, 4), np.float64)))
    assert "'x'" in msg and "float64" in msg, msg


def test_a_symbol_binds_once_across_inputs(program):
    msg = feed_error(program, feeds(y=np.zeros(7, np.int64)))
    assert "N" in msg and "5" in msg and "7" in msg, msg


def test_the_check_survives_a_repeated_shape(program):
    """The fast path (shapes as last call) must still see one input change alone."""
    program(feeds(n=6))
    f = feeds(n=6)
    f["y"] = np.zeros(8, np.int64)  # x still [6, 4]: only y moved
    feed_error(program, f)
    f = feeds(n=6)
    f["x"] = np.zeros((3, 4), np.float32)
    feed_error(program, f)
    assert np.isfinite(program(feeds(n=6))["loss"][0])


def test_rank_missing_field_and_non_arrays_are_refused(program):
    assert "'x'" in feed_error(program, feeds(x=np.zeros(5, np.float32)))
    f = feeds()
    del f["y"]
    assert "'y'" in feed_error(program, f)
    assert "'x'" in feed_error(program, feeds(x=[[0.0] * 4] * 5))


def test_a_non_contiguous_feed_is_refused(program):
    x = np.zeros((5, 8), np.float32)[:, ::2]
    assert "contiguous" in feed_error(program, feeds(x=x))


def test_an_out_of_range_label_gives_nan_not_a_neighbour_read(program):
    """The host checks label ranges before training; a label that slips past (a dataset fed
    by hand) must not index another row of the logits: the loss is NaN."""
    f = feeds(n=4)
    f["y"] = np.array([0, 1, 2, 3], np.int64)  # 3 classes: label 3 is past the row
    assert np.isnan(program(f)["loss"][0])
    f["y"] = np.array([0, 1, 2, -1], np.int64)
    assert np.isnan(program(f)["loss"][0])


def test_cuda_program_checks_feeds_the_same_way():
    from graphdl.backends.cuda import device

    if not device.is_available():
        pytest.skip("no CUDA device or simulator (NUMBA_ENABLE_CUDASIM=1)")
    p = compile_graph(ce_graph(), "cuda")
    p.bind_params({}, {})
    assert np.isfinite(p(feeds())["loss"][0])
    assert "'y'" in feed_error(p, feeds(y=np.zeros(7, np.int64)))
    assert "'x'" in feed_error(p, feeds(x=np.zeros((5, 4), np.float64)))
