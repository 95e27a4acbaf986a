"""CUDA kernels of the image ops (graphdl/ops/image.py): preprocessing (resize, grayscale,
rgb_to_yuv, select_channels, normalize_channels, gaussian_blur, median_filter) and the
seeded augmentations (random_rotation, random_flip, gaussian_noise, salt_pepper_noise).

Each kernel is a grid-stride loop with one thread per output value (or pixel), computing
in float64 as the CPU kernels do, with the same formulas in the same order: deliberate
parallels of the CPU kernels there, to change together.

The augmentations draw as on the CPU: each stream is first written into a float64 buffer
by `augment_uniforms`, the CPU's `draw_uniforms` with the hash of graphdl/ops/random.py
compiled as device functions, and the op kernel reads the buffer. A uniform is the top 53
bits of an integer hash, exact in float64, so both devices draw the same bits.

Preprocessing runs once on the host before training (data/pipeline.py compiles it for the
CPU), so these kernels serve graphs built for the GPU by hand; the augmentations are part
of a train step and run on the GPU with it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import float64

from graphdl.backends.cuda.device import RED_BLOCK, cuda, device_function, jit
from graphdl.backends.cuda.kernels.reduce import tree_reduce
from graphdl.backends.cuda.registry import cuda_emitter, cuda_kernel
from graphdl.ops.image import (
    _AUGMENT_TAG,
    STREAM_DECIDE,
    STREAM_ELEMENT,
    STREAM_PARAM,
    U_SCALE,
    V_SCALE,
)
from graphdl.ops.random import mix64, spread_seed, uniform53
from graphdl.ops.reduce import _prod

_mix64 = device_function(mix64, wraps=True)
_spread_seed = device_function(spread_seed, wraps=True)
_uniform53 = device_function(uniform53)



def _unravel(k, c, h, w):
    """The (a, b, i, j) of element k of a C-contiguous [N, C, H, W] array."""
    j = k % w
    q = k // w
    i = q % h
    q //= h
    return q // c, q % c, i, j


_unravel4 = device_function(_unravel)


# --------------------------------------------------------------------------- resize


@cuda_kernel
@jit
def resize_bilinear_cuda(x, out):
    _n, c, hi, wi = x.shape
    ho, wo = out.shape[2], out.shape[3]
    sy = float64(hi) / float64(ho)
    sx = float64(wi) / float64(wo)
    for k in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        a, b, i, j = _unravel4(k, c, ho, wo)
        # the taps of `_linear_taps`: half-pixel centres, clamped at 0 and at the edge
        s = (float64(i) + 0.5) * sy - 0.5
        s = max(s, 0.0)
        ra = min(math.floor(s), hi - 1)
        rb = min(ra + 1, hi - 1)
        fy = s - ra
        s = (float64(j) + 0.5) * sx - 0.5
        s = max(s, 0.0)
        ca = min(math.floor(s), wi - 1)
        cb = min(ca + 1, wi - 1)
        fx = s - ca
        top = (1.0 - fx) * float64(x[a, b, ra, ca]) + fx * float64(x[a, b, ra, cb])
        bot = (1.0 - fx) * float64(x[a, b, rb, ca]) + fx * float64(x[a, b, rb, cb])
        out[a, b, i, j] = (1.0 - fy) * top + fy * bot


@cuda_kernel
@jit
def resize_nearest_cuda(x, out):
    _n, c, hi, wi = x.shape
    ho, wo = out.shape[2], out.shape[3]
    for k in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        a, b, i, j = _unravel4(k, c, ho, wo)
        yy = min(math.floor((float64(i) + 0.5) * (float64(hi) / float64(ho))), hi - 1)
        xx = min(math.floor((float64(j) + 0.5) * (float64(wi) / float64(wo))), wi - 1)
        out[a, b, i, j] = x[a, b, yy, xx]


@cuda_emitter("resize")
def _emit_resize(ctx, attrs, ins, outs):
    name = "resize_nearest_cuda" if attrs["interpolation"] == "nearest" else "resize_bilinear_cuda"
    return ctx.launch1d(ctx.kernel(name), ctx.size(outs[0]), [ctx.var(ins[0]), ctx.var(outs[0])])


# --------------------------------------------------------------------------- colour


@cuda_kernel
@jit
def grayscale_cuda(x, out):
    n, _, h, w = x.shape
    for k in range(cuda.grid(1), n * h * w, cuda.gridsize(1)):
        a, _, i, j = _unravel4(k, 1, h, w)
        out[a, 0, i, j] = (0.299 * float64(x[a, 0, i, j]) + 0.587 * float64(x[a, 1, i, j])
                           + 0.114 * float64(x[a, 2, i, j]))


@cuda_kernel
@jit
def rgb_to_yuv_cuda(x, out, u_scale, v_scale):
    n, _, h, w = x.shape
    for k in range(cuda.grid(1), n * h * w, cuda.gridsize(1)):
        a, _, i, j = _unravel4(k, 1, h, w)
        r = float64(x[a, 0, i, j])
        b = float64(x[a, 2, i, j])
        y = 0.299 * r + 0.587 * float64(x[a, 1, i, j]) + 0.114 * b
        out[a, 0, i, j] = y
        out[a, 1, i, j] = u_scale * (b - y)
        out[a, 2, i, j] = v_scale * (r - y)


def _pixels(ctx, v) -> str:
    s = ctx.shape(v)
    return f"{s[0]} * {s[2]} * {s[3]}"


@cuda_emitter("grayscale")
def _emit_grayscale(ctx, attrs, ins, outs):
    return ctx.launch1d(ctx.kernel("grayscale_cuda"), ctx.view(_pixels(ctx, ins[0]), "n"),
                        [ctx.var(ins[0]), ctx.var(outs[0])])


@cuda_emitter("rgb_to_yuv")
def _emit_rgb_to_yuv(ctx, attrs, ins, outs):
    return ctx.launch1d(ctx.kernel("rgb_to_yuv_cuda"), ctx.view(_pixels(ctx, ins[0]), "n"),
                        [ctx.var(ins[0]), ctx.var(outs[0]), repr(U_SCALE), repr(V_SCALE)])


# --------------------------------------------------------------------------- channels


def _ncr(ctx, v) -> str:
    s = ctx.shape(v)
    return ctx.reshaped(v, (s[0], s[1], _prod(s[2:])))


@cuda_kernel
@jit
def select_channels_cuda(x, channels, out):
    """out[a, k, i] = x[a, channels[k], i] on (N, C, R) views; channels: int64 [K]."""
    _n, kc, r = out.shape
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        i = e % r
        q = e // r
        k = q % kc
        a = q // kc
        out[a, k, i] = x[a, channels[k], i]


@cuda_emitter("select_channels")
def _emit_select(ctx, attrs, ins, outs):
    chans = ", ".join(str(int(c)) for c in attrs["channels"])
    table = ctx.view(f"R.to_device(np.array([{chans}], np.int64))", "c")
    return ctx.launch1d(ctx.kernel("select_channels_cuda"), ctx.size(outs[0]),
                        [_ncr(ctx, ins[0]), table, _ncr(ctx, outs[0])])


@cuda_kernel
@jit
def normalize_channels_cuda(x, mean, std, out):
    _n, c, r = x.shape
    for e in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        b = (e // r) % c
        a = e // (r * c)
        i = e % r
        out[a, b, i] = (float64(x[a, b, i]) - float64(mean[b])) / float64(std[b])


@cuda_emitter("normalize_channels")
def _emit_normalize(ctx, attrs, ins, outs):
    return ctx.launch1d(ctx.kernel("normalize_channels_cuda"), ctx.size(outs[0]),
                        [_ncr(ctx, ins[0]), ctx.var(ins[1]), ctx.var(ins[2]), _ncr(ctx, outs[0])])


# --------------------------------------------------------------------------- filters


def _reflect(i, size):
    """The reflected source index of `gaussian_blur_nchw` (scipy's mode 'reflect')."""
    i = i % (2 * size)
    if i >= size:
        i = 2 * size - 1 - i
    return i


_reflect_d = device_function(_reflect)


def _blur_weight(t, r, sigma, total):
    """Tap t's normalised weight (``total``: the sum of the unnormalised ones)."""
    d = float64(t - r)
    return math.exp(-0.5 / (sigma * sigma) * d * d) / total


def _blur_total(ksize, sigma):
    r = ksize // 2
    total = 0.0
    for t in range(ksize):
        d = float64(t - r)
        total += math.exp(-0.5 / (sigma * sigma) * d * d)
    return total


_blur_weight_d = device_function(_blur_weight)
_blur_total_d = device_function(_blur_total)


@cuda_kernel
@jit
def gaussian_blur_rows_cuda(x, tmp, ksize, sigma):
    """The vertical pass: tmp[a, b, i, j] = sum over taps of w[t] * x[a, b, reflect(i + t - r), j]
    (float64)."""
    _n, c, h, w = x.shape
    r = ksize // 2
    total = _blur_total_d(ksize, sigma)
    for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        a, b, i, j = _unravel4(k, c, h, w)
        s = 0.0
        for t in range(ksize):
            s += _blur_weight_d(t, r, sigma, total) * float64(x[a, b, _reflect_d(i + t - r, h), j])
        tmp[a, b, i, j] = s


@cuda_kernel
@jit
def gaussian_blur_cols_cuda(tmp, out, ksize, sigma):
    """The horizontal pass over the vertical one's float64 result."""
    _n, c, h, w = tmp.shape
    r = ksize // 2
    total = _blur_total_d(ksize, sigma)
    for k in range(cuda.grid(1), tmp.size, cuda.gridsize(1)):
        a, b, i, j = _unravel4(k, c, h, w)
        s = 0.0
        for t in range(ksize):
            s += _blur_weight_d(t, r, sigma, total) * tmp[a, b, i, _reflect_d(j + t - r, w)]
        out[a, b, i, j] = s


@cuda_emitter("gaussian_blur")
def _emit_blur(ctx, attrs, ins, outs):
    x = ins[0]
    tmp = ctx.reshaped(ctx.scratch("float64", ctx.size(x)), ctx.shape(x))
    n = ctx.size(x)
    k, sigma = str(int(attrs["kernel"])), repr(float(attrs["sigma"]))
    return (ctx.launch1d(ctx.kernel("gaussian_blur_rows_cuda"), n, [ctx.var(x), tmp, k, sigma])
            + ctx.launch1d(ctx.kernel("gaussian_blur_cols_cuda"), n, [tmp, ctx.var(outs[0]), k, sigma]))


@cuda_kernel
@jit
def median_filter_cuda(x, out, ksize):
    """The median of each ksize x ksize window, edge pixels repeated. A thread has no
    buffer to sort (local arrays need a compile-time size), so it selects: the median is
    the window value with fewer than kk // 2 + 1 values below it and at least kk // 2 + 1
    at or below it, the value the CPU kernel's sorted buffer holds at kk // 2."""
    _n, c, h, w = x.shape
    r = ksize // 2
    half = (ksize * ksize) // 2
    for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        a, b, i, j = _unravel4(k, c, h, w)
        med = 0.0
        found = False
        for p in range(ksize * ksize):
            if not found:
                py = min(max(i + p // ksize - r, 0), h - 1)
                px = min(max(j + p % ksize - r, 0), w - 1)
                v = float64(x[a, b, py, px])
                below = 0
                at_or_below = 0
                for s in range(ksize * ksize):
                    sy = min(max(i + s // ksize - r, 0), h - 1)
                    sx = min(max(j + s % ksize - r, 0), w - 1)
                    u = float64(x[a, b, sy, sx])
                    if u < v:
                        below += 1
                    if u <= v:
                        at_or_below += 1
                if below <= half < at_or_below:
                    med = v
                    found = True
        out[a, b, i, j] = med


@cuda_emitter("median_filter")
def _emit_median(ctx, attrs, ins, outs):
    return ctx.launch1d(ctx.kernel("median_filter_cuda"), ctx.size(ins[0]),
                        [ctx.var(ins[0]), ctx.var(outs[0]), str(int(attrs["kernel"]))])


# --------------------------------------------------------------------------- random draws


@cuda_kernel
@jit
def augment_uniforms(seed, salt, stream, out):
    """out[k] = u(k) of stream ``stream`` for (seed[0], salt): the CPU's draw_uniforms."""
    # image.stream_key from its parts (a CPU helper calls the CPU's mix64): the key of
    # (seed, salt), tagged with the stream
    key = _mix64(_mix64(_spread_seed(seed[0]), salt) ^ (_AUGMENT_TAG + np.uint64(stream)), 0)
    for k in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[k] = _uniform53(_mix64(key, k))


def _draws(ctx, attrs, seed, x, streams: tuple[tuple[int, int], ...]) -> tuple[list[str], list[str]]:
    """Launches that draw each (stream, values per unit) into a scratch buffer: a unit is a
    sample for the decision and parameter streams, an element for the element stream (as
    image._draw_units). Returns (lines, buffers)."""
    lines, bufs = [], []
    s = ctx.shape(x)
    for stream, per in streams:
        units = _prod(s) if stream == STREAM_ELEMENT else s[0]
        n = ctx.view(f"{per} * {units}", "n")
        buf = ctx.scratch("float64", n)
        lines += ctx.launch1d(ctx.kernel("augment_uniforms"), n,
                              [ctx.var(seed), str(int(attrs["salt"])), str(stream), buf])
        bufs.append(buf)
    return lines, bufs


# ---------------------------------------------------------------- random_rotation


@cuda_kernel
@jit
def random_rotation_cuda(x, u_apply, u_angle, out, p, degrees, fill):
    """One thread per output pixel (all channels): the CPU kernel's bilinear inverse
    rotation about the centre, `fill` outside the image; a sample not drawn is copied."""
    n, c, h, w = x.shape
    cy = 0.5 * float64(h - 1)
    cx = 0.5 * float64(w - 1)
    for k in range(cuda.grid(1), n * h * w, cuda.gridsize(1)):
        a, _, i, j = _unravel4(k, 1, h, w)
        if not u_apply[a] < p:
            for b in range(c):
                out[a, b, i, j] = x[a, b, i, j]
            continue
        theta = (2.0 * u_angle[a] - 1.0) * degrees * (math.pi / 180.0)
        ct = math.cos(theta)
        st = math.sin(theta)
        dy = float64(i) - cy
        dx = float64(j) - cx
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
                    v00 = float64(x[a, b, y0, x0])
                if 0 <= x0 + 1 < w:
                    v01 = float64(x[a, b, y0, x0 + 1])
            if 0 <= y0 + 1 < h:
                if 0 <= x0 < w:
                    v10 = float64(x[a, b, y0 + 1, x0])
                if 0 <= x0 + 1 < w:
                    v11 = float64(x[a, b, y0 + 1, x0 + 1])
            top = (1.0 - fx) * v00 + fx * v01
            bot = (1.0 - fx) * v10 + fx * v11
            out[a, b, i, j] = (1.0 - fy) * top + fy * bot


@cuda_emitter("random_rotation")
def _emit_rotation(ctx, attrs, ins, outs):
    x, seed = ins
    lines, (u_apply, u_angle) = _draws(ctx, attrs, seed, x, ((STREAM_DECIDE, 1), (STREAM_PARAM, 1)))
    return lines + ctx.launch1d(
        ctx.kernel("random_rotation_cuda"), ctx.view(_pixels(ctx, x), "n"),
        [ctx.var(x), u_apply, u_angle, ctx.var(outs[0]), repr(float(attrs["p"])),
         repr(float(attrs["degrees"])), repr(float(attrs["fill"]))])


# ---------------------------------------------------------------- random_flip


@cuda_kernel
@jit
def random_flip_cuda(x, u_flip, out, p, horizontal, vertical):
    _n, c, h, w = x.shape
    for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        a, b, i, j = _unravel4(k, c, h, w)
        si = i
        sj = j
        if vertical and u_flip[2 * a + 1] < p:
            si = h - 1 - i
        if horizontal and u_flip[2 * a] < p:
            sj = w - 1 - j
        out[a, b, i, j] = x[a, b, si, sj]


@cuda_emitter("random_flip")
def _emit_flip(ctx, attrs, ins, outs):
    x, seed = ins
    lines, (u_flip,) = _draws(ctx, attrs, seed, x, ((STREAM_DECIDE, 2),))
    return lines + ctx.launch1d(
        ctx.kernel("random_flip_cuda"), ctx.size(x),
        [ctx.var(x), u_flip, ctx.var(outs[0]), repr(float(attrs["p"])),
         str(bool(attrs["horizontal"])), str(bool(attrs["vertical"]))])


# ---------------------------------------------------------------- gaussian_noise


@cuda_kernel
@jit
def gaussian_noise_cuda(x, u_apply, u_elem, out, p, std):
    """x, out: [N, M] views; Box-Muller from the element's two draws, as on the CPU."""
    _n, m = x.shape
    for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        a = k // m
        i = k - a * m
        if not u_apply[a] < p:
            out[a, i] = x[a, i]
        else:
            e = 2 * k
            # 1 - u is in (0, 1], so the log is finite
            g = math.sqrt(-2.0 * math.log(1.0 - u_elem[e])) * math.cos(2.0 * math.pi * u_elem[e + 1])
            out[a, i] = float64(x[a, i]) + std * g


@cuda_emitter("gaussian_noise")
def _emit_gaussian_noise(ctx, attrs, ins, outs):
    x, seed = ins
    lines, (u_apply, u_elem) = _draws(ctx, attrs, seed, x, ((STREAM_DECIDE, 1), (STREAM_ELEMENT, 2)))
    s = ctx.shape(x)
    rows = (s[0], _prod(s[1:]))
    return lines + ctx.launch1d(
        ctx.kernel("gaussian_noise_cuda"), ctx.size(x),
        [ctx.reshaped(x, rows), u_apply, u_elem, ctx.reshaped(outs[0], rows),
         repr(float(attrs["p"])), repr(float(attrs["std"]))])


# ---------------------------------------------------------------- salt_pepper_noise


@cuda_kernel
@jit
def sample_min_max(x, lo_hi):
    """lo_hi[a, 0], lo_hi[a, 1] = the minimum and maximum of sample a of x [N, M] (NaN wins,
    as NumPy's min and max): one block per sample, a shared-memory tree each."""
    smax = cuda.shared.array(RED_BLOCK, float64)
    smin = cuda.shared.array(RED_BLOCK, float64)
    t = cuda.threadIdx.x
    n, m = x.shape
    for a in range(cuda.blockIdx.x, n, cuda.gridDim.x):
        hi = -math.inf
        lo = -math.inf  # the maximum of -x
        for i in range(t, m, RED_BLOCK):
            v = float64(x[a, i])
            if v > hi or v != v:  # noqa: PLR0124  (v != v: NaN)
                hi = v
            if -v > lo or v != v:  # noqa: PLR0124
                lo = -v
        smax[t] = hi
        smin[t] = lo
        tree_reduce(smax, t, RED_BLOCK, 0, 1, True)
        tree_reduce(smin, t, RED_BLOCK, 0, 1, True)
        if t == 0:
            lo_hi[a, 0] = -smin[0]
            lo_hi[a, 1] = smax[0]
        cuda.syncthreads()


@cuda_kernel
@jit
def salt_pepper_cuda(x, u_apply, u_elem, lo_hi, out, p, amount):
    """One thread per output value: a corrupted pixel (all channels) takes the sample's
    minimum (pepper) or maximum (salt)."""
    _n, c, h, w = x.shape
    for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        a, b, i, j = _unravel4(k, c, h, w)
        v = x[a, b, i, j]
        if u_apply[a] < p:
            e = 2 * ((a * h + i) * w + j)
            if u_elem[e] < amount:
                v = lo_hi[a, 0] if u_elem[e + 1] < 0.5 else lo_hi[a, 1]
        out[a, b, i, j] = v


@cuda_emitter("salt_pepper_noise")
def _emit_salt_pepper(ctx, attrs, ins, outs):
    x, seed = ins
    # the element stream has two draws per pixel (not per value): a unit is a pixel
    s = ctx.shape(x)
    lines, (u_apply,) = _draws(ctx, attrs, seed, x, ((STREAM_DECIDE, 1),))
    n = ctx.view(f"2 * {s[0]} * {s[2]} * {s[3]}", "n")
    u_elem = ctx.scratch("float64", n)
    lines += ctx.launch1d(ctx.kernel("augment_uniforms"), n,
                          [ctx.var(seed), str(int(attrs["salt"])), str(STREAM_ELEMENT), u_elem])
    dt = ctx.type(x).dtype
    lo_hi = ctx.reshaped(ctx.scratch(dt, f"2 * {s[0]}"), (s[0], "2"))
    lines += ctx.launch(f"R.config({ctx.kernel('sample_min_max')}, R.grid_stride({s[0]}, 1), "
                        f"{RED_BLOCK})", [ctx.reshaped(x, (s[0], _prod(s[1:]))), lo_hi])
    return lines + ctx.launch1d(
        ctx.kernel("salt_pepper_cuda"), ctx.size(x),
        [ctx.var(x), u_apply, u_elem, lo_hi, ctx.var(outs[0]), repr(float(attrs["p"])),
         repr(float(attrs["amount"]))])
