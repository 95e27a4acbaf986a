"""Sequence layers beyond the recurrent cells: seq_pool (mean / max / last, with and
without lengths) and dense applied at every step, against NumPy, compiled and through
their gradients."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph
from graphdl.ir.types import TensorType
from graphdl.layers import LAYERS
from graphdl.layers.lower import LayerCtx
from graphdl.ops.registry import ShapeError
from graphdl.passes.autodiff import build_gradients


def _layer(g, type_name, params, inputs, values):
    layer = SimpleNamespace(name="layer", type=type_name, params=params, trainable=True,
                            lr_mult=1.0, regularizer=None)
    spec = SimpleNamespace(model=SimpleNamespace(inputs={k: None for k in values}))
    ctx = LayerCtx(g, spec, layer, LAYERS[type_name], True, None, salt=1, values=values)
    return LAYERS[type_name].build(ctx, inputs)


def _pool_graph(mode, with_lengths, dtype="float32"):
    g = Graph()
    x = g.input("x", TensorType(("N", "T", 3), dtype))
    values = {"x": x}
    params = {"mode": mode}
    if with_lengths:
        values["lengths"] = g.input("lengths", TensorType(("N",), "int64"))
        params["lengths"] = "lengths"
    g.outputs["y"] = _layer(g, "seq_pool", params, [x], values)
    return g


def _numpy_pool(x, mode, lengths):
    out = []
    for n in range(x.shape[0]):
        steps = x[n, : lengths[n]]
        out.append({"mean": steps.mean(0), "max": steps.max(0), "last": steps[-1]}[mode])
    return np.stack(out)


@pytest.mark.parametrize("mode", ["mean", "max", "last"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_seq_pool_pools_each_samples_own_steps(mode, with_lengths):
    g = _pool_graph(mode, with_lengths)
    prog = compile_graph(g, "cpu")
    prog.bind_params({}, {})
    r = np.random.default_rng(0)
    for steps in (4, 6):
        x = r.standard_normal((3, steps, 3)).astype(np.float32)
        lengths = np.array([steps, 1, steps - 2], np.int64) if with_lengths else \
            np.full(3, steps, np.int64)
        if with_lengths:
            x[1, 1:] = 50.0  # padding: never in the result
        feeds = {"x": x, **({"lengths": lengths} if with_lengths else {})}
        want = _numpy_pool(x, mode, lengths)
        np.testing.assert_allclose(run_reference(g, feeds)[0]["y"], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(prog(feeds)["y"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["mean", "max", "last"])
def test_seq_pool_gradient_reaches_only_the_real_steps(mode):
    g = Graph()
    x = g.param("x", TensorType((2, 4, 3), "float64"))
    lengths = g.input("lengths", TensorType((2,), "int64"))
    y = _layer(g, "seq_pool", {"mode": mode, "lengths": "lengths"}, [x],
               {"x": x, "lengths": lengths})
    loss = g.op("sum", g.op("square", y))
    g.outputs["loss"] = loss
    g.outputs["grad"] = build_gradients(g, loss, [x.node])[x.node]
    r = np.random.default_rng(1)
    xv = r.standard_normal((2, 4, 3))
    lv = np.array([4, 2], np.int64)
    out = run_reference(g, {"lengths": lv}, {"x": xv})[0]
    assert np.all(out["grad"][1, 2:] == 0)
    eps = 1e-6
    num = np.zeros_like(xv)
    for idx in np.ndindex(*xv.shape):
        for sign in (1, -1):
            xs = xv.copy()
            xs[idx] += sign * eps
            num[idx] += sign * run_reference(g, {"lengths": lv}, {"x": xs})[0]["loss"] / (2 * eps)
    np.testing.assert_allclose(out["grad"], num, rtol=1e-5, atol=1e-7)


def test_dense_applies_at_every_step_of_a_sequence():
    g = Graph()
    x = g.input("x", TensorType(("N", "T", 3), "float32"))
    g.outputs["y"] = _layer(g, "dense", {"units": 2, "activation": "tanh"}, [x], {"x": x})
    w = g.find("param", "layer.kernel")
    b = g.find("param", "layer.bias")
    prog = compile_graph(g, "cpu")
    r = np.random.default_rng(2)
    params = {"layer.kernel": r.standard_normal((3, 2)).astype(np.float32),
              "layer.bias": r.standard_normal(2).astype(np.float32)}
    prog.bind_params(params, {})
    xv = r.standard_normal((2, 5, 3)).astype(np.float32)
    want = np.tanh(xv @ params["layer.kernel"] + params["layer.bias"])
    np.testing.assert_allclose(prog({"x": xv})["y"], want, rtol=1e-5, atol=1e-6)
    assert w is not None and b is not None


def test_recurrent_layer_on_a_feature_vector_says_what_it_expects():
    g = Graph()
    x = g.input("x", TensorType(("N", 8), "float32"))
    with pytest.raises(ShapeError, match=r"lstm expects a sequence of feature vectors "
                                         r"\[T, features\], got \[8\]"):
        _layer(g, "lstm", {"hidden": 4}, [x], {"x": x})


def test_lengths_must_name_a_model_input():
    g = Graph()
    x = g.input("x", TensorType(("N", "T", 3), "float32"))
    with pytest.raises(ShapeError, match="'lens' is not a model input"):
        _layer(g, "gru", {"hidden": 4, "lengths": "lens"}, [x], {"x": x})
