"""CUDA kernels of the NN ops (graphdl/ops/nn.py): softmax / log_softmax and their backward
ops over the middle axis of an (A, R, B) view (the reduction's block layout: y-threads
along R meet in shared-memory trees), and dropout with the CPU kernel's counter-based hash
(graphdl/ops/random.py); embedding's gather and scatter-add.
"""

from __future__ import annotations

import math

from graphdl.backends.cuda.device import RED_BLOCK, cuda, device_function, jit
from graphdl.backends.cuda.kernels.reduce import tree_reduce
from graphdl.backends.cuda.registry import cuda_emitter, cuda_kernel
from graphdl.ops.nn import _axis
from graphdl.ops.random import mix64, spread_seed, uniform24
from graphdl.ops.reduce import _prod


@cuda_kernel
@jit
def softmax_arb(x, out, log):
    """Softmax (log-softmax with ``log``) over the middle axis of (A, R, B)."""
    # Deliberate parallel of reduce_arb's (A, R, B) block walk (kernels/reduce.py), as is
    # softmax_grad_arb's: a CUDA kernel's grid loop cannot be shared; the tree is.
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
        # (the tree lets a NaN win, the loop above does not: a row with a NaN is NaN anyway)
        tree_reduce(sh, ty, by, tx, bx, True)
        m = sh[tx]
        cuda.syncthreads()
        # the sum of exponentials
        acc = x.dtype.type(0)
        if ok:
            for r in range(ty, nr, by):
                acc += math.exp(x[a, r, b] - m)
        sh[ty * bx + tx] = acc
        tree_reduce(sh, ty, by, tx, bx, False)
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
    # deliberate parallel of softmax_arb's and reduce_arb's block walk (see softmax_arb)
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
        tree_reduce(sh, ty, by, tx, bx, False)
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


def _emit_along_axis(kernel_name: str, log: bool):
    """Emitter of `softmax_arb` / `softmax_grad_arb`: the inputs, then the output, each
    seen as (A, R, B) around ``axis``."""

    def emit(ctx, attrs, ins, outs):
        axis = _axis(attrs, ctx.type(ins[0]).rank)
        a, r, b = _dims3(ctx, ins[0], axis)
        kernel = ctx.kernel(kernel_name)
        return ctx.launch(f"R.config_tree({kernel}, {a}, {r}, {b})",
                          [*(_view3(ctx, v, axis) for v in [*ins, outs[0]]), str(log)])

    return emit


cuda_emitter("softmax")(_emit_along_axis("softmax_arb", False))
cuda_emitter("log_softmax")(_emit_along_axis("softmax_arb", True))
cuda_emitter("softmax_grad")(_emit_along_axis("softmax_grad_arb", False))
cuda_emitter("log_softmax_grad")(_emit_along_axis("softmax_grad_arb", True))


# ------------------------------------------------------------------ dropout
# The hash functions of graphdl/ops/random.py, compiled as device functions: the CPU kernel's
# very formula, so a seed draws the same mask on both backends.

_mix64 = device_function(mix64, wraps=True)
_spread_seed = device_function(spread_seed, wraps=True)
_uniform24 = device_function(uniform24)


@cuda_kernel
@jit
def dropout_flat(x, seed, out, salt, rate, scale):
    """out = x * keep / (1 - rate); keep[i] from the hash of (seed, salt, i)."""
    # random.seed_key, from its parts: a CPU helper calls the CPU's mix64
    key = _mix64(_spread_seed(seed[0]), salt)
    s = x.dtype.type(scale)
    zero = x.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        if _uniform24(_mix64(key, i)) >= rate:
            out[i] = x[i] * s
        else:
            out[i] = x[i] * zero


@cuda_emitter("dropout")
def _emit_dropout(ctx, attrs, ins, outs):
    scale = 1.0 / (1.0 - attrs["rate"])
    return ctx.launch1d(ctx.kernel("dropout_flat"), ctx.size(ins[0]),
                        [ctx.flat(ins[0]), ctx.var(ins[1]), ctx.flat(outs[0]), str(int(attrs["salt"])),
                         repr(float(attrs["rate"])), repr(scale)])


