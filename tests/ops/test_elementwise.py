"""Elementwise ops (graphdl/ops/elementwise.py): kernels, gradients, shape inference."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    T,
    away_from_zero,
    check_kernel,
    compile_single,
    gradcheck,
    infer,
    rng,
    run_compiled,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph
from graphdl.ops.registry import ShapeError

FEW = settings(max_examples=6, deadline=None, derandomize=True)

# ----------------------------------------------------------------------- input makers


def _normal(r, shape):
    return r.standard_normal(shape)


def _positive(r, shape):
    return r.uniform(0.1, 3.0, size=shape)


def _nonzero(r, shape):
    return away_from_zero(r, *shape, low=0.3, high=2.0)


UNARY = {
    # op: (attrs, input maker)
    "neg": ({}, _normal),
    "exp": ({}, _normal),
    "log": ({}, _positive),
    "sqrt": ({}, _positive),
    "square": ({}, _normal),
    "pow": ({"exponent": 2.5}, _positive),
    "relu": ({}, _nonzero),
    "leaky_relu": ({"alpha": 0.1}, _nonzero),
    "elu": ({"alpha": 0.5}, _nonzero),
    "sigmoid": ({}, _normal),
    "tanh": ({}, _normal),
    "gelu": ({}, _normal),
    "softplus": ({}, _normal),
    "silu": ({}, _normal),
    "mul_scalar": ({"c": 3.0, "div": ("N",)}, _normal),
    "add_scalar": ({"c": -1.5}, _normal),
}

BINARY = {
    "add": _normal,
    "sub": _normal,
    "mul": _normal,
    "div": _nonzero,  # used for the second input only
    "maximum": _normal,
    "minimum": _normal,
}

# broadcasting cases: (shape of x, shape of y); N is the symbolic batch
CASES = {
    "trailing": (("N", 3, 4), (4,)),
    "keepdim1": (("N", 3, 4), ("N", 1, 4)),
    "scalar": (("N", 3, 4), ()),
    "both": ((3, 1), ("N", 1, 4)),
    "same": (("N", 3, 4), ("N", 3, 4)),
    "scalar_first": ((), ("N", 3)),
}
BINARY_CASES = [("add", c) for c in CASES] + [
    ("sub", "keepdim1"),
    ("mul", "scalar"),
    ("div", "both"),
    ("maximum", "trailing"),
    ("minimum", "scalar_first"),
]

COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")

GRAD_HELPERS = {
    # op: (attrs, maker for the second input; y ops get the forward output)
    "relu_grad": ({}, _nonzero),
    "leaky_relu_grad": ({"alpha": 0.2}, _nonzero),
    "elu_grad": ({"alpha": 0.7}, _nonzero),
    "sigmoid_grad": ({}, lambda r, s: 1 / (1 + np.exp(-r.standard_normal(s)))),
    "tanh_grad": ({}, lambda r, s: np.tanh(r.standard_normal(s))),
    "gelu_grad": ({}, _normal),
    "softplus_grad": ({}, _normal),
    "silu_grad": ({}, _normal),
}

KERNEL_COVERED = set(UNARY) | set(BINARY) | set(COMPARISONS) | set(GRAD_HELPERS) | {"where", "cast"}
GRAD_COVERED = set(UNARY) | set(BINARY) | {"where", "cast"}


def _bind(shape, n):
    return tuple(n if d == "N" else d for d in shape)


# ----------------------------------------------------------------------- kernels


@pytest.mark.parametrize("op", sorted(UNARY))
@FEW
@given(n=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_unary_kernel(op, n, seed):
    attrs, make = UNARY[op]
    x = make(rng(seed), (n, 3, 4)).astype(np.float32)
    check_kernel(op, [T("N", 3, 4)], [x], attrs)


def test_unary_kernel_float64():
    x = rng(1).standard_normal((3, 5))
    (out,) = check_kernel("tanh", [T("N", 5, dtype="float64")], [x], rtol=1e-12, atol=1e-14)
    assert out.dtype == np.float64


def _ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of the last place of float32 at the exact value."""
    return np.abs(got - exact) / np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)


