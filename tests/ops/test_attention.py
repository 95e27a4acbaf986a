"""Attention (graphdl/ops/attention.py): the fused op and its backward op against the
references, against the unfused composition (matmul -> mul_scalar -> attention_mask ->
softmax [-> dropout] -> matmul) run by the reference interpreter and compiled, finite
differences in float64, and PyTorch's scaled_dot_product_attention."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import T, check_kernel, compile_single, gradcheck, infer, reference, rng, run_compiled

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph, Value
from graphdl.ops.attention import (
    BLOCK_K,
    BLOCK_Q,
    LANES,
    SMALL_T,
    build_composition,
    dropout_keep,
    visible,
)
from graphdl.ops.cost import op_flops
from graphdl.ops.nn import dropout_mask_reference
from graphdl.ops.registry import ShapeError
from graphdl.passes.autodiff import build_gradients

KERNEL_COVERED = {"attention", "attention_grad", "attention_weights", "attention_mask"}
GRAD_COVERED = {"attention", "attention_mask"}

H, D, DV = 2, 8, 6
SEED_T = T(dtype="int64")


# ----------------------------------------------------------------------- data


def _case(r, n, tq, tk, *, dtype="float32", mask=False, empty_rows=False, d=D, dv=DV, heads=H):
    """q, k, v (and a key mask: random padding with key 0 always valid, and with
    ``empty_rows`` sample 0 all padding, so its queries see no key)."""
    q = r.standard_normal((n, heads, tq, d)).astype(dtype)
    k = r.standard_normal((n, heads, tk, d)).astype(dtype)
    v = r.standard_normal((n, heads, tk, dv)).astype(dtype)
    arrays = [q, k, v]
    if mask:
        m = (r.random((n, tk)) < 0.7).astype(dtype)
        m[:, 0] = 1
        if empty_rows:
            m[0] = 0
        arrays.append(m)
    return arrays


def _types(arrays, *, seed=False, sym=True):
    """Types of q, k, v[, key_mask][, seed] with N, Tq and Tk symbolic (``sym``)."""
    q, k, v = arrays[:3]
    dt = str(q.dtype)
    n, tq, tk = ("N", "Tq", "Tk") if sym else (q.shape[0], q.shape[2], k.shape[2])
    types = [T(n, q.shape[1], tq, q.shape[3], dtype=dt), T(n, k.shape[1], tk, k.shape[3], dtype=dt),
             T(n, v.shape[1], tk, v.shape[3], dtype=dt)]
    if len(arrays) > 3 and arrays[3].dtype != np.int64:
        types.append(T(n, tk, dtype=dt))
    if seed:
        types.append(SEED_T)
    return types


def _attrs(causal=False, mask=False, rate=0.0, **more):
    return {"causal": causal, "has_mask": mask, "rate": rate, **more}


def _seen_rows(arrays, causal) -> np.ndarray:
    """[N, 1, Tq] (broadcast over heads): whether a query sees at least one key."""
    q, k = arrays[0], arrays[1]
    m = arrays[3] if len(arrays) > 3 else None
    return visible(q.shape[2], k.shape[2], causal, m).any(axis=-1)


# ----------------------------------------------------------------------- forward kernel

# (N, Tq, Tk): square, Tq < Tk, Tq > Tk, decoding (row by row: Tq <= ROW_QUERIES)
SIZES = [(3, 5, 5), (2, 4, 9), (2, 9, 4), (1, 1, 7), (3, 2, 6)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mask", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{n}x{a}x{b}" for n, a, b in SIZES])
def test_forward_kernel(size, causal, mask, dtype):
    n, tq, tk = size
    r = rng(tq * 10 + tk)
    arrays = _case(r, n, tq, tk, dtype=dtype, mask=mask, empty_rows=mask)
    out, lse = check_kernel("attention", _types(arrays), arrays, _attrs(causal, mask),
                            rtol=1e-5, atol=1e-5 if dtype == "float32" else 1e-12)
    assert out.dtype == lse.dtype == np.dtype(dtype)
    seen = np.broadcast_to(_seen_rows(arrays, causal), lse.shape)
    # a query that sees no key: zeros and lse = -inf, never NaN
    assert not np.isnan(out).any()
    np.testing.assert_array_equal(lse[~seen], -np.inf)
    np.testing.assert_array_equal(out[~seen], 0.0)
    assert np.isfinite(lse[seen]).all()


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_forward_kernel_over_several_blocks(causal):
    """T = 200: four key blocks and four query blocks, a partial one last."""
    assert 200 > 3 * BLOCK_K and 200 > 3 * BLOCK_Q
    r = rng(3)
    arrays = _case(r, 2, 200, 200, mask=True)
    check_kernel("attention", _types(arrays), arrays, _attrs(causal, True), rtol=1e-4, atol=1e-5)
    arrays = _case(r, 1, 70, 200, mask=True)  # Tq < Tk across blocks
    check_kernel("attention", _types(arrays), arrays, _attrs(causal, True), rtol=1e-4, atol=1e-5)


def test_forward_kernel_with_an_explicit_scale_and_large_scores():
    """Scores far outside exp's range: the running max keeps every exp finite."""
    r = rng(4)
    arrays = _case(r, 2, 6, 130, mask=True)
    arrays[0] *= 30.0
    out, lse = check_kernel("attention", _types(arrays), arrays, _attrs(mask=True, scale=2.0),
                            rtol=1e-4, atol=1e-4)
    assert np.isfinite(out).all() and np.isfinite(lse).all()


