"""CUDA kernels of batch norm in training mode (graphdl/ops/norm.py): ``batch_norm_train``
and ``batch_norm_train_grad``, x seen as (A, C, B) (A the batch, B the positions after the
channel axis, 1 for [N, C]).

The per-channel arithmetic is the CPU kernels' (`batch_norm_fwd` / `batch_norm_bwd`: two
passes with float64 accumulators, dx = gamma / sigma * (gy - mean(gy) - xhat * mean(gy *
xhat))): a deliberate parallel, to change together. A block takes one channel at a time
(grid-strided over channels): its RED_BLOCK threads stride over the channel's A * B values
(consecutive threads along B, so loads coalesce in images) and meet in reduce's
shared-memory tree. No atomics: the sums are the same on every run.

The inference form (`batch_norm_inference`) and the running-statistics updates are
elementwise compositions: the generated loops run them, fused like on the CPU.
"""

from __future__ import annotations

import math

from numba import float64

from graphdl.backends.cuda.device import RED_BLOCK, cuda, jit
from graphdl.backends.cuda.kernels.reduce import tree_reduce
from graphdl.backends.cuda.registry import cuda_emitter, cuda_kernel
from graphdl.ops.reduce import _prod


@cuda_kernel
@jit
def batch_norm_channels(x, gamma, beta, y, mean, var, eps):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta per channel of x (A, C, B), with the
    batch mean and biased variance written to mean, var [C]."""
    sh = cuda.shared.array(RED_BLOCK, float64)
    t = cuda.threadIdx.x
    na, nc, nb = x.shape
    cnt = na * nb
    for c in range(cuda.blockIdx.x, nc, cuda.gridDim.x):
        s = 0.0
        for e in range(t, cnt, RED_BLOCK):
            a = e // nb
            s += x[a, c, e - a * nb]
        sh[t] = s
        tree_reduce(sh, t, RED_BLOCK, 0, 1, False)
        m = sh[0] / cnt
        cuda.syncthreads()
        # the second pass: squared deviations from the mean (no cancellation)
        s = 0.0
        for e in range(t, cnt, RED_BLOCK):
            a = e // nb
            d = x[a, c, e - a * nb] - m
            s += d * d
        sh[t] = s
        tree_reduce(sh, t, RED_BLOCK, 0, 1, False)
        v = sh[0] / cnt
        cuda.syncthreads()
        if t == 0:
            mean[c] = m
            var[c] = v
        scale = float64(gamma[c]) / math.sqrt(v + eps)
        shift = float64(beta[c])
        for e in range(t, cnt, RED_BLOCK):
            a = e // nb
            b = e - a * nb
            y[a, c, b] = (x[a, c, b] - m) * scale + shift


@cuda_kernel
@jit
def batch_norm_channels_grad(gy, x, gamma, mean, var, dx, dgamma, dbeta, eps):
    """dx = gamma / sigma * (gy - mean(gy) - xhat * mean(gy * xhat)) per channel; dgamma =
    sum(gy * xhat), dbeta = sum(gy)."""
    # deliberate parallel of batch_norm_channels' block walk (a grid loop cannot be shared)
    sg = cuda.shared.array(RED_BLOCK, float64)
    sgx = cuda.shared.array(RED_BLOCK, float64)
    t = cuda.threadIdx.x
    na, nc, nb = x.shape
    cnt = na * nb
    for c in range(cuda.blockIdx.x, nc, cuda.gridDim.x):
        m = float64(mean[c])
        inv = 1.0 / math.sqrt(float64(var[c]) + eps)
        a1 = 0.0
        a2 = 0.0
        for e in range(t, cnt, RED_BLOCK):
            a = e // nb
            b = e - a * nb
            g = float64(gy[a, c, b])
            a1 += g
            a2 += g * (x[a, c, b] - m)
        sg[t] = a1
        sgx[t] = a2
        tree_reduce(sg, t, RED_BLOCK, 0, 1, False)
        tree_reduce(sgx, t, RED_BLOCK, 0, 1, False)
        total = sg[0]
        total_xh = sgx[0] * inv  # sum(gy * xhat)
        cuda.syncthreads()
        if t == 0:
            dbeta[c] = total
            dgamma[c] = total_xh
        k = float64(gamma[c]) * inv
        mg = total / cnt
        mgx = total_xh / cnt
        for e in range(t, cnt, RED_BLOCK):
            a = e // nb
            b = e - a * nb
            xh = (x[a, c, b] - m) * inv
            dx[a, c, b] = k * (gy[a, c, b] - mg - xh * mgx)


def _view3(ctx, v) -> str:
    """x [N, C, ...] as (A, C, B)."""
    shape = ctx.shape(v)
    return ctx.reshaped(v, (shape[0], shape[1], _prod(shape[2:])))


def _channel_launch(ctx, kernel: str, x, args: list[str]) -> list[str]:
    """A block of RED_BLOCK threads per channel, grid-strided over the channels."""
    channels = ctx.shape(x)[1]
    return ctx.launch(f"R.config({ctx.kernel(kernel)}, R.grid_stride({channels}, 1), {RED_BLOCK})",
                      args)


@cuda_emitter("batch_norm_train")
def _emit_train(ctx, attrs, ins, outs):
    x, gamma, beta = ins
    y, mean, var = outs
    return _channel_launch(ctx, "batch_norm_channels", x,
                           [_view3(ctx, x), ctx.var(gamma), ctx.var(beta), _view3(ctx, y),
                            ctx.var(mean), ctx.var(var), repr(float(attrs["eps"]))])


@cuda_emitter("batch_norm_train_grad")
def _emit_train_grad(ctx, attrs, ins, outs):
    gy, x, gamma, mean, var = ins
    dx, dgamma, dbeta = outs
    return _channel_launch(ctx, "batch_norm_channels_grad", x,
                           [_view3(ctx, gy), _view3(ctx, x), ctx.var(gamma), ctx.var(mean),
                            ctx.var(var), _view3(ctx, dx), ctx.var(dgamma), ctx.var(dbeta),
                            repr(float(attrs["eps"]))])
