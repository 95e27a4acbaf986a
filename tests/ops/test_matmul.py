"""matmul (graphdl/ops/matmul.py): 2-D, batched, transpose flags, batched input @ 2-D weight."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import T, check_kernel, gradcheck, infer, rng

from graphdl.backends.reference import run_reference
from graphdl.ir.graph import Graph
from graphdl.ops.registry import ShapeError
from graphdl.passes.autodiff import build_gradients

KERNEL_COVERED = {"matmul", "matmul_rows"}
GRAD_COVERED = {"matmul", "matmul_rows"}

KERNEL_CASES = [
    # shape of a, shape of b, transpose_a, transpose_b
    (("N", 8), (8, 5), False, False),
    ((8, "N"), (8, 5), True, False),
    (("N", 8), (5, 8), False, True),
    ((8, "N"), (5, 8), True, True),
    (("N", 3, 4), ("N", 4, 5), False, False),
    (("N", 4, 3), ("N", 5, 4), True, True),
    (("N", 3, 4), (4, 5), False, False),  # batched input, shared 2-D weight
    (("N", 3, 4), (5, 4), False, True),
    (("N", 4, 3), (4, 5), True, False),
]


@pytest.mark.parametrize("sa,sb,ta,tb", KERNEL_CASES)
@pytest.mark.parametrize("n", [1, 4])
def test_matmul_kernel(sa, sb, ta, tb, n):
    r = rng(n)
    a = r.standard_normal([n if d == "N" else d for d in sa]).astype(np.float32)
    b = r.standard_normal([n if d == "N" else d for d in sb]).astype(np.float32)
    attrs = {"transpose_a": ta, "transpose_b": tb}
    check_kernel("matmul", [T(*sa), T(*sb)], [a, b], attrs, rtol=1e-4, atol=1e-5)


def test_matmul_kernel_float64():
    r = rng(0)
    a, b = r.standard_normal((3, 4)), r.standard_normal((4, 2))
    types = [T("N", 4, dtype="float64"), T(4, 2, dtype="float64")]
    (out,) = check_kernel("matmul", types, [a, b], rtol=1e-12, atol=1e-12)
    assert out.dtype == np.float64


GRAD_CASES = [
    ((3, 4), (4, 2), False, False),
    ((4, 3), (4, 2), True, False),
    ((3, 4), (2, 4), False, True),
    ((4, 3), (2, 4), True, True),
    ((2, 3, 4), (2, 4, 2), False, False),
    ((2, 4, 3), (2, 2, 4), True, True),
    ((2, 3, 4), (4, 2), False, False),
    ((2, 3, 4), (2, 4), False, True),
]


@pytest.mark.parametrize("sa,sb,ta,tb", GRAD_CASES)
def test_matmul_grad(sa, sb, ta, tb):
    r = rng(1)
    gradcheck(
        "matmul",
        [r.standard_normal(sa), r.standard_normal(sb)],
        {"transpose_a": ta, "transpose_b": tb},
    )


def test_matmul_grad_batched_transposed_input_with_2d_weight_is_refused_clearly():
    r = rng(2)
    with pytest.raises(ShapeError, match="transpose_a, a batched input and a 2-D weight"):
        gradcheck(
            "matmul",
            [r.standard_normal((2, 4, 3)), r.standard_normal((4, 2))],
            {"transpose_a": True},
        )


@pytest.mark.parametrize("tb", [False, True])
def test_matmul_grad_symbolic_batch_with_2d_weight(tb):
    g = Graph()
    x = g.input("x", T("N", 3, 4))
    w = g.param("w", T(2, 4, dtype="float64") if tb else T(4, 2, dtype="float64"))
    x64 = g.op("cast", x, dtype="float64")
    y = g.op("matmul", x64, w, transpose_b=tb)
    loss = g.op("sum", g.op("square", y))
    grads = build_gradients(g, loss, [w.node])
    g.outputs["dw"] = grads[w.node]
    r = rng(3)
    xv = r.standard_normal((2, 3, 4)).astype(np.float32)
    wv = r.standard_normal((2, 4) if tb else (4, 2))
    yv = xv @ (wv.T if tb else wv)
    want = 2 * np.einsum("btk,btn->kn", xv.astype(np.float64), yv)
    got = run_reference(g, {"x": xv}, {"w": wv})[0]["dw"]
    np.testing.assert_allclose(got, want.T if tb else want, rtol=1e-6)


def test_infer_symbolic():
    assert infer("matmul", [T("N", 64), T(64, 10)]) == [T("N", 10)]
    assert infer("matmul", [T(64, "N"), T(64, 10)], transpose_a=True) == [T("N", 10)]
    assert infer("matmul", [T("N", 64), T(10, 64)], transpose_b=True) == [T("N", 10)]
    assert infer("matmul", [T("N", 3, 4), T("N", 4, 5)]) == [T("N", 3, 5)]
    assert infer("matmul", [T("N", 3, 4), T(4, 5)]) == [T("N", 3, 5)]


@pytest.mark.parametrize(
    "types,attrs,match",
    [
        ([T("N", 64), T(32, 10)], {}, r"inner dims differ: \['N', 64\] @ \[32, 10\] \(64 vs 32\)"),
        ([T("N", 64), T(10, 64)], {}, "inner dims differ"),
        ([T(64), T(64, 10)], {}, "rank >= 2"),
        ([T("N", 4), T(4, 2, dtype="float64")], {}, "matching float dtypes"),
        ([T("N", 4, dtype="int64"), T(4, 2, dtype="int64")], {}, "matching float dtypes"),
        ([T("N", 3, 4), T("M", 4, 5)], {}, "batch dims differ"),
        ([T(3, 4), T(2, 4, 5)], {}, "batch dims differ"),
    ],
)
def test_infer_rejects_bad_inputs(types, attrs, match):
    with pytest.raises(ShapeError, match=match):
        infer("matmul", types, **attrs)


@pytest.mark.parametrize("sa,sb", [(("N", 4), ("N", 3)), ((5, "N", 4), (5, "N", 2)),
                                   (("N", 2, 3, 4), ("N", 2, 3, 1))])
@pytest.mark.parametrize("n", [1, 3])
def test_matmul_rows_kernel(sa, sb, n):
    r = rng(n)
    a = r.standard_normal([n if d == "N" else d for d in sa]).astype(np.float32)
    b = r.standard_normal([n if d == "N" else d for d in sb]).astype(np.float32)
    (out,) = check_kernel("matmul_rows", [T(*sa), T(*sb)], [a, b], rtol=1e-4, atol=1e-5)
    want = sum(np.outer(x, y) for x, y in zip(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])))
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


def test_matmul_rows_grad():
    r = rng(2)
    gradcheck("matmul_rows", [r.standard_normal((3, 2, 4)), r.standard_normal((3, 2, 5))])


def test_matmul_rows_refuses_different_leading_axes():
    with pytest.raises(ShapeError, match="same leading axes"):
        infer("matmul_rows", [T("N", 4), T(3, 2)])


@pytest.mark.parametrize("tb", [False, True])
def test_matmul_over_many_rows_splits_them_between_threads(tb):
    """From SPLIT_ROWS rows on, a batched input times a shared weight runs as two halves on
    two threads (gemm_rows_split): the same numbers."""
    from graphdl.ops.matmul import SPLIT_ROWS

    r = rng(9)
    a = r.standard_normal((3, SPLIT_ROWS // 2, 8)).astype(np.float32)
    b = r.standard_normal((5, 8) if tb else (8, 5)).astype(np.float32)
    check_kernel("matmul", [T("N", SPLIT_ROWS // 2, 8), T(*b.shape)], [a, b],
                 {"transpose_b": tb}, rtol=1e-4, atol=1e-5)


def test_matmul_rows_over_many_rows_sums_two_halves():
    from graphdl.ops.matmul import SPLIT_ROWS

    r = rng(10)
    a = r.standard_normal((3, SPLIT_ROWS // 2, 4)).astype(np.float32)
    b = r.standard_normal((3, SPLIT_ROWS // 2, 6)).astype(np.float32)
    check_kernel("matmul_rows", [T("N", SPLIT_ROWS // 2, 4), T("N", SPLIT_ROWS // 2, 6)],
                 [a, b], rtol=1e-4, atol=1e-4)


def test_matmul_of_few_rows_by_a_large_weight_splits_its_columns():
    """Fewer than SPLIT_ROWS rows but SPLIT_WORK multiply-adds (an input projection at
    batch 1): the columns in two halves, an odd count included (gemm_rows_split)."""
    from graphdl.ops.matmul import SPLIT_ROWS, SPLIT_WORK

    rows, k = 32, 256
    n_out = SPLIT_WORK // (rows * k) + 1
    n_out += 1 - n_out % 2  # odd: the halves differ by one column
    assert rows < SPLIT_ROWS and rows * k * n_out >= SPLIT_WORK
    r = rng(11)
    a = r.standard_normal((1, rows, k)).astype(np.float32)
    b = r.standard_normal((n_out, k)).astype(np.float32)
    check_kernel("matmul", [T("N", rows, k), T(n_out, k)], [a, b], {"transpose_b": True},
                 rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matmul_of_one_row_by_a_transposed_weight(dtype):
    """One row times b^T is a loop of dot products (gemm_nt below MATVEC_ROWS rows), four
    rows of b at a time and the rest one by one: 4k + 3 columns, both dtypes."""
    r = rng(12)
    a = r.standard_normal((1, 37)).astype(dtype)
    b = r.standard_normal((23, 37)).astype(dtype)
    tol = 1e-12 if dtype == "float64" else 1e-5
    (out,) = check_kernel("matmul", [T("N", 37, dtype=dtype), T(23, 37, dtype=dtype)], [a, b],
                          {"transpose_b": True}, rtol=tol, atol=tol)
    assert out.dtype == np.dtype(dtype)
