"""Image ops on channels-first batches [N, C, H, W]: preprocessing and seeded augmentation.

Deterministic ops (data.preprocess): `resize`, `grayscale`, `rgb_to_yuv`, `select_channels`,
`gaussian_blur`, `median_filter`, `normalize_channels`. Random ops (data.augment, train
graph only): `random_rotation`, `random_flip`, `gaussian_noise`, `salt_pepper_noise`.

None of them is differentiated: they run on the data, before any parameter. Kernels
compute in float64 and store in the output's dtype (float32 or float64).

Random ops draw from a counter-based generator, like `dropout`: every draw is a hash of
(seed, salt, stream, counter), so the NumPy reference and the kernel draw identical
numbers and a fixed seed reproduces a batch exactly. Streams keep the draws apart:

- stream 0: per-sample "apply it?" decisions (counter = sample index i; `random_flip` uses
  2i for the horizontal and 2i + 1 for the vertical flip), applied when u < p;
- stream 1: per-sample parameters (the rotation angle; counter = sample index);
- stream 2: per-element draws (counters 2j and 2j + 1 for flat element or pixel j).
"""

from __future__ import annotations

import math

import numpy as np

from graphdl.ir.types import TensorType
from graphdl.ops.random import hash_counters, mix64, seed_key, uniform53
from graphdl.ops.reduce import _prod
from graphdl.ops.registry import (
    PAR_BLOCKS,
    Attr,
    OpDef,
    ShapeError,
    cpu_helper,
    cpu_kernel,
    prange,
    register,
)

NO_GRAD = "preprocessing runs on the data before any parameter: it is not differentiated"
NO_GRAD_RANDOM = "augmentation runs on the input before any parameter: it is not differentiated"
FLOATS = ("float32", "float64")

# ITU-R BT.601 luma weights, and the analog YUV scales (U_max = 0.436, V_max = 0.615)
LUMA = (0.299, 0.587, 0.114)
U_SCALE = 0.436 / (1.0 - 0.114)
V_SCALE = 0.615 / (1.0 - 0.299)


# --------------------------------------------------------------------------- shape checks


def _fmt(t: TensorType) -> str:
    return f"{t.dtype}[{', '.join(str(d) for d in t.shape)}]"


def _images(op: str, t: TensorType) -> tuple:
    """Check ``t`` is a float batch of images [N, C, H, W]; returns (N, C, H, W)."""
    if t.rank != 4:
        raise ShapeError(
            f"{op} expects a batch of channels-first images [N, C, H, W], got {_fmt(t)}",
            help="store images as [C, H, W] per sample (channels first); for the built-in "
            "digits set `as_images: true` on data.source",
        )
    if t.dtype not in FLOATS:
        raise ShapeError(f"{op} expects float images, got {_fmt(t)}")
    for d in t.shape[1:]:
        if not isinstance(d, int):
            raise ShapeError(f"{op} needs a fixed number of channels, height and width, got "
                             f"{_fmt(t)}")
    return t.shape


