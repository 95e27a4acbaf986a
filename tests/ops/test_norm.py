"""Batch norm (graphdl/ops/norm.py): the training op and its backward op, the eval-mode
composition, the running-statistics update, against NumPy references and PyTorch, and a
compiled MLP training step with batch norm against the reference interpreter. Layer norm,
the family's other op pair, is tested in test_layer_norm.py."""

from __future__ import annotations

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
from test_layer_norm import GRAD_COVERED as LAYER_NORM_GRAD_COVERED
from test_layer_norm import KERNEL_COVERED as LAYER_NORM_KERNEL_COVERED

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph, Value
from graphdl.ops.norm import build_batch_norm, count_dims, unbiased_variance
from graphdl.ops.registry import ShapeError
from graphdl.passes.autodiff import autodiff
from graphdl.passes.infer_shapes import infer_shapes

# the norm family's ops (test_op_coverage.py reads these): layer norm's from its own module
KERNEL_COVERED = {"batch_norm_train", "batch_norm_train_grad"} | LAYER_NORM_KERNEL_COVERED
GRAD_COVERED = {"batch_norm_train"} | LAYER_NORM_GRAD_COVERED

IMG = ("N", 3, 5, 4)  # [N, C, H, W]
VEC = ("N", 4)  # [N, C] after a dense layer
MOMENTUM, EPS = 0.1, 1e-5


def _draw_x(r, shape, n, dtype="float32"):
    """Per-channel offsets and scales, so normalising actually does something."""
    shape = tuple(n if d == "N" else d for d in shape)
    c = shape[1]
    bshape = (1, c) + (1,) * (len(shape) - 2)
    offset = r.uniform(-3, 3, size=c).reshape(bshape)
    scale = r.uniform(0.5, 2.0, size=c).reshape(bshape)
    return (r.standard_normal(shape) * scale + offset).astype(dtype)


def _affine(r, c, dtype="float32"):
    return r.uniform(0.5, 1.5, size=c).astype(dtype), r.uniform(-0.5, 0.5, size=c).astype(dtype)


def _types(shape, dtype="float32"):
    return [T(*shape, dtype=dtype), T(shape[1], dtype=dtype), T(shape[1], dtype=dtype)]


def _weighted_sum(g, v, seed):
    t = g.type_of(v)
    w = np.random.default_rng(seed).uniform(-1, 1, size=t.shape)
    return g.op("sum", g.op("mul", v, g.const(w, t.dtype)))


# ----------------------------------------------------------------------- kernels


@pytest.mark.parametrize("shape", [VEC, IMG], ids=["2d", "4d"])
@pytest.mark.parametrize("n", [2, 9])
def test_train_kernel(shape, n):
    r = rng(n)
    x = _draw_x(r, shape, n)
    gamma, beta = _affine(r, shape[1])
    y, mean, var = check_kernel("batch_norm_train", _types(shape), [x, gamma, beta], rtol=2e-5, atol=2e-5)
    axes = (0,) + tuple(range(2, x.ndim))
    np.testing.assert_allclose(mean, x.mean(axis=axes, dtype=np.float64), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, x.var(axis=axes, dtype=np.float64), rtol=1e-5)  # biased
    xhat = (y - beta.reshape((1, -1) + (1,) * (x.ndim - 2))) / gamma.reshape((1, -1) + (1,) * (x.ndim - 2))
    np.testing.assert_allclose(xhat.mean(axis=axes), 0.0, atol=1e-5)
    np.testing.assert_allclose(xhat.var(axis=axes), var / (var + EPS), rtol=1e-3)


def test_train_kernel_is_accurate_for_a_large_offset():
    # float32 data far from zero: E[x^2] - E[x]^2 would cancel catastrophically
    r = rng(3)
    x = (1000.0 + 0.01 * r.standard_normal((64, 4))).astype(np.float32)
    gamma, beta = np.ones(4, np.float32), np.zeros(4, np.float32)
    prog, _ = compile_single("batch_norm_train", _types(VEC))
    y, _, var = run_compiled(prog, [x, gamma, beta])
    want = x.astype(np.float64).var(axis=0)
    np.testing.assert_allclose(var, want, rtol=1e-5)
    np.testing.assert_allclose(y.std(axis=0), np.sqrt(want / (want + EPS)), rtol=1e-4)


