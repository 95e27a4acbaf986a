"""autodiff (graphdl/passes/autodiff.py): gradients, frozen params, clipping, updates."""

from __future__ import annotations

import numpy as np
import pytest
from pass_graphs import (
    feeds_for,
    init_params,
    init_state,
    mlp,
    training_graph,
)

from graphdl.backends.reference import run_reference
from graphdl.ir.graph import Value
from graphdl.ops.registry import ShapeError
from graphdl.passes.autodiff import autodiff, build_gradients, trainable_params
from graphdl.passes.infer_shapes import infer_shapes
from graphdl.passes.simplify import dce

PARAMS = ("b1", "b2", "w1", "w2")


def _forward_inputs(feeds):
    return {k: v for k, v in feeds.items() if k != "lr"}


def numerical_grads(g, feeds, params, eps=1e-6):
    """Central differences of outputs['loss'] with respect to every param (float64)."""
    out = {}
    for name, p in params.items():
        grad = np.zeros(p.shape)
        for idx in np.ndindex(*p.shape):
            ps = {k: v.copy() for k, v in params.items()}
            ps[name][idx] += eps
            hi = run_reference(g, feeds, ps)[0]["loss"]
            ps[name][idx] -= 2 * eps
            lo = run_reference(g, feeds, ps)[0]["loss"]
            grad[idx] = (hi - lo) / (2 * eps)
        out[name] = grad
    return out


def analytic_grads(g, feeds, params):
    g = g.copy()
    grads = build_gradients(g, g.outputs["loss"], trainable_params(g))
    for pid, v in grads.items():
        g.outputs["grad." + g.node(pid)["name"]] = v
    outs = run_reference(g, feeds, params)[0]
    return {k[5:]: v for k, v in outs.items() if k.startswith("grad.")}, outs


@pytest.fixture(scope="module")
def mlp64():
    g = infer_shapes(mlp("float64", l2=0.01))  # w1 reaches the loss along two paths
    feeds = _forward_inputs(feeds_for(g, n=5))
    params = {k: v.astype(np.float64) for k, v in init_params(g).items()}
    return g, feeds, params, numerical_grads(g, feeds, params)


def test_mlp_gradients_match_finite_differences(mlp64):
    g, feeds, params, num = mlp64
    grads, _ = analytic_grads(g, feeds, params)
    assert set(grads) == set(PARAMS)
    for name in PARAMS:
        assert grads[name].shape == params[name].shape and grads[name].dtype == np.float64
        np.testing.assert_allclose(grads[name], num[name], rtol=1e-5, atol=1e-8, err_msg=name)


