"""Losses (graphdl/ops/losses.py): softmax cross-entropy (+ grad op), mse, bce, count_correct;
cross-entropy and the count with one label per sample ([N, C] logits, [N] labels) and per
step ([N, T, C], [N, T]: the mean over the positions whose label is not ignore_index)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import T, check_kernel, gradcheck, infer, rng

from graphdl.ops.registry import ShapeError

KERNEL_COVERED = {
    "softmax_cross_entropy",
    "softmax_cross_entropy_grad",
    "mse",
    "bce_with_logits",
    "count_correct",
}
GRAD_COVERED = {"softmax_cross_entropy", "mse", "bce_with_logits"}

LOGITS, LABELS, SCALAR = T("N", 10), T("N", dtype="int64"), T()
CE_ATTRS = [{}, {"label_smoothing": 0.1, "ignore_index": -1}]


def _labels(r, n, ignore=None):
    y = r.integers(0, 10, size=n).astype(np.int64)
    if ignore is not None:
        y[::3] = ignore
    return y


@pytest.mark.parametrize("attrs", CE_ATTRS)
@pytest.mark.parametrize("n", [1, 6])
def test_cross_entropy_kernel(attrs, n):
    r = rng(n)
    x = (r.standard_normal((n, 10)) * 3).astype(np.float32)
    y = _labels(r, n, attrs.get("ignore_index"))
    (loss,) = check_kernel("softmax_cross_entropy", [LOGITS, LABELS], [x, y], attrs, rtol=1e-5)
    assert loss.shape == (1,) and loss.dtype == np.float32


def test_cross_entropy_every_label_ignored_is_zero():
    x = rng(0).standard_normal((3, 10)).astype(np.float32)
    y = np.full(3, -1, np.int64)
    attrs = CE_ATTRS[1]
    (loss,) = check_kernel("softmax_cross_entropy", [LOGITS, LABELS], [x, y], attrs)
    assert loss[0] == 0.0
    (grad,) = check_kernel(
        "softmax_cross_entropy_grad", [SCALAR, LOGITS, LABELS], [np.float32(1.0), x, y], attrs
    )
    assert np.all(grad == 0)


def test_cross_entropy_label_smoothing_value():
    # uniform logits: the loss is log(C) whatever the smoothing
    x = np.zeros((2, 10), np.float32)
    y = np.array([3, 7], np.int64)
    (loss,) = check_kernel("softmax_cross_entropy", [LOGITS, LABELS], [x, y], CE_ATTRS[1])
    np.testing.assert_allclose(loss[0], np.log(10.0), rtol=1e-6)


@pytest.mark.parametrize("attrs", CE_ATTRS)
def test_cross_entropy_grad_op_kernel(attrs):
    r = rng(1)
    x = (r.standard_normal((5, 10)) * 3).astype(np.float32)
    y = _labels(r, 5, attrs.get("ignore_index"))
    check_kernel(
        "softmax_cross_entropy_grad",
        [SCALAR, LOGITS, LABELS],
        [np.float32(0.7), x, y],
        attrs,
        rtol=1e-5,
        atol=1e-7,
    )


def test_mse_and_bce_kernels():
    r = rng(2)
    p = r.standard_normal((5, 4)).astype(np.float32)
    t = r.standard_normal((5, 4)).astype(np.float32)
    check_kernel("mse", [T("N", 4), T("N", 4)], [p, t], rtol=1e-5)
    probs = r.uniform(0, 1, size=(5, 4)).astype(np.float32)
    check_kernel("bce_with_logits", [T("N", 4), T("N", 4)], [p * 30, probs], rtol=1e-5)


def test_count_correct_kernel():
    x = np.zeros((6, 10), np.float32)
    x[np.arange(6), [1, 2, 3, 4, 5, 6]] = 1.0
    x[5] = 0.0  # a tie: argmax is the first class
    y = np.array([1, 2, 0, -1, 5, 0], np.int64)
    correct, total = check_kernel("count_correct", [LOGITS, LABELS], [x, y], {"ignore_index": -1})
    assert correct[0] == 4 and total[0] == 5


@pytest.mark.parametrize("attrs", CE_ATTRS)
def test_cross_entropy_grad(attrs):
    r = rng(3)
    x = r.standard_normal((4, 5)) * 2
    y = np.array([0, 4, 2, 1], np.int64)
    if attrs:
        y[1] = attrs["ignore_index"]
    grads = gradcheck("softmax_cross_entropy", [x, y], attrs)
    if attrs:
        assert np.all(grads[0][1] == 0)  # an ignored row gets no gradient


def test_mse_grad():
    r = rng(4)
    gradcheck("mse", [r.standard_normal((3, 4)), r.standard_normal((3, 4))])


def test_bce_grad():
    r = rng(5)
    gradcheck("bce_with_logits", [r.standard_normal((3, 4)) * 3, r.uniform(0, 1, size=(3, 4))])


def test_infer_symbolic():
    assert infer("softmax_cross_entropy", [LOGITS, LABELS]) == [T()]
    assert infer("softmax_cross_entropy_grad", [T(), LOGITS, LABELS]) == [LOGITS]
    assert infer("mse", [T("N", 4), T("N", 4)]) == [T()]
    assert infer("bce_with_logits", [T("N", 1), T("N", 1)]) == [T()]
    assert infer("count_correct", [LOGITS, LABELS]) == [T(), T()]
    f64 = T("N", 10, dtype="float64")
    assert infer("softmax_cross_entropy", [f64, LABELS]) == [T(dtype="float64")]


@pytest.mark.parametrize(
    "op,types,match",
    [
        (
            "softmax_cross_entropy",
            [LOGITS, T("N")],
            r"int64 labels of shape \[N\], got float32\[N\]",
        ),
        ("softmax_cross_entropy", [LOGITS, T("M", dtype="int64")], "int64 labels of shape"),
        ("softmax_cross_entropy", [T("N", 2, 5), LABELS], r"int64 labels of shape \[N, 2\]"),
        ("softmax_cross_entropy", [T("N"), T(dtype="int64")], r"expects logits \[N, classes\]"),
        ("softmax_cross_entropy_grad", [T(), T("N", "T", 5), T("T", "N", dtype="int64")],
         r"labels of shape \[N, T\]"),
        ("count_correct", [LOGITS, T("N", 1, dtype="int64")], "int64 labels"),
        ("mse", [T("N", 4), T("N", 3)], "shapes differ"),
        ("bce_with_logits", [T("N", 4), T("N", 4, dtype="float64")], "dtypes differ"),
    ],
)
def test_infer_rejects_bad_inputs(op, types, match):
    with pytest.raises(ShapeError, match=match):
        infer(op, types)


# ------------------------------------------------------------------ one label per step

STEP_LOGITS, STEP_LABELS = T("N", "T", 10), T("N", "T", dtype="int64")


def _step_batch(seed, n=3, steps=4, c=10, dtype=np.float32, ignore=-100):
    """Logits [n, steps, c] and labels [n, steps] padded past each sample's length with
    ``ignore``; the padded positions' logits are garbage (NaN, inf, huge)."""
    r = rng(seed)
    x = (r.standard_normal((n, steps, c)) * 3).astype(dtype)
    y = r.integers(0, c, size=(n, steps)).astype(np.int64)
    lengths = np.array([steps, 1, steps - 1][:n])
    pad = np.arange(steps)[None, :] >= lengths[:, None]
    y[pad] = ignore
    x[pad] = np.array([np.nan, np.inf, -1e30] * c)[:c].astype(dtype)
    return x, y, pad


