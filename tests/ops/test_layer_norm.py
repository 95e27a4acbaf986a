"""Layer norm (graphdl/ops/norm.py): ``layer_norm`` and its backward op ``layer_norm_grad``
against their NumPy references, finite differences and torch.nn.functional.layer_norm.

The ops live in the norm family, so tests/ops/test_norm.py lists them in its
KERNEL_COVERED / GRAD_COVERED (taken from here) for tests/ops/test_op_coverage.py."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from helpers import (
    T,
    check_kernel,
    compile_single,
    gradcheck,
    graph_gradcheck,
    infer,
    rng,
    run_compiled,
)

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph, Value
from graphdl.ops.cost import op_flops
from graphdl.ops.norm import _ln_blocks, build_layer_norm
from graphdl.ops.registry import ShapeError
from graphdl.passes.autodiff import build_gradients

KERNEL_COVERED = {"layer_norm", "layer_norm_grad"}
GRAD_COVERED = {"layer_norm"}

EPS = 1e-5
# (shape with symbols, the sizes the symbols take)
SHAPES = {
    "vec": (("N", 7), {"N": 5}),
    "seq": (("N", "T", 6), {"N": 3, "T": 4}),
    "rank1": ((9,), {}),
    "rank4": (("N", 2, 3, 5), {"N": 2}),
}
TOL = {"float32": {"rtol": 2e-5, "atol": 2e-5}, "float64": {"rtol": 1e-12, "atol": 1e-12}}


def _bind(shape, sizes):
    return tuple(sizes.get(d, d) for d in shape)


def _draw(r, shape, dtype):
    """Rows with their own offset and scale, so normalising does something."""
    lead = shape[:-1] + (1,)
    x = r.standard_normal(shape) * r.uniform(0.5, 2.0, lead) + r.uniform(-3, 3, lead)
    return x.astype(dtype)


def _affine(r, d, dtype):
    return r.uniform(0.5, 1.5, d).astype(dtype), r.uniform(-0.5, 0.5, d).astype(dtype)


def _types(shape, dtype):
    d = shape[-1]
    return [T(*shape, dtype=dtype), T(d, dtype=dtype), T(d, dtype=dtype)]


def _grad_types(shape, dtype):
    d = shape[-1]
    lead = T(*shape[:-1], dtype=dtype)
    return [T(*shape, dtype=dtype), T(*shape, dtype=dtype), T(d, dtype=dtype), lead, lead]


# ----------------------------------------------------------------------- kernels


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_kernel(name, dtype):
    shape, sizes = SHAPES[name]
    r = rng(1)
    x = _draw(r, _bind(shape, sizes), dtype)
    gamma, beta = _affine(r, shape[-1], dtype)
    y, mean, rstd = check_kernel("layer_norm", _types(shape, dtype), [x, gamma, beta], **TOL[dtype])
    lead = x.shape[:-1]
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean.reshape(lead), x64.mean(axis=-1), **TOL[dtype])
    np.testing.assert_allclose(rstd.reshape(lead), 1 / np.sqrt(x64.var(axis=-1) + EPS), **TOL[dtype])
    xhat = (y.astype(np.float64) - beta) / gamma
    np.testing.assert_allclose(xhat.mean(axis=-1), 0.0, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_grad_kernel(name, dtype):
    shape, sizes = SHAPES[name]
    r = rng(2)
    x = _draw(r, _bind(shape, sizes), dtype)
    gy = r.standard_normal(x.shape).astype(dtype)
    gamma, _ = _affine(r, shape[-1], dtype)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1).astype(dtype)
    rstd = (1 / np.sqrt(x64.var(axis=-1) + EPS)).astype(dtype)
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == "float32" else TOL[dtype]
    dx, _, dbeta = check_kernel("layer_norm_grad", _grad_types(shape, dtype),
                                [gy, x, gamma, mean, rstd], **tol)
    # the gradient through the row statistics sums to zero along each row
    np.testing.assert_allclose(dx.reshape(x.shape).sum(axis=-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(dbeta, gy.reshape(-1, x.shape[-1]).sum(axis=0), rtol=1e-5, atol=1e-5)


def test_many_rows_in_several_blocks_do_not_depend_on_the_thread_count():
    """[3200, 64]: the kernels cut the rows into blocks run in parallel; dgamma and dbeta
    add the blocks in order, so every bit is the same on one thread or several."""
    rows, d = 3200, 64
    assert _ln_blocks(rows, d) > 1
    r = rng(3)
    x = _draw(r, (rows, d), "float32")
    gamma, beta = _affine(r, d, "float32")
    gy = r.standard_normal(x.shape).astype(np.float32)
    fwd, _ = compile_single("layer_norm", _types(("N", d), "float32"))
    bwd, _ = compile_single("layer_norm_grad", _grad_types(("N", d), "float32"))
    runs = []
    saved = numba.get_num_threads()
    try:
        for threads in sorted({1, saved}):
            numba.set_num_threads(threads)
            y, mean, rstd = run_compiled(fwd, [x, gamma, beta])
            runs.append([y, mean, rstd, *run_compiled(bwd, [gy, x, gamma, mean, rstd])])
    finally:
        numba.set_num_threads(saved)
    for a, b in zip(runs[0], runs[-1]):
        np.testing.assert_array_equal(a, b)
    check_kernel("layer_norm", _types(("N", d), "float32"), [x, gamma, beta], **TOL["float32"])
    check_kernel("layer_norm_grad", _grad_types(("N", d), "float32"),
                 [gy, x, gamma, runs[0][1], runs[0][2]], rtol=1e-4, atol=1e-4)


def test_kernel_is_accurate_for_a_large_offset():
    # float32 rows far from zero: E[x^2] - E[x]^2 would cancel catastrophically
    r = rng(4)
    x = (1000.0 + 0.01 * r.standard_normal((32, 16))).astype(np.float32)
    gamma, beta = np.ones(16, np.float32), np.zeros(16, np.float32)
    prog, _ = compile_single("layer_norm", _types(("N", 16), "float32"))
    y, mean, rstd = run_compiled(prog, [x, gamma, beta])
    var = x.astype(np.float64).var(axis=-1)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(var + EPS), rtol=1e-5)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=-1), rtol=1e-7)
    np.testing.assert_allclose(y.std(axis=-1), np.sqrt(var / (var + EPS)), rtol=1e-4)


# ----------------------------------------------------------------------- gradients


@pytest.mark.parametrize("shape", [(3, 4), (5,), (2, 3, 4)], ids=["2d", "1d", "3d"])
def test_grad(shape):
    # the helper's loss weights every output (y, mean, rstd), so this also checks the
    # statistics' own gradient terms
    r = rng(5)
    x = _draw(r, shape, "float64")
    gamma, beta = _affine(r, shape[-1], "float64")
    gradcheck("layer_norm", [x, gamma, beta], {"eps": 1e-3})


def _weighted_sum(g, v, seed):
    t = g.type_of(v)
    w = np.random.default_rng(seed).uniform(-1, 1, size=t.shape)
    return g.op("sum", g.op("mul", v, g.const(w, t.dtype)))


@pytest.mark.parametrize("output", [0, 1, 2], ids=["y", "mean", "rstd"])
def test_grad_single_output(output):
    """One output feeds the loss: the gy path (the backward op) and the statistics-only
    paths (no backward op; gamma and beta get no gradient, so they are constants here).
    A deliberate parallel of test_norm.py's check of batch norm's three outputs."""
    r = rng(6)
    x = _draw(r, (3, 2, 5), "float64")
    gamma, beta = _affine(r, 5, "float64")
    arrays = {"x": x, "gamma": gamma, "beta": beta} if output == 0 else {"x": x}

    def build(g, p):
        ga = p.get("gamma") or g.const(gamma, "float64")
        be = p.get("beta") or g.const(beta, "float64")
        nid = g.apply("layer_norm", [p["x"], ga, be], {"eps": 1e-3})
        if output:
            assert not g.nodes_by_op("layer_norm_grad")
        return _weighted_sum(g, Value(nid, output), 1)

    graph_gradcheck(build, arrays)


# ----------------------------------------------------------------------- vs PyTorch


def _torch_graph(shape, dtype):
    """y = layer_norm(x, gamma, beta) and the gradients of sum(y * r) by x, gamma, beta."""
    g = Graph()
    d = shape[-1]
    x = g.param("x", T(*shape, dtype=dtype))
    gamma, beta = g.param("gamma", T(d, dtype=dtype)), g.param("beta", T(d, dtype=dtype))
    nid = g.apply("layer_norm", [x, gamma, beta], {"eps": EPS})
    g.outputs["y"], g.outputs["mean"], g.outputs["rstd"] = (Value(nid, i) for i in range(3))
    weight = g.input("r", T(*shape, dtype=dtype))
    loss = g.op("sum", g.op("mul", Value(nid, 0), weight))
    grads = build_gradients(g, loss, [x.node, gamma.node, beta.node])
    for name, v in (("x", x), ("gamma", gamma), ("beta", beta)):
        g.outputs[f"grad.{name}"] = grads[v.node]
    return g


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(6, 8), (2, 5, 7)], ids=["2d", "3d"])
def test_matches_torch_with_every_gradient(shape, dtype):
    torch = pytest.importorskip("torch")
    r = rng(7)
    params = {"x": _draw(r, shape, dtype)}
    params["gamma"], params["beta"] = _affine(r, shape[-1], dtype)
    weight = r.uniform(-1, 1, shape).astype(dtype)

    xt, gt, bt = (torch.tensor(params[k], requires_grad=True) for k in ("x", "gamma", "beta"))
    y, mean, rstd = torch.native_layer_norm(xt, [shape[-1]], gt, bt, EPS)
    (y * torch.tensor(weight)).sum().backward()
    want = {"y": y, "mean": mean[..., 0], "rstd": rstd[..., 0],
            "grad.x": xt.grad, "grad.gamma": gt.grad, "grad.beta": bt.grad}
    np.testing.assert_allclose(
        y.detach().numpy(),
        torch.nn.functional.layer_norm(xt, [shape[-1]], gt, bt, EPS).detach().numpy())

    g = _torch_graph(shape, dtype)
    prog = compile_graph(g, "cpu", title="layer_norm_vs_torch")
    prog.bind_params({k: v.copy() for k, v in params.items()}, {})
    got = {"compiled": prog({"r": weight}),
           "reference": run_reference(g, {"r": weight}, params)[0]}
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == "float32" else {"rtol": 1e-10, "atol": 1e-12}
    for how, outs in got.items():
        for k, v in want.items():
            np.testing.assert_allclose(np.asarray(outs[k]).reshape(v.shape), v.detach().numpy(),
                                       err_msg=f"{how} {k}", **tol)


# ----------------------------------------------------------------------- shapes and errors


def test_infer_symbolic():
    assert infer("layer_norm", _types(("N", 7), "float32")) == [T("N", 7), T("N"), T("N")]
    assert infer("layer_norm", _types(("N", "T", 4), "float64"), eps=1e-3) == [
        T("N", "T", 4, dtype="float64"), T("N", "T", dtype="float64"), T("N", "T", dtype="float64")]
    assert infer("layer_norm", _types((5,), "float32")) == [T(5), T(), T()]
    assert infer("layer_norm", [T("N", "D"), T("D"), T("D")])[1] == T("N")
    assert infer("layer_norm_grad", _grad_types(("N", "T", 4), "float32")) == [
        T("N", "T", 4), T(4), T(4)]


def test_cost_counts_every_element():
    types = _types(("N", 8), "float32")
    y = infer("layer_norm", types)[0]
    assert op_flops("layer_norm", {"eps": EPS}, types, y, {"N": 10}) == 8 * 80
    assert op_flops("layer_norm_grad", {}, _grad_types(("N", 8), "float32"), y, {"N": 10}) == 16 * 80


@pytest.mark.parametrize(
    "op,types,attrs,match",
    [
        ("layer_norm", [T("N", 4), T(3), T(4)], {}, r"gamma has shape \[3\] but x .*: expected \[4\]"),
        ("layer_norm", [T("N", 2, 4), T(4), T(2)], {}, r"beta has shape \[2\]"),
        ("layer_norm", [T(), T(1), T(1)], {}, "rank >= 1"),
        ("layer_norm", [T("N", 0), T(0), T(0)], {}, "last axis is empty"),
        ("layer_norm", [T("N", 4, dtype="int64"), T(4), T(4)], {}, "expects a float tensor"),
        ("layer_norm", [T("N", 4), T(4, dtype="float64"), T(4)], {}, "gamma is float64"),
        ("layer_norm", [T("N", 4), T(4), T(4)], {"eps": 0.0}, "eps must be > 0"),
        ("layer_norm_grad", [T("N", 5), T("N", 4), T(4), T("N"), T("N")], {}, "does not match x"),
        ("layer_norm_grad", [T("N", 4), T("N", 4), T(4), T("N"), T(4)], {},
         r"rstd has shape \[4\] .*: expected \['N'\]"),
    ],
)
def test_infer_rejects_bad_inputs(op, types, attrs, match):
    with pytest.raises(ShapeError, match=match):
        infer(op, types, **attrs)


def test_build_without_affine_passes_ones_and_zeros():
    g = Graph()
    x = g.input("x", T("N", 3, 4))
    y = build_layer_norm(g, x, eps=1e-3)
    (nid,) = g.nodes_by_op("layer_norm")
    assert y == Value(nid, 0)
    gamma, beta = g.inputs_of(nid)[1:]
    assert g.op_of(gamma.node) == g.op_of(beta.node) == "const"
    g.outputs["y"] = y
    xv = _draw(rng(8), (2, 3, 4), "float32")
    out = run_reference(g, {"x": xv}, {})[0]["y"]
    x64 = xv.astype(np.float64)
    want = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match="needs a fixed last axis"):
        build_layer_norm(g, g.input("z", T("N", "D")))