def test_training_step_adam_matches_numerical_gradient_step(mlp64):
    g, feeds, params, num = mlp64
    g = g.copy()
    g.meta["optimizer"] = {"type": "adam", "lr": 1e-3}
    tg = autodiff(g)
    lr = 1e-3
    state = init_state(tg)
    assert set(state) == {"opt.step"} | {f"opt.{k}.{p}" for k in "mv" for p in PARAMS}
    outs, updates, _ = run_reference(tg, {**feeds, "lr": np.float32(lr)}, params, state)
    assert set(updates) == set(params) | set(state)
    assert updates["opt.step"] == 1
    for name in PARAMS:
        d = num[name]
        m, v = 0.1 * d, 0.001 * d * d
        step = (m / (1 - 0.9)) / (np.sqrt(v / (1 - 0.999)) + 1e-8)
        np.testing.assert_allclose(updates[f"opt.m.{name}"], m, rtol=1e-5, atol=1e-10)
        np.testing.assert_allclose(updates[f"opt.v.{name}"], v, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(updates[name], params[name] - lr * step, rtol=1e-7, atol=1e-8)
    # the training graph still computes the forward loss
    np.testing.assert_allclose(outs["loss"], run_reference(g, feeds, params)[0]["loss"])


def test_training_step_sgd_float32_matches_numerical_gradient_step(mlp64):
    _, feeds64, params64, num = mlp64
    tg = training_graph({"type": "sgd"}, l2=0.01)
    feeds = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in feeds64.items()}
    params = {k: v.astype(np.float32) for k, v in params64.items()}
    feeds["lr"] = np.float32(0.1)
    _, updates, _ = run_reference(tg, feeds, params)
    assert set(updates) == set(PARAMS)
    for name in PARAMS:
        assert updates[name].dtype == np.float32
        want = params64[name] - 0.1 * num[name]
        np.testing.assert_allclose(updates[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_momentum_creates_velocity_state_and_phases():
    tg = training_graph({"type": "momentum", "momentum": 0.5, "nesterov": True})
    assert set(tg.named("state")) == {f"opt.velocity.{p}" for p in PARAMS}
    assert "lr" in tg.named("input")
    phases = {tg.node(n)["phase"] for n in tg.nodes()}
    assert phases == {"forward", "backward", "update"}
    for nid in tg.nodes_by_op("momentum_update"):
        assert tg.node(nid)["phase"] == "update"
        assert tg.attrs(nid)["nesterov"] is True and tg.attrs(nid)["momentum"] == 0.5
    for nid in tg.nodes_by_op("softmax_cross_entropy_grad"):
        assert tg.node(nid)["phase"] == "backward"


def _live_backward_matmuls(g):
    g = g.copy()
    dce(g)  # grad rules also build the gradients nobody wants (dx); simplify drops them
    return [n for n in g.nodes_by_op("matmul") if g.node(n)["phase"] == "backward"]


def _backward_layers(g):
    return {g.node(n)["layer"] for n in g.nodes() if g.node(n)["phase"] == "backward"}


@pytest.mark.parametrize(
    "frozen,n_matmuls",
    [((), 3), (("w1", "b1"), 1), (("w2", "b2"), 2), (("w1", "b1", "w2", "b2"), 0)],
)
def test_frozen_params_get_no_gradient_nodes(frozen, n_matmuls):
    tg = training_graph({"type": "sgd"}, frozen=frozen)
    updated = {tg.node(k)["name"] for k in tg.updates}
    assert updated == set(PARAMS) - set(frozen)
    # dW2 = h^T gY, dh = gY W2^T, dW1 = x^T dh: a frozen layer drops its own matmul, and a
    # frozen first layer also drops dh (nothing upstream needs it)
    assert len(_live_backward_matmuls(tg)) == n_matmuls
    want = set(PARAMS) - set(frozen)
    assert trainable_params(tg) == sorted(tg.find("param", p) for p in want)
    if "w1" in frozen:  # not a single backward node for the frozen first layer
        assert "dense_1" not in _backward_layers(tg)
    else:
        assert "dense_1" in _backward_layers(tg)
    if not want:
        assert _backward_layers(tg) <= {"loss"}


def test_frozen_params_keep_their_values():
    tg = training_graph({"type": "sgd"}, frozen=("w1", "b1"))
    feeds, params = feeds_for(tg), init_params(tg)
    _, updates, _ = run_reference(tg, feeds, params)
    assert set(updates) == {"w2", "b2"}
    assert not np.allclose(updates["w2"], params["w2"])


@pytest.mark.parametrize("max_norm", [0.05, 1e3])
def test_gradient_clipping_scales_by_global_norm(max_norm):
    g = infer_shapes(mlp())
    feeds, params = feeds_for(g), init_params(g)
    grads, _ = analytic_grads(g, feeds, params)
    norm = np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in grads.values()))
    clipped = g.copy()
    clipped.meta["optimizer"] = {"type": "sgd"}
    clipped.meta["gradient_clip"] = {"max_norm": max_norm}
    tg = autodiff(clipped)
    outs, updates, _ = run_reference(tg, {**feeds, "lr": np.float32(0.1)}, params)
    np.testing.assert_allclose(outs["grad_norm"], norm, rtol=1e-5)
    scale = min(1.0, max_norm / norm)
    assert (scale < 1.0) == (max_norm < 1.0)
    for name in PARAMS:
        want = params[name] - 0.1 * grads[name] * scale
        np.testing.assert_allclose(updates[name], want, rtol=1e-5, atol=1e-7, err_msg=name)


