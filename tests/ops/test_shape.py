"""Shape ops (graphdl/ops/shape.py): reshape, transpose, broadcast_to, concat, slice(_grad)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import T, check_kernel, gradcheck, infer, reference, rng

from graphdl.ops.registry import ShapeError

KERNEL_COVERED = {"reshape", "transpose", "broadcast_to", "concat", "slice", "slice_grad"}
GRAD_COVERED = set(KERNEL_COVERED)

KERNEL_CASES = [
    # op, input shapes, attrs
    ("reshape", [("N", 2, 3)], {"shape": ("N", 6)}),
    ("reshape", [("N", 6)], {"shape": ("N", 3, -1)}),
    ("transpose", [("N", 3, 4)], {"perm": (0, 2, 1)}),
    ("transpose", [("N", 3, 4)], {"perm": (2, 0, 1)}),
    # rank 4, last axis kept and a multiple of 16 floats: the vector-copy kernel
    ("transpose", [("N", 3, 2, 32)], {"perm": (0, 2, 1, 3)}),
    ("transpose", [("N", 3, 2, 16)], {"perm": (2, 1, 0, 3)}),
    # rank 4 otherwise: the element loop
    ("transpose", [("N", 3, 2, 5)], {"perm": (0, 2, 1, 3)}),
    ("transpose", [("N", 3, 2, 16)], {"perm": (0, 3, 1, 2)}),
    ("broadcast_to", [("N", 1, 4)], {"shape": ("N", 3, 4)}),
    ("broadcast_to", [(3, 1)], {"shape": (2, 3, 4)}),
    ("concat", [("N", 2), ("N", 3), ("N", 1)], {"axis": -1}),
    ("concat", [("N", 2, 4), ("N", 1, 4)], {"axis": 1}),
    ("concat", [(2, 3), (1, 3)], {"axis": 0}),
    ("slice", [("N", 5)], {"axis": 1, "start": 1, "stop": 4}),
    ("slice", [("N", 4, 3)], {"axis": -2, "start": 0, "stop": 2}),
    ("slice_grad", [("N", 3)], {"axis": 1, "start": 1, "size": 5}),
    ("slice_grad", [("N", 2, 3)], {"axis": -2, "start": 2, "size": 4}),
]


@pytest.mark.parametrize("op,shapes,attrs", KERNEL_CASES)
@pytest.mark.parametrize("n", [1, 3])
def test_shape_kernel(op, shapes, attrs, n):
    r = rng(n)
    xs = [r.standard_normal([n if d == "N" else d for d in s]).astype(np.float32) for s in shapes]
    check_kernel(op, [T(*s) for s in shapes], xs, attrs, rtol=0, atol=0)


GRAD_CASES = [
    ("reshape", [(2, 3)], {"shape": (3, 2)}),
    ("reshape", [(2, 3, 2)], {"shape": (-1, 2)}),
    ("transpose", [(2, 3, 4)], {"perm": (1, 2, 0)}),
    ("broadcast_to", [(3, 1)], {"shape": (2, 3, 4)}),
    ("concat", [(2, 1), (2, 3), (2, 2)], {"axis": 1}),
    ("concat", [(1, 3), (2, 3)], {"axis": -2}),
    ("slice", [(2, 5)], {"axis": -1, "start": 1, "stop": 3}),
    ("slice_grad", [(2, 2)], {"axis": 0, "start": 1, "size": 4}),
]


@pytest.mark.parametrize("op,shapes,attrs", GRAD_CASES)
def test_shape_grad(op, shapes, attrs):
    r = rng(4)
    gradcheck(op, [r.standard_normal(s) for s in shapes], attrs)


def test_infer_symbolic():
    assert infer("reshape", [T("N", 2, 3)], shape=("N", 6)) == [T("N", 6)]
    assert infer("reshape", [T("N", 2, 3)], shape=("N", -1)) == [T("N", 6)]
    assert infer("reshape", [T(2, 3)], shape=(-1,)) == [T(6)]
    assert infer("transpose", [T("N", 3, 4)], perm=(2, 0, 1)) == [T(4, "N", 3)]
    assert infer("broadcast_to", [T(3, 1)], shape=("N", 3, 4)) == [T("N", 3, 4)]
    assert infer("concat", [T("N", 2), T("N", 3)], axis=1) == [T("N", 5)]
    assert infer("slice", [T("N", 5)], axis=-1, start=1, stop=4) == [T("N", 3)]
    assert infer("slice_grad", [T("N", 3)], axis=1, start=1, size=5) == [T("N", 5)]


@pytest.mark.parametrize(
    "op,types,attrs,match",
    [
        ("reshape", [T("N", 6)], {"shape": ("N", 4)}, "cannot reshape"),
        ("reshape", [T("N", 6)], {"shape": (-1,)}, "would hide the symbolic dim N"),
        ("reshape", [T(6)], {"shape": (-1, -1)}, "at most one -1"),
        ("reshape", [T(6)], {"shape": (4, -1)}, "cannot reshape"),
        ("transpose", [T("N", 3)], {"perm": (0, 0)}, "not a permutation of 2 axes"),
        ("broadcast_to", [T(3)], {"shape": ("N", 4)}, r"cannot broadcast \[3\] to"),
        ("concat", [T("N", 2), T("N", 3)], {"axis": 0}, "symbolic dim N"),
        ("concat", [T(2, 2), T(3, 3)], {"axis": 0}, "must match except on the concat axis"),
        ("concat", [T(2, 2), T(2)], {"axis": 0}, "differ in rank or dtype"),
        ("concat", [T(2, 2)], {"axis": 2}, "axis 2 out of range"),
        ("slice", [T("N", 5)], {"axis": 1, "start": 3, "stop": 6}, "out of range"),
        ("slice", [T("N", 5)], {"axis": 0, "start": 0, "stop": 1}, "symbolic dim N"),
    ],
)
def test_infer_rejects_bad_inputs(op, types, attrs, match):
    with pytest.raises(ShapeError, match=match):
        infer(op, types, **attrs)


@pytest.mark.parametrize("op,attrs", [("broadcast_to", {"shape": ()}), ("transpose", {"perm": ()})])
def test_rank0_reference_keeps_rank(op, attrs):
    (out,) = reference(op, [np.asarray(2.0)], attrs)
    assert out.shape == ()


def test_sum_of_scalar_grad_has_scalar_shape():
    gradcheck("sum", [np.asarray(1.5)])


def test_float32_transpose_that_keeps_the_last_axis_uses_vector_copies():
    """The emitter picks the vector-copy kernel for float32 with the last axis kept and a
    multiple of 16 long, and the element loop otherwise (float64, a short last axis)."""
    from graphdl.compiler import compile_graph
    from graphdl.ir.graph import Graph

    def source(shape, dtype):
        g = Graph()
        x = g.input("x", T(*shape, dtype=dtype))
        g.outputs["y"] = g.op("transpose", x, perm=(0, 2, 1, 3))
        return compile_graph(g, "cpu").source

    assert "transpose_4d_vec" in source(("N", 3, 2, 32), "float32")
    assert "transpose_4d_vec" not in source(("N", 3, 2, 32), "float64")
    assert "transpose_4d_vec" not in source(("N", 3, 2, 8), "float32")
