"""CUDA kernels of 2-D pooling (graphdl/ops/pool.py): max and average pooling and their
gradients, and global average pooling.

One thread per output element, grid-strided. The gradients gather rather than scatter (one
kernel for both): a thread per input cell walks the windows that contain it (rows ``i`` with
``i*sh - pt <= h < i*sh - pt + KH``, likewise columns) and adds their share in window
order, so each element is written once, by one thread: no atomics, the same sums on every
run. Max pooling's gradient recomputes each window's winner (`_window_argmax`, the forward
kernel's walk): padded cells never win, ties go to the first cell in row-major order, a
NaN wins (the first of several), as in the op's reference.

Global average pooling is the mean over H*W of x seen as (N*C, H*W, 1): reduce's tree
kernel (kernels/reduce.py), so it is one launch.

The pool geometry every kernel takes: (KH, KW, sh, sw, pt, pl, count_include_pad).
"""

from __future__ import annotations

from graphdl.backends.cuda.device import cuda, device_function, jit
from graphdl.backends.cuda.registry import cuda_emitter, cuda_kernel
from graphdl.ops.pool import pool_params


@device_function
def _clip(start, k, size):
    """The window [start, start + k) clipped to [0, size). (No min() / max(): the CUDA
    target built into numba does not compile them.)"""
    lo = start
    if lo < 0:  # noqa: PLR1730  (no max(): see the docstring)
        lo = 0
    hi = start + k
    if hi > size:  # noqa: PLR1730
        hi = size
    return lo, hi


@device_function
def _cell(e, nc, rows, cols):
    """(n, c, row, column) of flat index ``e`` in an [N, nc, rows, cols] array."""
    b = e % cols
    q = e // cols
    a = q % rows
    q = q // rows
    return q // nc, q % nc, a, b


@device_function
def _window_argmax(x, n, c, i, j, geo):
    """(row, column) of the winning cell of output (i, j)'s window over x[n, c]."""
    r0, r1 = _clip(i * geo[2] - geo[4], geo[0], x.shape[2])
    c0, c1 = _clip(j * geo[3] - geo[5], geo[1], x.shape[3])
    best = x.dtype.type(0)
    br = -1
    bc = -1
    for a in range(r0, r1):
        for b in range(c0, c1):
            v = x[n, c, a, b]
            # the first real cell, then a larger one or the first NaN (v != v: NaN)
            if br < 0 or v > best or (v != v and best == best):  # noqa: PLR0124
                best = v
                br = a
                bc = b
    return br, bc


@device_function
def _window_count(h, w, i, j, geo):
    """The divisor of output (i, j)'s average: KH*KW, or its real cells only."""
    if geo[6]:
        return geo[0] * geo[1]
    r0, r1 = _clip(i * geo[2] - geo[4], geo[0], h)
    c0, c1 = _clip(j * geo[3] - geo[5], geo[1], w)
    return (r1 - r0) * (c1 - c0)



@device_function
def _windows_over(t, size_out, k, s, p):
    """The range [lo, hi) of output rows (or columns) whose window covers input row t."""
    lo = (t + p - k + s) // s  # ceil((t + p - k + 1) / s), t + p - k + 1 >= 1 - k
    if t + p - k + 1 <= 0:
        lo = 0
    hi = (t + p) // s + 1
    if hi > size_out:  # noqa: PLR1730  (no min(): as the other kernels)
        hi = size_out
    return lo, hi


@cuda_kernel
@jit
def max_pool2d_cuda(x, out, geo):
    """out[n, c, i, j] = the max of its window (one thread per output)."""
    nb, nc, oh, ow = out.shape
    for e in range(cuda.grid(1), nb * nc * oh * ow, cuda.gridsize(1)):
        n, c, i, j = _cell(e, nc, oh, ow)
        r, s = _window_argmax(x, n, c, i, j, geo)
        out[n, c, i, j] = x[n, c, r, s]


