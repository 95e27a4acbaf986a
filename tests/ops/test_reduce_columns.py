"""reduce_sum_arb's column sums (graphdl/ops/reduce.py): a bias gradient sums [N*T, C] over
its rows, four rows at a time then the rest; every row count mod 4, both dtypes, against
the float64 sum."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import T, check_kernel, rng


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 31, 32, 1023])
def test_column_sums_over_many_rows(rows, dtype):
    x = rng(rows).standard_normal((2, rows, 24)).astype(dtype)
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-12}
    (out,) = check_kernel("sum", [T("N", "R", 24, dtype=dtype)], [x],
                          {"axes": (0, 1), "keepdims": False}, **tol)
    np.testing.assert_allclose(out, x.astype(np.float64).sum(axis=(0, 1)), **tol)


def test_column_mean_over_many_rows():
    x = rng(7).standard_normal((3, 37, 5)).astype(np.float32)
    (out,) = check_kernel("mean", [T("N", 37, 5)], [x], {"axes": (0, 1), "keepdims": True},
                          rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.reshape(1, 1, 5), x.mean(axis=(0, 1), keepdims=True),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["sum", "mean"])
@pytest.mark.parametrize("n", [2, 700])
def test_long_row_sums_split_between_threads(op, n):
    """A sum over H x W of [N, C, H, W] (a convolution's bias gradient) in a compiled step
    runs as reduce_rows_split: serial for a small batch, in blocks of rows from ROWS_SPLIT
    values on; the same bits as reduce_sum_arb either way."""
    from graphdl.backends.cpu.library import load_library
    from graphdl.ops.reduce import ROWS_SPLIT

    x = rng(n).standard_normal((n, 3, 10, 10)).astype(np.float32)
    assert (n == 700) == (x.size >= ROWS_SPLIT)
    (out,) = check_kernel(op, [T("N", 3, 10, 10)], [x], {"axes": (2, 3), "keepdims": False},
                          rtol=1e-5, atol=1e-5)
    K = load_library()
    split = np.empty(n * 3, np.float32)
    K.reduce_rows_split(x.reshape(n * 3, 100), split, op == "mean")
    arb = np.empty((n * 3, 1), np.float32)
    K.reduce_sum_arb(x.reshape(n * 3, 100, 1), arb, op == "mean")
    np.testing.assert_array_equal(split, arb[:, 0])
    np.testing.assert_array_equal(out.reshape(-1), split)
