"""Layer norm on the CUDA backend (graphdl/backends/cuda/kernels/layernorm.py) against the
ops' NumPy references: on the simulator when there is no GPU (conftest.py).

Tiny shapes that still cross the simulator's blocks: rows of 2 elements (two rows a block)
and of 5 (one row a block, its threads striding along it), several row groups per block
(a grid of two), and more rows than the dgamma / dbeta chunks (LN_PART_ROWS rows each, at
most LN_MAX_PARTS of them) so a chunk takes several rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_helpers import T, check_kernel, compile_single

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph, Value
from graphdl.passes.autodiff import build_gradients

# (shape with symbols, the sizes the symbols take)
SHAPES = {
    "vec": (("N", 5), {"N": 3}),
    "seq": (("N", "T", 2), {"N": 2, "T": 3}),
    "rank1": ((7,), {}),
    "many_rows": (("N", 3), {"N": 17}),  # more than the simulator's chunks hold at 2 rows each
}


def _bind(shape, sizes):
    return tuple(sizes.get(d, d) for d in shape)


def _inputs(shape, sizes, dtype, seed):
    r = np.random.default_rng(seed)
    bound = _bind(shape, sizes)
    lead = bound[:-1] + (1,)
    x = (r.standard_normal(bound) * r.uniform(0.5, 2.0, lead) + r.uniform(-3, 3, lead)).astype(dtype)
    d = bound[-1]
    gamma = r.uniform(0.5, 1.5, d).astype(dtype)
    beta = r.uniform(-0.5, 0.5, d).astype(dtype)
    gy = r.standard_normal(bound).astype(dtype)
    return x, gamma, beta, gy


# the input types as tests/ops/test_layer_norm.py declares them (a deliberate parallel:
# the CUDA tests do not import the CPU op tests)
def _types(shape, dtype):
    d = shape[-1]
    return [T(*shape, dtype=dtype), T(d, dtype=dtype), T(d, dtype=dtype)]


def _grad_types(shape, dtype):
    d = shape[-1]
    lead = T(*shape[:-1], dtype=dtype)
    return [T(*shape, dtype=dtype), T(*shape, dtype=dtype), T(d, dtype=dtype), lead, lead]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_layer_norm_and_its_gradient(name, dtype, cuda_device):
    shape, sizes = SHAPES[name]
    if name == "many_rows" and cuda_device.SIMULATOR:
        from graphdl.backends.cuda.kernels.layernorm import LN_MAX_PARTS, LN_PART_ROWS

        assert sizes["N"] > LN_PART_ROWS * LN_MAX_PARTS
    x, gamma, beta, gy = _inputs(shape, sizes, dtype, seed=len(name))
    tol = {"rtol": 2e-5, "atol": 2e-5} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-12}
    _, mean, rstd = check_kernel("layer_norm", _types(shape, dtype), [x, gamma, beta], **tol)
    lead = x.shape[:-1]
    if dtype == "float32":
        tol = {"rtol": 1e-4, "atol": 1e-5}
    check_kernel("layer_norm_grad", _grad_types(shape, dtype),
                 [gy, x, gamma, mean.reshape(lead), rstd.reshape(lead)], **tol)


def test_layer_norm_is_accurate_for_a_large_offset():
    r = np.random.default_rng(9)
    x = (1000.0 + 0.01 * r.standard_normal((3, 4))).astype(np.float32)
    gamma, beta = np.ones(4, np.float32), np.zeros(4, np.float32)
    prog = compile_single("layer_norm", _types(("N", 4), "float32"))
    out = prog({"x0": x, "x1": gamma, "x2": beta})
    var = x.astype(np.float64).var(axis=-1)
    np.testing.assert_allclose(out["out2"], 1 / np.sqrt(var + 1e-5), rtol=1e-5)
    np.testing.assert_allclose(out["out0"].std(axis=-1), np.sqrt(var / (var + 1e-5)), rtol=1e-4)


def test_gradient_graph_on_cuda_matches_the_reference():
    """Forward and backward in one compiled program, values carved out of the arenas:
    y, and the gradients of sum(y * r) by x, gamma and beta."""
    g = Graph()
    x = g.param("x", T(2, 3, 4))
    gamma, beta = g.param("gamma", T(4)), g.param("beta", T(4))
    nid = g.apply("layer_norm", [x, gamma, beta], {"eps": 1e-5})
    g.outputs["y"] = Value(nid, 0)
    r = g.input("r", T(2, 3, 4))
    loss = g.op("sum", g.op("mul", Value(nid, 0), r))
    grads = build_gradients(g, loss, [x.node, gamma.node, beta.node])
    for name, v in (("x", x), ("gamma", gamma), ("beta", beta)):
        g.outputs[f"grad.{name}"] = grads[v.node]
    xv, gv, bv, rv = _inputs(("N", 3, 4), {"N": 2}, "float32", seed=11)
    params = {"x": xv, "gamma": gv, "beta": bv}
    want = run_reference(g, {"r": rv}, params)[0]
    prog = compile_graph(g, "cuda", title="test_cuda_layer_norm_grads")
    prog.bind_params({k: v.copy() for k, v in params.items()}, {})
    got = prog({"r": rv})
    for k, v in want.items():
        np.testing.assert_allclose(got[k].reshape(v.shape), v, rtol=1e-4, atol=1e-5, err_msg=k)