@pytest.mark.parametrize("shape", [VEC, IMG], ids=["2d", "4d"])
def test_train_grad_kernel(shape):
    r = rng(4)
    x = _draw_x(r, shape, 6)
    gy = r.standard_normal(x.shape).astype(np.float32)
    gamma, _ = _affine(r, shape[1])
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes).astype(np.float32)
    var = x.var(axis=axes).astype(np.float32)
    c = T(shape[1])
    dx, _, dbeta = check_kernel(
        "batch_norm_train_grad", [T(*shape), T(*shape), c, c, c], [gy, x, gamma, mean, var],
        rtol=1e-4, atol=1e-5,
    )
    # the gradient through the batch statistics sums to zero per channel
    np.testing.assert_allclose(dx.sum(axis=axes), 0.0, atol=1e-4)
    np.testing.assert_allclose(dbeta, gy.sum(axis=axes), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------- gradients


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 2, 3)], ids=["2d", "4d"])
def test_train_grad(shape):
    # the helper's loss weights every output (y, batch_mean, batch_var), so this also
    # checks the statistics' own gradient terms
    r = rng(5)
    x = _draw_x(r, shape, shape[0], "float64")
    gamma, beta = _affine(r, shape[1], "float64")
    gradcheck("batch_norm_train", [x, gamma, beta], {"eps": 1e-3})


@pytest.mark.parametrize("output", [0, 1, 2], ids=["y", "mean", "var"])
def test_train_grad_single_output(output):
    """One output feeds the loss: the gy-only path (the grad op) and the statistics-only
    paths (no grad op; gamma and beta get no gradient, so they are constants here)."""
    r = rng(6)
    x = _draw_x(r, (4, 2, 3), 4, "float64")
    gamma, beta = _affine(r, 2, "float64")
    arrays = {"x": x, "gamma": gamma, "beta": beta} if output == 0 else {"x": x}

    def build(g, p):
        ga = p.get("gamma") or g.const(gamma, "float64")
        be = p.get("beta") or g.const(beta, "float64")
        nid = g.apply("batch_norm_train", [p["x"], ga, be], {"eps": 1e-3})
        if output:
            assert not g.nodes_by_op("batch_norm_train_grad")
        return _weighted_sum(g, Value(nid, output), 1)

    graph_gradcheck(build, arrays)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2)], ids=["2d", "4d"])
def test_inference_grad(shape):
    """Eval-mode batch norm is elementwise ops: gradients for x, gamma, beta and even the
    running statistics (a frozen batch norm must pass dx on to earlier layers)."""
    r = rng(7)
    c = shape[1]
    arrays = {"x": _draw_x(r, shape, shape[0], "float64")}
    arrays["gamma"], arrays["beta"] = _affine(r, c, "float64")
    arrays["rm"] = r.uniform(-1, 1, size=c)
    arrays["rv"] = r.uniform(0.5, 2.0, size=c)

    def build(g, p):
        y = build_batch_norm(g, p["x"], p["gamma"], p["beta"], p["rm"], p["rv"],
                             training=False, momentum=MOMENTUM, eps=1e-3)
        return _weighted_sum(g, y, 2)

    graph_gradcheck(build, arrays)


# ----------------------------------------------------------------------- vs PyTorch


def _bn_graph(training: bool) -> Graph:
    """Batch norm of a [N, 3, 5, 4] and a [N, 4] input, through build_batch_norm."""
    g = Graph()
    for tag, shape in (("img", IMG), ("vec", VEC)):
        x = g.input(f"x_{tag}", T(*shape))
        c = shape[1]
        gamma, beta = g.param(f"{tag}.gamma", T(c)), g.param(f"{tag}.beta", T(c))
        rm, rv = g.state(f"{tag}.running_mean", T(c)), g.state(f"{tag}.running_var", T(c))
        g.outputs[f"y_{tag}"] = build_batch_norm(
            g, x, gamma, beta, rm, rv, training=training, momentum=MOMENTUM, eps=EPS
        )
    return g


