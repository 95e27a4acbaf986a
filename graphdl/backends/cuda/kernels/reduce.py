"""CUDA kernels of the reductions (graphdl/ops/reduce.py): sum, mean and max over axes.

As on the CPU the input is seen as (A, R, B): the reduced axes (made adjacent by a
transpose when they are not) collapse into R. One kernel serves all three ops: a block
takes ``bx`` consecutive outputs (x-threads) and ``by`` threads along R for each
(y-threads), which meet in a shared-memory tree. The block shape is chosen at launch
(`runtime.tree_block`); bx * by is the compile-time RED_BLOCK.

`tree_reduce` is the one shared-memory tree of the CUDA kernels (reductions, softmax,
losses).
"""

from __future__ import annotations

import math

from graphdl.backends.cuda.device import RED_BLOCK, block_function, cuda, jit
from graphdl.backends.cuda.kernels.shape import emit_transpose
from graphdl.backends.cuda.registry import cuda_emitter, cuda_kernel
from graphdl.ops.reduce import arb_layout, normalize_axes


@block_function
def tree_reduce(sh, row, rows, col, cols, is_max):
    """Combine the ``rows`` partial results ``sh[r * cols + col]`` of column ``col`` into
    ``sh[col]``: their sum, or with ``is_max`` their maximum (NaN wins, as in NumPy). The
    calling thread holds row ``row``; ``rows`` is a power of two. Every thread of the block
    calls it (it synchronises the block), after writing its partial result."""
    cuda.syncthreads()
    s = rows // 2
    while s > 0:
        if row < s:
            i = row * cols + col
            w = sh[i + s * cols]
            if is_max:
                if w > sh[i] or w != w:  # noqa: PLR0124  (w != w: NaN)
                    sh[i] = w
            else:
                sh[i] += w
        cuda.syncthreads()
        s //= 2


@cuda_kernel
@jit
def reduce_arb(x, out, is_max, mean):
    """out[a, b] = sum over r of x[a, r, b] (max with ``is_max``; times 1/R with ``mean``).
    The softmax kernels (kernels/nn.py) walk the (A, R, B) blocks the same way: a deliberate
    parallel (a grid loop cannot be shared between kernels; the tree is)."""
    sh = cuda.shared.array(RED_BLOCK, dtype=x.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    bx = cuda.blockDim.x
    by = cuda.blockDim.y
    na, nr, nb = x.shape
    nout = na * nb
    groups = (nout + bx - 1) // bx
    inv = x.dtype.type(1) / x.dtype.type(nr)
    for grp in range(cuda.blockIdx.x, groups, cuda.gridDim.x):
        o = grp * bx + tx
        ok = o < nout
        a = o // nb
        b = o - a * nb
        if is_max:
            acc = x.dtype.type(-math.inf)
        else:
            acc = x.dtype.type(0)
        if ok:
            for r in range(ty, nr, by):
                v = x[a, r, b]
                if is_max:
                    # NaN wins, as in NumPy, so non-finite values are never hidden
                    if v > acc or v != v:  # noqa: PLR0124  (v != v: NaN)
                        acc = v
                else:
                    acc += v
        sh[ty * bx + tx] = acc
        tree_reduce(sh, ty, by, tx, bx, is_max)
        if ok and ty == 0:
            if mean:
                out[a, b] = sh[tx] * inv
            else:
                out[a, b] = sh[tx]
        cuda.syncthreads()


def view_arb(ctx, v, axes) -> tuple[list[str], str, tuple[str, str, str]]:
    """(launch lines, name of an (A, R, B) view of ``v``, (A, R, B)) with ``axes`` in R;
    non-adjacent axes are made adjacent by a transpose into a scratch buffer."""
    t = ctx.type(v)
    x = ctx.var(v)
    shape = ctx.shape(v)
    lines = []
    perm, (a, r, b) = arb_layout(shape, axes)
    if perm is not None:
        tmp = ctx.scratch(t.dtype, ctx.size(v))
        lines += emit_transpose(ctx, x, shape, perm, tmp)
        x = tmp
    return lines, ctx.reshaped(x, (a, r, b)), (a, r, b)


def _emit_reduce(is_max: bool, mean: bool):
    def emit(ctx, attrs, ins, outs):
        axes = normalize_axes(attrs["axes"], ctx.type(ins[0]).rank)
        lines, x3, (a, r, b) = view_arb(ctx, ins[0], axes)
        out2 = ctx.reshaped(outs[0], (a, b))
        kernel = ctx.kernel("reduce_arb")
        return lines + ctx.launch(f"R.config_tree({kernel}, {a}, {r}, {b})",
                                  [x3, out2, str(is_max), str(mean)])

    return emit


cuda_emitter("sum")(_emit_reduce(False, False))
cuda_emitter("mean")(_emit_reduce(False, True))
cuda_emitter("max")(_emit_reduce(True, False))
