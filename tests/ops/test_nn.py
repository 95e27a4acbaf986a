"""NN ops (graphdl/ops/nn.py): softmax / log_softmax and their backward ops, dropout."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import T, check_kernel, compile_single, gradcheck, infer, rng, run_compiled

from graphdl.ops.nn import dropout_mask_reference
from graphdl.ops.registry import ShapeError

KERNEL_COVERED = {"softmax", "log_softmax", "softmax_grad", "log_softmax_grad", "dropout"}
GRAD_COVERED = {"softmax", "log_softmax", "dropout"}

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


@pytest.mark.parametrize(
    "op,types,attrs,match",
    [
        ("softmax", [T("N", 10)], {"axis": 2}, "axis 2 out of range for rank 2"),
        ("log_softmax", [T("N", 10, dtype="int64")], {}, "expects a float tensor, got int64"),
        ("softmax_grad", [T("N", 10), T("N", 9)], {}, "shapes differ"),
        ("dropout", [T("N", 4), T()], {"rate": 0.5}, "seed must be an int64 scalar"),
        ("dropout", [T("N", 4), T(1, dtype="int64")], {"rate": 0.5}, "int64 scalar"),
        ("dropout", [T("N", 4), SEED_T], {"rate": 1.0}, r"rate must be in \[0, 1\)"),
    ],
)
def test_infer_rejects_bad_inputs(op, types, attrs, match):
    with pytest.raises(ShapeError, match=match):
        infer(op, types, **attrs)