def _odd_kernel(op: str, k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ShapeError(f"{op} kernel size must be an odd integer >= 1, got {k!r}",
                         help="use 3, 5, 7, ...: an odd window has a centre pixel")
    return k


def _probability(op: str, name: str, v) -> None:
    if not 0.0 <= float(v) <= 1.0:
        raise ShapeError(f"{op} {name} must be in [0, 1], got {v!r}")


def _seed(op: str, t: TensorType) -> None:
    if t.dtype != "int64" or t.rank != 0:
        raise ShapeError(f"{op}'s seed must be an int64 scalar, got {_fmt(t)}")


# --------------------------------------------------------------------------- resize
# Half-pixel centres (PyTorch `interpolate(align_corners=False)`, Pillow, OpenCV): output
# pixel o samples the input at (o + 0.5) * in / out - 0.5. Bilinear clamps that coordinate
# at 0 and repeats the edge pixel, as PyTorch does; nearest takes floor((o + 0.5) * in / out),
# as Pillow's NEAREST and PyTorch's "nearest-exact". Neither smooths when shrinking
# (no antialiasing), so downscaling matches PyTorch, not Pillow's antialiased BILINEAR.


def _linear_taps(n_in: int, n_out: int):
    """Per output index: (i0, i1, w1) with value = (1 - w1) * x[i0] + w1 * x[i1]."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def _nearest_taps(n_in: int, n_out: int) -> np.ndarray:
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)
    return np.minimum(np.floor(src).astype(np.int64), n_in - 1)


def _infer_resize(attrs, types):
    n, c, _, _ = _images("resize", types[0])
    size = attrs["size"]
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)):
        raise ShapeError(f"resize size must be two positive integers (height, width), got "
                         f"{size!r}")
    return [TensorType((n, c, int(size[0]), int(size[1])), types[0].dtype)]


def _ref_resize(attrs, x):
    h, w = attrs["size"]
    if attrs["interpolation"] == "nearest":
        rows, cols = _nearest_taps(x.shape[2], h), _nearest_taps(x.shape[3], w)
        return x[:, :, rows][:, :, :, cols].copy()
    y0, y1, wy = _linear_taps(x.shape[2], h)
    x0, x1, wx = _linear_taps(x.shape[3], w)
    xd = x.astype(np.float64)
    top, bot = xd[:, :, y0], xd[:, :, y1]
    wx = wx[None, None, None, :]
    top = (1.0 - wx) * top[:, :, :, x0] + wx * top[:, :, :, x1]
    bot = (1.0 - wx) * bot[:, :, :, x0] + wx * bot[:, :, :, x1]
    wy = wy[None, None, :, None]
    return ((1.0 - wy) * top + wy * bot).astype(x.dtype)


@cpu_kernel
def resize_bilinear_nchw(x, out):
    n, c, hi, wi = x.shape
    ho, wo = out.shape[2], out.shape[3]
    y0 = np.empty(ho, np.int64)
    y1 = np.empty(ho, np.int64)
    wy = np.empty(ho, np.float64)
    x0 = np.empty(wo, np.int64)
    x1 = np.empty(wo, np.int64)
    wx = np.empty(wo, np.float64)
    for axis in range(2):
        n_in, n_out = (hi, ho) if axis == 0 else (wi, wo)
        i0s, i1s, ws = (y0, y1, wy) if axis == 0 else (x0, x1, wx)
        scale = np.float64(n_in) / np.float64(n_out)
        for o in range(n_out):
            s = (np.float64(o) + 0.5) * scale - 0.5
            s = max(s, 0.0)
            i0 = min(math.floor(s), n_in - 1)
            i0s[o] = i0
            i1s[o] = min(i0 + 1, n_in - 1)
            ws[o] = s - i0
    for a in range(n):
        for b in range(c):
            for i in range(ho):
                ra = y0[i]
                rb = y1[i]
                fy = wy[i]
                for j in range(wo):
                    fx = wx[j]
                    top = (1.0 - fx) * np.float64(x[a, b, ra, x0[j]]) + fx * np.float64(
                        x[a, b, ra, x1[j]])
                    bot = (1.0 - fx) * np.float64(x[a, b, rb, x0[j]]) + fx * np.float64(
                        x[a, b, rb, x1[j]])
                    out[a, b, i, j] = (1.0 - fy) * top + fy * bot


@cpu_kernel
def resize_nearest_nchw(x, out):
    n, c, hi, wi = x.shape
    ho, wo = out.shape[2], out.shape[3]
    ys = np.empty(ho, np.int64)
    xs = np.empty(wo, np.int64)
    for i in range(ho):
        ys[i] = min(math.floor((np.float64(i) + 0.5) * (np.float64(hi) / np.float64(ho))), hi - 1)
    for j in range(wo):
        xs[j] = min(math.floor((np.float64(j) + 0.5) * (np.float64(wi) / np.float64(wo))), wi - 1)
    for a in range(n):
        for b in range(c):
            for i in range(ho):
                for j in range(wo):
                    out[a, b, i, j] = x[a, b, ys[i], xs[j]]


def _emit_resize(ctx, attrs, ins, outs):
    kernel = "resize_nearest_nchw" if attrs["interpolation"] == "nearest" else "resize_bilinear_nchw"
    return [ctx.call(kernel, ins[0], outs[0])]


register(
    OpDef(
        name="resize",
        inputs=("x",),
        infer=_infer_resize,
        reference=_ref_resize,
        attrs={"size": Attr(tuple), "interpolation": Attr(str, "bilinear",
                                                          allowed=("nearest", "bilinear"))},
        no_grad_reason=NO_GRAD,
        emit_cpu=_emit_resize,
        doc=("resize [N, C, H, W] to size (h, w); half-pixel centres (PyTorch "
        "align_corners=False / Pillow), nearest or bilinear, no antialiasing"),
    )
)


# --------------------------------------------------------------------------- colour


def _infer_rgb(op: str, out_channels: int):
    def infer(attrs, types):
        n, c, h, w = _images(op, types[0])
        if c != 3:
            raise ShapeError(f"{op} needs 3 channels (R, G, B), got {c}: {_fmt(types[0])}",
                             help="read the images in RGB (image_folder: `mode: rgb`)")
        return [TensorType((n, out_channels, h, w), types[0].dtype)]

    return infer


def _ref_grayscale(attrs, x):
    xd = x.astype(np.float64)
    y = LUMA[0] * xd[:, 0] + LUMA[1] * xd[:, 1] + LUMA[2] * xd[:, 2]
    return y[:, None].astype(x.dtype)


def _ref_rgb_to_yuv(attrs, x):
    xd = x.astype(np.float64)
    r, g, b = xd[:, 0], xd[:, 1], xd[:, 2]
    y = LUMA[0] * r + LUMA[1] * g + LUMA[2] * b
    return np.stack([y, U_SCALE * (b - y), V_SCALE * (r - y)], axis=1).astype(x.dtype)


@cpu_kernel
def grayscale_nchw(x, out):
    n, _, h, w = x.shape
    for a in range(n):
        for i in range(h):
            for j in range(w):
                out[a, 0, i, j] = (0.299 * np.float64(x[a, 0, i, j])
                                   + 0.587 * np.float64(x[a, 1, i, j])
                                   + 0.114 * np.float64(x[a, 2, i, j]))


@cpu_kernel
def rgb_to_yuv_nchw(x, out, u_scale, v_scale):
    n, _, h, w = x.shape
    for a in range(n):
        for i in range(h):
            for j in range(w):
                r = np.float64(x[a, 0, i, j])
                b = np.float64(x[a, 2, i, j])
                y = 0.299 * r + 0.587 * np.float64(x[a, 1, i, j]) + 0.114 * b
                out[a, 0, i, j] = y
                out[a, 1, i, j] = u_scale * (b - y)
                out[a, 2, i, j] = v_scale * (r - y)


def _emit_grayscale(ctx, attrs, ins, outs):
    return [ctx.call("grayscale_nchw", ins[0], outs[0])]


def _emit_rgb_to_yuv(ctx, attrs, ins, outs):
    return [ctx.call("rgb_to_yuv_nchw", ins[0], outs[0], repr(U_SCALE), repr(V_SCALE))]


register(
    OpDef(
        name="grayscale",
        inputs=("x",),
        infer=_infer_rgb("grayscale", 1),
        reference=_ref_grayscale,
        no_grad_reason=NO_GRAD,
        emit_cpu=_emit_grayscale,
        doc="RGB [N, 3, H, W] -> luma [N, 1, H, W], ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B",
    )
)
register(
    OpDef(
        name="rgb_to_yuv",
        inputs=("x",),
        infer=_infer_rgb("rgb_to_yuv", 3),
        reference=_ref_rgb_to_yuv,
        no_grad_reason=NO_GRAD,
        emit_cpu=_emit_rgb_to_yuv,
        doc=("RGB -> YUV (BT.601 analog): Y = luma, U = 0.436 (B - Y) / 0.886, "
        "V = 0.615 (R - Y) / 0.701"),
    )
)


# --------------------------------------------------------------------------- channels


def _infer_select(attrs, types):
    t = types[0]
    if t.rank < 2 or not isinstance(t.shape[1], int):
        raise ShapeError(f"select_channels expects [N, C, ...] with a fixed C, got {_fmt(t)}")
    chans = attrs["channels"]
    if not isinstance(chans, (tuple, list)) or not chans:
        raise ShapeError(f"select_channels needs a non-empty list of channels, got {chans!r}")
    for ch in chans:
        if isinstance(ch, bool) or not isinstance(ch, int) or not 0 <= ch < t.shape[1]:
            raise ShapeError(
                f"select_channels: channel {ch!r} does not exist in {_fmt(t)} "
                f"(channels 0..{t.shape[1] - 1})")
    return [t.with_shape((t.shape[0], len(chans), *t.shape[2:]))]


def _ref_select(attrs, x):
    return np.ascontiguousarray(x[:, list(attrs["channels"])])


@cpu_kernel
def select_channels_ncr(x, out, channels):
    n = x.shape[0]
    r = x.shape[2]
    for a in range(n):
        for k in range(len(channels)):
            ch = channels[k]
            for i in range(r):
                out[a, k, i] = x[a, ch, i]


def _view_ncr(ctx, v):
    s = ctx.shape(v)
    return f"{ctx.var(v)}.reshape(({s[0]}, {s[1]}, {_prod(s[2:])}))"


def _emit_select(ctx, attrs, ins, outs):
    chans = "(" + "".join(f"{int(c)}, " for c in attrs["channels"]) + ")"
    return [ctx.call("select_channels_ncr", _view_ncr(ctx, ins[0]), _view_ncr(ctx, outs[0]), chans)]


register(
    OpDef(
        name="select_channels",
        inputs=("x",),
        infer=_infer_select,
        reference=_ref_select,
        attrs={"channels": Attr(tuple)},
        no_grad_reason=NO_GRAD,
        emit_cpu=_emit_select,
        doc="keep the listed channels of [N, C, ...], in the given order",
    )
)


def _infer_normalize(attrs, types):
    x, mean, std = types
    if x.rank < 2 or not isinstance(x.shape[1], int) or x.dtype not in FLOATS:
        raise ShapeError(f"normalize_channels expects a float [N, C, ...] tensor, got {_fmt(x)}")
    for name, t in (("mean", mean), ("std", std)):
        if t.shape != (x.shape[1],) or t.dtype not in FLOATS:
            raise ShapeError(f"normalize_channels: {name} must be a float vector of shape "
                             f"[{x.shape[1]}] (one per channel), got {_fmt(t)}")
    return [x]


def _ref_normalize(attrs, x, mean, std):
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    m = np.asarray(mean, np.float64).reshape(shape)
    s = np.asarray(std, np.float64).reshape(shape)
    return ((x.astype(np.float64) - m) / s).astype(x.dtype)


@cpu_kernel
def normalize_channels_ncr(x, mean, std, out):
    n, c, r = x.shape
    for a in range(n):
        for b in range(c):
            m = np.float64(mean[b])
            s = np.float64(std[b])
            for i in range(r):
                out[a, b, i] = (np.float64(x[a, b, i]) - m) / s


def _emit_normalize(ctx, attrs, ins, outs):
    return [ctx.call("normalize_channels_ncr", _view_ncr(ctx, ins[0]), ins[1], ins[2],
                     _view_ncr(ctx, outs[0]))]


register(
    OpDef(
        name="normalize_channels",
        inputs=("x", "mean", "std"),
        infer=_infer_normalize,
        reference=_ref_normalize,
        no_grad_reason=NO_GRAD,
        emit_cpu=_emit_normalize,
        doc="(x - mean[c]) / std[c] over axis 1 of [N, C, ...], computed in float64",
    )
)


# --------------------------------------------------------------------------- filters
# Both filters work on each [H, W] plane. gaussian_blur pads by reflection about the edge
# (scipy.ndimage mode 'reflect': d c b a | a b c d | d c b a), so it equals
# scipy.ndimage.gaussian_filter(x, sigma=(0, 0, s, s), radius=kernel // 2);
# median_filter repeats the edge pixel (scipy mode 'nearest').


def _gaussian_weights(kernel: int, sigma: float) -> np.ndarray:
    r = kernel // 2
    t = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 / (sigma * sigma) * t * t)
    return w / w.sum()


def _reflect_index(i: np.ndarray, n: int) -> np.ndarray:
    i = np.mod(i, 2 * n)
    return np.where(i >= n, 2 * n - 1 - i, i)


def _infer_blur(attrs, types):
    _images("gaussian_blur", types[0])
    _odd_kernel("gaussian_blur", attrs["kernel"])
    sigma = attrs["sigma"]
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0 or not (
            math.isfinite(sigma)):
        raise ShapeError(f"gaussian_blur sigma must be a positive number, got {sigma!r}")
    return [types[0]]


def _ref_blur(attrs, x):
    k = attrs["kernel"]
    w = _gaussian_weights(k, float(attrs["sigma"]))
    r = k // 2
    y = x.astype(np.float64)
    for axis in (2, 3):
        n = y.shape[axis]
        acc = np.zeros_like(y)
        for t in range(k):
            idx = _reflect_index(np.arange(n) + t - r, n)
            acc += w[t] * np.take(y, idx, axis=axis)
        y = acc
    return y.astype(x.dtype)


@cpu_kernel
def gaussian_blur_nchw(x, out, ksize, sigma):
    n, c, h, w = x.shape
    r = ksize // 2
    wt = np.empty(ksize, np.float64)
    total = 0.0
    for t in range(ksize):
        d = np.float64(t - r)
        wt[t] = math.exp(-0.5 / (sigma * sigma) * d * d)
        total += wt[t]
    for t in range(ksize):
        wt[t] /= total
    # reflected source index of every (output position, tap), per axis
    iy = np.empty((h, ksize), np.int64)
    ix = np.empty((w, ksize), np.int64)
    for axis in range(2):
        size = h if axis == 0 else w
        table = iy if axis == 0 else ix
        for o in range(size):
            for t in range(ksize):
                i = (o + t - r) % (2 * size)
                if i >= size:
                    i = 2 * size - 1 - i
                table[o, t] = i
    tmp = np.empty((h, w), np.float64)
    for a in range(n):
        for b in range(c):
            for i in range(h):
                for j in range(w):
                    s = 0.0
                    for t in range(ksize):
                        s += wt[t] * np.float64(x[a, b, iy[i, t], j])
                    tmp[i, j] = s
            for i in range(h):
                for j in range(w):
                    s = 0.0
                    for t in range(ksize):
                        s += wt[t] * tmp[i, ix[j, t]]
                    out[a, b, i, j] = s


def _emit_blur(ctx, attrs, ins, outs):
    return [ctx.call("gaussian_blur_nchw", ins[0], outs[0], int(attrs["kernel"]),
                     repr(float(attrs["sigma"])))]


register(
    OpDef(
        name="gaussian_blur",
        inputs=("x",),
        infer=_infer_blur,
        reference=_ref_blur,
        attrs={"kernel": Attr(int), "sigma": Attr(float)},
        no_grad_reason=NO_GRAD,
        emit_cpu=_emit_blur,
        doc=("separable Gaussian blur of each [H, W] plane, kernel x kernel taps, reflect "
        "padding (= scipy.ndimage.gaussian_filter with radius kernel // 2)"),
    )
)


def _infer_median(attrs, types):
    _images("median_filter", types[0])
    _odd_kernel("median_filter", attrs["kernel"])
    return [types[0]]


def _ref_median(attrs, x):
    k = attrs["kernel"]
    r = k // 2
    h, w = x.shape[2], x.shape[3]
    padded = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge")
    windows = [padded[:, :, dy:dy + h, dx:dx + w] for dy in range(k) for dx in range(k)]
    return np.median(np.stack(windows, axis=0), axis=0).astype(x.dtype)


@cpu_kernel
def median_filter_nchw(x, out, ksize):
    n, c, h, w = x.shape
    r = ksize // 2
    kk = ksize * ksize
    buf = np.empty(kk, np.float64)
    for a in range(n):
        for b in range(c):
            for i in range(h):
                for j in range(w):
                    m = 0
                    for dy in range(ksize):
                        yy = min(max(i + dy - r, 0), h - 1)
                        for dx in range(ksize):
                            xx = min(max(j + dx - r, 0), w - 1)
                            v = np.float64(x[a, b, yy, xx])
                            # insertion sort: the window is small (9, 25, 49 values)
                            p = m
                            while p > 0 and buf[p - 1] > v:
                                buf[p] = buf[p - 1]
                                p -= 1
                            buf[p] = v
                            m += 1
                    out[a, b, i, j] = buf[kk // 2]


def _emit_median(ctx, attrs, ins, outs):
    return [ctx.call("median_filter_nchw", ins[0], outs[0], int(attrs["kernel"]))]


register(
    OpDef(
        name="median_filter",
        inputs=("x",),
        infer=_infer_median,
        reference=_ref_median,
        attrs={"kernel": Attr(int)},
        no_grad_reason=NO_GRAD,
        emit_cpu=_emit_median,
        doc=("median of each kernel x kernel window of each [H, W] plane, edge pixels "
        "repeated (= scipy.ndimage.median_filter mode='nearest')"),
    )
)


# --------------------------------------------------------------------------- random draws
# The counter-based hash of graphdl/ops/random.py: a uniform is the top 53 bits of
# mix64(key, counter), exact in float64, in [0, 1). The stream keys are derived from
# dropout's key for (seed, salt) and a tag, so augmentation never draws dropout's numbers.
# The generated step draws each stream into a buffer with `draw_uniforms`; the op kernels
# only read it.

_AUGMENT_TAG = np.uint64(0x6175676D656E7400)  # "augment\0"
STREAM_DECIDE, STREAM_PARAM, STREAM_ELEMENT = 0, 1, 2


@cpu_helper
def stream_key(seed, salt, stream):
    """The key of one draw stream for (seed, salt) (int64 scalars)."""
    return mix64(seed_key(seed, salt) ^ (_AUGMENT_TAG + np.uint64(stream)), 0)


def uniforms(seed: int, salt: int, stream: int, n: int) -> np.ndarray:
    """u(0), ..., u(n - 1) of one stream, exactly as `draw_uniforms` computes them."""
    with np.errstate(over="ignore"):
        key = stream_key(np.int64(seed), np.int64(salt), np.int64(stream))
    return uniform53(hash_counters(key, n))


@cpu_kernel
def draw_uniforms(seed, salt, stream, out):
    """out[c] = u(c) of stream ``stream`` for (seed[0], salt); uint64 arithmetic wraps."""
    key = stream_key(seed[0], salt, stream)
    for c in range(out.size):
        out[c] = uniform53(mix64(key, c))


def applied_mask(seed: int, salt: int, n: int, p: float) -> np.ndarray:
    """Which of n samples a random op with probability p changes (not random_flip)."""
    return uniforms(seed, salt, STREAM_DECIDE, n) < p


def _infer_random(op: str, images: bool):
    def infer(attrs, types):
        x = types[0]
        if images:
            _images(op, x)
        elif x.rank < 2 or x.dtype not in FLOATS:
            raise ShapeError(f"{op} expects a float batch [N, ...], got {_fmt(x)}")
        _seed(op, types[1])
        _probability(op, "p", attrs["p"])
        if op == "random_rotation" and not (0.0 <= attrs["degrees"] <= 180.0):
            raise ShapeError(f"random_rotation degrees must be in [0, 180], got "
                             f"{attrs['degrees']!r}")
        if op == "random_flip" and not (attrs["horizontal"] or attrs["vertical"]):
            raise ShapeError("random_flip with horizontal and vertical both false does nothing",
                             help="set `horizontal: true` or `vertical: true`")
        if op == "gaussian_noise" and not attrs["std"] >= 0.0:
            raise ShapeError(f"gaussian_noise std must be >= 0, got {attrs['std']!r}")
        if op == "salt_pepper_noise":
            _probability(op, "amount", attrs["amount"])
        return [x]

    return infer


def _emit_random(kernel: str, draws: tuple[tuple[int, int], ...], attr_names: tuple[str, ...],
                 view=None, seeded: bool = False):
    """Emit the draws (stream, values per unit of ``_draw_units``) into fresh buffers, then
    the op kernel ``kernel(x, *buffers, out, *attrs)``; with ``seeded``, the kernel draws
    its per-element stream itself from the seed and salt it is passed after the buffers
    (``kernel(x, *buffers, seed, salt, out, *attrs)``: no buffer of a value per element)."""

    def emit(ctx, attrs, ins, outs):
        lines, bufs = [], []
        for stream, per in draws:
            buf = ctx.fresh("u")
            size = f"{per} * {_draw_units(ctx, ins[0], stream)}"
            lines.append(f"{buf} = np.empty({size}, np.float64)")
            lines.append(ctx.call("draw_uniforms", ins[1], int(attrs["salt"]), stream, buf))
            bufs.append(buf)
        if seeded:
            bufs += [ctx.var(ins[1]), ctx.runtime(int(attrs["salt"]))]
        xv, ov = ctx.var(ins[0]), ctx.var(outs[0])
        if view is not None:
            xv, ov = view(ctx, ins[0]), view(ctx, outs[0])
        lines.append(ctx.call(kernel, xv, *bufs, ov, *(repr(attrs[a]) for a in attr_names)))
        return lines

    return emit


def _draw_units(ctx, x, stream: int) -> str:
    """Samples (decisions, parameters) or values per sample times samples (elements)."""
    s = ctx.shape(x)
    return s[0] if stream != STREAM_ELEMENT else _prod(s)


# ---------------------------------------------------------------- random_rotation


# The CUDA kernels (graphdl/backends/cuda/kernels/image.py) repeat these kernels' arithmetic
# in the same order, deliberately, so both devices give the same bits: change them together.
@cpu_kernel
def random_rotation_nchw(x, u_apply, u_angle, out, p, degrees, fill):
    n, c, h, w = x.shape
    cy = 0.5 * np.float64(h - 1)
    cx = 0.5 * np.float64(w - 1)
    for a in range(n):
        if not u_apply[a] < p:
            # element loops, not out[a] = x[a]: Numba's broadcasting setitem brings its
            # error-message string code with it (~3 s of a cold compile)
            for b in range(c):
                for i in range(h):
                    for j in range(w):
                        out[a, b, i, j] = x[a, b, i, j]
            continue
        theta = (2.0 * u_angle[a] - 1.0) * degrees * (math.pi / 180.0)
        ct = math.cos(theta)
        st = math.sin(theta)
        for i in range(h):
            dy = np.float64(i) - cy
            for j in range(w):
                dx = np.float64(j) - cx
                # the output pixel's source position: the inverse rotation about the centre
                sx = ct * dx + st * dy + cx
                sy = -st * dx + ct * dy + cy
                fx0 = math.floor(sx)
                fy0 = math.floor(sy)
                fx = sx - fx0
                fy = sy - fy0
                x0 = int(fx0)
                y0 = int(fy0)
                for b in range(c):
                    v00 = fill
                    v01 = fill
                    v10 = fill
                    v11 = fill
                    if 0 <= y0 < h:
                        if 0 <= x0 < w:
                            v00 = np.float64(x[a, b, y0, x0])
                        if 0 <= x0 + 1 < w:
                            v01 = np.float64(x[a, b, y0, x0 + 1])
                    if 0 <= y0 + 1 < h:
                        if 0 <= x0 < w:
                            v10 = np.float64(x[a, b, y0 + 1, x0])
                        if 0 <= x0 + 1 < w:
                            v11 = np.float64(x[a, b, y0 + 1, x0 + 1])
                    top = (1.0 - fx) * v00 + fx * v01
                    bot = (1.0 - fx) * v10 + fx * v11
                    out[a, b, i, j] = (1.0 - fy) * top + fy * bot


def _rotate(img: np.ndarray, theta: float, fill: float) -> np.ndarray:
    """One image [C, H, W] rotated by ``theta`` radians, bilinear, float64."""
    _, h, w = img.shape
    cy, cx = 0.5 * (h - 1), 0.5 * (w - 1)
    dy, dx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    ct, st = math.cos(theta), math.sin(theta)
    sx = ct * dx + st * dy + cx
    sy = -st * dx + ct * dy + cy
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)

    def tap(yy, xx):
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        vals = img[:, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)].astype(np.float64)
        return np.where(inside, vals, fill)

    top = (1.0 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1)
    bot = (1.0 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)
    return (1.0 - fy) * top + fy * bot


def rotation_angles(seed: int, salt: int, n: int, degrees: float) -> np.ndarray:
    """The angle (radians) random_rotation draws for each of n samples."""
    u = uniforms(seed, salt, STREAM_PARAM, n)
    return (2.0 * u - 1.0) * degrees * (math.pi / 180.0)


def _ref_rotation(attrs, x, seed):
    n = x.shape[0]
    apply = applied_mask(int(seed), attrs["salt"], n, attrs["p"])
    theta = rotation_angles(int(seed), attrs["salt"], n, attrs["degrees"])
    out = x.copy()
    for a in np.flatnonzero(apply):
        out[a] = _rotate(x[a], theta[a], float(attrs["fill"])).astype(x.dtype)
    return out


register(
    OpDef(
        name="random_rotation",
        inputs=("x", "seed"),
        infer=_infer_random("random_rotation", images=True),
        reference=_ref_rotation,
        attrs={"degrees": Attr(float), "fill": Attr(float, 0.0), "p": Attr(float, 1.0),
               "salt": Attr(int, 0)},
        no_grad_reason=NO_GRAD_RANDOM,
        emit_cpu=_emit_random("random_rotation_nchw", ((STREAM_DECIDE, 1), (STREAM_PARAM, 1)),
                              ("p", "degrees", "fill")),
        doc=("with probability p per sample, rotate about the image centre by an angle drawn "
             "uniformly from [-degrees, degrees]; bilinear, `fill` outside the image"),
    )
)


# ---------------------------------------------------------------- random_flip


@cpu_kernel
def random_flip_nchw(x, u_flip, out, p, horizontal, vertical):
    n, c, h, w = x.shape
    for a in range(n):
        fh = horizontal and u_flip[2 * a] < p
        fv = vertical and u_flip[2 * a + 1] < p
        for b in range(c):
            for i in range(h):
                si = h - 1 - i if fv else i
                for j in range(w):
                    sj = w - 1 - j if fh else j
                    out[a, b, i, j] = x[a, b, si, sj]


def flip_masks(seed: int, salt: int, n: int, p: float) -> tuple[np.ndarray, np.ndarray]:
    """(horizontal, vertical) flip decisions of random_flip for n samples."""
    u = uniforms(seed, salt, STREAM_DECIDE, 2 * n).reshape(n, 2)
    return u[:, 0] < p, u[:, 1] < p


def _ref_flip(attrs, x, seed):
    fh, fv = flip_masks(int(seed), attrs["salt"], x.shape[0], attrs["p"])
    out = x.copy()
    if attrs["horizontal"]:
        out[fh] = out[fh][:, :, :, ::-1]
    if attrs["vertical"]:
        out[fv] = out[fv][:, :, ::-1, :]
    return out


register(
    OpDef(
        name="random_flip",
        inputs=("x", "seed"),
        infer=_infer_random("random_flip", images=True),
        reference=_ref_flip,
        attrs={"horizontal": Attr(bool, True), "vertical": Attr(bool, False),
               "p": Attr(float, 0.5), "salt": Attr(int, 0)},
        no_grad_reason=NO_GRAD_RANDOM,
        emit_cpu=_emit_random("random_flip_nchw", ((STREAM_DECIDE, 2),),
                              ("p", "horizontal", "vertical")),
        doc=("per sample, mirror left-right (horizontal) and/or top-bottom (vertical), each "
             "with its own draw and probability p"),
    )
)


# ---------------------------------------------------------------- gaussian_noise


@cpu_helper
def _gaussian_noise_rows(x, u_apply, key, out, p, std, a0, a1):
    m = x.shape[1]
    for a in range(a0, a1):
        if not u_apply[a] < p:
            for i in range(m):
                out[a, i] = x[a, i]
            continue
        for i in range(m):
            j = 2 * (a * m + i)
            # u(j), u(j + 1) of the element stream, as draw_uniforms would write them
            u0 = uniform53(mix64(key, j))
            u1 = uniform53(mix64(key, j + 1))
            # Box-Muller; 1 - u is in (0, 1], so the log is finite
            g = math.sqrt(-2.0 * math.log(1.0 - u0)) * math.cos(2.0 * math.pi * u1)
            out[a, i] = np.float64(x[a, i]) + std * g


@cpu_kernel(parallel=True)
def gaussian_noise_nm(x, u_apply, seed, salt, out, p, std):
    """Rows (samples) in blocks across the threads: a log, a square root and a cosine per
    element make this the costliest augmentation (1.2 ms for 64 images of 28x28 on one
    thread), and every element's draws are fixed by its index, so the split changes no bit.
    The two uniforms of each element are hashed here, in the blocks, from the element
    stream's key: no per-step buffer of 2 float64 per value (800 KB for 64 images)."""
    n = x.shape[0]
    # an int64, not the bare constant: stream_key then shares draw_uniforms' compilation
    key = stream_key(seed[0], salt, np.int64(STREAM_ELEMENT))
    nblk = min(PAR_BLOCKS, n)
    for t in prange(nblk):
        _gaussian_noise_rows(x, u_apply, key, out, p, std, n * t // nblk, n * (t + 1) // nblk)


def gaussian_noise_values(seed: int, salt: int, n: int, m: int) -> np.ndarray:
    """The standard normal draws [n, m] gaussian_noise adds (before scaling by std)."""
    u = uniforms(seed, salt, STREAM_ELEMENT, 2 * n * m).reshape(n * m, 2)
    return (np.sqrt(-2.0 * np.log(1.0 - u[:, 0])) * np.cos(2.0 * np.pi * u[:, 1])).reshape(n, m)


def _ref_gaussian_noise(attrs, x, seed):
    n = x.shape[0]
    flat = x.reshape(n, -1)
    noise = gaussian_noise_values(int(seed), attrs["salt"], n, flat.shape[1])
    apply = applied_mask(int(seed), attrs["salt"], n, attrs["p"])
    y = np.where(apply[:, None], flat.astype(np.float64) + attrs["std"] * noise, flat)
    return y.astype(x.dtype).reshape(x.shape)


def _view_nm(ctx, v):
    s = ctx.shape(v)
    return f"{ctx.var(v)}.reshape(({s[0]}, {_prod(s[1:])}))"


register(
    OpDef(
        name="gaussian_noise",
        inputs=("x", "seed"),
        infer=_infer_random("gaussian_noise", images=False),
        reference=_ref_gaussian_noise,
        attrs={"std": Attr(float), "p": Attr(float, 1.0), "salt": Attr(int, 0)},
        no_grad_reason=NO_GRAD_RANDOM,
        emit_cpu=_emit_random("gaussian_noise_nm", ((STREAM_DECIDE, 1),), ("p", "std"),
                              view=_view_nm, seeded=True),
        doc=("with probability p per sample, add std * N(0, 1) noise to every value of it "
             "(any float [N, ...] input)"),
    )
)


# ---------------------------------------------------------------- salt_pepper_noise


@cpu_kernel
def salt_pepper_nchw(x, u_apply, u_elem, out, p, amount):
    n, c, h, w = x.shape
    for a in range(n):
        for b in range(c):  # element loops: see random_rotation_nchw
            for i in range(h):
                for j in range(w):
                    out[a, b, i, j] = x[a, b, i, j]
        if not u_apply[a] < p:
            continue
        lo = x[a].min()
        hi = x[a].max()
        for i in range(h):
            for j in range(w):
                q = 2 * ((a * h + i) * w + j)
                if u_elem[q] < amount:
                    v = lo if u_elem[q + 1] < 0.5 else hi
                    for b in range(c):
                        out[a, b, i, j] = v


def salt_pepper_masks(seed: int, salt: int, n: int, h: int, w: int, amount: float):
    """(corrupted, pepper) masks [n, h, w]: which pixels are replaced, and by the minimum."""
    u = uniforms(seed, salt, STREAM_ELEMENT, 2 * n * h * w).reshape(n, h, w, 2)
    return u[..., 0] < amount, u[..., 1] < 0.5


def _ref_salt_pepper(attrs, x, seed):
    n = x.shape[0]
    hit, pepper = salt_pepper_masks(int(seed), attrs["salt"], n, x.shape[2], x.shape[3],
                                    attrs["amount"])
    hit &= applied_mask(int(seed), attrs["salt"], n, attrs["p"])[:, None, None]
    lo = x.reshape(n, -1).min(axis=1)[:, None, None]
    hi = x.reshape(n, -1).max(axis=1)[:, None, None]
    value = np.where(pepper, lo, hi)
    return np.where(hit[:, None], value[:, None], x).astype(x.dtype)


register(
    OpDef(
        name="salt_pepper_noise",
        inputs=("x", "seed"),
        infer=_infer_random("salt_pepper_noise", images=True),
        reference=_ref_salt_pepper,
        attrs={"amount": Attr(float), "p": Attr(float, 1.0), "salt": Attr(int, 0)},
        no_grad_reason=NO_GRAD_RANDOM,
        emit_cpu=_emit_random("salt_pepper_nchw", ((STREAM_DECIDE, 1), (STREAM_ELEMENT, 2)),
                              ("p", "amount")),
        doc=("with probability p per sample, replace a fraction `amount` of its pixels (all "
             "channels) by the sample's minimum (pepper) or maximum (salt), half each"),
    )
)