def _sigmoid64(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("op,exact", [("sigmoid", _sigmoid64), ("tanh", np.tanh)])
def test_float32_loops_use_the_float32_scalar_function(op, exact):
    """sigmoid and tanh have float32 scalar functions (no libm call, so the loops
    vectorise): within 3 ulp of the exact value for |x| < 30 and 5 beyond, wherever that
    value is a normal float32 (below, 0 or as good in absolute terms); NaN stays NaN."""
    prog, _ = compile_single(op, [T("N")])
    assert f"K.s32_{op}(" in prog.source
    tiny = np.geomspace(1e-30, 1, 2001)
    x = np.concatenate([np.linspace(-110, 110, 400_001), np.linspace(-1, 1, 200_001),
                        tiny, -tiny]).astype(np.float32)
    got = run_compiled(prog, [x])[0].astype(np.float64)
    want = exact(x.astype(np.float64))
    normal = np.abs(want) >= np.finfo(np.float32).tiny
    near = normal & (np.abs(x) < 30)
    assert _ulps(got[near], want[near]).max() <= 3
    assert _ulps(got[normal], want[normal]).max() <= 5
    assert np.abs(got[~normal] - want[~normal]).max() <= np.finfo(np.float32).tiny
    specials = run_compiled(prog, [np.array([np.nan, np.inf, -np.inf, 0.0], np.float32)])[0]
    assert np.isnan(specials[0])
    np.testing.assert_array_equal(specials[1:], exact(np.array([np.inf, -np.inf, 0.0])))
    # float64 loops keep the float64 function
    prog64, _ = compile_single(op, [T("N", dtype="float64")])
    assert f"K.s_{op}(" in prog64.source and "K.s32_" not in prog64.source


@pytest.mark.parametrize("dtype", ["float64", "int64", "bool"])
def test_cast_kernel(dtype):
    x = np.array([[1.7, -1.7, 0.0, 2.5], [-0.2, 3.0, -3.9, 0.0]], np.float32)
    (out,) = check_kernel("cast", [T("N", 4)], [x], {"dtype": dtype})
    assert out.dtype == np.dtype(dtype)


@pytest.mark.parametrize("op,case", BINARY_CASES)
@FEW
@given(n=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_binary_kernel_broadcasting(op, case, n, seed):
    sx, sy = CASES[case]
    r = rng(seed)
    x = _normal(r, _bind(sx, n)).astype(np.float32)
    y = BINARY[op](r, _bind(sy, n)).astype(np.float32)
    check_kernel(op, [T(*sx), T(*sy)], [x, y])


def test_binary_kernel_float64():
    r = rng(2)
    x, y = r.standard_normal((2, 4)), r.standard_normal(4)
    (out,) = check_kernel(
        "mul", [T("N", 4, dtype="float64"), T(4, dtype="float64")], [x, y], rtol=1e-14
    )
    assert out.dtype == np.float64


@given(
    xs=st.lists(st.floats(-1e3, 1e3, width=32), min_size=8, max_size=8),
    ys=st.lists(st.floats(-1e3, 1e3, width=32), min_size=4, max_size=4),
)
@FEW
def test_add_any_finite_values(xs, ys):
    x = np.array(xs, np.float32).reshape(2, 4)
    y = np.array(ys, np.float32)
    check_kernel("add", [T("N", 4), T(4)], [x, y], rtol=1e-6, atol=0)


@pytest.mark.parametrize("op", COMPARISONS)
def test_comparison_kernel(op):
    r = rng(3)
    x = r.integers(-2, 3, size=(5, 4)).astype(np.float32)
    y = r.integers(-2, 3, size=4).astype(np.float32)
    (out,) = check_kernel(op, [T("N", 4), T(4)], [x, y])
    assert out.dtype == np.bool_


def test_where_kernel():
    r = rng(4)
    c = r.random((3, 4)) < 0.5
    x = r.standard_normal((3, 4)).astype(np.float32)
    y = r.standard_normal(4).astype(np.float32)
    check_kernel("where", [T("N", 4, dtype="bool"), T("N", 4), T(4)], [c, x, y])


@pytest.mark.parametrize("op", sorted(GRAD_HELPERS))
def test_backward_helper_kernel(op):
    attrs, make = GRAD_HELPERS[op]
    r = rng(5)
    g = r.standard_normal((3, 4)).astype(np.float32)
    y = make(r, (3, 4)).astype(np.float32)
    check_kernel(op, [T("N", 4), T("N", 4)], [g, y], attrs)


def test_one_program_serves_every_batch_size():
    prog, _ = compile_single("add", [T("N", 3, 4), T(4)])
    for n in (1, 7, 2):
        x = np.ones((n, 3, 4), np.float32)
        (out,) = run_compiled(prog, [x, np.arange(4, dtype=np.float32)])
        assert out.shape == (n, 3, 4)
        np.testing.assert_array_equal(out, x + np.arange(4))


# ----------------------------------------------------------------------- gradients


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_grad(op):
    attrs, make = UNARY[op]
    attrs = dict(attrs)
    if op == "mul_scalar":
        attrs["div"] = (2,)  # concrete dims: the gradcheck graph has no symbols
    gradcheck(op, [make(rng(6), (2, 3))], attrs)


@pytest.mark.parametrize(
    "op,sy", [("add", (3,)), ("add", (2, 1)), ("sub", (2, 1)), ("mul", ()), ("div", (3,))]
)
def test_arithmetic_grad_unbroadcasts(op, sy):
    r = rng(7)
    x = r.standard_normal((2, 3))
    y = BINARY[op](r, sy) if sy else np.asarray(BINARY[op](r, (1,))[0])
    grads = gradcheck(op, [x, y])
    assert grads[1].shape == np.shape(y)


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_minmax_grad(op):
    r = rng(8)
    x = r.standard_normal((2, 3))
    y = x[0] + away_from_zero(r, 3, low=0.1, high=1.0)  # no ties within eps
    gradcheck(op, [x, y])


def test_where_grad():
    r = rng(9)
    c = r.random((2, 3)) < 0.5
    gradcheck("where", [c, r.standard_normal((2, 3)), r.standard_normal(3)])


def test_cast_grad():
    x = rng(10).standard_normal((2, 3))
    gradcheck("cast", [x], {"dtype": "float64"})
    # through float32 and back: the gradient is float64 again; FD needs a float32-sized eps
    gradcheck("cast", [x], {"dtype": "float32"}, eps=1e-2, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------- shape inference


def test_infer_broadcast_symbolic():
    assert infer("add", [T("N", 3), T(3)]) == [T("N", 3)]
    assert infer("mul", [T("N", 1, 4), T(3, 1)]) == [T("N", 3, 4)]
    assert infer("sub", [T(), T("N")]) == [T("N")]
    assert infer("maximum", [T("N", 3), T("N", 1)]) == [T("N", 3)]
    assert infer("add", [T("N", 3, dtype="float64"), T(3, dtype="float64")]) == [
        T("N", 3, dtype="float64")
    ]


def test_infer_unary_comparison_where_cast():
    assert infer("exp", [T("N", 3)]) == [T("N", 3)]
    assert infer("mul_scalar", [T("N", 3)], c=2.0, div=("N",)) == [T("N", 3)]
    assert infer("gt", [T("N", 3), T(3)]) == [T("N", 3, dtype="bool")]
    assert infer("where", [T("N", 1, dtype="bool"), T("N", 3), T()]) == [T("N", 3)]
    assert infer("cast", [T("N", 3)], dtype="int64") == [T("N", 3, dtype="int64")]
    g = Graph()
    v = g.op("relu", g.input("x", T("N", 64)))
    assert g.type_of(v) == T("N", 64)


@pytest.mark.parametrize(
    "op,types,match",
    [
        ("add", [T("N", 3), T(4)], r"shapes \[.*'N', 3\] and \[4\] cannot broadcast"),
        ("mul", [T("N"), T("M")], "cannot broadcast"),
        ("add", [T(3), T(3, dtype="float64")], "dtypes float64 and float32 differ"),
        ("exp", [T(3, dtype="int64")], "expects a float tensor, got int64"),
        ("where", [T(3), T(3), T(3)], "condition must be bool"),
        ("where", [T(3, dtype="bool"), T(3), T(3, dtype="float64")], "differ in dtype"),
        ("where", [T(2, dtype="bool"), T(3), T(3)], "cannot broadcast"),
    ],
)
def test_infer_rejects_bad_inputs(op, types, match):
    with pytest.raises(ShapeError, match=match):
        infer(op, types)


# ----------------------------------------------------------------------- known bugs


@pytest.mark.parametrize("case", ["int64", "bool"])
def test_cast_inside_fused_chain(case):
    g = Graph()
    x = g.input("x", T("N", 4))
    if case == "int64":
        y = g.input("y", T("N", 4, dtype="int64"))
        g.outputs["out"] = g.op("mul", g.op("cast", x, dtype="int64"), y)
        feeds = {"x": np.array([[1.5, -1.7, 2.2, 0.5]], np.float32), "y": np.full((1, 4), 3)}
    else:  # bool -> float32 must give exactly 0 / 1
        g.outputs["out"] = g.op("cast", g.op("cast", x, dtype="bool"), dtype="float32")
        feeds = {"x": np.array([[1.5, -1.7, 0.0, 0.5]], np.float32)}
    prog = compile_graph(g)
    assert prog.graph.nodes_by_op("fused")
    prog.bind_params({}, {})
    want = run_reference(g, feeds)[0]["out"]
    np.testing.assert_array_equal(prog(feeds)["out"], want)
