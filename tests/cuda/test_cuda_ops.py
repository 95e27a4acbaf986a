"""Every op with a CUDA kernel, on the CUDA backend, against its NumPy reference.

Runs on a real GPU when there is one and under the CUDA simulator otherwise (see
conftest.py). Shapes are tiny but still cross the simulator's tiles and blocks: several
matmul tiles with ragged edges, grid-stride loops over two blocks, reduction trees with
several levels. `test_every_op_is_covered_or_declared_unsupported` keeps the list honest:
a new op fails it until it has a CUDA kernel and a test here (layer norm's are in
test_cuda_layer_norm.py), or is declared unsupported (and then must be refused at compile
time).
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_helpers import T, build_single, check_kernel, compile_single, randn, reference
from graph_builders import N_STATE, STEPPED, update_graph

from graphdl.backends.reference import run_reference
from graphdl.errors import GraphdlError
from graphdl.ir.graph import Graph
from graphdl.ops.nn import dropout_mask_reference
from graphdl.ops.registry import all_ops
from graphdl.passes.pipeline import PassContext

# ---------------------------------------------------------------------------- elementwise

UNARY = {
    "neg": {}, "exp": {}, "log": {}, "sqrt": {}, "square": {}, "pow": {"exponent": 2.5},
    "relu": {}, "leaky_relu": {"alpha": 0.1}, "elu": {"alpha": 0.7}, "sigmoid": {}, "tanh": {},
    "gelu": {}, "softplus": {}, "silu": {}, "mul_scalar": {"c": 0.25}, "add_scalar": {"c": -1.5},
}
POSITIVE = {"log", "sqrt", "pow"}
BINARY = {
    "add": {}, "sub": {}, "mul": {}, "div": {}, "maximum": {}, "minimum": {},
    "relu_grad": {}, "leaky_relu_grad": {"alpha": 0.2}, "elu_grad": {"alpha": 1.3},
    "sigmoid_grad": {}, "tanh_grad": {}, "gelu_grad": {}, "softplus_grad": {}, "silu_grad": {},
}
COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")


def _values(r, shape, positive=False):
    x = r.standard_normal(shape) * 2
    if positive:
        x = np.abs(x) + 0.1
    return x.astype(np.float32)


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(op):
    r = np.random.default_rng(1)
    x = _values(r, (3, 4), op in POSITIVE)
    check_kernel(op, [T("N", 4)], [x], UNARY[op], rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_broadcast(op):
    """[N, 4] with [4]: the generated loop's broadcasting (multi-index) path."""
    r = np.random.default_rng(2)
    x = _values(r, (3, 4))
    y = _values(r, (4,), op == "div")
    check_kernel(op, [T("N", 4), T(4)], [x, y], BINARY[op], rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("op", COMPARE)
def test_comparison(op):
    r = np.random.default_rng(3)
    x = np.round(_values(r, (3, 4)))
    y = np.round(_values(r, (3, 4)))  # rounded: some entries are equal
    (out,) = check_kernel(op, [T("N", 4), T("N", 4)], [x, y])
    assert out.dtype == np.bool_


def test_where_and_rank0_input():
    r = np.random.default_rng(4)
    c = r.random((2, 3, 4)) < 0.5
    x = _values(r, (2, 3, 4))
    y = np.asarray(_values(r, ()))
    check_kernel("where", [T("N", 3, 4, dtype="bool"), T("N", 3, 4), T()], [c, x, y])


def test_broadcast_3d_and_broadcast_to():
    r = np.random.default_rng(5)
    check_kernel("add", [T("N", 1, 4), T(3, 1)], [_values(r, (2, 1, 4)), _values(r, (3, 1))])
    check_kernel("broadcast_to", [T(1, 4)], [_values(r, (1, 4))], {"shape": (3, 4)})


@pytest.mark.parametrize("dtype", ["float64", "int64", "bool"])
def test_cast(dtype):
    x = np.array([[-2.5, 0.0, 1.0, 3.7]], np.float32)
    (out,) = check_kernel("cast", [T("N", 4)], [x], {"dtype": dtype})
    assert out.dtype == np.dtype(dtype)


def test_mul_scalar_divides_by_a_symbolic_dim():
    x = _values(np.random.default_rng(6), (5, 4))
    check_kernel("mul_scalar", [T("N", 4)], [x], {"c": 3.0, "div": ("N",)})


# ---------------------------------------------------------------------------- reductions


@pytest.mark.parametrize("op", ["sum", "mean", "max"])
@pytest.mark.parametrize("axes,keepdims", [((1,), False), ((0, 2), True), (None, False), ((2,), False)])
def test_reduce(op, axes, keepdims):
    x = _values(np.random.default_rng(7), (3, 10, 5))
    check_kernel(op, [T("N", 10, 5)], [x], {"axes": axes, "keepdims": keepdims}, rtol=1e-5, atol=1e-5)


def test_max_propagates_nan():
    x = _values(np.random.default_rng(8), (2, 6))
    x[1, 3] = np.nan
    (out,) = check_kernel("max", [T("N", 6)], [x], {"axes": (1,)})
    assert np.isnan(out[1]) and np.isfinite(out[0])


# ---------------------------------------------------------------------------- matmul


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_2d_ragged_tiles(ta, tb):
    r = np.random.default_rng(9)
    m, k, n = 10, 20, 9  # several tiles in every dim, none of them full
    a = _values(r, (k, m) if ta else (m, k))
    b = _values(r, (n, k) if tb else (k, n))
    check_kernel("matmul", [T(*a.shape), T(*b.shape)], [a, b],
                 {"transpose_a": ta, "transpose_b": tb}, rtol=1e-4, atol=1e-5)


def test_matmul_batched():
    r = np.random.default_rng(10)
    a, b = _values(r, (2, 3, 5)), _values(r, (2, 5, 4))
    check_kernel("matmul", [T("N", 3, 5), T("N", 5, 4)], [a, b], rtol=1e-4, atol=1e-5)
    b2 = _values(r, (2, 4, 5))
    check_kernel("matmul", [T("N", 3, 5), T("N", 4, 5)], [a, b2], {"transpose_b": True},
                 rtol=1e-4, atol=1e-5)


def test_matmul_batched_with_shared_weight():
    r = np.random.default_rng(11)
    a, w = _values(r, (2, 3, 5)), _values(r, (5, 4))
    check_kernel("matmul", [T("N", 3, 5), T(5, 4)], [a, w], rtol=1e-4, atol=1e-5)
    at = _values(r, (2, 5, 3))
    check_kernel("matmul", [T("N", 5, 3), T(5, 4)], [at, w], {"transpose_a": True},
                 rtol=1e-4, atol=1e-5)


def test_matmul_rows():
    """a^T b summed over every leading axis: one GEMM over the rows of [N, 3, K] x [N, 3, M]."""
    r = np.random.default_rng(25)
    a, b = _values(r, (2, 3, 5)), _values(r, (2, 3, 4))
    check_kernel("matmul_rows", [T("N", 3, 5), T("N", 3, 4)], [a, b], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- loops
# (scan itself: tests/cuda/test_cuda_scan.py)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_seq_mask(dtype):
    lengths = np.array([3, 0, 1], np.int64)
    like = np.zeros((4, 3, 2), np.float32)
    (out,) = check_kernel("seq_mask", [T("N", dtype="int64"), T("T", "N", 2)], [lengths, like],
                          {"dtype": dtype})
    assert out.dtype == np.dtype(dtype) and out[:, :, 0].sum(axis=0).tolist() == [3, 0, 1]


@pytest.mark.parametrize("from_end", [True, False])
def test_truncate_mask(from_end):
    like = np.zeros((5, 2), np.float32)
    (out,) = check_kernel("truncate_mask", [T("T", 2)], [like], {"k": 2, "from_end": from_end})
    assert out.tolist() == ([0, 0, 0, 1, 1] if from_end else [1, 1, 0, 0, 0])


@pytest.mark.parametrize("from_end", [True, False])
def test_truncate_mask_per_sample(from_end):
    mask = np.zeros((4, 3, 1), np.float32)
    for n, length in enumerate([4, 1, 0]):
        mask[:length, n, 0] = 1
    check_kernel("truncate_mask", [T("T", "N", 1)], [mask],
                 {"k": 2, "from_end": from_end, "per_sample": True})


# ---------------------------------------------------------------------------- nn


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,axis", [(("N", 10), -1), (("N", 3, 4), 1)])
def test_softmax(op, shape, axis):
    x = _values(np.random.default_rng(12), (3,) + shape[1:]) * 3
    check_kernel(op, [T(*shape)], [x], {"axis": axis}, rtol=1e-5, atol=1e-6)


def test_softmax_huge_logits():
    x = np.zeros((2, 10), np.float32)
    x[0, :4] = [1000.0, 0.0, -1000.0, 999.0]
    x[1] = 80.0 * np.arange(10)
    (out,) = check_kernel("softmax", [T("N", 10)], [x], {"axis": -1}, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("op", ["softmax_grad", "log_softmax_grad"])
@pytest.mark.parametrize("shape,axis", [(("N", 10), -1), (("N", 3, 4), 1)])
def test_softmax_backward(op, shape, axis):
    r = np.random.default_rng(13)
    full = (3,) + shape[1:]
    g, x = _values(r, full), _values(r, full).astype(np.float64)
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    y = z / z.sum(axis=axis, keepdims=True)
    y = (np.log(y) if op == "log_softmax_grad" else y).astype(np.float32)
    check_kernel(op, [T(*shape), T(*shape)], [g, y], {"axis": axis}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 7, -3, 2**40 + 1])
def test_dropout_same_mask_as_the_cpu_kernel(seed):
    """The CPU kernel draws the reference's mask (tests/ops/test_nn.py); so must CUDA."""
    attrs = {"rate": 0.25, "salt": 3}
    x = np.random.default_rng(14).uniform(0.5, 1.5, size=(3, 16)).astype(np.float32)
    (out,) = check_kernel("dropout", [T("N", 16), T(dtype="int64")], [x, np.int64(seed)], attrs)
    keep = dropout_mask_reference(x.size, seed, 3, 0.25).reshape(x.shape)
    np.testing.assert_array_equal(out != 0, keep)


# ---------------------------------------------------------------------------- embedding


def test_add_positions_and_its_gradient():
    r = np.random.default_rng(17)
    x = _values(r, (3, 6, 4))
    table = _values(r, (5, 4))
    (out,) = check_kernel("add_positions", [T("N", "T", 4), T(5, 4)], [x, table])
    assert np.isnan(out[:, 5:]).all()  # past the table (as the CPU kernel)
    gy = _values(r, (3, 4, 4))
    check_kernel("add_positions_grad", [T("N", "T", 4)], [gy], {"rows": 5})


@pytest.mark.parametrize("padding_idx", [-1, 2])
def test_embedding_and_its_scatter_add_gradient(padding_idx):
    """Gather and scatter-add over grid-stride loops of several blocks; ids repeat (atomics
    meet on one row) and two fall outside the vocabulary (a NaN row forward, nothing
    backward: never another row)."""
    r = np.random.default_rng(16)
    ids = r.integers(0, 6, size=(5, 40)).astype(np.int64)
    ids[0, 0], ids[4, -1] = 6, -1
    w = _values(r, (6, 4))
    (out,) = check_kernel("embedding", [T("N", 40, dtype="int64"), T(6, 4)], [ids, w],
                          {"padding_idx": padding_idx})
    assert np.isnan(out[0, 0]).all() and np.isnan(out[4, -1]).all()
    gy = _values(r, (5, 40, 4))
    # CUDA's atomics sum each row in another order than the CPU kernel: equal to rounding
    (gw,) = check_kernel("embedding_grad", [T("N", 40, dtype="int64"), T("N", 40, 4)], [ids, gy],
                         {"vocab": 6, "padding_idx": padding_idx}, rtol=1e-5, atol=1e-5)
    if padding_idx >= 0:
        assert np.all(gw[padding_idx] == 0)


# ---------------------------------------------------------------------------- losses

LOGITS, LABELS = T("N", 10), T("N", dtype="int64")
CE_ATTRS = [{}, {"label_smoothing": 0.1, "ignore_index": -1}]


def _labels(r, n, ignore=None):
    y = r.integers(0, 10, size=n).astype(np.int64)
    if ignore is not None:
        y[::3] = ignore
    return y


@pytest.mark.parametrize("attrs", CE_ATTRS)
def test_cross_entropy_forward_and_backward(attrs):
    r = np.random.default_rng(15)
    x = _values(r, (6, 10)) * 2
    y = _labels(r, 6, attrs.get("ignore_index"))
    check_kernel("softmax_cross_entropy", [LOGITS, LABELS], [x, y], attrs, rtol=1e-5)
    check_kernel("softmax_cross_entropy_grad", [T(), LOGITS, LABELS],
                 [np.float32(0.7), x, y], attrs, rtol=1e-5, atol=1e-7)


def test_count_correct():
    r = np.random.default_rng(16)
    x = _values(r, (7, 10))
    y = _labels(r, 7, -100)
    y[1] = int(np.argmax(x[1]))
    correct, total = check_kernel("count_correct", [LOGITS, LABELS], [x, y])
    assert total[0] == 4 and correct[0] >= 1


@pytest.mark.parametrize("attrs", CE_ATTRS)
def test_cross_entropy_per_step_labels(attrs):
    # logits [N, T, C] with labels [N, T] (the emitters pass them as [N * T, C] rows);
    # ignored positions hold NaN logits, which neither the loss, its gradient nor the
    # count may read
    r = np.random.default_rng(18)
    x = _values(r, (2, 3, 10)) * 2
    y = r.integers(0, 10, size=(2, 3)).astype(np.int64)
    ignore = attrs.get("ignore_index", -100)
    y[0, 1:] = ignore
    x[0, 1:] = np.nan
    logits, labels = T("N", "T", 10), T("N", "T", dtype="int64")
    (loss,) = check_kernel("softmax_cross_entropy", [logits, labels], [x, y], attrs, rtol=1e-5)
    assert np.isfinite(loss).all()
    (grad,) = check_kernel("softmax_cross_entropy_grad", [T(), logits, labels],
                           [np.float32(0.7), x, y], attrs, rtol=1e-5, atol=1e-7)
    assert np.all(grad[0, 1:] == 0) and np.isfinite(grad).all()
    _correct, total = check_kernel("count_correct", [logits, labels], [x, y],
                                  {"ignore_index": ignore})
    assert total[0] == 4


@pytest.mark.parametrize("op", ["mse", "bce_with_logits"])
def test_pair_losses(op):
    r = np.random.default_rng(17)
    p = _values(r, (5, 3))
    t = r.random((5, 3)).astype(np.float32) if op == "bce_with_logits" else _values(r, (5, 3))
    check_kernel(op, [T("N", 3), T("N", 3)], [p, t], rtol=1e-5)


# ---------------------------------------------------------------------------- shape ops


def test_reshape_transpose_concat():
    r = np.random.default_rng(18)
    x = _values(r, (2, 3, 4))
    check_kernel("reshape", [T("N", 3, 4)], [x], {"shape": ("N", 12)})
    check_kernel("transpose", [T("N", 3, 4)], [x], {"perm": (2, 0, 1)})
    parts = [_values(r, (2, k, 4)) for k in (1, 3, 2)]
    check_kernel("concat", [T("N", k, 4) for k in (1, 3, 2)], parts, {"axis": 1})


def test_slice_and_slice_grad():
    r = np.random.default_rng(19)
    x = _values(r, (2, 7, 3))
    check_kernel("slice", [T("N", 7, 3)], [x], {"axis": 1, "start": 2, "stop": 5})
    g = _values(r, (2, 3, 3))
    check_kernel("slice_grad", [T("N", 3, 3)], [g], {"axis": 1, "start": 2, "size": 7})


# ---------------------------------------------------------------------------- optimisers

SHAPE = (3, 5)
OPTIM = [
    ("sgd_update", {"weight_decay": 0.01, "lr_mult": 2.0}),
    ("momentum_update", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.05}),
    ("adam_update", {"beta1": 0.8, "beta2": 0.95}),
    ("adam_update", {"decoupled": True, "weight_decay": 0.1, "lr_mult": 0.5}),
    ("rmsprop_update", {"alpha": 0.9, "weight_decay": 0.05, "lr_mult": 2.0}),
    ("adagrad_update", {"lr_decay": 0.1, "initial_accumulator_value": 0.5, "weight_decay": 0.02}),
]


def _update_graph(op, attrs, reader_after=False):
    return update_graph(op, attrs, SHAPE, reader_after)


@pytest.mark.parametrize("op,attrs", OPTIM)
def test_update_in_place_several_steps(op, attrs):
    from graphdl.backends.cuda.program import CudaProgram

    g = _update_graph(op, attrs)
    prog = CudaProgram(PassContext().run(g, training=False), title=f"test_cuda_{op}")
    r = np.random.default_rng(20)
    w = r.standard_normal(SHAPE).astype(np.float32)
    state = {f"s{i}": np.zeros(SHAPE, np.float32) for i in range(N_STATE[op])}
    if op in STEPPED:
        state["step"] = np.zeros(1, np.float32)
    ref_p = {"w": w.copy()}
    ref_s = {k: (v.reshape(()) if k == "step" else v.copy()) for k, v in state.items()}
    prog.bind_params({"w": w}, state)
    for lr in (0.1, 0.05, 0.02):
        grad = r.standard_normal(SHAPE).astype(np.float32)
        assert prog({"grad": grad, "lr": np.float32(lr)}) == {}
        _, upd, _ = run_reference(g, {"grad": grad, "lr": np.float32(lr)}, ref_p, ref_s)
        ref_p = {"w": upd["w"]}
        ref_s = {k: upd[k] for k in ref_s}
    prog.sync_to_host()
    np.testing.assert_allclose(w, ref_p["w"], rtol=1e-5, atol=1e-6)
    for k, value in state.items():
        np.testing.assert_allclose(value.reshape(np.shape(ref_s[k])), ref_s[k], rtol=1e-5, atol=1e-6)


def test_update_copies_when_the_parameter_is_read_after_it():
    from graphdl.backends.cuda.program import CudaProgram

    g = _update_graph("momentum_update", {"momentum": 0.5}, reader_after=True)
    planned = PassContext().run(g, training=False)
    prog = CudaProgram(planned, title="test_cuda_reader_after")
    r = np.random.default_rng(21)
    w = r.standard_normal(SHAPE).astype(np.float32)
    s0 = np.zeros(SHAPE, np.float32)
    grad = r.standard_normal(SHAPE).astype(np.float32)
    want_out, want_upd, _ = run_reference(g, {"grad": grad, "lr": np.float32(0.5)}, {"w": w},
                                          {"s0": s0})
    prog.bind_params({"w": w}, {"s0": s0})
    out = prog({"grad": grad, "lr": np.float32(0.5)})
    np.testing.assert_allclose(out["w_norm"][0], want_out["w_norm"], rtol=1e-5)  # the old w
    prog.sync_to_host()
    np.testing.assert_allclose(w, want_upd["w"], rtol=1e-6)
    np.testing.assert_allclose(s0, want_upd["s0"], rtol=1e-6)


# ---------------------------------------------------------------------------- fused kernels


def test_fused_dense_epilogue_and_elementwise_chain():
    """matmul + bias + relu fuse into one epilogue kernel; a chain with a mean's runtime
    constant (c / N) into one loop: both match the reference interpreter."""
    from graphdl.backends.cuda.program import CudaProgram

    g = Graph()
    x = g.input("x", T("N", 6))
    w = g.input("w", T(6, 5))
    b = g.input("b", T(5))
    h = g.op("relu", g.op("add", g.op("matmul", x, w), b))
    z = g.op("mul_scalar", g.op("tanh", g.op("sub", h, b)), c=2.0, div=("N",))
    g.outputs["h"] = h
    g.outputs["z"] = z
    planned = PassContext().run(g, training=False)
    kinds = sorted(planned.attrs(n)["kind"] for n in planned.nodes_by_op("fused"))
    assert kinds == ["elementwise", "epilogue"]
    prog = CudaProgram(planned, title="test_cuda_fused")
    prog.bind_params({}, {})
    r = np.random.default_rng(22)
    feeds = {"x": _values(r, (4, 6)), "w": _values(r, (6, 5)), "b": _values(r, (5,))}
    got = prog(feeds)
    want, _, _ = run_reference(g, feeds)
    for k in ("h", "z"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
    assert "@jit" in prog.source and "K.s_relu" in prog.source


def test_one_program_serves_several_batch_sizes():
    prog = compile_single("softmax", [T("N", 10)], {"axis": -1})
    r = np.random.default_rng(23)
    for n in (1, 5, 2):
        x = _values(r, (n, 10))
        out = prog({"x0": x})["out0"]
        np.testing.assert_allclose(out, reference("softmax", [x], {"axis": -1}, {})[0], rtol=1e-5)


def test_outputs_are_fresh_arrays():
    prog = compile_single("neg", [T("N", 4)])
    x = randn(np.random.default_rng(24), 2, 4)
    a = prog({"x0": x})["out0"]
    b = prog({"x0": 2 * x})["out0"]
    np.testing.assert_allclose(a, -x)
    np.testing.assert_allclose(b, -2 * x)


# ---------------------------------------------------------------------------- coverage

UNSUPPORTED = {
    # linalg runs once on the host, in the data pipeline's PCA fit (CPU program, LAPACK);
    # no layer puts it in a model, so a CUDA graph holding it is refused (E708)
    "svd", "eigh", "eig",
}
COVERED = (set(UNARY) | set(BINARY) | set(COMPARE) | {
    "where", "cast", "broadcast_to", "sum", "mean", "max", "matmul", "softmax", "log_softmax",
    "softmax_grad", "log_softmax_grad", "dropout", "softmax_cross_entropy",
    "softmax_cross_entropy_grad", "count_correct", "mse", "bce_with_logits", "reshape",
    "transpose", "concat", "slice", "slice_grad", "embedding", "embedding_grad", "sgd_update",
    "momentum_update", "adam_update", "rmsprop_update", "adagrad_update", "matmul_rows",
    "seq_mask", "truncate_mask", "layer_norm", "layer_norm_grad", "add_positions",
    "add_positions_grad", "attention", "attention_grad", "attention_weights", "attention_mask",
    "scan", "fused", "input", "param", "state", "const"}
    # tested in test_cuda_batchnorm.py and test_cuda_image.py
    | {"batch_norm_train", "batch_norm_train_grad", "resize", "grayscale", "rgb_to_yuv",
       "select_channels", "normalize_channels", "gaussian_blur", "median_filter",
       "random_rotation", "random_flip", "gaussian_noise", "salt_pepper_noise"}
    # tested in test_cuda_conv.py and test_cuda_pool.py
    | {"conv2d", "conv2d_grad_input", "conv2d_grad_weight", "max_pool2d", "max_pool2d_grad",
       "avg_pool2d", "avg_pool2d_grad", "global_avg_pool2d"})


def test_every_op_is_covered_or_declared_unsupported():
    from graphdl.backends.cuda.registry import supported_ops

    ops = set(all_ops())
    supported = supported_ops()
    assert COVERED <= supported, f"tested but without a CUDA kernel: {sorted(COVERED - supported)}"
    assert not (supported & UNSUPPORTED), sorted(supported & UNSUPPORTED)
    unknown = ops - COVERED - UNSUPPORTED
    assert not unknown, (f"ops neither tested on CUDA nor declared unsupported: {sorted(unknown)}; "
                         "give them a CUDA kernel and a test here, or list them in UNSUPPORTED")
    assert ops - supported <= UNSUPPORTED


def test_an_op_without_cuda_kernel_is_a_compile_error():
    from graphdl.backends.cuda.program import CudaProgram

    g = build_single("svd", [T(4, 3)], {})
    with pytest.raises(GraphdlError) as e:
        CudaProgram(g, title="test_cuda_svd")
    d = e.value.diagnostics[0]
    assert d.code == "E708" and "no CUDA kernel for op svd" in d.message