# ------------------------------------------------------------------ embedding
# Deliberate parallels of the CPU embedding_gather / embedding_scatter_add
# (graphdl/ops/nn.py): the same id test (a NaN row forward, nothing backward for an id
# outside [0, vocab)), one thread per element instead of loops.


@cuda_kernel
@jit
def embedding_gather(ids, weight, out):
    """out[i, d] = weight[ids[i], d] for flat ids [M]; NaN for an id outside [0, V)."""
    vocab, dim = weight.shape
    nan = out.dtype.type(math.nan)
    for e in range(cuda.grid(1), ids.size * dim, cuda.gridsize(1)):
        i = e // dim
        d = e - i * dim
        k = ids[i]
        if k < 0 or k >= vocab:
            out[i, d] = nan
        else:
            out[i, d] = weight[k, d]


@cuda_kernel
@jit
def embedding_scatter_add(ids, gy, out, padding_idx):
    """out[ids[i], d] += gy[i, d] (out zeroed first), skipping padding_idx and ids outside
    [0, V). Atomic adds: CUDA sums a row's contributions in whatever order threads arrive,
    where the CPU kernel sums them in id order, so the two agree to rounding only."""
    vocab, dim = out.shape
    for e in range(cuda.grid(1), ids.size * dim, cuda.gridsize(1)):
        i = e // dim
        d = e - i * dim
        k = ids[i]
        if k >= 0 and k < vocab and k != padding_idx:
            cuda.atomic.add(out, (k, d), gy[i, d])


def _flat_rows(ctx, v):
    """Rows [..., dim] as a matrix [M, dim]."""
    shape = ctx.shape(v)
    return ctx.reshaped(v, (_prod(shape[:-1]), shape[-1]))


@cuda_emitter("embedding")
def _emit_embedding(ctx, attrs, ins, outs):
    return ctx.launch1d(ctx.kernel("embedding_gather"), ctx.size(outs[0]),
                        [ctx.flat(ins[0]), ctx.var(ins[1]), _flat_rows(ctx, outs[0])])


@cuda_emitter("embedding_grad")
def _emit_embedding_grad(ctx, attrs, ins, outs):
    lines = ctx.launch1d(ctx.kernel("fill_flat"), ctx.size(outs[0]), [ctx.flat(outs[0]), "0"])
    lines += ctx.launch1d(ctx.kernel("embedding_scatter_add"), ctx.size(ins[1]),
                          [ctx.flat(ins[0]), _flat_rows(ctx, ins[1]), ctx.var(outs[0]),
                           str(int(attrs["padding_idx"]))])
    return lines


# ------------------------------------------------------------------ positions
# Deliberate parallels of the CPU add_positions_fwd / add_positions_bwd (graphdl/ops/nn.py):
# one thread per element; the backward sums the batch in one thread per table element, in
# sample order, as the CPU does.


@cuda_kernel
@jit
def add_positions_fwd(x, table, out):
    n, steps, dim = x.shape
    rows = table.shape[0]
    nan = out.dtype.type(math.nan)
    for e in range(cuda.grid(1), n * steps * dim, cuda.gridsize(1)):
        i = e // (steps * dim)
        r = e - i * steps * dim
        t = r // dim
        d = r - t * dim
        if t >= rows:
            out[i, t, d] = nan
        else:
            out[i, t, d] = x[i, t, d] + table[t, d]


@cuda_kernel
@jit
def add_positions_bwd(gy, out):
    n, steps, dim = gy.shape
    rows = out.shape[0]
    for e in range(cuda.grid(1), rows * dim, cuda.gridsize(1)):
        t = e // dim
        d = e - t * dim
        acc = out.dtype.type(0)
        if t < steps:
            for i in range(n):
                acc += gy[i, t, d]
        out[t, d] = acc


@cuda_emitter("add_positions")
def _emit_add_positions(ctx, attrs, ins, outs):
    return ctx.launch1d(ctx.kernel("add_positions_fwd"), ctx.size(outs[0]),
                        [ctx.var(ins[0]), ctx.var(ins[1]), ctx.var(outs[0])])


@cuda_emitter("add_positions_grad")
def _emit_add_positions_grad(ctx, attrs, ins, outs):
    return ctx.launch1d(ctx.kernel("add_positions_bwd"), ctx.size(outs[0]),
                        [ctx.var(ins[0]), ctx.var(outs[0])])
