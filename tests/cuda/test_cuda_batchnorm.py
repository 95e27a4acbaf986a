"""Batch norm on the CUDA backend (graphdl/backends/cuda/kernels/batchnorm.py) against the
ops' NumPy references: on the simulator when there is no GPU (conftest.py).

Tiny shapes that still cross the simulator's blocks and grid: more channels than the grid
has blocks (a block takes several channels), and more values per channel than a block has
threads (each thread strides along the channel). The training graph of build_batch_norm
(the running-statistics updates) and its inference form run as elementwise loops: both are
checked here against the reference interpreter.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_helpers import T, check_kernel

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph
from graphdl.ops.norm import build_batch_norm
from graphdl.passes.autodiff import build_gradients

# (x's shape with symbols, the size of N)
SHAPES = {
    "dense": (("N", 5), 3),  # [N, C]: B = 1
    "image": (("N", 3, 2, 3), 2),  # [N, C, H, W]: 12 values per channel
}


def _inputs(shape, n, dtype, seed):
    r = np.random.default_rng(seed)
    bound = (n,) + shape[1:]
    c = shape[1]
    per_channel = (1, c) + (1,) * (len(shape) - 2)
    x = (r.standard_normal(bound) * r.uniform(0.5, 2.0, per_channel)
         + r.uniform(-3, 3, per_channel)).astype(dtype)
    gamma = r.uniform(0.5, 1.5, c).astype(dtype)
    beta = r.uniform(-0.5, 0.5, c).astype(dtype)
    gy = r.standard_normal(bound).astype(dtype)
    return x, gamma, beta, gy


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_batch_norm_train_and_its_gradient(name, dtype):
    shape, n = SHAPES[name]
    c = shape[1]
    x, gamma, beta, gy = _inputs(shape, n, dtype, seed=len(name))
    chan = T(c, dtype=dtype)
    tol = {"rtol": 2e-5, "atol": 2e-5} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-12}
    attrs = {"eps": 1e-3}
    _, mean, var = check_kernel("batch_norm_train", [T(*shape, dtype=dtype), chan, chan],
                                [x, gamma, beta], attrs, **tol)
    if dtype == "float32":
        tol = {"rtol": 1e-4, "atol": 1e-5}
    check_kernel("batch_norm_train_grad",
                 [T(*shape, dtype=dtype), T(*shape, dtype=dtype), chan, chan, chan],
                 [gy, x, gamma, mean, var], attrs, **tol)


def _bn_graph(training: bool) -> Graph:
    """y = batch_norm(x) * r summed (a loss), with x, gamma and beta as parameters and the
    running statistics as state; training adds their updates; the gradients of the loss
    by x, gamma and beta are outputs."""
    g = Graph()
    x = g.param("x", T(4, 3, 2, 2))
    r = g.input("r", T(4, 3, 2, 2))
    gamma, beta = g.param("gamma", T(3)), g.param("beta", T(3))
    rm = g.state("running_mean", T(3), init="zeros")
    rv = g.state("running_var", T(3), init="ones")
    y = build_batch_norm(g, x, gamma, beta, rm, rv, training=training, momentum=0.3, eps=1e-5)
    g.outputs["y"] = y
    loss = g.op("sum", g.op("mul", y, r))
    g.outputs["loss"] = loss
    grads = build_gradients(g, loss, [x.node, gamma.node, beta.node])
    for name, v in (("x", x), ("gamma", gamma), ("beta", beta)):
        g.outputs[f"grad.{name}"] = grads[v.node]
    return g


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_layer_graph_on_cuda_matches_the_reference(training):
    """The training form (batch statistics, running-statistics updates, the gradient through
    the batch statistics) and the inference form (an elementwise composition of the running
    statistics, differentiated by autodiff's elementwise rules) in one compiled program."""
    g = _bn_graph(training)
    ops = {g.op_of(n) for n in g.nodes()}
    assert ({"batch_norm_train", "batch_norm_train_grad"} <= ops) == training
    rng = np.random.default_rng(3)
    feeds = {"r": rng.standard_normal((4, 3, 2, 2)).astype(np.float32)}
    params = {"x": rng.standard_normal((4, 3, 2, 2)).astype(np.float32) * 2 + 1,
              "gamma": rng.uniform(0.5, 1.5, 3).astype(np.float32),
              "beta": rng.uniform(-0.5, 0.5, 3).astype(np.float32)}
    state = {"running_mean": rng.standard_normal(3).astype(np.float32),
             "running_var": rng.uniform(0.5, 2.0, 3).astype(np.float32)}
    want, want_upd, _ = run_reference(g, feeds, params, state)
    prog = compile_graph(g, "cuda", title=f"test_cuda_bn_layer_{training}")
    dev_state = {k: v.copy() for k, v in state.items()}
    prog.bind_params({k: v.copy() for k, v in params.items()}, dev_state)
    got = prog(feeds)
    for k, v in want.items():
        np.testing.assert_allclose(got[k].reshape(np.shape(v)), v, rtol=1e-4, atol=1e-5, err_msg=k)
    prog.sync_to_host()
    if training:
        assert set(want_upd) == {"running_mean", "running_var"}
        for k, v in want_upd.items():
            np.testing.assert_allclose(dev_state[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
            assert not np.allclose(dev_state[k], state[k])  # updated
    else:
        assert not want_upd
        for k, v in state.items():
            np.testing.assert_array_equal(dev_state[k], v)