@pytest.mark.parametrize("attrs", CE_ATTRS)
def test_cross_entropy_per_step_kernels(attrs):
    x, y, pad = _step_batch(6, ignore=attrs.get("ignore_index", -100))
    (loss,) = check_kernel("softmax_cross_entropy", [STEP_LOGITS, STEP_LABELS], [x, y], attrs,
                           rtol=1e-5)
    assert np.isfinite(loss).all()  # garbage at padded positions is never read
    # the mean over the valid positions: the per-sample op on those rows alone
    (rows,) = check_kernel("softmax_cross_entropy", [LOGITS, LABELS], [x[~pad], y[~pad]], attrs)
    np.testing.assert_allclose(loss, rows, rtol=1e-6)
    (grad,) = check_kernel("softmax_cross_entropy_grad", [SCALAR, STEP_LOGITS, STEP_LABELS],
                           [np.float32(0.7), x, y], attrs, rtol=1e-5, atol=1e-7)
    assert np.all(grad[pad] == 0) and np.isfinite(grad).all()
    _correct, total = check_kernel("count_correct", [STEP_LOGITS, STEP_LABELS], [x, y],
                                  {"ignore_index": attrs.get("ignore_index", -100)})
    assert total[0] == (~pad).sum()


def test_cross_entropy_any_leading_dims():
    r = rng(7)
    x = r.standard_normal((2, 3, 2, 4)).astype(np.float32)
    y = r.integers(0, 4, size=(2, 3, 2)).astype(np.int64)
    y[1, 2] = -100
    types = [T("N", 3, 2, 4), T("N", 3, 2, dtype="int64")]
    check_kernel("softmax_cross_entropy", types, [x, y], rtol=1e-5)
    check_kernel("softmax_cross_entropy_grad", [SCALAR, *types], [np.float32(1.0), x, y],
                 rtol=1e-5, atol=1e-7)
    check_kernel("count_correct", types, [x, y])


