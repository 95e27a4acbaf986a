"""conv2d and its backward ops (graphdl/ops/conv.py).

Compile budget: the three kernels take runtime ints for stride/padding/dilation/groups, so
each compiles once (float32); most configurations call them directly through the kernel
library, and a few go through `compile_single` (one generated step each) to test the
emitters, the optional bias input and epilogue fusion.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import T, check_kernel, gradcheck, infer, rng

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph
from graphdl.ops.conv import conv_flops, conv_out_size, resolve_padding
from graphdl.ops.registry import ShapeError, get_op
from graphdl.passes.autodiff import build_gradients

KERNEL_COVERED = {"conv2d", "conv2d_grad_input", "conv2d_grad_weight"}
GRAD_COVERED = {"conv2d", "conv2d_grad_input", "conv2d_grad_weight"}

# N, C, H, W, F, KH, KW, stride, padding (t, b, l, r), dilation, groups, bias. The kernels
# pick their path from the shapes (conv.py): "wide" rows for stride 1 with few filters per
# group, else row segments; the weight gradient runs transposed from 16 filters per group.
CASES = [
    (2, 3, 9, 8, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
    (3, 1, 12, 12, 6, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), 1, True),  # LeNet conv1-like
    (2, 4, 9, 8, 6, 3, 2, (2, 2), (1, 0, 2, 1), (1, 1), 2, False),  # stride 2, groups 2
    (2, 4, 11, 10, 4, 3, 3, (1, 2), (2, 2, 1, 1), (2, 2), 4, True),  # depthwise, dilation 2
    (2, 3, 10, 9, 5, 3, 3, (3, 2), (0, 0, 0, 0), (2, 1), 1, False),  # stride 3, unused rows
    (1, 2, 5, 5, 3, 5, 5, (1, 1), (0, 0, 0, 0), (1, 1), 1, False),  # one output pixel
    (2, 4, 7, 7, 8, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1), 4, True),  # 1x1, depthwise x2
    (2, 2, 6, 7, 2, 2, 4, (1, 1), (0, 1, 2, 1), (1, 1), 1, True),  # even kernel, asymmetric pad
    (2, 3, 8, 9, 16, 3, 5, (1, 1), (1, 1, 2, 2), (1, 1), 1, True),  # segments, transposed
    (2, 3, 10, 10, 4, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 1, True),  # wide rows, dilated
    (2, 2, 9, 8, 12, 3, 3, (2, 1), (1, 1, 1, 1), (1, 2), 1, False),  # row stride only
    (2, 2, 7, 6, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, False),  # wide, transposed
    (1, 4, 6, 6, 32, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 2, True),  # transposed, groups
    (1, 1, 1, 3, 1, 1, 1, (1, 30), (0, 0, 10, 0), (1, 1), 1, False),  # window all padding
]
IDS = [f"case{i}" for i in range(len(CASES))]


def _attrs(case) -> dict:
    *_, s, p, d, groups, _ = case
    return {"stride": s, "padding": p, "dilation": d, "groups": groups}


def _data(case, seed=0, dtype=np.float32):
    n, c, h, w, f, kh, kw, s, p, d, groups, _ = case
    r = rng(seed)
    x = r.standard_normal((n, c, h, w)).astype(dtype)
    wt = r.standard_normal((f, c // groups, kh, kw)).astype(dtype)
    b = r.standard_normal(f).astype(dtype)
    oh = conv_out_size(h, kh, s[0], d[0], p[0], p[1])
    ow = conv_out_size(w, kw, s[1], d[1], p[2], p[3])
    gy = r.standard_normal((n, f, oh, ow)).astype(dtype)
    return x, wt, b, gy


def _ref(op, attrs, *xs):
    opdef = get_op(op)
    return opdef.reference(opdef.check_attrs(attrs), *xs)


def _kernel_args(attrs):
    (sh, sw), (pt, _, pl, _), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    return sh, sw, pt, pl, dh, dw, attrs["groups"]


@pytest.fixture(scope="module")
def K():
    from graphdl.backends.cpu.library import load_library

    return load_library()


# ----------------------------------------------------------------------- kernels


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_kernels_match_reference(K, case):
    x, w, b, gy = _data(case)
    attrs = _attrs(case)
    bias = case[-1]
    args = _kernel_args(attrs)
    y = np.full(gy.shape, np.nan, np.float32)
    K.conv2d_fwd(x, w, b, y, *args, bias)
    want = _ref("conv2d", attrs, x, w, *([b] if bias else []))
    assert want.dtype == np.float32
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)

    gx = np.full(x.shape, np.nan, np.float32)
    K.conv2d_bwd_input(gy, w, gx, *args)
    want = _ref("conv2d_grad_input", {**attrs, "input_size": x.shape[2:]}, gy, w)
    np.testing.assert_allclose(gx, want, rtol=1e-5, atol=1e-5)

    gw = np.full(w.shape, np.nan, np.float32)
    K.conv2d_bwd_weight(x, gy, gw, *args)
    want = _ref("conv2d_grad_weight", {**attrs, "kernel_size": w.shape[2:]}, x, gy)
    np.testing.assert_allclose(gw, want, rtol=1e-5, atol=1e-5)


# float32, stride 1, dilation 1, one group: the vector kernels (conv2d_fwd_vec,
# conv2d_bwd_weight_vec). Filter counts around the tile sizes (1, 2, 4, 8, 16 rows; others padded with zero rows
# or split), asymmetric padding, batches that do not divide into the blocks.
VECTOR_CASES = [c for c in CASES if c[7] == (1, 1) and c[9] == (1, 1) and c[10] == 1] + [
    (3, 1, 28, 28, 6, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), 1, True),  # LeNet conv1
    (5, 6, 14, 14, 16, 5, 5, (1, 1), (0, 0, 0, 0), (1, 1), 1, True),  # LeNet conv2
    (2, 5, 7, 9, 20, 3, 3, (1, 1), (1, 0, 2, 1), (1, 1), 1, False),
    (17, 3, 6, 11, 33, 1, 3, (1, 1), (0, 1, 1, 0), (1, 1), 1, True),
    (1, 7, 5, 5, 3, 5, 5, (1, 1), (0, 0, 0, 0), (1, 1), 1, False),  # one output pixel
    (2, 17, 4, 6, 1, 2, 2, (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
]


@pytest.mark.parametrize("case", VECTOR_CASES, ids=[f"v{i}" for i in range(len(VECTOR_CASES))])
def test_vector_kernels_match_reference(K, case):
    x, w, b, gy = _data(case)
    attrs = _attrs(case)
    bias = case[-1]
    pt, pl = attrs["padding"][0], attrs["padding"][2]
    y = np.full(gy.shape, np.nan, np.float32)
    K.conv2d_fwd_vec(x, w, b, y, pt, pl, bias, False)
    want = _ref("conv2d", attrs, x, w, *([b] if bias else []))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    relu = np.full(gy.shape, np.nan, np.float32)  # relu applied by the kernel (an epilogue)
    K.conv2d_fwd_vec(x, w, b, relu, pt, pl, bias, True)
    np.testing.assert_array_equal(relu, np.where(y > 0, y, y * 0))

    gw = np.full(w.shape, np.nan, np.float32)
    K.conv2d_bwd_weight_vec(x, gy, gw, pt, pl)
    want = _ref("conv2d_grad_weight", {**attrs, "kernel_size": w.shape[2:]}, x, gy)
    np.testing.assert_allclose(gw, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [1, 37])
def test_vector_kernels_give_the_same_bits_on_any_number_of_threads(K, n):
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here")
    case = (n, 3, 10, 9, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, True)
    x, w, b, gy = _data(case, seed=4)
    runs = []
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            y, gw = np.empty(gy.shape, np.float32), np.empty_like(w)
            K.conv2d_fwd_vec(x, w, b, y, 1, 1, True, True)
            K.conv2d_bwd_weight_vec(x, gy, gw, 1, 1)
            runs.append((y, gw))
    finally:
        numba.set_num_threads(before)
    for one, two in zip(*runs):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("n", [1, 5, 37])
def test_kernels_give_the_same_bits_on_any_number_of_threads(K, n):
    """The conv and max-pool kernels split the batch into blocks run with prange; the
    weight gradient adds the blocks' sums in block order, so one thread or two give
    identical results (a resumed run on another machine trains the same), and batches that
    do not divide into the blocks still match the reference."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here")
    case = (n, 3, 10, 9, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, True)
    x, w, b, gy = _data(case, seed=3)
    attrs = _attrs(case)
    args = _kernel_args(attrs)
    pooled = np.empty((n, 16, 5, 4), np.float32)
    runs = []
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            y = np.empty(gy.shape, np.float32)
            gx = np.empty(x.shape, np.float32)
            gw = np.empty(w.shape, np.float32)
            K.conv2d_fwd(x, w, b, y, *args, True)
            K.conv2d_bwd_input(gy, w, gx, *args)
            K.conv2d_bwd_weight(x, gy, gw, *args)
            K.max_pool2d_fwd(y, pooled, 2, 2, 2, 2, 0, 0)
            gpool = np.empty(y.shape, np.float32)
            K.max_pool2d_bwd(pooled, y, gpool, 2, 2, 2, 2, 0, 0, False)
            runs.append((y, gx, gw, pooled.copy(), gpool))
    finally:
        numba.set_num_threads(before)
    for one, two in zip(*runs):
        np.testing.assert_array_equal(one, two)
    want = _ref("conv2d_grad_weight", {**attrs, "kernel_size": w.shape[2:]}, x, gy)
    np.testing.assert_allclose(runs[1][2], want, rtol=1e-4, atol=1e-4)
    want = _ref("conv2d", attrs, x, w, b)
    np.testing.assert_allclose(runs[1][0], want, rtol=1e-5, atol=1e-5)
    want = _ref("max_pool2d", {"kernel": (2, 2)}, want)
    np.testing.assert_allclose(runs[1][3], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_matches_torch(case):
    torch = pytest.importorskip("torch")
    fn = torch.nn.functional
    x, w, b, gy = _data(case, seed=1, dtype=np.float64)
    attrs = _attrs(case)
    bias = case[-1]
    pt, pb, pl, pr = attrs["padding"]
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_() if bias else None
    yt = fn.conv2d(fn.pad(xt, (pl, pr, pt, pb)), wt, bt, stride=attrs["stride"],
                   dilation=attrs["dilation"], groups=attrs["groups"])
    yt.backward(torch.from_numpy(gy))
    y = _ref("conv2d", attrs, x, w, *([b] if bias else []))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    gx = _ref("conv2d_grad_input", {**attrs, "input_size": x.shape[2:]}, gy, w)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    gw = _ref("conv2d_grad_weight", {**attrs, "kernel_size": w.shape[2:]}, x, gy)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    if bias:
        np.testing.assert_allclose(gy.sum(axis=(0, 2, 3)), bt.grad.numpy(), rtol=1e-10)


# compiled through the graph (emitters, symbolic N): the backward ops here, conv2d itself
# with and without its bias input in the epilogue test below and in the training graph


@pytest.mark.parametrize("n", [1, 3])
def test_compiled_backward_ops(n):
    case = (n,) + CASES[2][1:]  # stride 2, groups 2, asymmetric padding
    _, c, h, wd, _, kh, kw, *_ = case
    attrs = _attrs(case)
    x, w, _, gy = _data(case, seed=n)
    xt, wt, gt = T("N", c, h, wd), T(*w.shape), T("N", *gy.shape[1:])
    check_kernel("conv2d_grad_input", [gt, wt], [gy, w], {**attrs, "input_size": (h, wd)},
                 rtol=1e-5, atol=1e-5)
    check_kernel("conv2d_grad_weight", [xt, gt], [x, gy], {**attrs, "kernel_size": (kh, kw)},
                 rtol=1e-5, atol=1e-4)


def _conv_relu_program(case, title: str):
    """conv2d(x, w, b) and conv2d(x, w) + b, each then relu (outputs y1, y2), compiled."""
    _, c, h, wd, f, kh, kw, *_ = case
    attrs = _attrs(case)
    g = Graph()
    x = g.input("x", T("N", c, h, wd))
    w = g.input("w", T(f, c, kh, kw))
    b = g.input("b", T(f))
    g.outputs["y1"] = g.op("relu", g.op("conv2d", x, w, b, **attrs))  # bias inside the conv
    g.outputs["y2"] = g.op("relu", g.op("add", g.op("conv2d", x, w, **attrs),
                                        g.op("reshape", b, shape=(f, 1, 1))))
    return compile_graph(g, title=title)


def _check_conv_relu_outputs(prog, case, seed: int) -> None:
    prog.bind_params({}, {})
    xv, wv, bv, _ = _data(case, seed=seed)
    out = prog({"x": xv, "w": wv, "b": bv})
    want = np.maximum(_ref("conv2d", _attrs(case), xv, wv, bv), 0)
    np.testing.assert_allclose(out["y1"], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["y2"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1, 3])
def test_bias_and_relu_fuse_into_the_conv_epilogue(n):
    """conv2d(x, w, b) and conv2d(x, w) + b, each then relu: two epilogue kernels."""
    case = (n,) + CASES[1][1:]
    prog = _conv_relu_program(case, "test_conv_epilogue")  # same source: compiled once
    planned = prog.graph
    fused = [planned.node(n) for n in planned.nodes_by_op("fused")]
    assert len(fused) == 2 and all(nd["attrs"]["kind"] == "epilogue" for nd in fused)
    assert all(nd["attrs"]["members"][0]["op"] == "conv2d" for nd in fused)
    assert not planned.nodes_by_op("conv2d") and not planned.nodes_by_op("relu")
    _check_conv_relu_outputs(prog, case, seed=3)


def test_the_vector_kernel_applies_a_relu_epilogue_itself():
    """conv2d + relu in float32, stride 1 (LeNet's): one conv2d_fwd_vec call with relu on,
    no loop after it; a bias-add epilogue keeps its loop."""
    case = (3,) + VECTOR_CASES[-5][1:]  # LeNet conv2
    prog = _conv_relu_program(case, "test_conv_relu_in_kernel")
    calls = [line for line in prog.source.splitlines() if "conv2d_fwd_vec(" in line]
    assert len(calls) == 2
    assert sum(line.endswith("np.bool_(True), np.bool_(True))") for line in calls) == 1
    assert prog.source.count("loop_") >= 1  # the add + relu group's loop
    _check_conv_relu_outputs(prog, case, seed=5)


def test_training_graph_gradients_compiled_match_reference():
    """A conv layer's parameter gradients, compiled (fused, planned) vs the reference."""
    g = Graph()
    x = g.input("x", T("N", 2, 10, 10))
    w, b = g.param("w", T(4, 2, 3, 3)), g.param("b", T(4))
    y = g.op("relu", g.op("conv2d", x, w, b, padding=(1, 1, 1, 1), stride=(2, 2)))
    loss = g.op("sum", g.op("square", g.op("global_avg_pool2d", y)))
    g.outputs["loss"] = loss
    for k, v in build_gradients(g, loss, [w.node, b.node]).items():
        g.outputs[f"grad_{g.node(k)['name']}"] = v
    prog = compile_graph(g, title="test_conv_layer_grads")
    r = rng(4)
    params = {"w": r.standard_normal((4, 2, 3, 3)).astype(np.float32),
              "b": r.standard_normal(4).astype(np.float32)}
    prog.bind_params(params, {})
    xv = r.standard_normal((3, 2, 10, 10)).astype(np.float32)
    got = prog({"x": xv})
    want, _, _ = run_reference(g, {"x": xv}, params)
    for k in ("loss", "grad_w", "grad_b"):
        np.testing.assert_allclose(got[k].reshape(want[k].shape), want[k], rtol=2e-4, atol=2e-4,
                                   err_msg=k)


# ----------------------------------------------------------------------- gradients

GRAD_CASES = [
    (2, 2, 5, 4, 2, 3, 2, (2, 1), (1, 1, 0, 1), (1, 1), 1, True),
    (1, 4, 5, 5, 2, 2, 2, (1, 1), (0, 0, 1, 1), (2, 1), 2, False),
    (2, 2, 4, 4, 4, 3, 3, (1, 2), (1, 1, 1, 1), (1, 1), 2, True),  # depthwise, 2 per channel
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=["stride", "dilation_groups", "depthwise"])
def test_conv2d_grad(case):
    x, w, b, _ = _data(case, seed=5, dtype=np.float64)
    inputs = [x, w] + ([b] if case[-1] else [])
    gradcheck("conv2d", inputs, _attrs(case))


@pytest.mark.parametrize("case", GRAD_CASES, ids=["stride", "dilation_groups", "depthwise"])
def test_conv2d_grad_input_grad(case):
    x, w, _, gy = _data(case, seed=6, dtype=np.float64)
    gradcheck("conv2d_grad_input", [gy, w], {**_attrs(case), "input_size": x.shape[2:]})


@pytest.mark.parametrize("case", GRAD_CASES, ids=["stride", "dilation_groups", "depthwise"])
def test_conv2d_grad_weight_grad(case):
    x, w, _, gy = _data(case, seed=7, dtype=np.float64)
    gradcheck("conv2d_grad_weight", [x, gy], {**_attrs(case), "kernel_size": w.shape[2:]})


def test_second_order_graph_stays_in_the_conv_family():
    g = Graph()
    x = g.param("x", T(2, 2, 5, 5, dtype="float64"))
    w = g.param("w", T(3, 2, 3, 3, dtype="float64"))
    y = g.op("conv2d", x, w, padding=(1, 1, 1, 1))
    loss = g.op("sum", g.op("square", y))
    grads = build_gradients(g, loss, [x.node, w.node])
    ops = {g.op_of(n) for n in g.nodes()}
    assert {"conv2d_grad_input", "conv2d_grad_weight"} <= ops
    # differentiate the gradient norm again: the rules of the grad ops build conv2d ops
    gn = g.op("add", g.op("sum", g.op("square", grads[x.node])), g.op("sum", g.op("square", grads[w.node])))
    before = len(g.nodes_by_op("conv2d"))
    build_gradients(g, gn, [x.node, w.node])
    assert len(g.nodes_by_op("conv2d")) > before


# ----------------------------------------------------------------------- shapes


def test_infer_symbolic():
    assert infer("conv2d", [T("N", 1, 28, 28), T(6, 1, 5, 5), T(6)], padding=(2, 2, 2, 2)) == [
        T("N", 6, 28, 28)
    ]
    assert infer("conv2d", [T("N", 6, 14, 14), T(16, 6, 5, 5)]) == [T("N", 16, 10, 10)]
    assert infer("conv2d", [T("B", 8, 15, 16), T(8, 1, 3, 3)], stride=(2, 2), padding=(1, 1, 1, 1),
                 groups=8) == [T("B", 8, 8, 8)]
    assert infer("conv2d", [T("N", 4, 11, 10), T(4, 1, 3, 3)], dilation=(2, 2), groups=4) == [
        T("N", 4, 7, 6)
    ]
    assert infer("conv2d", [T("N", 2, 8, 8, dtype="float64"), T(3, 2, 3, 3, dtype="float64")]) == [
        T("N", 3, 6, 6, dtype="float64")
    ]
    # stride 2 with input 15 or 16 both give 8 rows: input_size disambiguates
    assert infer("conv2d_grad_input", [T("N", 8, 8, 8), T(8, 1, 3, 3)], stride=(2, 2),
                 padding=(1, 1, 1, 1), groups=8, input_size=(15, 16)) == [T("N", 8, 15, 16)]
    assert infer("conv2d_grad_weight", [T("N", 6, 14, 14), T("N", 16, 10, 10)],
                 kernel_size=(5, 5)) == [T(16, 6, 5, 5)]


@pytest.mark.parametrize(
    "op,types,attrs,match",
    [
        ("conv2d", [T("N", 64), T(6, 1, 5, 5)], {},
         r"conv2d expects \[C, H, W\] images; got \[64\] — "),
        ("conv2d", [T("N", 28, 28), T(6, 1, 5, 5)], {},
         r"got \[28, 28\] — add a channel axis: give the input the shape \[1, 28, 28\]"),
        ("conv2d", [T("N", 6, 14, 14), T(16, 3, 5, 5)], {},
         r"weight \[16, 3, 5, 5\] expects 3 input channels but the input \[6, 14, 14\] has 6"),
        ("conv2d", [T("N", 6, 14, 14), T(16, 2, 5, 5)], {"groups": 2},
         (r"weight \[16, 2, 5, 5\] with groups=2 expects 4 input channels \(2 per group\) but "
          r"the input \[6, 14, 14\] has 6")),
        ("conv2d", [T("N", 6, 14, 14), T(16, 2, 5, 5)], {"groups": 4},
         r"input channels \(6, input \[6, 14, 14\]\) are not divisible by groups=4"),
        ("conv2d", [T("N", 6, 14, 14), T(8, 2, 5, 5)], {"groups": 3},
         r"filters \(8\) are not divisible by groups=3"),
        ("conv2d", [T("N", 16, 4, 4), T(8, 16, 5, 5)], {},
         r"kernel 5x5 is larger than its 4x4 padded input \[16, 4, 4\]"),
        ("conv2d", [T("N", 16, 6, 6), T(8, 16, 3, 3)], {"dilation": (3, 3)},
         r"kernel 3x3 \(dilated to 7x7\) is larger than its 6x6"),
        ("conv2d", [T("N", 3, 8, 8), T(4, 3, 3, 3), T(3)], {}, r"bias must be float32\[4\]"),
        ("conv2d", [T("N", 3, 8, 8), T(4, 3, 3, 3, dtype="float64")], {}, "weight is float64"),
        ("conv2d", [T("N", 3, "H", 8), T(4, 3, 3, 3)], {}, "known number of height"),
        ("conv2d", [T("N", 3, 8, 8), T(4, 3, 3, 3)], {"stride": (0, 1)}, "stride must be >= 1"),
        ("conv2d", [T("N", 3, 8, 8), T(4, 3, 3, 3)], {"padding": (1, 1)}, "padding must be four ints"),
        ("conv2d", [T("N", 3, 8, 8)], {}, r"takes \(x, w\) or \(x, w, b\)"),
        ("conv2d_grad_input", [T("N", 4, 5, 5), T(4, 3, 3, 3)], {"input_size": (8, 8)},
         r"output gradient \[4, 5, 5\] does not match the convolution's output \[4, 6, 6\]"),
        ("conv2d_grad_weight", [T("N", 3, 8, 8), T("N", 4, 6, 5)], {"kernel_size": (3, 3)},
         "does not match"),
    ],
)
def test_infer_rejects_bad_inputs(op, types, attrs, match):
    with pytest.raises(ShapeError, match=match):
        infer(op, types, **attrs)


def test_rank_error_has_help():
    with pytest.raises(ShapeError) as e:
        infer("conv2d", [T("N", 64), T(6, 1, 5, 5)])
    assert e.value.help and "[C, H, W]" in e.value.help


def test_conv_flops():
    x, w, b, y = T("N", 6, 14, 14), T(16, 6, 5, 5), T(16), T("N", 16, 10, 10)
    macs = 64 * 16 * 100 * 6 * 25
    assert conv_flops("conv2d", [x, w], y, {"N": 64}) == 2 * macs
    assert conv_flops("conv2d", [x, w, b], y, {"N": 64}) == 2 * macs + 64 * 1600
    assert conv_flops("conv2d_grad_input", [y, w], x, {"N": 64}) == 2 * macs
    assert conv_flops("conv2d_grad_weight", [x, y], w, {"N": 64}) == 2 * macs
    dw = T(8, 1, 3, 3)  # depthwise: C/groups = 1
    assert conv_flops("conv2d", [T("N", 8, 5, 5), dw], T("N", 8, 3, 3), {"N": 2}) == 2 * 2 * 8 * 9 * 9


# ----------------------------------------------------------------------- padding


@pytest.mark.parametrize(
    "padding,kernel,stride,dilation,size,want",
    [
        ("valid", 5, 1, 1, None, (0, 0, 0, 0)),
        (2, 5, 1, 1, None, (2, 2, 2, 2)),
        ((1, 2), 3, 1, 1, None, (1, 1, 2, 2)),
        ((1, 0, 2, 3), 3, 1, 1, None, (1, 0, 2, 3)),
        ("same", 5, 1, 1, None, (2, 2, 2, 2)),
        ("same", (4, 3), 1, 1, None, (1, 2, 1, 1)),  # odd total: the extra cell after
        ("same", 3, 1, 2, None, (2, 2, 2, 2)),
        ("same", 3, 2, 1, (16, 15), (0, 1, 1, 1)),  # TensorFlow: out = ceil(in / stride)
        ("same", 1, 2, 1, (16, 16), (0, 0, 0, 0)),
        ("same", (5, 4), (3, 2), 1, (10, 9), (2, 2, 1, 2)),
    ],
)
def test_resolve_padding(padding, kernel, stride, dilation, size, want):
    got = resolve_padding(padding, kernel, stride, dilation, input_size=size)
    assert got == want
    if padding == "same" and size is not None:
        (kh, kw), (sh, sw) = [(v, v) if isinstance(v, int) else v for v in (kernel, stride)]
        assert conv_out_size(size[0], kh, sh, dilation, got[0], got[1]) == -(-size[0] // sh)
        assert conv_out_size(size[1], kw, sw, dilation, got[2], got[3]) == -(-size[1] // sw)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("kernel,dilation", [((5, 5), 1), ((4, 3), 1), ((2, 4), (2, 3))])
def test_same_padding_matches_torch(kernel, dilation):
    torch = pytest.importorskip("torch")
    x, w = rng(8).standard_normal((1, 2, 9, 8)), rng(9).standard_normal((3, 2) + kernel)
    pad = resolve_padding("same", kernel, 1, dilation)
    d = (dilation, dilation) if isinstance(dilation, int) else dilation
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding="same",
                                      dilation=d).numpy()
    got = _ref("conv2d", {"padding": pad, "dilation": d}, x, w)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_resolve_padding_errors():
    with pytest.raises(ShapeError, match="depends on the input size"):
        resolve_padding("same", 3, 2, 1)
    with pytest.raises(ShapeError, match="'same' or 'valid'"):
        resolve_padding("full", 3)
    with pytest.raises(ShapeError, match="must not be negative"):
        resolve_padding(-1, 3)
