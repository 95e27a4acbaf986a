"""Losses (graphdl/ops/losses.py): softmax cross-entropy (+ grad op), mse, bce, count_correct."""

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
        ("softmax_cross_entropy", [T("N", 2, 5), LABELS], r"expects logits \[N, classes\]"),
        ("count_correct", [LOGITS, T("N", 1, dtype="int64")], "int64 labels"),
        ("mse", [T("N", 4), T("N", 3)], "shapes differ"),
        ("bce_with_logits", [T("N", 4), T("N", 4, dtype="float64")], "dtypes differ"),
    ],
)
def test_infer_rejects_bad_inputs(op, types, match):
    with pytest.raises(ShapeError, match=match):
        infer(op, types)
