"""Convolution on the CUDA backend (graphdl/backends/cuda/kernels/conv.py) against the ops'
NumPy references: on the simulator when there is no GPU (conftest.py).

Shapes are tiny but cross the simulator's tiles (8 rows by 16 positions a tile, depth 32):
several row and position tiles with ragged edges, depths that end mid-tile, and weight
gradients split into several depth chunks (`SPLIT_MIN`, `SPLIT_BLOCKS`). The fused tests check that an
epilogue (bias, activation, a residual add) runs inside the convolution's own kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_helpers import T, check_kernel

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph
from graphdl.passes.autodiff import build_gradients
from graphdl.passes.pipeline import PassContext

# (x shape [C, H, W], weight shape, attrs): every attribute the op has, alone and together
CASES = {
    "plain": ((2, 6, 5), (4, 2, 3, 3), {}),
    "padding": ((2, 6, 6), (3, 2, 3, 3), {"padding": (1, 1, 1, 1)}),
    "stride_asym_padding": ((2, 6, 6), (4, 2, 3, 3), {"stride": (2, 1), "padding": (1, 0, 2, 1)}),
    "dilation": ((2, 7, 6), (4, 2, 3, 2), {"dilation": (2, 2), "padding": (1, 1, 0, 1)}),
    "groups": ((4, 5, 5), (6, 2, 3, 3), {"groups": 2, "padding": (1, 1, 1, 1)}),
    "depthwise_strided": ((4, 7, 5), (8, 1, 3, 2), {"groups": 4, "stride": (2, 2),
                                                    "padding": (1, 1, 0, 1), "dilation": (1, 2)}),
    "1x1_stride3": ((3, 7, 7), (5, 3, 1, 1), {"stride": (3, 3)}),
    "many_channels": ((9, 4, 4), (10, 9, 2, 2), {"padding": (0, 1, 0, 1)}),  # several M tiles
}
N = 2


def _arrays(xs, ws, seed, bias=False):
    r = np.random.default_rng(seed)
    x = r.standard_normal((N, *xs)).astype(np.float32)
    w = (r.standard_normal(ws) * 0.5).astype(np.float32)
    b = r.standard_normal(ws[0]).astype(np.float32) if bias else None
    return r, x, w, b


@pytest.mark.parametrize("name", list(CASES))
def test_conv2d_and_its_gradients(name):
    xs, ws, attrs = CASES[name]
    r, x, w, b = _arrays(xs, ws, seed=len(name), bias=name == "plain")
    tol = {"rtol": 1e-4, "atol": 1e-5}
    types = [T("N", *xs), T(*ws)] + ([T(ws[0])] if b is not None else [])
    (y,) = check_kernel("conv2d", types, [x, w] + ([b] if b is not None else []), attrs, **tol)
    gy = r.standard_normal(y.shape).astype(np.float32)
    check_kernel("conv2d_grad_input", [T("N", *y.shape[1:]), T(*ws)], [gy, w],
                 {**attrs, "input_size": xs[1:]}, **tol)
    check_kernel("conv2d_grad_weight", [T("N", *xs), T("N", *y.shape[1:])], [x, gy],
                 {**attrs, "kernel_size": ws[2:]}, rtol=1e-4, atol=1e-4)


def test_float64_and_a_batch_of_one():
    r = np.random.default_rng(3)
    x = r.standard_normal((1, 2, 5, 5))
    w = r.standard_normal((3, 2, 2, 2))
    tol = {"rtol": 1e-12, "atol": 1e-12}
    (y,) = check_kernel("conv2d", [T("N", 2, 5, 5, dtype="float64"), T(3, 2, 2, 2, dtype="float64")],
                        [x, w], {"stride": (2, 2)}, **tol)
    gy = r.standard_normal(y.shape)
    check_kernel("conv2d_grad_weight", [T("N", 2, 5, 5, dtype="float64"), T("N", 3, 2, 2, dtype="float64")],
                 [x, gy], {"stride": (2, 2), "kernel_size": (2, 2)}, **tol)


def test_weight_gradient_is_split_and_deterministic(cuda_device):
    """A depth N*OH*OW of several chunks: the chunks' partial sums added in order give the
    reference, and the same bits on every call."""
    from graphdl.backends.cuda.kernels.conv import SPLIT_MIN

    r = np.random.default_rng(4)
    x = r.standard_normal((3, 2, 6, 6)).astype(np.float32)
    gy = r.standard_normal((3, 4, 6, 6)).astype(np.float32)
    attrs = {"padding": (1, 1, 1, 1), "kernel_size": (3, 3)}
    if cuda_device.SIMULATOR:
        assert 3 * 6 * 6 > 2 * SPLIT_MIN
    types = [T("N", 2, 6, 6), T("N", 4, 6, 6)]
    (a,) = check_kernel("conv2d_grad_weight", types, [x, gy], attrs, rtol=1e-4, atol=1e-4)
    (b,) = check_kernel("conv2d_grad_weight", types, [x, gy], attrs, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(a, b)


def _epilogue_heads(planned: Graph) -> list[str]:
    return sorted(planned.attrs(n)["members"][0]["op"] for n in planned.nodes_by_op("fused")
                  if planned.attrs(n)["kind"] == "epilogue")


def _fused_program(g: Graph, title: str):
    heads = _epilogue_heads(PassContext().run(g, training=False))
    prog = compile_graph(g, "cuda", title=title)
    prog.bind_params({}, {})
    return heads, prog


def _launches(source: str) -> list[str]:
    """The launch lines of the generated ``run()``."""
    body = source.split("def run():")[1].split("return None")[0]
    return [s.strip() for s in body.splitlines() if s.strip() and not s.strip().startswith("#")]


def test_conv_bias_relu_is_one_launch():
    g = Graph()
    x = g.input("x", T("N", 2, 6, 5))
    w = g.input("w", T(4, 2, 3, 3))
    b = g.input("b", T(4))
    y = g.op("conv2d", x, w, b, stride=(1, 1), padding=(1, 1, 0, 1), dilation=(1, 1), groups=1)
    g.outputs["y"] = g.op("relu", y)
    heads, prog = _fused_program(g, "test_cuda_conv_bias_relu")
    assert heads == ["conv2d"]
    assert len(_launches(prog.source)) == 1, prog.source
    assert "K.s_relu" in prog.source and "bias[ch]" in prog.source
    _, xv, wv, bv = _arrays((2, 6, 5), (4, 2, 3, 3), seed=5, bias=True)
    feeds = {"x": xv, "w": wv, "b": bv}
    want = run_reference(g, feeds)[0]["y"]
    np.testing.assert_allclose(prog(feeds)["y"], want, rtol=1e-4, atol=1e-5)
    assert (want == 0).any() and (want > 0).any()  # relu did something


def test_epilogue_with_a_broadcast_bias_a_residual_and_a_runtime_factor():
    """conv (no bias input) + bias [F, 1, 1] + a residual [N, F, OH, OW], tanh, then a mean's
    1/N: every epilogue input kind, in one kernel."""
    g = Graph()
    x = g.input("x", T("N", 3, 5, 5))
    w = g.input("w", T(3, 3, 3, 3))
    b = g.input("b", T(3, 1, 1))
    res = g.input("res", T("N", 3, 5, 5))
    y = g.op("conv2d", x, w, padding=(1, 1, 1, 1), stride=(1, 1), dilation=(1, 1), groups=1)
    z = g.op("mul_scalar", g.op("tanh", g.op("add", g.op("add", y, b), res)), c=2.0, div=("N",))
    g.outputs["z"] = z
    heads, prog = _fused_program(g, "test_cuda_conv_epilogue_inputs")
    assert heads == ["conv2d"]
    assert len(_launches(prog.source)) == 1, prog.source
    r = np.random.default_rng(6)
    feeds = {"x": r.standard_normal((2, 3, 5, 5)).astype(np.float32),
             "w": (r.standard_normal((3, 3, 3, 3)) * 0.3).astype(np.float32),
             "b": r.standard_normal((3, 1, 1)).astype(np.float32),
             "res": r.standard_normal((2, 3, 5, 5)).astype(np.float32)}
    want = run_reference(g, feeds)[0]["z"]
    np.testing.assert_allclose(prog(feeds)["z"], want, rtol=1e-4, atol=1e-5)


def test_conv_relu_pool_gradients_match_the_reference():
    """A conv -> relu -> max pool -> sum(. * r) graph differentiated by autodiff, compiled
    forward and backward in one CUDA program: the input gradient's epilogue (relu_grad
    fused after conv2d_grad_input) included."""
    g = Graph()
    x = g.param("x", T(2, 2, 6, 6))
    w1 = g.param("w1", T(3, 2, 3, 3))
    b1 = g.param("b1", T(3))
    w2 = g.param("w2", T(4, 3, 3, 3))
    h = g.op("relu", g.op("conv2d", x, w1, b1, padding=(1, 1, 1, 1), stride=(1, 1),
                          dilation=(1, 1), groups=1))
    y = g.op("conv2d", h, w2, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1)
    p = g.op("max_pool2d", y, kernel=(2, 2), stride=None, padding=(0, 0, 0, 0))
    r = g.input("r", T(2, 4, 2, 2))
    loss = g.op("sum", g.op("mul", p, r))
    params = [x, w1, b1, w2]
    grads = build_gradients(g, loss, [v.node for v in params])
    names = ("x", "w1", "b1", "w2")
    for name, v in zip(names, params):
        g.outputs[f"grad.{name}"] = grads[v.node]
    g.outputs["loss"] = loss
    rng = np.random.default_rng(7)
    pv = {"x": rng.standard_normal((2, 2, 6, 6)).astype(np.float32),
          "w1": (rng.standard_normal((3, 2, 3, 3)) * 0.5).astype(np.float32),
          "b1": rng.standard_normal(3).astype(np.float32),
          "w2": (rng.standard_normal((4, 3, 3, 3)) * 0.5).astype(np.float32)}
    rv = rng.standard_normal((2, 4, 2, 2)).astype(np.float32)
    want = run_reference(g, {"r": rv}, pv)[0]
    prog = compile_graph(g, "cuda", title="test_cuda_conv_grads")
    prog.bind_params({k: v.copy() for k, v in pv.items()}, {})
    assert "conv2d_grad_input" in _epilogue_heads(prog.graph)  # relu_grad fused into it
    got = prog({"r": rv})
    for k, v in want.items():
        np.testing.assert_allclose(got[k].reshape(np.shape(v)), v, rtol=1e-4, atol=1e-4, err_msg=k)

