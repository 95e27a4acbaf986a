"""Image ops (graphdl/ops/image.py): kernels vs references, references vs Pillow / scipy
(and PyTorch when installed), seeded augmentation, shape inference and bad inputs.

Programs are compiled for a symbolic batch N and shared between tests (helpers memoise
them), so a handful of compiles cover every case.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from helpers import T, check_kernel, compile_single, infer, reference, rng, run_compiled
from PIL import Image

from graphdl.ops.image import (
    _rotate,
    applied_mask,
    flip_masks,
    gaussian_noise_values,
    rotation_angles,
    salt_pepper_masks,
    uniforms,
)
from graphdl.ops.registry import ShapeError

KERNEL_COVERED = {
    "resize", "grayscale", "rgb_to_yuv", "select_channels", "gaussian_blur", "median_filter",
    "normalize_channels", "random_rotation", "random_flip", "gaussian_noise",
    "salt_pepper_noise",
}
GRAD_COVERED: set[str] = set()  # preprocessing and augmentation are not differentiated

IMG = T("N", 3, 8, 6)
SEED = T(dtype="int64")


def _images(n=3, c=3, h=8, w=6, seed=0, dtype=np.float32):
    return rng(seed).random((n, c, h, w)).astype(dtype)


# ----------------------------------------------------------------------- resize


RESIZES = [((13, 5), "bilinear"), ((3, 4), "bilinear"), ((13, 5), "nearest"), ((3, 4), "nearest")]


@pytest.mark.parametrize("size,mode", RESIZES)
@pytest.mark.parametrize("n", [1, 4])
def test_resize_kernel(size, mode, n):
    x = _images(n=n, seed=n)
    (out,) = check_kernel("resize", [IMG], [x], {"size": size, "interpolation": mode},
                          rtol=1e-6, atol=1e-6)
    assert out.shape == (n, 3, *size)


@pytest.mark.parametrize("hw_in,hw_out", [((8, 8), (32, 32)), ((8, 6), (13, 5)),
                                          ((32, 32), (8, 8)), ((7, 9), (4, 20))])
def test_bilinear_matches_scipy_zoom(hw_in, hw_out):
    # scipy's zoom with grid_mode=True uses the same half-pixel convention (no antialiasing)
    x = rng(1).random((2, 2, *hw_in))
    (ours,) = reference("resize", [x], {"size": hw_out, "interpolation": "bilinear"})
    zoom = (1, 1, hw_out[0] / hw_in[0], hw_out[1] / hw_in[1])
    theirs = ndi.zoom(x, zoom, order=1, mode="nearest", grid_mode=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


# Pillow's BILINEAR antialiases when it shrinks, so shrinking is compared with nearest only
# (bilinear shrinking is compared with scipy and torch)
PILLOW_CASES = [
    (mode, hw_in, hw_out)
    for mode in ("bilinear", "nearest")
    for hw_in, hw_out in [((8, 8), (32, 32)), ((5, 7), (11, 8)), ((16, 12), (5, 3))]
    if mode == "nearest" or (hw_out[0] >= hw_in[0] and hw_out[1] >= hw_in[1])
]


@pytest.mark.parametrize("mode,hw_in,hw_out", PILLOW_CASES)
def test_resize_matches_pillow(mode, hw_in, hw_out):
    x = rng(2).random((1, 1, *hw_in)).astype(np.float32)
    (ours,) = reference("resize", [x], {"size": hw_out, "interpolation": mode})
    resample = Image.Resampling.NEAREST if mode == "nearest" else Image.Resampling.BILINEAR
    theirs = np.asarray(Image.fromarray(x[0, 0], mode="F").resize(hw_out[::-1], resample))
    np.testing.assert_allclose(ours[0, 0], theirs, atol=1e-6)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_resize_matches_torch(mode):
    torch = pytest.importorskip("torch")
    x = rng(3).random((2, 3, 9, 7))
    for size in ((20, 15), (4, 3), (9, 30)):
        (ours,) = reference("resize", [x], {"size": size, "interpolation": mode})
        kw = {"mode": "bilinear", "align_corners": False} if mode == "bilinear" else {
            "mode": "nearest-exact"}
        theirs = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, **kw).numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_resize_same_size_is_identity():
    x = _images(n=2, h=8, w=6)
    for mode in ("bilinear", "nearest"):
        (out,) = reference("resize", [x], {"size": (8, 6), "interpolation": mode})
        np.testing.assert_array_equal(out, x)


# ----------------------------------------------------------------------- colour, channels


def test_grayscale_and_yuv_kernels():
    x = _images(n=3, seed=4)
    (gray,) = check_kernel("grayscale", [IMG], [x], rtol=1e-6, atol=1e-6)
    (yuv,) = check_kernel("rgb_to_yuv", [IMG], [x], rtol=1e-6, atol=1e-6)
    assert gray.shape == (3, 1, 8, 6) and yuv.shape == (3, 3, 8, 6)
    np.testing.assert_allclose(yuv[:, :1], gray, atol=1e-6)  # Y is the BT.601 luma


def test_grayscale_matches_pillow():
    # Pillow's "L" conversion is BT.601 luma (299/587/114 per mille), rounded to uint8
    rgb = rng(5).integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    theirs = np.asarray(Image.fromarray(rgb, mode="RGB").convert("L"), dtype=np.float64)
    x = rgb.transpose(2, 0, 1)[None].astype(np.float64)
    (ours,) = reference("grayscale", [x])
    assert np.abs(ours[0, 0] - theirs).max() <= 0.5 + 1e-9


def test_yuv_known_values():
    # pure colours give the BT.601 matrix rows; grey has no chroma
    x = np.zeros((1, 3, 1, 4))
    x[0, :, 0, 0] = [1, 0, 0]
    x[0, :, 0, 1] = [0, 1, 0]
    x[0, :, 0, 2] = [0, 0, 1]
    x[0, :, 0, 3] = [0.5, 0.5, 0.5]
    (yuv,) = reference("rgb_to_yuv", [x])
    matrix = yuv[0, :, 0, :3]  # column k: the YUV of pure colour k
    np.testing.assert_allclose(matrix, [[0.299, 0.587, 0.114],
                                        [-0.14714, -0.28886, 0.436],
                                        [0.615, -0.51499, -0.10001]], atol=2e-5)
    np.testing.assert_allclose(yuv[0, :, 0, 3], [0.5, 0.0, 0.0], atol=1e-12)


def test_select_channels_kernel():
    x = _images(n=2, seed=6)
    (out,) = check_kernel("select_channels", [IMG], [x], {"channels": (2, 0)})
    np.testing.assert_array_equal(out, x[:, [2, 0]])


def test_normalize_channels_kernel():
    x = _images(n=5, seed=7)
    mean, std = np.array([0.5, 0.1, -2.0]), np.array([0.25, 2.0, 3.0])
    types = [IMG, T(3, dtype="float64"), T(3, dtype="float64")]
    (out,) = check_kernel("normalize_channels", types, [x, mean, std], rtol=1e-6, atol=1e-6)
    want = (x.astype(np.float64) - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_array_equal(out, want.astype(np.float32))  # float64 math, one rounding


def test_normalize_channels_on_feature_vectors():
    x = rng(8).random((4, 7)).astype(np.float32)
    mean, std = rng(9).random(7), rng(10).random(7) + 0.5
    types = [T("N", 7), T(7, dtype="float64"), T(7, dtype="float64")]
    check_kernel("normalize_channels", types, [x, mean, std], rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------- filters


BLURS = [(3, 0.8), (5, 1.5)]


@pytest.mark.parametrize("kernel,sigma", BLURS)
def test_gaussian_blur_kernel_and_scipy(kernel, sigma):
    x = _images(n=2, seed=11)
    (out,) = check_kernel("gaussian_blur", [IMG], [x], {"kernel": kernel, "sigma": sigma},
                          rtol=1e-6, atol=1e-6)
    theirs = ndi.gaussian_filter(x.astype(np.float64), sigma=(0, 0, sigma, sigma),
                                 radius=(0, 0, kernel // 2, kernel // 2), mode="reflect")
    np.testing.assert_allclose(out, theirs, atol=1e-6)


@pytest.mark.parametrize("kernel,sigma", [(1, 1.0), (7, 2.0), (13, 3.0)])
def test_gaussian_blur_reference_matches_scipy(kernel, sigma):
    # kernel 13 is wider than the 6-pixel width: reflection wraps more than once
    x = rng(12).random((1, 2, 8, 6))
    (ours,) = reference("gaussian_blur", [x], {"kernel": kernel, "sigma": sigma})
    theirs = ndi.gaussian_filter(x, sigma=(0, 0, sigma, sigma),
                                 radius=(0, 0, kernel // 2, kernel // 2), mode="reflect")
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    assert np.isclose(ours.sum(), x.sum(), rtol=0.2)  # a blur roughly keeps the mass


def test_median_filter_kernel_and_scipy():
    x = _images(n=3, seed=13)
    (out,) = check_kernel("median_filter", [IMG], [x], {"kernel": 3})
    np.testing.assert_array_equal(out, ndi.median_filter(x, size=(1, 1, 3, 3), mode="nearest"))


@pytest.mark.parametrize("kernel", [1, 5, 9])
def test_median_filter_reference_matches_scipy(kernel):
    x = rng(14).random((2, 1, 8, 6)).astype(np.float32)
    (ours,) = reference("median_filter", [x], {"kernel": kernel})
    np.testing.assert_array_equal(
        ours, ndi.median_filter(x, size=(1, 1, kernel, kernel), mode="nearest"))


def test_median_filter_removes_salt_and_pepper():
    clean = np.tile(np.linspace(0.3, 0.7, 6, dtype=np.float32), (2, 3, 8, 1))
    noisy = clean.copy()
    r = rng(15)
    hits = r.random(clean.shape) < 0.08
    noisy[hits] = r.choice([0.0, 1.0], size=int(hits.sum())).astype(np.float32)
    prog, _ = compile_single("median_filter", [IMG], {"kernel": 3})
    (out,) = run_compiled(prog, [noisy])
    assert np.abs(out - clean).max() < 0.1 < np.abs(noisy - clean).max()


# ----------------------------------------------------------------------- random ops

RANDOM = [
    ("random_rotation", IMG, {"degrees": 30.0, "p": 0.5, "fill": -1.0, "salt": 3}),
    ("random_flip", IMG, {"horizontal": True, "vertical": True, "p": 0.5, "salt": 1}),
    ("gaussian_noise", IMG, {"std": 0.2, "p": 0.7, "salt": 2}),
    ("gaussian_noise", T("N", 10), {"std": 0.5, "salt": 0}),
    ("salt_pepper_noise", IMG, {"amount": 0.2, "p": 0.8, "salt": 4}),
]


def _random_input(t, n, seed=16):
    shape = [n if d == "N" else d for d in t.shape]
    return rng(seed).random(shape).astype(np.float32)


def _changed(x, y):
    return np.any(x.reshape(len(x), -1) != y.reshape(len(y), -1), axis=1)


@pytest.mark.parametrize("op,t,attrs", RANDOM, ids=[f"{r[0]}-{r[1].rank}d" for r in RANDOM])
def test_random_kernel_matches_reference(op, t, attrs):
    x = _random_input(t, 16)
    for seed in (np.int64(12345), np.int64(7)):
        (out,) = check_kernel(op, [t, SEED], [x, seed], attrs, rtol=1e-5, atol=1e-5)
        (want,) = reference(op, [x, seed], attrs)
        # the decisions are drawn identically: exactly the same samples change
        np.testing.assert_array_equal(_changed(x, out), _changed(x, want))


@pytest.mark.parametrize("op,t,attrs", RANDOM, ids=[f"{r[0]}-{r[1].rank}d" for r in RANDOM])
def test_random_ops_are_reproducible(op, t, attrs):
    x = _random_input(t, 16)
    prog, _ = compile_single(op, [t, SEED], attrs)
    (a,) = run_compiled(prog, [x, np.int64(99)])
    (b,) = run_compiled(prog, [x, np.int64(99)])
    (c,) = run_compiled(prog, [x, np.int64(100)])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # a sample's result does not depend on the batch it is in (draws count from its index)
    (head,) = run_compiled(prog, [x[:5], np.int64(99)])
    np.testing.assert_array_equal(head, a[:5])


def test_p_decides_per_sample():
    x = _random_input(IMG, 400)
    for p in (0.0, 0.3, 1.0):
        mask = applied_mask(5, 2, 400, p)
        assert (p > 0 or not mask.any()) and (p < 1 or mask.all())
        (y,) = reference("gaussian_noise", [x, np.int64(5)], {"std": 0.1, "p": p, "salt": 2})
        np.testing.assert_array_equal(_changed(x, y), mask)
    assert 0.2 < applied_mask(5, 2, 400, 0.3).mean() < 0.4


def test_p_zero_is_identity():
    x = _random_input(IMG, 6)
    prog, _ = compile_single("random_rotation", [IMG, SEED], {"degrees": 20.0, "p": 0.0})
    np.testing.assert_array_equal(run_compiled(prog, [x, np.int64(3)])[0], x)
    for op, attrs in [("random_flip", {"p": 0.0, "vertical": True}),
                      ("gaussian_noise", {"std": 1.0, "p": 0.0}),
                      ("salt_pepper_noise", {"amount": 0.5, "p": 0.0}),
                      ("random_rotation", {"degrees": 0.0})]:  # a 0-degree rotation too
        np.testing.assert_array_equal(reference(op, [x, np.int64(3)], attrs)[0], x)


def test_random_rotation_geometry():
    # a quarter turn about the centre of a square image is exact: positive angles turn
    # clockwise as displayed (row 0 at the top)
    x = _random_input(T("N", 2, 5, 5), 1, seed=17)[0]
    np.testing.assert_allclose(_rotate(x, np.pi / 2, 0.0), np.rot90(x, k=-1, axes=(1, 2)),
                               atol=1e-12)
    np.testing.assert_allclose(_rotate(x, -np.pi / 2, 0.0), np.rot90(x, k=1, axes=(1, 2)),
                               atol=1e-12)
    # pixels rotated in from outside the image take `fill`; the centre stays
    ones = np.ones((1, 9, 9))
    turned = _rotate(ones, np.pi / 4, -5.0)
    assert turned[0, 0, 0] == -5.0 and turned[0, 4, 4] == 1.0
    # the angles are uniform in [-degrees, degrees] and the op uses them
    angles = rotation_angles(1, 0, 2000, 30.0)
    assert np.abs(angles).max() <= np.radians(30) and np.abs(angles).max() > np.radians(29.5)
    assert abs(angles.mean()) < 0.02
    xs = _random_input(T("N", 2, 5, 5), 4, seed=18)
    (y,) = reference("random_rotation", [xs, np.int64(1)], {"degrees": 30.0})
    theta = rotation_angles(1, 0, 4, 30.0)
    for a in range(4):
        np.testing.assert_allclose(y[a], _rotate(xs[a], theta[a], 0.0), atol=1e-6)


def test_random_flip_mirrors():
    x = _random_input(IMG, 32)
    (y,) = reference("random_flip", [x, np.int64(11)],
                     {"horizontal": True, "vertical": True, "p": 0.5})
    fh, fv = flip_masks(11, 0, 32, 0.5)
    for a in range(32):
        want = x[a]
        want = want[:, :, ::-1] if fh[a] else want
        want = want[:, ::-1, :] if fv[a] else want
        np.testing.assert_array_equal(y[a], want)
    assert fh.any() and (~fh).any() and fv.any() and (fh != fv).any()


def test_gaussian_noise_statistics():
    z = gaussian_noise_values(3, 1, 200, 500)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    x = np.zeros((200, 500), np.float32)
    (y,) = reference("gaussian_noise", [x, np.int64(3)], {"std": 0.5, "salt": 1})
    np.testing.assert_allclose(y, 0.5 * z, rtol=1e-6, atol=1e-7)


def test_salt_pepper_amount_and_values():
    x = _random_input(T("N", 3, 20, 20), 50)
    (y,) = reference("salt_pepper_noise", [x, np.int64(9)], {"amount": 0.1})
    hit, pepper = salt_pepper_masks(9, 0, 50, 20, 20, 0.1)
    assert 0.08 < hit.mean() < 0.12 and 0.4 < pepper[hit].mean() < 0.6
    lo = x.min(axis=(1, 2, 3))[:, None, None]
    hi = x.max(axis=(1, 2, 3))[:, None, None]
    for ch in range(3):  # every channel of a hit pixel gets the same extreme
        np.testing.assert_array_equal(y[:, ch][hit & pepper], np.broadcast_to(lo, hit.shape)[
            hit & pepper])
        np.testing.assert_array_equal(y[:, ch][hit & ~pepper], np.broadcast_to(hi, hit.shape)[
            hit & ~pepper])
        np.testing.assert_array_equal(y[:, ch][~hit], x[:, ch][~hit])


def test_streams_are_independent_of_dropout_and_each_other():
    from graphdl.ops.nn import dropout_mask_reference

    u0 = uniforms(1, 0, 0, 1000)
    u1 = uniforms(1, 0, 1, 1000)
    drop = dropout_mask_reference(1000, 1, 0, 0.5)
    assert abs(np.corrcoef(u0, u1)[0, 1]) < 0.1
    assert abs(np.corrcoef(u0 < 0.5, drop)[0, 1]) < 0.1
    assert 0.45 < (u0 < 0.5).mean() < 0.55


# ----------------------------------------------------------------------- shapes and errors


def test_symbolic_batch_is_kept():
    assert infer("resize", [IMG], size=(32, 30)) == [T("N", 3, 32, 30)]
    assert infer("grayscale", [IMG]) == [T("N", 1, 8, 6)]
    assert infer("rgb_to_yuv", [IMG]) == [IMG]
    assert infer("select_channels", [IMG], channels=(0,)) == [T("N", 1, 8, 6)]
    assert infer("gaussian_blur", [IMG], kernel=3, sigma=1.0) == [IMG]
    assert infer("median_filter", [IMG], kernel=5) == [IMG]
    f64 = T(3, dtype="float64")
    assert infer("normalize_channels", [IMG, f64, f64]) == [IMG]
    assert infer("random_rotation", [IMG, SEED], degrees=5.0) == [IMG]
    assert infer("gaussian_noise", [T("N", 64), SEED], std=0.1) == [T("N", 64)]
    assert infer("resize", [T("B", 1, 8, 8, dtype="float64")], size=(4, 4)) == [
        T("B", 1, 4, 4, dtype="float64")]


@pytest.mark.parametrize(
    "op,types,attrs,needle",
    [
        ("resize", [T("N", 64)], {"size": (8, 8)}, "channels-first images [N, C, H, W]"),
        ("resize", [IMG], {"size": (0, 8)}, "two positive integers"),
        ("resize", [T("N", 3, 8, 6, dtype="int64")], {"size": (4, 4)}, "float images"),
        ("grayscale", [T("N", 1, 8, 8)], {}, "needs 3 channels"),
        ("rgb_to_yuv", [T("N", 4, 8, 8)], {}, "needs 3 channels"),
        ("select_channels", [IMG], {"channels": (3,)}, "channel 3 does not exist"),
        ("select_channels", [IMG], {"channels": ()}, "non-empty"),
        ("gaussian_blur", [IMG], {"kernel": 4, "sigma": 1.0}, "odd integer"),
        ("gaussian_blur", [IMG], {"kernel": 3, "sigma": 0.0}, "positive number"),
        ("median_filter", [IMG], {"kernel": 0}, "odd integer"),
        ("normalize_channels", [IMG, T(2), T(3)], {}, "mean must be a float vector of shape [3]"),
        ("random_rotation", [IMG, T(1, dtype="int64")], {"degrees": 5.0}, "int64 scalar"),
        ("random_rotation", [IMG, SEED], {"degrees": 270.0}, "[0, 180]"),
        ("random_rotation", [T("N", 64), SEED], {"degrees": 5.0}, "[N, C, H, W]"),
        ("random_flip", [IMG, SEED], {"p": 1.5}, "p must be in [0, 1]"),
        ("random_flip", [IMG, SEED], {"horizontal": False}, "does nothing"),
        ("gaussian_noise", [IMG, SEED], {"std": -1.0}, "std must be >= 0"),
        ("gaussian_noise", [T("N"), SEED], {"std": 1.0}, "float batch"),
        ("salt_pepper_noise", [IMG, SEED], {"amount": 2.0}, "amount must be in [0, 1]"),
    ],
)
def test_bad_inputs(op, types, attrs, needle):
    with pytest.raises(ShapeError) as info:
        infer(op, types, **attrs)
    assert needle in str(info.value)


def test_bad_interpolation_is_rejected():
    with pytest.raises(TypeError, match="interpolation"):
        infer("resize", [IMG], size=(4, 4), interpolation="bicubic")
