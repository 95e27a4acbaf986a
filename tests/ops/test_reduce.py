"""Reductions (graphdl/ops/reduce.py): sum, mean, max over axes, keepdims or not."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import T, check_kernel, gradcheck, infer, rng
from hypothesis import given, settings
from hypothesis import strategies as st

from graphdl.ops.registry import ShapeError

KERNEL_COVERED = {"sum", "mean", "max"}
GRAD_COVERED = {"sum", "mean", "max"}

X3 = ("N", 3, 4)
X4 = (2, "N", 3, 4)
CASES = [
    # op, input shape, axes, keepdims
    ("sum", X3, None, False),
    ("sum", X3, 0, False),
    ("sum", X3, (0, 2), True),  # non-adjacent axes
    ("sum", X4, (1, 3), False),  # non-adjacent, with a kept axis before
    ("mean", X3, (1,), True),
    ("mean", X3, -1, False),
    ("mean", X3, None, True),
    ("mean", X3, (0, 2), False),  # divides by the run-time N
    ("max", X3, (0, 2), False),
    ("max", X3, (1, 2), False),
    ("max", X3, 0, True),
    ("max", X3, None, False),
]


@pytest.mark.parametrize("op,shape,axes,keepdims", CASES)
@settings(max_examples=4, deadline=None, derandomize=True)
@given(n=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_reduce_kernel(op, shape, axes, keepdims, n, seed):
    x = rng(seed).standard_normal([n if d == "N" else d for d in shape]).astype(np.float32)
    check_kernel(op, [T(*shape)], [x], {"axes": axes, "keepdims": keepdims}, rtol=1e-5, atol=1e-5)


def test_max_propagates_nan():
    x = np.array([[1.0, np.nan, 3.0], [4.0, 5.0, 6.0]], np.float32)
    (out,) = check_kernel("max", [T("N", 3)], [x], {"axes": -1, "keepdims": False})
    assert np.isnan(out[0]) and out[1] == 6.0


@pytest.mark.parametrize("op", ["sum", "mean"])
@pytest.mark.parametrize("axes,keepdims", [(None, False), ((0, 2), False), (1, True), (-1, False)])
def test_sum_mean_grad(op, axes, keepdims):
    x = rng(1).standard_normal((2, 3, 4))
    gradcheck(op, [x], {"axes": axes, "keepdims": keepdims})


@pytest.mark.parametrize("axes,keepdims", [(None, False), ((0, 2), True), (1, False)])
def test_max_grad(axes, keepdims):
    # distinct values spaced well beyond eps: no ties, the max is differentiable
    x = rng(2).permutation(24).reshape(2, 3, 4) * 0.1
    gradcheck("max", [x], {"axes": axes, "keepdims": keepdims})


def test_infer_symbolic():
    assert infer("sum", [T("N", 4)], axes=0) == [T(4)]
    assert infer("sum", [T("N", 4)], axes=0, keepdims=True) == [T(1, 4)]
    assert infer("mean", [T("N", 3, 4)], axes=(1,), keepdims=True) == [T("N", 1, 4)]
    assert infer("mean", [T("N", 3, 4)], axes=(-1, 0)) == [T(3)]
    assert infer("max", [T("N", 3)]) == [T()]
    assert infer("sum", [T("N", 3, dtype="float64")], axes=1) == [T("N", dtype="float64")]


@pytest.mark.parametrize(
    "axes,match",
    [
        (2, "axis 2 is out of range for a rank-2 tensor"),
        ((0, -3), "axis -3 is out of range"),
        ((1, -1), r"axes \(1, -1\) repeat an axis"),
    ],
)
def test_infer_rejects_bad_axes(axes, match):
    with pytest.raises(ShapeError, match=match):
        infer("sum", [T("N", 4)], axes=axes)