@pytest.mark.parametrize("n", [1, 40])  # one head pair (serial) and many (threads)
def test_results_do_not_depend_on_the_thread_count(n):
    numba = pytest.importorskip("numba")
    r = rng(5)
    arrays = _case(r, n, 150, 150, mask=True)
    arrays.append(np.asarray(3, np.int64))
    types = _types(arrays, seed=True)
    attrs = _attrs(True, True, 0.2)
    fwd, _ = compile_single("attention", types, attrs)
    gout = r.standard_normal((n, H, 150, DV)).astype(np.float32)
    out_t = [T("N", H, "Tq", DV), T("N", H, "Tq")]
    bwd, _ = compile_single("attention_grad", [out_t[0], *types, *out_t], attrs)
    before = numba.get_num_threads()
    runs = []
    try:
        for threads in sorted({1, before}):
            numba.set_num_threads(threads)
            out, lse = (x.copy() for x in run_compiled(fwd, arrays))
            grads = [x.copy() for x in run_compiled(bwd, [gout, *arrays, out, lse])]
            runs.append([out, lse, *grads])
    finally:
        numba.set_num_threads(before)
    for one, other in zip(runs[0], runs[-1]):
        np.testing.assert_array_equal(one, other)


# the whole-head kernels (`_fwd_heads_lanes`, `_bwd_heads_lanes`): Tq, Tk <= SMALL_T, the
# queries padded to a multiple of LANES; around both limits, both dtypes, masks and dropout
HEAD_SIZES = [(15, 15), (16, 16), (17, 31), (LANES + 1, SMALL_T), (SMALL_T, SMALL_T),
              (SMALL_T + 1, 20), (20, SMALL_T + 1)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("size", HEAD_SIZES, ids=[f"{a}x{b}" for a, b in HEAD_SIZES])
def test_whole_head_kernels_around_their_limits(size, causal, dtype):
    """Forward and backward against the references at the sizes where the whole-head
    kernels pad the queries (Tq = 15, 17: one query more or less than LANES) and where they
    give way to the blocked kernels (SMALL_T + 1), with a key mask (a sample all padding),
    dropout and an lse gradient."""
    assert SMALL_T % LANES == 0
    tq, tk = size
    r = rng(tq * 100 + tk)
    arrays = _case(r, 3, tq, tk, dtype=dtype, mask=True, empty_rows=True) + [np.asarray(4, np.int64)]
    attrs = _attrs(causal, True, 0.15, salt=3)
    types = _types(arrays, seed=True)
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == "float32" else {"rtol": 1e-9, "atol": 1e-10}
    out, lse = check_kernel("attention", types, arrays, attrs, **tol)
    assert not np.isnan(out).any()
    gout = r.standard_normal(out.shape).astype(dtype)
    glse = np.where(np.isfinite(lse), r.standard_normal(lse.shape), 0).astype(dtype)
    out_t = [T("N", H, "Tq", DV, dtype=dtype), T("N", H, "Tq", dtype=dtype)]
    ref_out, ref_lse = reference("attention", arrays, attrs)
    dq, dk, dv = check_kernel("attention_grad", [out_t[0], *types, *out_t, out_t[1]],
                              [gout, *arrays, ref_out, ref_lse, glse], {**attrs, "has_glse": True},
                              **tol)
    for x in (dq, dk, dv):
        assert np.isfinite(x).all()


def test_whole_head_kernels_with_large_scores():
    """Scores far outside exp's range in the whole-head kernels: finite out, lse and
    gradients (every exp of a score less its row's max, or less lse, is <= 1)."""
    r = rng(12)
    arrays = _case(r, 2, 9, 31, mask=True)
    arrays[0] *= 30.0
    attrs = _attrs(True, True, scale=2.0)
    out, lse = check_kernel("attention", _types(arrays), arrays, attrs, rtol=1e-4, atol=1e-4)
    assert np.isfinite(out).all() and np.isfinite(lse).all()
    gout = r.standard_normal(out.shape).astype(np.float32)
    out_t = [T("N", H, "Tq", DV), T("N", H, "Tq")]
    grads = check_kernel("attention_grad", [out_t[0], *_types(arrays), *out_t],
                         [gout, *arrays, out, lse], attrs, rtol=2e-3, atol=2e-3)
    for x in grads:
        assert np.isfinite(x).all()


def test_whole_head_results_do_not_depend_on_the_thread_count():
    """Many short heads (the transformer benchmark's shapes, fewer samples): each head is
    one work item, so the blocks the threads take change nothing."""
    numba = pytest.importorskip("numba")
    r = rng(13)
    arrays = _case(r, 24, 32, 31, mask=True, d=16, dv=16, heads=4)
    types = _types(arrays)
    attrs = _attrs(True, True)
    fwd, _ = compile_single("attention", types, attrs)
    gout = r.standard_normal((24, 4, 32, 16)).astype(np.float32)
    out_t = [T("N", 4, "Tq", 16), T("N", 4, "Tq")]
    bwd, _ = compile_single("attention_grad", [out_t[0], *types, *out_t], attrs)
    before = numba.get_num_threads()
    runs = []
    try:
        for threads in sorted({1, before}):
            numba.set_num_threads(threads)
            out, lse = (x.copy() for x in run_compiled(fwd, arrays))
            grads = [x.copy() for x in run_compiled(bwd, [gout, *arrays, out, lse])]
            runs.append([out, lse, *grads])
    finally:
        numba.set_num_threads(before)
    for one, other in zip(runs[0], runs[-1]):
        np.testing.assert_array_equal(one, other)
    want = reference("attention", arrays, attrs)
    np.testing.assert_allclose(runs[0][0], want[0], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------- dropout


def test_dropout_keeps_the_dropout_ops_mask():
    """The weights of (n, h, i, j) are kept as the dropout op keeps element (n, h, i, j) of
    the weights tensor, in the kernel as in the reference."""
    r = rng(6)
    arrays = _case(r, 3, 5, 7, mask=True) + [np.asarray(9, np.int64)]
    attrs = _attrs(False, True, 0.4, salt=2)
    (out, lse) = check_kernel("attention", _types(arrays, seed=True), arrays, attrs,
                              rtol=1e-5, atol=1e-5)
    keep = dropout_mask_reference(3 * H * 5 * 7, 9, 2, 0.4).reshape(3, H, 5, 7)
    np.testing.assert_array_equal(dropout_keep((3, H, 5, 7), 9, 2, 0.4), keep)
    weights = reference("attention_weights", [arrays[0], arrays[1], arrays[3]],
                        {"has_mask": True})[0].astype(np.float64)
    want = np.matmul(weights * keep / 0.6, arrays[2].astype(np.float64))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    # no dropout of the normaliser: lse is the same as without dropout
    _, lse0 = reference("attention", arrays[:4], _attrs(False, True))
    np.testing.assert_allclose(lse, lse0, rtol=1e-6)
    other = run_compiled(compile_single("attention", _types(arrays, seed=True), attrs)[0],
                         arrays[:4] + [np.asarray(10, np.int64)])[0]
    assert not np.allclose(other, out)  # another step seed, another mask


# ----------------------------------------------------------------------- backward kernel

GRAD_CASES = [
    # (N, Tq, Tk, causal, mask, rate, glse, dtype)
    (3, 5, 7, False, False, 0.0, False, "float64"),
    (2, 6, 4, True, True, 0.0, True, "float64"),
    (2, 7, 7, True, True, 0.3, False, "float32"),
    (40, 9, 6, False, True, 0.0, False, "float32"),  # many heads: one item per (n, h)
    (2, 150, 200, True, True, 0.2, True, "float32"),  # few heads: the key pass, the query pass
    (8, 70, 80, True, True, 0.1, False, "float32"),  # many heads, several tiles each
    (1, 200, 130, False, False, 0.0, False, "float64"),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[f"{c[0]}x{c[1]}x{c[2]}" for c in GRAD_CASES])
def test_backward_kernel(case):
    n, tq, tk, causal, mask, rate, with_glse, dtype = case
    r = rng(tq + tk)
    arrays = _case(r, n, tq, tk, dtype=dtype, mask=mask, empty_rows=mask)
    if rate:
        arrays.append(np.asarray(17, np.int64))
    attrs = _attrs(causal, mask, rate, salt=5)
    out, lse = reference("attention", arrays, attrs)
    gout = r.standard_normal(out.shape).astype(dtype)
    types = _types(arrays, seed=bool(rate))
    out_t = [T("N", H, "Tq", DV, dtype=dtype), T("N", H, "Tq", dtype=dtype)]
    ins, in_types = [gout, *arrays, out, lse], [out_t[0], *types, *out_t]
    if with_glse:
        ins.append(r.standard_normal(lse.shape).astype(dtype))
        in_types.append(out_t[1])
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == "float32" else {"rtol": 1e-9, "atol": 1e-10}
    dq, dk, dv = check_kernel("attention_grad", in_types, ins, {**attrs, "has_glse": with_glse}, **tol)
    seen = np.broadcast_to(_seen_rows(arrays, causal), lse.shape)
    np.testing.assert_array_equal(dq[~seen], 0.0)  # a query that sees no key: no gradient
    assert np.isfinite(dk).all() and np.isfinite(dv).all()


# ----------------------------------------------------------------------- heads on axis 2

LAYOUT_CASES = [
    # (N, heads, Tq, Tk, causal, rate): a decoding step's one query (row by row), whole-head
    # kernels serial and on threads (the transformer benchmark's heads), the blocked
    # kernels (key pass and query pass; heads on threads)
    (3, 2, 1, 9, True, 0.2),
    (3, 2, 5, 7, True, 0.2),
    (24, 4, 32, 31, True, 0.0),
    (2, 2, 150, 200, True, 0.2),
    (8, 2, 70, 80, False, 0.1),
]


def _heads_inner(x):
    return np.ascontiguousarray(np.swapaxes(x, 1, 2))


@pytest.mark.parametrize("case", LAYOUT_CASES, ids=[f"{c[0]}x{c[2]}x{c[3]}" for c in LAYOUT_CASES])
def test_heads_inner_layout_gives_the_same_bits(case):
    """layout="nthd" (q, k, v, out and the gradients [N, T, H, D], as a multihead layer's
    projections are once reshaped) computes what the [N, H, T, D] kernels compute on the
    transposed arrays, bit for bit, forward and backward, and matches the reference."""
    n, heads, tq, tk, causal, rate = case
    r = rng(n + tq)
    first = _case(r, n, tq, tk, mask=True, empty_rows=True, d=16, dv=16, heads=heads)
    first += [np.asarray(5, np.int64)] if rate else []
    inner = [_heads_inner(x) for x in first[:3]] + first[3:]
    attrs = _attrs(causal, True, rate, salt=4)
    types = _types(first, seed=bool(rate))
    inner_types = [T("N", "Tq", heads, 16), T("N", "Tk", heads, 16), T("N", "Tk", heads, 16),
                   *types[3:]]
    lay = {**attrs, "layout": "nthd"}
    out, lse = check_kernel("attention", inner_types, inner, lay, rtol=1e-4, atol=1e-5)
    fwd, _ = compile_single("attention", types, attrs)
    want_out, want_lse = run_compiled(fwd, first)
    np.testing.assert_array_equal(out, _heads_inner(want_out))
    np.testing.assert_array_equal(lse, want_lse)
    gout = r.standard_normal(out.shape).astype(np.float32)
    glse = np.where(np.isfinite(lse), r.standard_normal(lse.shape), 0).astype(np.float32)
    lse_t = T("N", heads, "Tq")
    grads = check_kernel("attention_grad", [inner_types[0], *inner_types, inner_types[0], lse_t,
                                            lse_t],
                         [gout, *inner, out, lse, glse], {**lay, "has_glse": True}, rtol=1e-3,
                         atol=1e-4)
    bwd, _ = compile_single("attention_grad", [types[0], *types, types[0], lse_t, lse_t],
                            {**attrs, "has_glse": True})
    want = run_compiled(bwd, [_heads_inner(gout), *first, want_out, want_lse, glse])
    for got, w in zip(grads, want):
        np.testing.assert_array_equal(got, _heads_inner(w))


def test_heads_inner_layout_gradient():
    """Finite differences in float64 through the nthd op (its gradient op keeps the layout)."""
    r = rng(8)
    arrays = [_heads_inner(x) for x in _case(r, 2, 3, 4, dtype="float64", mask=True, d=3, dv=2)[:3]]
    arrays.append((r.random((2, 4)) < 0.7).astype("float64"))
    arrays[3][:, 0] = 1
    grads = gradcheck("attention", arrays, _attrs(True, True, layout="nthd"), rtol=1e-5,
                      atol=1e-8)
    assert grads[0].shape == (2, 3, H, 3) and grads[2].shape == (2, 4, H, 2)


# ----------------------------------------------------------------------- gradients


GRADCHECK = [
    # (Tq, Tk, causal, mask, rate)
    (3, 4, False, False, 0.0),
    (4, 4, True, False, 0.0),
    (3, 5, True, True, 0.0),
    (4, 3, False, True, 0.0),
    (3, 4, True, True, 0.3),
    (4, 4, False, False, 0.5),
]


@pytest.mark.parametrize("case", GRADCHECK, ids=[f"{c[0]}x{c[1]}" + ("c" if c[2] else "") +
                                                 ("m" if c[3] else "") + ("d" if c[4] else "")
                                                 for c in GRADCHECK])
def test_attention_grad(case):
    """Finite differences of out and lse (the helper's loss weights both) in float64; with
    dropout too, as its mask is a function of the seed."""
    tq, tk, causal, mask, rate = case
    r = rng(7)
    arrays = _case(r, 2, tq, tk, dtype="float64", mask=mask, d=3, dv=2)
    if rate:
        arrays.append(np.asarray(23, np.int64))
    grads = gradcheck("attention", arrays, _attrs(causal, mask, rate, salt=1), rtol=1e-5, atol=1e-8)
    assert set(grads) == {0, 1, 2}  # the mask and the seed get none


def test_attention_grad_explicit_scale_and_out_only():
    """Only out read (no lse gradient), a given scale: the graph has no glse input."""
    r = rng(8)
    q, k, v, m = _case(r, 2, 3, 4, dtype="float64", mask=True, d=3, dv=2)
    w = r.uniform(-1, 1, size=(2, H, 3, 2))

    def loss(qv, kv, vv):
        out, _ = reference("attention", [qv, kv, vv, m], {"has_mask": True, "scale": 0.7})
        return float(np.sum(out * w))

    g = Graph()
    ps = [g.param(name, T(*x.shape, dtype="float64")) for name, x in zip("qkv", (q, k, v))]
    nid = g.apply("attention", [*ps, g.const(m, "float64")], {"has_mask": True, "scale": 0.7})
    g.outputs["loss"] = g.op("sum", g.op("mul", Value(nid, 0), g.const(w, "float64")))
    grads = build_gradients(g, g.outputs["loss"], [p.node for p in ps])
    (grad_node,) = g.nodes_by_op("attention_grad")
    assert g.attrs(grad_node)["has_glse"] is False
    for name, p in zip("qkv", ps):
        g.outputs[f"g{name}"] = grads[p.node]
    got = run_reference(g, {}, dict(zip("qkv", (q, k, v))))[0]
    for idx, name in enumerate("qkv"):
        xs = [q, k, v]
        num = np.zeros(xs[idx].shape)
        for pos in np.ndindex(*xs[idx].shape):
            hi = [x.copy() for x in xs]
            hi[idx][pos] += 1e-6
            lo = [x.copy() for x in xs]
            lo[idx][pos] -= 1e-6
            num[pos] = (loss(*hi) - loss(*lo)) / 2e-6
        np.testing.assert_allclose(got[f"g{name}"], num, rtol=1e-5, atol=1e-8)


def test_a_query_that_sees_no_key_gets_no_gradient():
    """All padding for sample 0 (and causal with Tq > Tk): zeros out, no NaN anywhere, zero
    gradients for its queries and nothing added to any key from them."""
    r = rng(9)
    arrays = _case(r, 2, 5, 3, dtype="float64", mask=True, empty_rows=True, d=3, dv=2)
    attrs = _attrs(True, True)
    gout = r.standard_normal((2, H, 5, 2))
    types = _types(arrays, sym=False)
    prog, _ = compile_single("attention", types, attrs)
    got_out, got_lse = run_compiled(prog, arrays)
    np.testing.assert_array_equal(got_out[0], 0.0)
    assert np.isneginf(got_lse[0]).all() and np.isneginf(got_lse[1, :, :2]).all()
    out_t = [T(2, H, 5, 2, dtype="float64"), T(2, H, 5, dtype="float64")]
    gprog, _ = compile_single("attention_grad", [out_t[0], *types, *out_t], attrs)
    dq, dk, dv = run_compiled(gprog, [gout, *arrays, got_out, got_lse])
    for x in (dq, dk, dv):
        assert np.isfinite(x).all()
    np.testing.assert_array_equal(dq[0], 0.0)
    np.testing.assert_array_equal(dk[0], 0.0)
    np.testing.assert_array_equal(dv[0], 0.0)
    np.testing.assert_array_equal(dq[1, :, :2], 0.0)


def test_attention_mask_grad():
    r = rng(10)
    s = r.standard_normal((2, H, 3, 4))
    m = np.array([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    # the -inf entries would make the loss -inf: check the gradient of the zero fill, and
    # of the -inf fill through a graph that replaces them (the same rule builds both)
    gradcheck("attention_mask", [s, m], {"causal": True, "has_mask": True, "fill": "zero"})
    g = Graph()
    p = g.param("s", T(*s.shape, dtype="float64"))
    masked = g.op("attention_mask", p, g.const(m, "float64"), causal=True, has_mask=True)
    g.outputs["loss"] = g.op("sum", g.op("exp", masked))
    grads = build_gradients(g, g.outputs["loss"], [p.node])
    g.outputs["g"] = grads[p.node]
    got = run_reference(g, {}, {"s": s})[0]["g"]
    seen = np.broadcast_to(visible(3, 4, True, m), s.shape)
    np.testing.assert_allclose(got, np.where(seen, np.exp(s), 0.0), rtol=1e-12)


# ----------------------------------------------------------------------- the composition


def _pair_graph(arrays, *, causal, rate, train):
    """One graph with the fused op and the composition on the same inputs: outputs
    ``fused`` and ``composed`` (and, with ``train``, each one's gradients of q, k and v
    from the loss sum(out * w))."""
    g = Graph()
    types = _types(arrays, sym=not train)  # parameters have static shapes
    src = g.param if train else g.input
    q, k, v = (src(name, t) for name, t in zip("qkv", types[:3]))
    mask = g.input("mask", types[3]) if len(arrays) > 3 else None
    seed = g.input("seed", SEED_T) if rate else None
    opt = [x for x in (mask, seed) if x is not None]
    nid = g.apply("attention", [q, k, v, *opt], _attrs(causal, mask is not None, rate, salt=4))
    outs = {"fused": Value(nid, 0),
            "composed": build_composition(g, q, k, v, mask, seed, causal=causal, rate=rate, salt=4)}
    for name, out in outs.items():
        g.outputs[name] = out
    if train:
        w = g.input("w", g.type_of(outs["fused"]))
        for name, out in outs.items():
            loss = g.op("sum", g.op("mul", out, w))
            grads = build_gradients(g, loss, [q.node, k.node, v.node])
            for x, p in zip("qkv", (q, k, v)):
                g.outputs[f"{name}_d{x}"] = grads[p.node]
    return g


@pytest.mark.parametrize("rate", [0.0, 0.25], ids=["nodrop", "dropout"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_op_equals_the_composition(dtype, causal, rate):
    """Forward and gradients, by the reference interpreter and compiled (every query sees a
    key: Tq <= Tk and key 0 is never padding, so the composition has no 0/0 row)."""
    r = rng(11)
    n, tq, tk = 3, 6, 9
    arrays = _case(r, n, tq, tk, dtype=dtype, mask=True)
    q, k, v, m = arrays
    w = r.standard_normal((n, H, tq, DV)).astype(dtype)
    feeds = {"mask": m, "w": w}
    if rate:
        feeds["seed"] = np.asarray(31, np.int64)
    g = _pair_graph(arrays, causal=causal, rate=rate, train=True)
    params = {"q": q, "k": k, "v": v}
    ref = run_reference(g, feeds, params)[0]
    prog = compile_graph(g, title="attention_vs_composition")
    prog.bind_params(params, {})
    got = prog(feeds)
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == "float32" else {"rtol": 1e-10, "atol": 1e-12}
    for what in ("", "_dq", "_dk", "_dv"):
        for outs in (ref, got):
            np.testing.assert_allclose(outs[f"fused{what}"], outs[f"composed{what}"], **tol,
                                       err_msg=what)
        np.testing.assert_allclose(got[f"fused{what}"], ref[f"composed{what}"], **tol, err_msg=what)


@pytest.mark.parametrize("t", [64, 200, 512])
def test_fused_op_equals_the_composition_in_float64_for_long_sequences(t):
    r = rng(t)
    arrays = _case(r, 1, t, t, dtype="float64", mask=True, d=16, dv=16)
    g = _pair_graph(arrays, causal=True, rate=0.0, train=False)
    prog = compile_graph(g, title="attention_vs_composition_long")
    prog.bind_params({}, {})
    got = prog(dict(zip(("q", "k", "v", "mask"), arrays)))
    np.testing.assert_allclose(got["fused"], got["composed"], rtol=1e-11, atol=1e-12)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_the_composition_gives_nan_where_the_fused_op_gives_zeros():
    """Documented difference: the softmax of an all -inf row is 0/0."""
    r = rng(12)
    arrays = _case(r, 2, 3, 4, mask=True, empty_rows=True)
    g = _pair_graph(arrays, causal=False, rate=0.0, train=False)
    out = run_reference(g, dict(zip(("q", "k", "v", "mask"), arrays)), {})[0]
    assert np.isnan(out["composed"][0]).all()
    np.testing.assert_array_equal(out["fused"][0], 0.0)


# ----------------------------------------------------------------------- weights and mask


@pytest.mark.parametrize("causal,mask", [(False, False), (True, True)])
def test_weights_kernel(causal, mask):
    r = rng(13)
    arrays = _case(r, 3, 5, 70, mask=mask, empty_rows=mask)
    ins = [arrays[0], arrays[1]] + arrays[3:]
    types = [_types(arrays)[0], _types(arrays)[1]] + _types(arrays)[3:]
    (p,) = check_kernel("attention_weights", types, ins, {"causal": causal, "has_mask": mask},
                        rtol=1e-5, atol=1e-6)
    sums = p.sum(axis=-1)
    seen = np.broadcast_to(_seen_rows(arrays, causal), sums.shape)
    np.testing.assert_allclose(sums[seen], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(sums[~seen], 0.0)


@pytest.mark.parametrize("fill", ["-inf", "zero"])
@pytest.mark.parametrize("causal,mask", [(True, False), (False, True), (True, True)])
def test_mask_kernel(causal, mask, fill):
    r = rng(14)
    s = r.standard_normal((2, H, 4, 6)).astype(np.float32)
    ins, types = [s], [T("N", H, "Tq", "Tk")]
    if mask:
        ins.append(np.array([[1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0]], np.float32))
        types.append(T("N", "Tk"))
    (out,) = check_kernel("attention_mask", types, ins, {"causal": causal, "has_mask": mask, "fill": fill})
    seen = np.broadcast_to(visible(4, 6, causal, ins[1] if mask else None), s.shape)
    np.testing.assert_array_equal(out[seen], s[seen])
    np.testing.assert_array_equal(out[~seen], -np.inf if fill == "-inf" else 0.0)


# ----------------------------------------------------------------------- vs PyTorch


@pytest.mark.parametrize("tq,tk", [(5, 5), (3, 7)])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_matches_torch_scaled_dot_product_attention(causal, tq, tk):
    """out, dq, dk and dv equal torch.nn.functional.scaled_dot_product_attention's with a
    boolean attn_mask built from the key mask and the (bottom-right) causal mask."""
    torch = pytest.importorskip("torch")
    r = rng(15)
    arrays = _case(r, 3, tq, tk, dtype="float64", mask=True)
    q, k, v, m = arrays
    gout = r.standard_normal((3, H, tq, DV))
    attrs = _attrs(causal, True)
    types = _types(arrays)
    out, lse = run_compiled(compile_single("attention", types, attrs)[0], arrays)
    out_t = [T("N", H, "Tq", DV, dtype="float64"), T("N", H, "Tq", dtype="float64")]
    gprog, _ = compile_single("attention_grad", [out_t[0], *types, *out_t], attrs)
    dq, dk, dv = run_compiled(gprog, [gout, *arrays, out, lse])

    tq_, tk_, tv_ = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    allowed = torch.tensor(np.broadcast_to(visible(tq, tk, causal, m), (3, 1, tq, tk)).copy())
    want = torch.nn.functional.scaled_dot_product_attention(tq_, tk_, tv_, attn_mask=allowed)
    want.backward(torch.tensor(gout))
    np.testing.assert_allclose(out, want.detach().numpy(), rtol=1e-10, atol=1e-12)
    for got, t in ((dq, tq_), (dk, tk_), (dv, tv_)):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------- shapes, errors, cost


def test_infer_symbolic():
    q, k, v = T("N", 4, "Tq", 16), T("N", 4, "Tk", 16), T("N", 4, "Tk", 8)
    assert infer("attention", [q, k, v]) == [T("N", 4, "Tq", 8), T("N", 4, "Tq")]
    assert infer("attention", [q, k, v, T("N", "Tk"), SEED_T], has_mask=True, rate=0.1) == [
        T("N", 4, "Tq", 8), T("N", 4, "Tq")]
    assert infer("attention", [q, k, v, SEED_T], rate=0.1, causal=True)[0] == T("N", 4, "Tq", 8)
    assert infer("attention_grad", [T("N", 4, "Tq", 8), q, k, v, T("N", 4, "Tq", 8),
                                     T("N", 4, "Tq")]) == [q, k, v]
    assert infer("attention_weights", [q, k]) == [T("N", 4, "Tq", "Tk")]
    assert infer("attention_mask", [T("N", 4, "Tq", "Tk"), T("N", "Tk")], has_mask=True) == [
        T("N", 4, "Tq", "Tk")]
    # heads on axis 2: q, k, v, out and the gradients [N, T, H, D]; lse still [N, H, Tq]
    qi, ki, vi = T("N", "Tq", 4, 16), T("N", "Tk", 4, 16), T("N", "Tk", 4, 8)
    assert infer("attention", [qi, ki, vi], layout="nthd") == [T("N", "Tq", 4, 8),
                                                                T("N", 4, "Tq")]
    assert infer("attention_grad", [T("N", "Tq", 4, 8), qi, ki, vi, T("N", "Tq", 4, 8),
                                     T("N", 4, "Tq")], layout="nthd") == [qi, ki, vi]
    # a symbolic dim is fine with an explicit scale
    assert infer("attention", [T("N", 2, "T", "D"), T("N", 2, "T", "D"), T("N", 2, "T", 3)],
                 scale=0.5)[0] == T("N", 2, "T", 3)


QKV = [T("N", 4, "T", 16), T("N", 4, "T", 16), T("N", 4, "T", 16)]


@pytest.mark.parametrize(
    "op,types,attrs,match",
    [
        ("attention", [T("N", "T", 64), T("N", "T", 64), T("N", "T", 64)], {}, "rank 4"),
        ("attention", [QKV[0], T("N", 4, "T", 8), QKV[2]], {}, "same dim"),
        ("attention", [QKV[0], QKV[1], T("N", 2, "T", 16)], {}, r"share \[N, heads\]"),
        ("attention", [QKV[0], QKV[1], T("N", 4, "S", 16)], {}, "same number of keys"),
        ("attention", [*QKV[:2], T("N", 4, "T", 16, dtype="float64")], {}, "one float dtype"),
        ("attention", [*QKV, T("N", "T")], {}, "takes 3 inputs"),
        ("attention", QKV, {"has_mask": True}, "takes 4 inputs"),
        ("attention", [*QKV, T("N", 5)], {"has_mask": True}, r"key_mask must be float32 \[N, Tk\]"),
        ("attention", [*QKV, T()], {"rate": 0.1}, "seed must be an int64 scalar"),
        ("attention", [*QKV, SEED_T], {"rate": 1.0}, r"rate must be in \[0, 1\)"),
        ("attention", [T("N", 4, "T", "D")] * 3, {}, "needs a static dim"),
        ("attention_grad", [T("N", 4, "T", 8), *QKV, T("N", 4, "T", 16), T("N", 4, "T")], {},
         "gout must be"),
        ("attention_weights", [QKV[0], QKV[1], T("N", "T")], {}, "takes 2 inputs"),
        ("attention", [T("N", "T", 4, 16), T("N", "T", 2, 16), T("N", "T", 4, 16)],
         {"layout": "nthd"}, r"share \[N, heads\]"),
        ("attention_grad", [T("N", "T", 4, 8), *[T("N", "T", 4, 16)] * 4, T("N", 4, "T")],
         {"layout": "nthd"}, r"gout must be float32\[N, T, 4, 16\], got float32\[N, T, 4, 8\]"),
        ("attention_mask", [T("N", 4, "T")], {}, r"float scores \[N, heads, Tq, Tk\]"),
        ("attention_mask", [T("N", 4, "T", "S"), T("N", "T")], {"has_mask": True}, "key_mask must be"),
    ],
)
def test_infer_rejects_bad_inputs(op, types, attrs, match):
    with pytest.raises(ShapeError, match=match):
        infer(op, types, **attrs)


def test_attributes_are_checked():
    g = Graph()
    x = g.input("s", T("N", 1, 2, 2))
    with pytest.raises(TypeError, match="fill"):
        g.op("attention_mask", x, fill="nan")


def test_cost():
    q, v = T("N", 4, "T", 16), T("N", 4, "T", 8)
    b = {"N": 2, "T": 10}
    outs = infer("attention", [q, q, v])
    full = op_flops("attention", {"causal": False, "rate": 0.0}, [q, q, v], outs[0], b)
    assert full == 2 * 4 * 100 * (2 * (16 + 8) + 4)
    causal = op_flops("attention", {"causal": True, "rate": 0.0}, [q, q, v], outs[0], b)
    assert causal == 2 * 4 * 55 * (2 * (16 + 8) + 4)
    grad = op_flops("attention_grad", {"causal": False}, [outs[0], q, q, v, outs[0], outs[1]],
                    q, b)
    assert grad > 2 * full
    assert op_flops("attention_weights", {}, [q, q], T("N", 4, "T", "T"), b) == 2 * 4 * 100 * 36