def test_gradient_clipping_float64_model():
    g = mlp("float64")
    g.meta["optimizer"] = {"type": "sgd"}
    g.meta["gradient_clip"] = {"max_norm": 1.0}
    try:
        autodiff(infer_shapes(g))
    except ShapeError as e:
        pytest.fail(f"ShapeError: {e}")


def test_autodiff_keeps_the_forward_graph_behaviour():
    g = infer_shapes(mlp(logits_output=True))
    g.meta["optimizer"] = {"type": "adam"}
    tg = autodiff(g)
    assert len(tg) > len(g) and len(g) == len(infer_shapes(mlp(logits_output=True)))  # a copy
    feeds = feeds_for(tg)
    params = init_params(tg)
    o1 = run_reference(g, _forward_inputs(feeds), params)[0]
    o2 = run_reference(tg, feeds, params, init_state(tg))[0]
    for k in o1:
        np.testing.assert_allclose(o2[k], o1[k], rtol=1e-6)


def test_autodiff_with_dropout_in_the_graph():
    g = infer_shapes(mlp("float64", dropout=0.5))
    feeds = _forward_inputs(feeds_for(g, n=4))
    params = {k: v.astype(np.float64) for k, v in init_params(g).items()}
    grads, _ = analytic_grads(g, feeds, params)
    num = numerical_grads(g, feeds, params)
    for name in PARAMS:
        np.testing.assert_allclose(grads[name], num[name], rtol=1e-5, atol=1e-8, err_msg=name)


def test_build_gradients_of_an_unused_param_is_absent():
    g = infer_shapes(mlp())
    extra = g.param("unused", g.type_of(Value(g.find("param", "b1"))))
    grads = build_gradients(g, g.outputs["loss"], trainable_params(g))
    assert extra.node not in grads and len(grads) == 4


def test_autodiff_errors():
    g = infer_shapes(mlp())
    del g.outputs["loss"]
    with pytest.raises(ValueError, match="needs a graph with a 'loss' output"):
        autodiff(g)
    g = infer_shapes(mlp(logits_output=True))
    logits, labels = g.outputs["logits"], Value(g.find("input", "labels"))
    correct = Value(g.apply("count_correct", [logits, labels]), 0)
    g.outputs["loss"] = g.op("add", g.outputs["loss"], correct)
    with pytest.raises(ValueError, match="op count_correct has no gradient"):
        autodiff(g)


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        training_graph({"type": "lamb"})


@pytest.mark.parametrize("optimizer,names", [
    ({"type": "rmsprop", "lr": 1e-3, "alpha": 0.9}, {"opt.square_avg"}),
    ({"type": "adagrad", "lr": 1e-2, "lr_decay": 0.1}, {"opt.sum"}),
])
def test_training_step_rmsprop_and_adagrad_match_numerical_gradient_step(mlp64, optimizer, names):
    g, feeds, params, num = mlp64
    g = g.copy()
    g.meta["optimizer"] = optimizer
    tg = autodiff(g)
    state = init_state(tg)
    stepped = {"opt.step"} if optimizer["type"] == "adagrad" else set()
    assert set(state) == stepped | {f"{k}.{p}" for k in names for p in PARAMS}
    lr = optimizer["lr"]
    _, updates, _ = run_reference(tg, {**feeds, "lr": np.float32(lr)}, params, state)
    for name in PARAMS:
        d = num[name]
        if optimizer["type"] == "rmsprop":
            sq = 0.1 * d * d
            np.testing.assert_allclose(updates[f"opt.square_avg.{name}"], sq, rtol=1e-5, atol=1e-12)
            want = params[name] - lr * d / (np.sqrt(sq) + 1e-8)
        else:
            np.testing.assert_allclose(updates[f"opt.sum.{name}"], d * d, rtol=1e-5, atol=1e-12)
            want = params[name] - lr * d / (np.abs(d) + 1e-10)  # step 1: no lr_decay yet
        np.testing.assert_allclose(updates[name], want, rtol=1e-5, atol=1e-8)