@cuda_kernel
@jit
def avg_pool2d_cuda(x, out, geo):
    """out[n, c, i, j] = the sum of its window's real cells times 1 / divisor."""
    nb, nc, oh, ow = out.shape
    h, w = x.shape[2], x.shape[3]
    one = out.dtype.type(1)
    for e in range(cuda.grid(1), nb * nc * oh * ow, cuda.gridsize(1)):
        n, c, i, j = _cell(e, nc, oh, ow)
        r0, r1 = _clip(i * geo[2] - geo[4], geo[0], h)
        c0, c1 = _clip(j * geo[3] - geo[5], geo[1], w)
        acc = out.dtype.type(0)
        for a in range(r0, r1):
            for b in range(c0, c1):
                acc += x[n, c, a, b]
        out[n, c, i, j] = acc * (one / out.dtype.type(_window_count(h, w, i, j, geo)))


@cuda_kernel
@jit
def pool2d_grad_cuda(gy, x, gx, geo, is_max, relu):
    """gx[n, c, h, w] = the sum over the windows that cover cell (h, w) of gy where the cell
    wins its window (``is_max``; with ``relu`` gy * 0 where the cell is not positive:
    relu's gradient folded in), or of gy / the window's divisor (average pooling, the
    adjoint of `avg_pool2d_cuda`; x is not read)."""
    nb, nc, h, w = gx.shape
    oh, ow = gy.shape[2], gy.shape[3]
    one = gx.dtype.type(1)
    for e in range(cuda.grid(1), nb * nc * h * w, cuda.gridsize(1)):
        n, c, a, b = _cell(e, nc, h, w)
        acc = gx.dtype.type(0)
        ilo, ihi = _windows_over(a, oh, geo[0], geo[2], geo[4])
        jlo, jhi = _windows_over(b, ow, geo[1], geo[3], geo[5])
        for i in range(ilo, ihi):
            for j in range(jlo, jhi):
                if is_max:
                    r, s = _window_argmax(x, n, c, i, j, geo)
                    if r == a and s == b:
                        g = gy[n, c, i, j]
                        if relu and not x[n, c, a, b] > 0:
                            g = g * gx.dtype.type(0)
                        acc += g
                else:
                    acc += gy[n, c, i, j] * (one / gx.dtype.type(_window_count(h, w, i, j, geo)))
        gx[n, c, a, b] = acc


# ----------------------------------------------------------------------- emitters


def _geometry(ctx, attrs) -> str:
    (kh, kw), (sh, sw), (pt, _, pl, _) = pool_params(attrs)
    cip = int(bool(attrs.get("count_include_pad", True)))
    return ctx.view(f"({kh}, {kw}, {sh}, {sw}, {pt}, {pl}, {cip})", "geo")


def _emit_pool(kernel: str):
    """Emitter of a one-thread-per-output pooling kernel ``kernel(x, out, geo)``."""

    def emit(ctx, attrs, ins, outs):
        args = [ctx.var(ins[0]), ctx.var(outs[0]), _geometry(ctx, attrs)]
        return ctx.launch1d(ctx.kernel(kernel), ctx.size(outs[0]), args)

    return emit


cuda_emitter("max_pool2d")(_emit_pool("max_pool2d_cuda"))
cuda_emitter("avg_pool2d")(_emit_pool("avg_pool2d_cuda"))


@cuda_emitter("max_pool2d_grad", "avg_pool2d_grad")
def _emit_grad(ctx, attrs, ins, outs):
    """Both gradients gather with `pool2d_grad_cuda` (a thread per input cell); average
    pooling's has no x (gy is passed in its place and not read)."""
    is_max = len(ins) == 2
    gy = ctx.var(ins[0])
    x = ctx.var(ins[1]) if is_max else gy
    args = [gy, x, ctx.var(outs[0]), _geometry(ctx, attrs), str(is_max),
            str(bool(attrs.get("relu", False)))]
    return ctx.launch1d(ctx.kernel("pool2d_grad_cuda"), ctx.size(outs[0]), args)


@cuda_emitter("global_avg_pool2d")
def _emit_global(ctx, attrs, ins, outs):
    n, c, h, w = ctx.shape(ins[0])
    x3 = ctx.reshaped(ins[0], (f"{n} * {c}", f"{h} * {w}", "1"))
    out2 = ctx.reshaped(outs[0], (f"{n} * {c}", "1"))
    kernel = ctx.kernel("reduce_arb")
    return ctx.launch(f"R.config_tree({kernel}, {n} * {c}, {h} * {w}, 1)", [x3, out2, "False", "True"])
