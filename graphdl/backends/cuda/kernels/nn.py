"""CUDA kernels of the NN ops (graphdl/ops/nn.py): softmax / log_softmax and their backward
ops over the middle axis of an (A, R, B) view (the reduction's block layout: y-threads
along R meet in shared-memory trees), and dropout with the CPU kernel's counter-based hash.

The dropout hash is the same splitmix64 mix as the CPU kernel, so a seed draws the same
mask on both backends. Its 64-bit products and sums are written with 32-bit halves: the
results are the wrapped 64-bit values either way, but no intermediate overflows, so the
CUDA simulator (which runs the kernel with NumPy scalars, whose overflow warns) computes
the very same numbers without a warning.
"""

from __future__ import annotations

import math

import numpy as np

from graphdl.backends.cuda.device import RED_BLOCK, cuda, device_function, jit
from graphdl.backends.cuda.registry import cuda_emitter, cuda_kernel
from graphdl.ops.nn import _axis
from graphdl.ops.reduce import _prod


@cuda_kernel
@jit
def softmax_arb(x, out, log):
    """Softmax (log-softmax with ``log``) over the middle axis of (A, R, B)."""
    sh = cuda.shared.array(RED_BLOCK, dtype=x.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    bx = cuda.blockDim.x
    by = cuda.blockDim.y
    na, nr, nb = x.shape
    nout = na * nb
    groups = (nout + bx - 1) // bx
    one = x.dtype.type(1)
    for grp in range(cuda.blockIdx.x, groups, cuda.gridDim.x):
        o = grp * bx + tx
        ok = o < nout
        a = o // nb
        b = o - a * nb
        # the row's max (subtracted so exp never overflows)
        m = x.dtype.type(-math.inf)
        if ok:
            for r in range(ty, nr, by):
                if x[a, r, b] > m:  # noqa: PLR1730  (as the CPU kernel: no max())
                    m = x[a, r, b]
        sh[ty * bx + tx] = m
        cuda.syncthreads()
        s = by // 2
        while s > 0:
            if ty < s:
                i = ty * bx + tx
                if sh[i + s * bx] > sh[i]:  # noqa: PLR1730
                    sh[i] = sh[i + s * bx]
            cuda.syncthreads()
            s //= 2
        m = sh[tx]
        cuda.syncthreads()
        # the sum of exponentials
        acc = x.dtype.type(0)
        if ok:
            for r in range(ty, nr, by):
                acc += math.exp(x[a, r, b] - m)
        sh[ty * bx + tx] = acc
        cuda.syncthreads()
        s = by // 2
        while s > 0:
            if ty < s:
                i = ty * bx + tx
                sh[i] += sh[i + s * bx]
            cuda.syncthreads()
            s //= 2
        total = sh[tx]
        cuda.syncthreads()
        if ok:
            if log:
                ls = math.log(total)
                for r in range(ty, nr, by):
                    out[a, r, b] = x[a, r, b] - m - ls
            else:
                inv = one / total
                for r in range(ty, nr, by):
                    out[a, r, b] = math.exp(x[a, r, b] - m) * inv


@cuda_kernel
@jit
def softmax_grad_arb(g, y, out, log):
    """Backward of softmax from its output y: y * (g - sum(g * y)); with ``log``
    (y = log_softmax): g - exp(y) * sum(g)."""
    sh = cuda.shared.array(RED_BLOCK, dtype=g.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    bx = cuda.blockDim.x
    by = cuda.blockDim.y
    na, nr, nb = g.shape
    nout = na * nb
    groups = (nout + bx - 1) // bx
    for grp in range(cuda.blockIdx.x, groups, cuda.gridDim.x):
        o = grp * bx + tx
        ok = o < nout
        a = o // nb
        b = o - a * nb
        acc = g.dtype.type(0)
        if ok:
            for r in range(ty, nr, by):
                if log:
                    acc += g[a, r, b]
                else:
                    acc += g[a, r, b] * y[a, r, b]
        sh[ty * bx + tx] = acc
        cuda.syncthreads()
        s = by // 2
        while s > 0:
            if ty < s:
                i = ty * bx + tx
                sh[i] += sh[i + s * bx]
            cuda.syncthreads()
            s //= 2
        total = sh[tx]
        cuda.syncthreads()
        if ok:
            for r in range(ty, nr, by):
                if log:
                    out[a, r, b] = g[a, r, b] - math.exp(y[a, r, b]) * total
                else:
                    out[a, r, b] = y[a, r, b] * (g[a, r, b] - total)


def _view3(ctx, v, axis):
    shape = ctx.shape(v)
    return ctx.reshaped(v, (_prod(shape[:axis]), shape[axis], _prod(shape[axis + 1 :])))


def _dims3(ctx, v, axis):
    shape = ctx.shape(v)
    return _prod(shape[:axis]), shape[axis], _prod(shape[axis + 1 :])


def _emit_softmax(log):
    def emit(ctx, attrs, ins, outs):
        axis = _axis(attrs, ctx.type(ins[0]).rank)
        a, r, b = _dims3(ctx, ins[0], axis)
        kernel = ctx.kernel("softmax_arb")
        return ctx.launch(f"R.config_tree({kernel}, {a}, {r}, {b})",
                          [_view3(ctx, ins[0], axis), _view3(ctx, outs[0], axis), str(log)])

    return emit


def _emit_softmax_grad(log):
    def emit(ctx, attrs, ins, outs):
        axis = _axis(attrs, ctx.type(ins[0]).rank)
        a, r, b = _dims3(ctx, ins[0], axis)
        kernel = ctx.kernel("softmax_grad_arb")
        return ctx.launch(f"R.config_tree({kernel}, {a}, {r}, {b})",
                          [_view3(ctx, ins[0], axis), _view3(ctx, ins[1], axis),
                           _view3(ctx, outs[0], axis), str(log)])

    return emit


cuda_emitter("softmax")(_emit_softmax(False))
cuda_emitter("log_softmax")(_emit_softmax(True))
cuda_emitter("softmax_grad")(_emit_softmax_grad(False))
cuda_emitter("log_softmax_grad")(_emit_softmax_grad(True))


# ------------------------------------------------------------------ dropout
# 64-bit arithmetic modulo 2**64 from 32-bit halves (products of halves fit in 64 bits)

_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S40 = np.uint64(40)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_FNV = np.uint64(0x100000001B3)


@device_function
def _add64(a, b):
    lo = (a & _M32) + (b & _M32)
    hi = ((a >> _S32) + (b >> _S32) + (lo >> _S32)) & _M32
    return (hi << _S32) | (lo & _M32)


@device_function
def _mul64(a, b):
    a_lo = a & _M32
    a_hi = a >> _S32
    b_lo = b & _M32
    b_hi = b >> _S32
    lo = a_lo * b_lo
    cross = ((a_lo * b_hi) & _M32) + ((a_hi * b_lo) & _M32)
    hi = ((lo >> _S32) + cross) & _M32
    return (hi << _S32) | (lo & _M32)


@device_function
def _mix64(z):
    """splitmix64's finaliser of z + golden ratio, as graphdl/ops/nn.py's dropout_flat."""
    z = _add64(z, _GOLDEN)
    z = _mul64(z ^ (z >> _S30), _MIX1)
    z = _mul64(z ^ (z >> _S27), _MIX2)
    return z ^ (z >> _S31)


@cuda_kernel
@jit
def dropout_flat(x, seed, out, salt, rate, scale):
    """out = x * keep / (1 - rate); keep[i] from the hash of (seed, salt, i)."""
    base = _mix64(_add64(_mul64(np.uint64(seed[0]), _FNV), np.uint64(salt)))
    s = x.dtype.type(scale)
    zero = x.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        z = _mix64(_add64(np.uint64(i), base))
        u = np.float64(z >> _S40) / 16777216.0
        if u >= rate:
            out[i] = x[i] * s
        else:
            out[i] = x[i] * zero


@cuda_emitter("dropout")
def _emit_dropout(ctx, attrs, ins, outs):
    scale = 1.0 / (1.0 - attrs["rate"])
    return ctx.launch1d(ctx.kernel("dropout_flat"), ctx.size(ins[0]),
                        [ctx.flat(ins[0]), ctx.var(ins[1]), ctx.flat(outs[0]), str(int(attrs["salt"])),
                         repr(float(attrs["rate"])), repr(scale)])