def _bn_setup(seed):
    r = rng(seed)
    params, state = {}, {}
    for tag, shape in (("img", IMG), ("vec", VEC)):
        c = shape[1]
        params[f"{tag}.gamma"], params[f"{tag}.beta"] = _affine(r, c)
        state[f"{tag}.running_mean"] = r.uniform(-1, 1, size=c).astype(np.float32)
        state[f"{tag}.running_var"] = r.uniform(0.5, 2, size=c).astype(np.float32)
    return r, params, state


def _torch_bn(torch, x, params, state, tag, training):
    rm = torch.tensor(state[f"{tag}.running_mean"])
    rv = torch.tensor(state[f"{tag}.running_var"])
    y = torch.nn.functional.batch_norm(
        torch.tensor(x), rm, rv, torch.tensor(params[f"{tag}.gamma"]),
        torch.tensor(params[f"{tag}.beta"]), training=training, momentum=MOMENTUM, eps=EPS,
    )
    return y.numpy(), rm.numpy(), rv.numpy()


def test_train_mode_matches_torch_including_running_stats():
    torch = pytest.importorskip("torch")
    g = _bn_graph(training=True)
    assert len(g.updates) == 4
    prog = compile_graph(g, title="bn_train_vs_torch")
    r, params, state = _bn_setup(8)
    prog.bind_params(params, state)
    for step, n in enumerate((6, 3)):  # two steps: the second starts from updated stats
        feeds = {"x_img": _draw_x(r, IMG, n), "x_vec": _draw_x(r, VEC, n)}
        expect = {k: v.copy() for k, v in state.items()}
        ref_out, ref_upd, _ = run_reference(g, feeds, params, expect)
        out = prog(feeds)
        for tag in ("img", "vec"):
            y, rm, rv = _torch_bn(torch, feeds[f"x_{tag}"], params, expect, tag, True)
            np.testing.assert_allclose(out[f"y_{tag}"], y, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(state[f"{tag}.running_mean"], rm, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(state[f"{tag}.running_var"], rv, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(ref_out[f"y_{tag}"], y, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(ref_upd[f"{tag}.running_var"], rv, rtol=1e-6)
        assert step < 2


def test_eval_mode_matches_torch_and_fuses():
    torch = pytest.importorskip("torch")
    g = _bn_graph(training=False)
    assert not g.updates and not g.nodes_by_op("batch_norm_train")
    prog = compile_graph(g, title="bn_eval_vs_torch")
    planned = prog.graph
    # elementwise ops only: x's whole normalisation is one fused loop per input (the [C]
    # scale is a separate tiny kernel, or joins the loop for a 2-D input)
    ops = {planned.op_of(n) for n in planned.nodes()}
    assert ops == {"input", "param", "state", "reshape", "fused"}
    big = [n for n in planned.nodes_by_op("fused") if planned.type_of(Value(n)).rank > 1]
    assert len(big) == 2
    r, params, state = _bn_setup(9)
    before = {k: v.copy() for k, v in state.items()}
    prog.bind_params(params, state)
    feeds = {"x_img": _draw_x(r, IMG, 5), "x_vec": _draw_x(r, VEC, 5)}
    out = prog(feeds)
    ref_out = run_reference(g, feeds, params, state)[0]
    for tag in ("img", "vec"):
        y, _, _ = _torch_bn(torch, feeds[f"x_{tag}"], params, state, tag, False)
        np.testing.assert_allclose(out[f"y_{tag}"], y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ref_out[f"y_{tag}"], y, rtol=1e-5, atol=1e-5)
    for k in state:
        np.testing.assert_array_equal(state[k], before[k])  # eval mode updates nothing


# ----------------------------------------------------------------------- MLP training step


def _bn_mlp() -> Graph:
    """x [N, 2, 3, 3] -> BN2d -> flatten -> dense -> BN1d -> relu -> dense -> cross-entropy."""
    g = Graph()
    x = g.input("x", T("N", 2, 3, 3))
    labels = g.input("labels", T("N", dtype="int64"))

    def bn(h, name, c):
        g.provenance.layer = name
        gamma = g.param(f"{name}.gamma", T(c), init="ones")
        beta = g.param(f"{name}.beta", T(c), init="zeros")
        rm = g.state(f"{name}.running_mean", T(c), init="zeros")
        rv = g.state(f"{name}.running_var", T(c), init="ones")
        return build_batch_norm(g, h, gamma, beta, rm, rv, training=True, momentum=MOMENTUM, eps=EPS)

    h = g.op("reshape", bn(x, "bn_in", 2), shape=("N", 18))
    g.provenance.layer = "dense_1"
    h = g.op("add", g.op("matmul", h, g.param("w1", T(18, 8))), g.param("b1", T(8)))
    h = g.op("relu", bn(h, "bn_1", 8))
    g.provenance.layer = "dense_2"
    logits = g.op("add", g.op("matmul", h, g.param("w2", T(8, 3))), g.param("b2", T(3)))
    g.provenance.layer = "loss"
    g.outputs["loss"] = g.op("softmax_cross_entropy", logits, labels)
    g.provenance.layer = None
    g.meta["optimizer"] = {"type": "momentum", "lr": 0.1, "momentum": 0.9}
    return g


def test_mlp_with_batch_norm_compiled_step_matches_reference():
    g = _bn_mlp()
    r = rng(10)
    params = {}
    for name, nid in sorted(g.named("param").items()):
        shape = g.type_of(Value(nid)).shape
        base = 1.0 if name.endswith("gamma") else 0.0
        params[name] = (base + 0.5 * r.standard_normal(shape)).astype(np.float32)
    trained = autodiff(infer_shapes(g))
    state = {}
    for name, nid in sorted(trained.named("state").items()):
        shape = trained.type_of(Value(nid)).shape
        state[name] = (np.ones(shape) if name.endswith("running_var") else np.zeros(shape)).astype(np.float32)
    n = 7
    feeds = {
        "x": _draw_x(r, ("N", 2, 3, 3), n),
        "labels": r.integers(0, 3, size=n).astype(np.int64),
        "lr": np.asarray(0.1, np.float32),
    }
    ref_out, ref_upd, _ = run_reference(trained, feeds, params, state)
    # every param, the optimiser's velocities and the four running statistics are updated
    assert set(ref_upd) == set(params) | set(state)
    assert {k for k in state if "running" in k} == {
        f"{b}.running_{s}" for b in ("bn_in", "bn_1") for s in ("mean", "var")
    }

    prog = compile_graph(g, training=True, title="bn_mlp_step")
    planned = prog.graph
    assert len(planned.nodes_by_op("batch_norm_train_grad")) == 2
    p_run = {k: v.copy() for k, v in params.items()}
    s_run = {k: v.copy() for k, v in state.items()}
    prog.bind_params(p_run, s_run)
    out = prog(feeds)
    np.testing.assert_allclose(out["loss"].reshape(()), ref_out["loss"], rtol=1e-5)
    for k, v in ref_upd.items():
        got = p_run[k] if k in p_run else s_run[k]
        np.testing.assert_allclose(got, v, rtol=1e-4, atol=1e-6, err_msg=k)
    for k, before in params.items():
        if k in ("b1", "bn_in.beta"):
            # a constant shift before bn_1 (b1, and bn_in's beta through the linear layer):
            # bn_1's batch mean cancels it, so its gradient is zero
            np.testing.assert_allclose(p_run[k], before, atol=1e-6)
        else:
            assert not np.allclose(p_run[k], before), f"{k} did not train"
    # the running statistics moved towards the batch's (unbiased) statistics
    x64 = feeds["x"].astype(np.float64)
    want_rv = 0.9 + 0.1 * x64.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(s_run["bn_in.running_var"], want_rv, rtol=1e-5)
    np.testing.assert_allclose(s_run["bn_in.running_mean"], 0.1 * x64.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------- shapes and errors


def test_infer_symbolic():
    assert infer("batch_norm_train", _types(VEC)) == [T("N", 4), T(4), T(4)]
    assert infer("batch_norm_train", _types(IMG, "float64"), eps=1e-3) == [
        T(*IMG, dtype="float64"), T(3, dtype="float64"), T(3, dtype="float64")]
    assert infer("batch_norm_train", [T("N", "C", "H", "W"), T("C"), T("C")])[1] == T("C")
    c = T(3)
    assert infer("batch_norm_train_grad", [T(*IMG), T(*IMG), c, c, c]) == [T(*IMG), c, c]
    assert count_dims(T(*IMG)) == ("N", 5, 4)
    assert count_dims(T(*VEC)) == ("N",)


def test_unbiased_variance_with_a_symbolic_count():
    g = Graph()
    x = g.input("x", T("N", 2, 2, 3))
    nid = g.apply("batch_norm_train", [x, g.const(np.ones(2)), g.const(np.zeros(2))])
    g.outputs["biased"] = Value(nid, 2)
    g.outputs["unbiased"] = unbiased_variance(g, Value(nid, 2), count_dims(g.type_of(x)))
    xv = _draw_x(rng(11), ("N", 2, 2, 3), 3)
    out = run_reference(g, {"x": xv}, {}, {})[0]
    np.testing.assert_allclose(out["unbiased"], out["biased"] * 18 / 17, rtol=1e-6)
    np.testing.assert_allclose(out["unbiased"], xv.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)


@pytest.mark.parametrize(
    "op,types,attrs,match",
    [
        ("batch_norm_train", [T("N", 4), T(3), T(4)], {}, r"gamma has shape \[3\] but x .* 4 channels"),
        ("batch_norm_train", [T("N", 3, 5, 4), T(3), T(5)], {}, r"beta has shape \[5\]"),
        ("batch_norm_train", [T(4), T(4), T(4)], {}, "rank >= 2"),
        ("batch_norm_train", [T("N", 4, dtype="int64"), T(4), T(4)], {}, "expects a float tensor"),
        ("batch_norm_train", [T("N", 4), T(4, dtype="float64"), T(4)], {}, "gamma is float64"),
        ("batch_norm_train", [T("N", 4), T(4), T(4)], {"eps": 0.0}, "eps must be > 0"),
        ("batch_norm_train_grad", [T("N", 5), T("N", 4), T(4), T(4), T(4)], {}, "does not match x"),
        ("batch_norm_train_grad", [T("N", 4), T("N", 4), T(4), T(4), T(2)], {}, "batch_var has shape"),
    ],
)
def test_infer_rejects_bad_inputs(op, types, attrs, match):
    with pytest.raises(ShapeError, match=match):
        infer(op, types, **attrs)


def test_build_batch_norm_rejects_bad_inputs():
    g = Graph()
    x = g.input("x", T("N", 3, 2, 2))
    gamma, beta = g.param("gamma", T(3)), g.param("beta", T(3))
    rm, rv = g.state("rm", T(3)), g.state("rv", T(4))
    with pytest.raises(ShapeError, match=r"running_var has shape \[4\] but x .* 3 channels"):
        build_batch_norm(g, x, gamma, beta, rm, rv, training=False, momentum=0.1, eps=1e-5)
    good_rv = g.state("rv3", T(3))
    with pytest.raises(ValueError, match="momentum must be in"):
        build_batch_norm(g, x, gamma, beta, rm, good_rv, training=True, momentum=1.5, eps=1e-5)
    with pytest.raises(ValueError, match="running_mean must be a state node"):
        build_batch_norm(g, x, gamma, beta, g.input("m", T(3)), good_rv, training=True,
                         momentum=0.1, eps=1e-5)
    with pytest.raises(ShapeError, match="gamma has shape"):
        build_batch_norm(g, x, g.param("g4", T(4)), beta, rm, good_rv, training=True,
                         momentum=0.1, eps=1e-5)
