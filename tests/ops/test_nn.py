"""NN ops (graphdl/ops/nn.py): softmax / log_softmax and their backward ops, dropout,
embedding and its scatter-add gradient."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    T,
    check_kernel,
    compile_single,
    gradcheck,
    infer,
    reference,
    rng,
    run_compiled,
)

from graphdl.ops.nn import dropout_mask_reference
from graphdl.ops.registry import ShapeError

KERNEL_COVERED = {"softmax", "log_softmax", "softmax_grad", "log_softmax_grad", "dropout",
                  "embedding", "embedding_grad", "add_positions", "add_positions_grad"}
GRAD_COVERED = {"softmax", "log_softmax", "dropout", "embedding", "embedding_grad",
                "add_positions", "add_positions_grad"}

SEED_T = T(dtype="int64")
AXES = [(("N", 10), -1), (("N", 3, 4), -1), (("N", 3, 4), 1)]


def _draw(r, shape, n, scale=1.0):
    return (r.standard_normal([n if d == "N" else d for d in shape]) * scale).astype(np.float32)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,axis", AXES)
@pytest.mark.parametrize("n", [1, 5])
def test_softmax_kernel(op, shape, axis, n):
    x = _draw(rng(n), shape, n, scale=3.0)
    (out,) = check_kernel(op, [T(*shape)], [x], {"axis": axis}, rtol=1e-5, atol=1e-6)
    if op == "softmax":
        np.testing.assert_allclose(out.sum(axis=axis), 1.0, rtol=1e-5)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_kernel_is_stable_for_huge_logits(op):
    x = np.zeros((3, 10), np.float32)
    x[0, :4] = [1000.0, 0.0, -1000.0, 999.0]  # exp overflows without the max subtraction
    x[1] = -1000.0 + np.arange(10)  # and underflows to 0 / 0
    x[2] = 80.0 * np.arange(10)
    (out,) = check_kernel(op, [T("N", 10)], [x], {"axis": -1}, rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(out) | (out == -np.inf))


@pytest.mark.parametrize("op", ["softmax_grad", "log_softmax_grad"])
@pytest.mark.parametrize("shape,axis", AXES)
def test_softmax_backward_kernel(op, shape, axis):
    r = rng(2)
    g = _draw(r, shape, 3)
    x = _draw(r, shape, 3).astype(np.float64)
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    y = z / z.sum(axis=axis, keepdims=True)
    y = (np.log(y) if op == "log_softmax_grad" else y).astype(np.float32)
    check_kernel(op, [T(*shape), T(*shape)], [g, y], {"axis": axis}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_grad(op, axis):
    gradcheck(op, [rng(3).standard_normal((2, 3, 4))], {"axis": axis})


# ----------------------------------------------------------------------- dropout

DROP = {"rate": 0.25, "salt": 3}


def _dropout(x, seed, attrs=DROP):
    prog, _ = compile_single("dropout", [T("N", 64), SEED_T], attrs)
    return run_compiled(prog, [x, seed])[0]


@pytest.mark.parametrize("seed", [0, 7, -3, 2**40 + 1])
def test_dropout_kernel_matches_reference_mask(seed):
    x = rng(4).uniform(0.5, 1.5, size=(6, 64)).astype(np.float32)  # never zero
    (out,) = check_kernel("dropout", [T("N", 64), SEED_T], [x, np.int64(seed)], DROP)
    keep = dropout_mask_reference(x.size, seed, DROP["salt"], DROP["rate"]).reshape(x.shape)
    np.testing.assert_array_equal(out != 0, keep)
    np.testing.assert_allclose(out[keep], x[keep] / 0.75, rtol=1e-6)
    assert 0.6 < keep.mean() < 0.9


def test_dropout_rate_zero_is_identity():
    x = rng(5).standard_normal((4, 64)).astype(np.float32)
    out = _dropout(x, 11, {"rate": 0.0, "salt": 0})
    np.testing.assert_array_equal(out, x)


def test_dropout_preserves_mean_and_depends_on_seed_and_salt():
    x = np.ones((64, 64), np.float32)
    a = _dropout(x, 1).copy()
    assert abs(a.mean() - 1.0) < 0.05
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.75)}
    np.testing.assert_array_equal(_dropout(x, 1), a)  # the same seed: the same mask
    b = _dropout(x, 2)
    assert (a != b).mean() > 0.2  # another seed: another mask
    salt_mask = dropout_mask_reference(x.size, 1, DROP["salt"] + 1, DROP["rate"])
    assert (salt_mask != (a.ravel() != 0)).mean() > 0.2  # another salt: another mask


def test_dropout_grad():
    x = rng(6).standard_normal((3, 5))
    grads = gradcheck("dropout", [x, np.asarray(5, np.int64)], {"rate": 0.3, "salt": 1})
    keep = dropout_mask_reference(x.size, 5, 1, 0.3).reshape(x.shape)
    assert np.all(grads[0][~keep] == 0)


# ----------------------------------------------------------------------- shapes


def test_infer_symbolic():
    assert infer("softmax", [T("N", 10)]) == [T("N", 10)]
    assert infer("log_softmax", [T("N", 3, 4)], axis=1) == [T("N", 3, 4)]
    assert infer("softmax_grad", [T("N", 10), T("N", 10)]) == [T("N", 10)]
    assert infer("dropout", [T("N", 64), SEED_T], rate=0.5) == [T("N", 64)]
    assert infer("embedding", [T("N", 7, dtype="int64"), T(10, 3)]) == [T("N", 7, 3)]
    assert infer("embedding", [T("N", "T", dtype="int64"), T(10, 3, dtype="float64")],
                 padding_idx=0) == [T("N", "T", 3, dtype="float64")]
    assert infer("embedding_grad", [T("N", 7, dtype="int64"), T("N", 7, 3)], vocab=10) == [T(10, 3)]


@pytest.mark.parametrize(
    "op,types,attrs,match",
    [
        ("softmax", [T("N", 10)], {"axis": 2}, "axis 2 out of range for rank 2"),
        ("log_softmax", [T("N", 10, dtype="int64")], {}, "expects a float tensor, got int64"),
        ("softmax_grad", [T("N", 10), T("N", 9)], {}, "shapes differ"),
        ("dropout", [T("N", 4), T()], {"rate": 0.5}, "seed must be an int64 scalar"),
        ("dropout", [T("N", 4), T(1, dtype="int64")], {"rate": 0.5}, "int64 scalar"),
        ("dropout", [T("N", 4), SEED_T], {"rate": 1.0}, r"rate must be in \[0, 1\)"),
        ("embedding", [T("N", 5), T(10, 3)], {}, "ids must be int64, got float32"),
        ("embedding", [T("N", 5, dtype="int64"), T(10, 3, 2)], {}, r"float \[vocab, dim\] matrix"),
        ("embedding", [T("N", 5, dtype="int64"), T(10, dtype="int64")], {}, "float .vocab, dim."),
        ("embedding_grad", [T("N", 5, dtype="int64"), T("N", 3)], {"vocab": 10},
         "gradient of shape ids"),
        ("embedding_grad", [T("N", 5, 2, dtype="int64"), T("N", 5, 3)], {"vocab": 10},
         "gradient of shape ids"),
    ],
)
def test_infer_rejects_bad_inputs(op, types, attrs, match):
    with pytest.raises(ShapeError, match=match):
        infer(op, types, **attrs)


# ----------------------------------------------------------------------- embedding

IDS_SHAPES = [("N",), ("N", 7), ("N", 2, 3)]


def _ids(r, shape, n, vocab, bad=False):
    ids = r.integers(0, vocab, size=[n if d == "N" else d for d in shape]).astype(np.int64)
    if bad:  # ids outside [0, vocab): the kernels must neither read nor write past the table
        ids.flat[0] = vocab
        ids.flat[-1] = -1
    return ids


@pytest.mark.parametrize("shape", IDS_SHAPES)
@pytest.mark.parametrize("padding_idx", [-1, 2])
@pytest.mark.parametrize("n", [1, 4])
def test_embedding_kernel(shape, padding_idx, n):
    r = rng(20 + n)
    vocab, dim = 9, 5
    ids = _ids(r, shape, n, vocab)
    w = r.standard_normal((vocab, dim)).astype(np.float32)
    (out,) = check_kernel("embedding", [T(*shape, dtype="int64"), T(vocab, dim)], [ids, w],
                          {"padding_idx": padding_idx})
    np.testing.assert_array_equal(out.reshape(ids.shape + (dim,)), w[ids])  # the padding row too


@pytest.mark.parametrize("shape", IDS_SHAPES)
@pytest.mark.parametrize("padding_idx", [-1, 2])
@pytest.mark.parametrize("n", [1, 4])
def test_embedding_grad_kernel(shape, padding_idx, n):
    r = rng(30 + n)
    vocab, dim = 6, 4
    ids = _ids(r, shape, n, vocab)
    gy = r.standard_normal(ids.shape + (dim,)).astype(np.float32)
    (out,) = check_kernel("embedding_grad", [T(*shape, dtype="int64"), T(*shape, dim)], [ids, gy],
                          {"vocab": vocab, "padding_idx": padding_idx}, rtol=1e-5, atol=1e-6)
    if padding_idx >= 0:
        assert np.all(out[padding_idx] == 0)


def test_embedding_ids_outside_the_vocabulary_give_nan_rows_and_no_gradient():
    r = rng(40)
    ids = _ids(r, ("N", 7), 3, 6, bad=True)
    w = r.standard_normal((6, 4)).astype(np.float32)
    (out,) = check_kernel("embedding", [T("N", 7, dtype="int64"), T(6, 4)], [ids, w])
    bad = (ids < 0) | (ids >= 6)
    assert np.all(np.isnan(out[bad])) and np.all(np.isfinite(out[~bad]))
    gy = r.standard_normal(ids.shape + (4,)).astype(np.float32)
    (gw,) = check_kernel("embedding_grad", [T("N", 7, dtype="int64"), T("N", 7, 4)], [ids, gy],
                         {"vocab": 6}, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(gw))


def test_embedding_grad_does_not_depend_on_the_thread_count():
    """The scatter-add sums in id order whatever the threads: the same bits every run."""
    r = rng(41)
    ids = r.integers(0, 3, size=(64, 7)).astype(np.int64)  # many ids per row
    gy = r.standard_normal((64, 7, 4)).astype(np.float32)
    types = [T("N", 7, dtype="int64"), T("N", 7, 4)]
    prog, _ = compile_single("embedding_grad", types, {"vocab": 3})
    first = run_compiled(prog, [ids, gy])[0].copy()
    numba = pytest.importorskip("numba")
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(run_compiled(prog, [ids, gy])[0], first)
    finally:
        numba.set_num_threads(threads)


@pytest.mark.parametrize("shape", [(3,), (2, 5)])
def test_embedding_grad(shape):
    r = rng(42)
    ids = r.integers(0, 4, size=shape).astype(np.int64)
    gradcheck("embedding", [ids, r.standard_normal((4, 3))])
    gradcheck("embedding_grad", [ids, r.standard_normal(shape + (3,))], {"vocab": 4})


@pytest.mark.parametrize("padding_idx", [None, 1])
def test_embedding_grad_matches_torch(padding_idx):
    """Output and weight gradient equal torch.nn.functional.embedding's, padding row included
    (finite differences cannot see padding_idx: torch zeroes that row's gradient by fiat)."""
    torch = pytest.importorskip("torch")
    r = rng(43)
    ids = r.integers(0, 5, size=(4, 6)).astype(np.int64)
    ids[0, :3] = 1  # the padding id occurs
    w = r.standard_normal((5, 3))
    gy = r.standard_normal((4, 6, 3))
    pad = -1 if padding_idx is None else padding_idx
    tw = torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.embedding(torch.tensor(ids), tw, padding_idx=padding_idx)
    ty.backward(torch.tensor(gy))
    (out,) = reference("embedding", [ids, w], {"padding_idx": pad})
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=0, atol=0)
    (gw,) = reference("embedding_grad", [ids, gy], {"vocab": 5, "padding_idx": pad})
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-12, atol=1e-12)
    prog, _ = compile_single("embedding_grad", [T("N", 6, dtype="int64"), T("N", 6, 3, dtype="float64")],
                             {"vocab": 5, "padding_idx": pad})
    (got,) = run_compiled(prog, [ids, gy])
    np.testing.assert_allclose(got, tw.grad.numpy(), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------- positions


@pytest.mark.parametrize("steps", [5, "T"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_add_positions_kernels(steps, dtype):
    r = rng(21)
    x = r.standard_normal((3, 5, 4)).astype(dtype)
    table = r.standard_normal((9, 4)).astype(dtype)
    (out,) = check_kernel("add_positions", [T("N", steps, 4, dtype=dtype), T(9, 4, dtype=dtype)],
                          [x, table])
    np.testing.assert_allclose(out, x + table[None, :5], rtol=1e-6)
    gy = r.standard_normal((3, 5, 4)).astype(dtype)
    (gt,) = check_kernel("add_positions_grad", [T("N", steps, 4, dtype=dtype)], [gy],
                         {"rows": 9})
    np.testing.assert_allclose(gt[:5], gy.sum(axis=0), rtol=1e-5, atol=1e-6)
    assert np.all(gt[5:] == 0)


def test_add_positions_past_the_table_gives_nan_rows():
    r = rng(22)
    x = r.standard_normal((2, 6, 3)).astype("float32")
    table = r.standard_normal((4, 3)).astype("float32")
    (out,) = check_kernel("add_positions", [T("N", "T", 3), T(4, 3)], [x, table])
    assert np.isnan(out[:, 4:]).all() and np.isfinite(out[:, :4]).all()
    with pytest.raises(ShapeError, match=r"6 steps but positions are defined for 4") as e:
        infer("add_positions", [T("N", 6, 3), T(4, 3)])
    assert "raise max_len to at least 6" in e.value.help


def test_add_positions_gradients():
    r = rng(23)
    x = r.standard_normal((2, 3, 4))
    table = r.standard_normal((5, 4))
    gradcheck("add_positions", [x, table])
    gradcheck("add_positions_grad", [r.standard_normal((2, 3, 4))], {"rows": 5})


def test_sinusoidal_positions_are_the_transformer_table():
    from graphdl.ops.nn import sinusoidal_positions

    table = sinusoidal_positions(50, 6)
    pos, i = 17, 2  # dims 2i and 2i+1
    angle = pos / 10000 ** (2 * i / 6)
    assert table[pos, 2 * i] == pytest.approx(np.sin(angle), abs=1e-6)
    assert table[pos, 2 * i + 1] == pytest.approx(np.cos(angle), abs=1e-6)
    assert np.all(table[0, 0::2] == 0) and np.all(table[0, 1::2] == 1)
    assert sinusoidal_positions(4, 5).shape == (4, 5)  # an odd dim keeps its last sine
