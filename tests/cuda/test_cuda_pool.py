"""Pooling on the CUDA backend (graphdl/backends/cuda/kernels/pool.py) against the ops' NumPy
references: on the simulator when there is no GPU (conftest.py).

Windows with and without padding, strides smaller than (overlapping windows: the gradient
gathers from several), equal to and larger than the window, and ties and NaN for max
pooling's winner.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_helpers import T, check_kernel

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph

SHAPE = (3, 7, 6)  # [C, H, W]

WINDOWS = {
    "2x2": {"kernel": (2, 2)},
    "3x3_overlap_padded": {"kernel": (3, 3), "stride": (2, 1), "padding": (1, 1, 1, 0)},
    "3x2_stride3": {"kernel": (3, 2), "stride": (3, 3), "padding": (0, 1, 1, 0)},
    "1x1": {"kernel": (1, 1), "stride": (2, 2)},
}


def _x(seed, dtype="float32"):
    return np.random.default_rng(seed).standard_normal((2, *SHAPE)).astype(dtype)


def _gy(y, seed):
    return np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)


@pytest.mark.parametrize("name", list(WINDOWS))
def test_max_pool_and_its_gradient(name):
    attrs = WINDOWS[name]
    x = _x(len(name))
    (y,) = check_kernel("max_pool2d", [T("N", *SHAPE)], [x], attrs)
    check_kernel("max_pool2d_grad", [T("N", *y.shape[1:]), T("N", *SHAPE)], [_gy(y, 1), x], attrs)


@pytest.mark.parametrize("name", ["2x2", "3x3_overlap_padded"])
def test_max_pool_gradient_with_relu_folded_in(name):
    """relu=True (simplify's fold of relu_grad into the pooling gradient): windows whose
    max is negative, zero (a tie of zeros) or positive."""
    attrs = {**WINDOWS[name], "relu": True}
    x = _x(9)
    x[0, 0] = np.maximum(x[0, 0], 0)  # a plane of relu output, with ties at 0
    (y,) = check_kernel("max_pool2d", [T("N", *SHAPE)], [x], WINDOWS[name])
    check_kernel("max_pool2d_grad", [T("N", *y.shape[1:]), T("N", *SHAPE)], [_gy(y, 5), x], attrs)


def test_max_pool_ties_and_nan_pick_the_reference_cell():
    x = np.round(_x(2) * 2) / 2  # many ties
    x[0, 1, 2, 2] = np.nan
    x[1, 0, 4, 3] = np.nan
    x[1, 0, 4, 4] = np.nan  # two NaN in one window: the first wins
    attrs = WINDOWS["3x3_overlap_padded"]
    (y,) = check_kernel("max_pool2d", [T("N", *SHAPE)], [x], attrs)
    assert np.isnan(y).any()
    check_kernel("max_pool2d_grad", [T("N", *y.shape[1:]), T("N", *SHAPE)], [_gy(y, 3), x], attrs)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("name", ["2x2", "3x3_overlap_padded", "3x2_stride3"])
def test_avg_pool_and_its_gradient(name, count_include_pad):
    attrs = {**WINDOWS[name], "count_include_pad": count_include_pad}
    x = _x(len(name) + count_include_pad)
    (y,) = check_kernel("avg_pool2d", [T("N", *SHAPE)], [x], attrs)
    check_kernel("avg_pool2d_grad", [T("N", *y.shape[1:])], [_gy(y, 4)],
                 {**attrs, "input_size": SHAPE[1:]}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_global_avg_pool(dtype):
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-12}
    check_kernel("global_avg_pool2d", [T("N", *SHAPE, dtype=dtype)], [_x(5, dtype)], **tol)


def test_float64_max_pool_gradient():
    x = _x(6, "float64")
    attrs = WINDOWS["3x3_overlap_padded"]
    (y,) = check_kernel("max_pool2d", [T("N", *SHAPE, dtype="float64")], [x], attrs)
    check_kernel("max_pool2d_grad", [T("N", *y.shape[1:], dtype="float64"),
                                     T("N", *SHAPE, dtype="float64")], [_gy(y, 7), x], attrs)


def test_global_avg_pool_with_an_epilogue():
    """global_avg_pool2d is a reduction: relu fuses after it (head launch, then the loop)."""
    g = Graph()
    x = g.input("x", T("N", *SHAPE))
    g.outputs["y"] = g.op("relu", g.op("global_avg_pool2d", x))
    prog = compile_graph(g, "cuda", title="test_cuda_global_pool_relu")
    prog.bind_params({}, {})
    feeds = {"x": _x(8)}
    want = run_reference(g, feeds)[0]["y"]
    np.testing.assert_allclose(prog(feeds)["y"], want, rtol=1e-5, atol=1e-6)
    assert any(prog.graph.attrs(n)["kind"] == "epilogue" for n in prog.graph.nodes_by_op("fused"))