@pytest.mark.parametrize("attrs", CE_ATTRS)
def test_cross_entropy_per_step_grad(attrs):
    r = rng(8)
    x = r.standard_normal((2, 3, 4)) * 2
    y = r.integers(0, 4, size=(2, 3)).astype(np.int64)
    y[1, 1:] = attrs.get("ignore_index", -100)
    grads = gradcheck("softmax_cross_entropy", [x, y], attrs)
    assert np.all(grads[0][1, 1:] == 0)  # ignored positions get no gradient


@pytest.mark.parametrize("attrs", [{}, {"label_smoothing": 0.2, "ignore_index": 0}])
def test_cross_entropy_per_step_matches_torch(attrs):
    """torch.nn.functional.cross_entropy on [N, C, T] logits and [N, T] targets (reduction
    mean over the non-ignored positions), its gradient from autograd; padded positions
    hold finite garbage (torch would turn NaN into NaN gradients there)."""
    torch = pytest.importorskip("torch")
    ignore = attrs.get("ignore_index", -100)
    r = rng(9)
    x = (r.standard_normal((3, 5, 10)) * 3).astype(np.float32)
    y = r.integers(1, 10, size=(3, 5)).astype(np.int64)
    y[0, 3:] = y[2, 1:] = ignore
    x[0, 3:] = 1e4
    xt = torch.tensor(x.transpose(0, 2, 1), requires_grad=True)
    want = torch.nn.functional.cross_entropy(
        xt, torch.tensor(y), ignore_index=ignore, label_smoothing=attrs.get("label_smoothing", 0.0))
    want.backward()
    (loss,) = check_kernel("softmax_cross_entropy", [STEP_LOGITS, STEP_LABELS], [x, y], attrs)
    np.testing.assert_allclose(loss[0], want.item(), rtol=1e-5)
    (grad,) = check_kernel("softmax_cross_entropy_grad", [SCALAR, STEP_LOGITS, STEP_LABELS],
                           [np.float32(1.0), x, y], attrs, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad, xt.grad.numpy().transpose(0, 2, 1), rtol=1e-4, atol=1e-7)


def test_infer_per_step_symbolic():
    assert infer("softmax_cross_entropy", [STEP_LOGITS, STEP_LABELS]) == [T()]
    assert infer("softmax_cross_entropy_grad", [T(), STEP_LOGITS, STEP_LABELS]) == [STEP_LOGITS]
    assert infer("count_correct", [STEP_LOGITS, STEP_LABELS]) == [T(), T()]
