"""Pooling ops (graphdl/ops/pool.py): max / average / global average pooling and gradients.

The kernels take the window, stride and padding as runtime ints, so each compiles once;
most configurations call them directly through the kernel library and a few go through
`compile_single` to test the emitters with a symbolic batch.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import T, check_kernel, gradcheck, infer, rng

from graphdl.ops.pool import pool_params
from graphdl.ops.registry import ShapeError, get_op

KERNEL_COVERED = {"max_pool2d", "max_pool2d_grad", "avg_pool2d", "avg_pool2d_grad", "global_avg_pool2d"}
GRAD_COVERED = {"max_pool2d", "avg_pool2d", "avg_pool2d_grad", "global_avg_pool2d"}

# N, C, H, W, kernel, stride (None: the kernel), padding (t, b, l, r)
CASES = [
    (2, 3, 8, 8, (2, 2), None, (0, 0, 0, 0)),  # LeNet
    (2, 3, 7, 9, (2, 2), None, (0, 0, 0, 0)),  # odd sizes: the last row/column is dropped
    (2, 2, 9, 7, (3, 3), (2, 2), (1, 1, 1, 1)),  # overlapping windows, padding
    (1, 2, 9, 7, (3, 2), (1, 2), (1, 0, 1, 1)),  # asymmetric
    (2, 1, 5, 6, (3, 3), (1, 1), (0, 1, 1, 0)),
    (1, 2, 4, 4, (4, 4), None, (0, 0, 0, 0)),  # one window covers the image
    (2, 2, 5, 7, (2, 2), None, (0, 1, 0, 1)),  # bottom / right padding adds a window
]
IDS = [f"case{i}" for i in range(len(CASES))]


def _attrs(case, **extra) -> dict:
    return {"kernel": case[4], "stride": case[5], "padding": case[6], **extra}


def _out_shape(case):
    n, c, h, w = case[:4]
    (kh, kw), (sh, sw), (pt, pb, pl, pr) = pool_params(_attrs(case))
    return n, c, (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1


def _data(case, seed=0, dtype=np.float32):
    r = rng(seed)
    x = r.standard_normal(case[:4]).astype(dtype)
    gy = r.standard_normal(_out_shape(case)).astype(dtype)
    return x, gy


def _ref(op, attrs, *xs):
    opdef = get_op(op)
    return opdef.reference(opdef.check_attrs(attrs), *xs)


def _kargs(case):
    (kh, kw), (sh, sw), (pt, _, pl, _) = pool_params(_attrs(case))
    return kh, kw, sh, sw, pt, pl


@pytest.fixture(scope="module")
def K():
    from graphdl.backends.cpu.library import load_library

    return load_library()


# ----------------------------------------------------------------------- kernels


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_max_pool_kernels(K, case):
    x, gy = _data(case)
    y = np.full(gy.shape, np.nan, np.float32)
    K.max_pool2d_fwd(x, y, *_kargs(case))
    np.testing.assert_array_equal(y, _ref("max_pool2d", _attrs(case), x))
    gx = np.full(x.shape, np.nan, np.float32)
    K.max_pool2d_bwd(gy, x, gx, *_kargs(case), False)
    want = _ref("max_pool2d_grad", _attrs(case), gy, x)
    assert want.dtype == np.float32
    np.testing.assert_allclose(gx, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cip", [True, False])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_avg_pool_kernels(K, case, cip):
    x, gy = _data(case, seed=1)
    attrs = _attrs(case, count_include_pad=cip)
    y = np.full(gy.shape, np.nan, np.float32)
    K.avg_pool2d_fwd(x, y, *_kargs(case), cip)
    np.testing.assert_allclose(y, _ref("avg_pool2d", attrs, x), rtol=1e-5, atol=1e-6)
    gx = np.full(x.shape, np.nan, np.float32)
    K.avg_pool2d_bwd(gy, gx, *_kargs(case), cip)
    want = _ref("avg_pool2d_grad", {**attrs, "input_size": x.shape[2:]}, gy)
    np.testing.assert_allclose(gx, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_references_match_torch(case):
    # PyTorch's pooling pads symmetrically, so the padding (asymmetric in some cases) is
    # applied with F.pad: -inf for max pooling, zeros for the window sums of average pooling,
    # whose divisor without count_include_pad is the window sum of a padded mask of ones
    torch = pytest.importorskip("torch")
    fn = torch.nn.functional
    pt, pb, pl, pr = case[6]
    x, gy = _data(case, seed=2, dtype=np.float64)
    (kh, kw), (sh, sw), _ = pool_params(_attrs(case))
    gyt = torch.from_numpy(gy)

    def padded(t, value):
        return fn.pad(t, (pl, pr, pt, pb), value=value)

    xt = torch.from_numpy(x).requires_grad_()
    yt = fn.max_pool2d(padded(xt, -np.inf), (kh, kw), (sh, sw))
    yt.backward(gyt)
    np.testing.assert_array_equal(_ref("max_pool2d", _attrs(case), x), yt.detach().numpy())
    np.testing.assert_allclose(_ref("max_pool2d_grad", _attrs(case), gy, x), xt.grad.numpy(),
                               rtol=1e-12, atol=1e-12)
    cells = fn.avg_pool2d(padded(torch.ones(x.shape, dtype=torch.float64), 0.0), (kh, kw), (sh, sw))
    for cip in (True, False):
        attrs = _attrs(case, count_include_pad=cip)
        xt = torch.from_numpy(x).requires_grad_()
        yt = fn.avg_pool2d(padded(xt, 0.0), (kh, kw), (sh, sw))  # sum / (kh * kw)
        if not cip:
            yt = yt / cells
        yt.backward(gyt)
        np.testing.assert_allclose(_ref("avg_pool2d", attrs, x), yt.detach().numpy(), rtol=1e-12)
        want = xt.grad.numpy()
        got = _ref("avg_pool2d_grad", {**attrs, "input_size": x.shape[2:]}, gy)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    if (pt, pl) == (pb, pr):
        # where the padding is symmetric, PyTorch's own padding agrees too
        xt = torch.from_numpy(x)
        for cip in (True, False):
            theirs = fn.avg_pool2d(xt, (kh, kw), (sh, sw), (pt, pl), count_include_pad=cip)
            ours = _ref("avg_pool2d", _attrs(case, count_include_pad=cip), x)
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12)
        theirs = fn.max_pool2d(xt, (kh, kw), (sh, sw), (pt, pl))
        np.testing.assert_array_equal(_ref("max_pool2d", _attrs(case), x), theirs.numpy())
    xt = torch.from_numpy(x).requires_grad_()
    yt = fn.adaptive_avg_pool2d(xt, 1)[:, :, 0, 0]
    yt.backward(gyt[:, :, 0, 0])
    np.testing.assert_allclose(_ref("global_avg_pool2d", {}, x), yt.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize(
    "extra,stride",
    [(0, (2, 2)), (1, (2, 2)), (0, None)],
    ids=["2x2_even", "2x2_odd", "general"],
)
def test_max_pool_ties_go_to_the_first_cell_and_nan_wins(K, extra, stride):
    # the 2x2 / stride 2 kernels have fast paths (even and odd sizes); stride (2, 3) with a
    # 2x2 window, a 4x5 image takes the general path and the same windows
    x = np.zeros((1, 1, 4 + extra, 4 + extra + (stride is None)), np.float32)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = 5.0  # a tie in the first window: (0, 1) comes first
    x[0, 0, 2:4, 2:4] = np.nan  # NaN wins: the first NaN takes the gradient
    x[0, 0, 2, 0] = x[0, 0, 3, 1] = -np.inf  # zeros beat -inf
    if stride is None:  # shift the right column of windows by one: general path
        x[0, 0, :, 3:] = x[0, 0, :, 2:-1].copy()
        x[0, 0, :, 2] = 7.0
    sw = 2 if stride else 3
    attrs = {"kernel": (2, 2), "stride": (2, sw)}
    gy = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)
    y = np.empty((1, 1, 2, 2), np.float32)
    K.max_pool2d_fwd(x, y, 2, 2, 2, sw, 0, 0)
    np.testing.assert_array_equal(y[0, 0], [[5.0, 0.0], [0.0, np.nan]])
    np.testing.assert_array_equal(y, _ref("max_pool2d", attrs, x))
    gx = np.full_like(x, np.nan)
    K.max_pool2d_bwd(gy, x, gx, 2, 2, 2, sw, 0, 0, False)
    c0 = 2 if stride else 3  # first column of the right windows
    want = np.zeros_like(x)
    want[0, 0, 0, 1] = 1.0
    want[0, 0, 0, c0] = 2.0  # all zeros: the first
    want[0, 0, 2, 1] = 3.0  # zeros beat -inf: the first zero in row-major order
    want[0, 0, 2, c0] = 4.0  # the first NaN
    np.testing.assert_array_equal(gx, want)
    np.testing.assert_array_equal(_ref("max_pool2d_grad", attrs, gy, x), want)


# even sizes run on MaxPoolTiles of 16 windows: a row of fewer windows (LeNet's 14 and 5),
# exactly 16, more than 16 (a full chunk and a partial one), and a single window
@pytest.mark.parametrize("w", [28, 10, 32, 36, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
def test_even_max_pool_on_tiles(K, w, dtype, relu):
    """Both kernels against the references, in samples that the backward pass splits into
    blocks (each block's last rows run the scalar loop: a tile writes past its row); ties
    (relu's zeros), NaN and windows whose max is negative."""
    r = rng(w)
    x = np.round(r.standard_normal((5, 3, 6, w)) * 2).astype(dtype) / 2
    x[0, 0] = np.maximum(x[0, 0], 0)
    x[1, 2, 0, :2] = np.nan
    x[2, 1, :2, :4] = -3.0
    gy = r.standard_normal((5, 3, 3, w // 2)).astype(dtype)
    gy[3, 0, 0, 0] = np.inf
    attrs = {"kernel": (2, 2), "stride": None, "padding": (0, 0, 0, 0)}
    y = np.full(gy.shape, 7, dtype)
    K.max_pool2d_fwd(x, y, 2, 2, 2, 2, 0, 0)
    np.testing.assert_array_equal(y, _ref("max_pool2d", attrs, x))
    gx = np.full(x.shape, 7, dtype)
    K.max_pool2d_bwd(gy, x, gx, 2, 2, 2, 2, 0, 0, relu)
    np.testing.assert_array_equal(gx, _ref("max_pool2d_grad", {**attrs, "relu": relu}, gy, x))


@pytest.mark.parametrize("w", [28, 10])
def test_even_max_pool_forward_in_blocks_of_samples(K, w):
    """A batch large enough (POOL_SERIAL) for the forward pass to split into blocks of
    samples on the pool's threads."""
    from graphdl.ops.pool import POOL_SERIAL

    x = rng(w).standard_normal((37, 4, 12, w)).astype(np.float32)
    n = POOL_SERIAL // x[0].size + 1
    x = np.concatenate([x] * (n // 37 + 1))[:n]
    y = np.full((n, 4, 6, w // 2), 7, np.float32)
    K.max_pool2d_fwd(x, y, 2, 2, 2, 2, 0, 0)
    np.testing.assert_array_equal(y, _ref("max_pool2d", {"kernel": (2, 2)}, x))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_max_pool_grad_with_relu_folded_in(K, case):
    """relu=True on every window geometry (the scalar and scattering paths too): relu's
    gradient after the pooling gradient, x being relu's output (here any x)."""
    x, gy = _data(case, seed=3)
    x[0, 0, 0] = 0.0
    gx = np.full(x.shape, np.nan, np.float32)
    K.max_pool2d_bwd(gy, x, gx, *_kargs(case), True)
    want = _ref("max_pool2d_grad", _attrs(case, relu=True), gy, x)
    plain = _ref("max_pool2d_grad", _attrs(case), gy, x)
    np.testing.assert_array_equal(want, np.where(x > 0, plain, plain * 0))
    np.testing.assert_allclose(gx, want, rtol=1e-6, atol=1e-6)


def test_max_pool_padding_never_wins(K):
    x = -np.ones((1, 1, 3, 3), np.float32) * np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    x[0, 0, 1, 1] = -np.inf
    attrs = {"kernel": (3, 3), "stride": (1, 1), "padding": (1, 1, 1, 1)}
    y = np.empty((1, 1, 3, 3), np.float32)
    K.max_pool2d_fwd(x, y, 3, 3, 1, 1, 1, 1)
    assert np.all(y < 0)  # zero padding would have won every window
    np.testing.assert_array_equal(y, _ref("max_pool2d", attrs, x))


# through compiled programs, with a symbolic batch
@pytest.mark.parametrize("n", [1, 4])
def test_compiled_ops(n):
    case = (n,) + CASES[2][1:]
    x, gy = _data(case, seed=n)
    xt, gt = T("N", *x.shape[1:]), T("N", *gy.shape[1:])
    check_kernel("max_pool2d", [xt], [x], _attrs(case))
    check_kernel("max_pool2d_grad", [gt, xt], [gy, x], _attrs(case))
    for cip in (True, False):
        attrs = _attrs(case, count_include_pad=cip)
        check_kernel("avg_pool2d", [xt], [x], attrs, rtol=1e-5, atol=1e-6)
        check_kernel("avg_pool2d_grad", [gt], [gy], {**attrs, "input_size": x.shape[2:]},
                     rtol=1e-5, atol=1e-6)
    (out,) = check_kernel("global_avg_pool2d", [xt], [x], rtol=1e-5, atol=1e-6)
    assert out.shape == (n, x.shape[1])


# ----------------------------------------------------------------------- gradients


def _distinct(shape, seed):
    """Values at least 0.05 apart, so no window has a near-tie for finite differences."""
    r = rng(seed)
    return (r.permutation(int(np.prod(shape))) * 0.05 - 1.0).reshape(shape) + r.uniform(0, 0.01, shape)


@pytest.mark.parametrize("case", [CASES[2], CASES[3], CASES[1]], ids=["overlap", "asym", "odd"])
def test_max_pool_grad(case):
    gradcheck("max_pool2d", [_distinct(case[:4], 3)], _attrs(case))


@pytest.mark.parametrize("cip", [True, False])
@pytest.mark.parametrize("case", [CASES[2], CASES[3]], ids=["overlap", "asym"])
def test_avg_pool_grad(case, cip):
    x, gy = _data(case, seed=4, dtype=np.float64)
    attrs = _attrs(case, count_include_pad=cip)
    gradcheck("avg_pool2d", [x], attrs)
    gradcheck("avg_pool2d_grad", [gy], {**attrs, "input_size": x.shape[2:]})


def test_global_avg_pool_grad():
    gradcheck("global_avg_pool2d", [rng(5).standard_normal((2, 3, 4, 5))])


# ----------------------------------------------------------------------- shapes


def test_infer_symbolic():
    assert infer("max_pool2d", [T("N", 6, 28, 28)], kernel=(2, 2)) == [T("N", 6, 14, 14)]
    assert infer("max_pool2d", [T("N", 16, 10, 10)], kernel=(2, 2), stride=(2, 2)) == [
        T("N", 16, 5, 5)
    ]
    assert infer("avg_pool2d", [T("B", 3, 9, 7)], kernel=(3, 3), stride=(2, 2),
                 padding=(1, 1, 1, 1), count_include_pad=False) == [T("B", 3, 5, 4)]
    assert infer("max_pool2d_grad", [T("N", 6, 14, 14), T("N", 6, 28, 28)], kernel=(2, 2)) == [
        T("N", 6, 28, 28)
    ]
    assert infer("avg_pool2d_grad", [T("N", 6, 14, 14)], kernel=(2, 2), input_size=(29, 28)) == [
        T("N", 6, 29, 28)
    ]
    assert infer("global_avg_pool2d", [T("N", 16, 5, 5, dtype="float64")]) == [
        T("N", 16, dtype="float64")
    ]


@pytest.mark.parametrize(
    "op,types,attrs,match",
    [
        ("max_pool2d", [T("N", 16, 2, 2)], {"kernel": (3, 3)},
         r"pool window 3x3 is larger than its 2x2 input \[16, 2, 2\]"),
        ("avg_pool2d", [T("N", 16, 5, 1)], {"kernel": (2, 2), "padding": (1, 0, 0, 0)},
         r"pool window 2x2 is larger than its 6x1 padded input \[16, 5, 1\]"),
        ("max_pool2d", [T("N", 64)], {"kernel": (2, 2)},
         r"max_pool2d expects \[C, H, W\] images; got \[64\] — "),
        ("global_avg_pool2d", [T("N", 8, 8)], {},
         r"global_avg_pool2d expects \[C, H, W\] images; got \[8, 8\] — add a channel axis"),
        ("max_pool2d", [T("N", 3, 8, 8)], {"kernel": (2, 2), "padding": (2, 2, 0, 0)},
         r"more than half the 2x2 window"),
        ("max_pool2d", [T("N", 3, 8, 8)], {"kernel": (2, 2), "stride": (0, 2)}, "stride must be >= 1"),
        ("max_pool2d", [T("N", 3, 8, 8, dtype="int64")], {"kernel": (2, 2)}, "float images"),
        ("max_pool2d_grad", [T("N", 3, 5, 5), T("N", 3, 8, 8)], {"kernel": (2, 2)}, "does not match"),
        ("avg_pool2d_grad", [T("N", 3, 5, 5)], {"kernel": (2, 2), "input_size": (8, 8)},
         "does not match"),
    ],
)
def test_infer_rejects_bad_inputs(op, types, attrs, match):
    with pytest.raises(ShapeError, match=match):
        infer(op, types, **attrs)
