"""CUDA kernels of layer norm (graphdl/ops/norm.py): ``layer_norm`` and ``layer_norm_grad``
over the last axis, x seen as rows [R, D].

The per-row arithmetic is the CPU kernels' (two passes over a row, float64 accumulators,
dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = gy * gamma): a deliberate
parallel of `_ln_fwd_rows` / `_ln_bwd_rows` there, to change together.

- The row kernels give each row a group of x-threads (a power of two, up to RED_BLOCK;
  consecutive threads read consecutive elements of the row) and put RED_BLOCK / that many
  rows side by side in a block (y-threads); a row's partial sums meet in the shared-memory
  tree of kernels/reduce.py. The block shape is `runtime.tree_block(D, 1)`, transposed.
- dgamma and dbeta sum over all rows. Rows are cut into at most LN_MAX_PARTS chunks of at
  least LN_PART_ROWS rows; one kernel sums each chunk's columns into a float64 scratch
  [parts, 2, D] (reduce's layout: x-threads along D, y-threads along the chunk's rows,
  a tree), and a second adds the chunks in order: no atomics, so the sums are the same on
  every run.
"""

from __future__ import annotations

import math

from numba import float64

from graphdl.backends.cuda.device import RED_BLOCK, SIMULATOR, cuda, jit
from graphdl.backends.cuda.kernels.reduce import tree_reduce
from graphdl.backends.cuda.registry import cuda_emitter, cuda_kernel
from graphdl.ops.reduce import _prod

# rows a chunk of the dgamma / dbeta sums takes at least, and the most chunks (the float64
# scratch is [parts, 2, D]); tiny under the simulator, so tiny tests cross several chunks
LN_PART_ROWS = 2 if SIMULATOR else 64
LN_MAX_PARTS = 4 if SIMULATOR else 1024


@cuda_kernel
@jit
def layer_norm_rows(x, gamma, beta, y, mean, rstd, eps):
    """y = (x - mean) * rstd * gamma + beta per row of x [R, D]; mean, rstd: [R]."""
    sh = cuda.shared.array(RED_BLOCK, float64)
    tx = cuda.threadIdx.x  # along the row
    ty = cuda.threadIdx.y  # which of the block's rows
    bx = cuda.blockDim.x
    by = cuda.blockDim.y
    rows, d = x.shape
    groups = (rows + by - 1) // by
    for grp in range(cuda.blockIdx.x, groups, cuda.gridDim.x):
        r = grp * by + ty
        ok = r < rows
        s = 0.0
        if ok:
            for j in range(tx, d, bx):
                s += x[r, j]
        sh[tx * by + ty] = s
        tree_reduce(sh, tx, bx, ty, by, False)
        m = sh[ty] / d
        cuda.syncthreads()
        # the second pass: the squared deviations from the mean (no cancellation)
        s = 0.0
        if ok:
            for j in range(tx, d, bx):
                c = x[r, j] - m
                s += c * c
        sh[tx * by + ty] = s
        tree_reduce(sh, tx, bx, ty, by, False)
        inv = 1.0 / math.sqrt(sh[ty] / d + eps)
        cuda.syncthreads()
        if ok:
            if tx == 0:
                mean[r] = m
                rstd[r] = inv
            for j in range(tx, d, bx):
                y[r, j] = (x[r, j] - m) * inv * gamma[j] + beta[j]


@cuda_kernel
@jit
def layer_norm_rows_grad(gy, x, gamma, mean, rstd, dx):
    """dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) per row, g = gy * gamma."""
    # deliberate parallel of layer_norm_rows' block walk (a grid loop cannot be shared)
    sg = cuda.shared.array(RED_BLOCK, float64)
    sgx = cuda.shared.array(RED_BLOCK, float64)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    bx = cuda.blockDim.x
    by = cuda.blockDim.y
    rows, d = x.shape
    groups = (rows + by - 1) // by
    for grp in range(cuda.blockIdx.x, groups, cuda.gridDim.x):
        r = grp * by + ty
        ok = r < rows
        m = 0.0
        inv = 0.0
        a = 0.0
        b = 0.0
        if ok:
            m = float64(mean[r])
            inv = float64(rstd[r])
            for j in range(tx, d, bx):
                g = float64(gy[r, j]) * gamma[j]
                a += g
                b += g * ((x[r, j] - m) * inv)
        sg[tx * by + ty] = a
        sgx[tx * by + ty] = b
        tree_reduce(sg, tx, bx, ty, by, False)
        tree_reduce(sgx, tx, bx, ty, by, False)
        mg = sg[ty] / d
        mgx = sgx[ty] / d
        cuda.syncthreads()
        if ok:
            for j in range(tx, d, bx):
                xh = (x[r, j] - m) * inv
                dx[r, j] = inv * (float64(gy[r, j]) * gamma[j] - mg - xh * mgx)


@cuda_kernel
@jit
def layer_norm_param_parts(gy, x, mean, rstd, part):
    """part[p, 0, j] = sum of gy * xhat, part[p, 1, j] = sum of gy over chunk p's rows."""
    sg = cuda.shared.array(RED_BLOCK, float64)
    sb = cuda.shared.array(RED_BLOCK, float64)
    tx = cuda.threadIdx.x  # along D
    ty = cuda.threadIdx.y  # along the chunk's rows
    bx = cuda.blockDim.x
    by = cuda.blockDim.y
    rows, d = x.shape
    nparts = part.shape[0]
    chunk = (rows + nparts - 1) // nparts
    colgroups = (d + bx - 1) // bx
    for grp in range(cuda.blockIdx.x, nparts * colgroups, cuda.gridDim.x):
        p = grp // colgroups
        j = (grp - p * colgroups) * bx + tx
        ok = j < d
        end = (p + 1) * chunk
        if end > rows:  # noqa: PLR1730  (no min(): as the other kernels)
            end = rows
        a = 0.0
        b = 0.0
        if ok:
            for r in range(p * chunk + ty, end, by):
                g = float64(gy[r, j])
                a += g * ((x[r, j] - float64(mean[r])) * rstd[r])
                b += g
        sg[ty * bx + tx] = a
        sb[ty * bx + tx] = b
        tree_reduce(sg, ty, by, tx, bx, False)
        tree_reduce(sb, ty, by, tx, bx, False)
        if ok and ty == 0:
            part[p, 0, j] = sg[tx]
            part[p, 1, j] = sb[tx]
        cuda.syncthreads()


@cuda_kernel
@jit
def layer_norm_param_sum(part, dgamma, dbeta):
    """dgamma[j], dbeta[j]: the chunks' sums added in order (one thread per column)."""
    nparts = part.shape[0]
    d = part.shape[2]
    for j in range(cuda.grid(1), d, cuda.gridsize(1)):
        a = 0.0
        b = 0.0
        for p in range(nparts):
            a += part[p, 0, j]
            b += part[p, 1, j]
        dgamma[j] = a
        dbeta[j] = b


def _dims(ctx, v) -> tuple[str, str]:
    """(R, D) of a [..., D] value: the rows and their length."""
    shape = ctx.shape(v)
    return _prod(shape[:-1]), shape[-1]


def _rows(ctx, v) -> str:
    return ctx.reshaped(v, _dims(ctx, v))


def _per_row(ctx, v) -> str:
    """A [...] value (one number per row) as [R]."""
    return ctx.reshaped(v, (_prod(ctx.shape(v)),))


def _row_launch(ctx, kernel: str, rows: str, d: str, args: list[str]) -> list[str]:
    """A row kernel's launch: `tree_block(D, 1)` gives (rows a block, threads a row)."""
    blk = ctx.view(f"R.tree_block({d}, 1)", "b")
    return ctx.launch(f"R.config({kernel}, R.grid_stride({rows}, {blk}[0]), ({blk}[1], {blk}[0]))",
                      args)


@cuda_emitter("layer_norm")
def _emit_layer_norm(ctx, attrs, ins, outs):
    x, gamma, beta = ins
    rows, d = _dims(ctx, x)
    return _row_launch(ctx, ctx.kernel("layer_norm_rows"), rows, d,
                       [_rows(ctx, x), ctx.var(gamma), ctx.var(beta), _rows(ctx, outs[0]),
                        _per_row(ctx, outs[1]), _per_row(ctx, outs[2]), repr(float(attrs["eps"]))])


@cuda_emitter("layer_norm_grad")
def _emit_layer_norm_grad(ctx, attrs, ins, outs):
    gy, x, gamma, mean, rstd = ins
    dx, dgamma, dbeta = outs
    rows, d = _dims(ctx, x)
    gy2, x2, mean1, rstd1 = _rows(ctx, gy), _rows(ctx, x), _per_row(ctx, mean), _per_row(ctx, rstd)
    lines = _row_launch(ctx, ctx.kernel("layer_norm_rows_grad"), rows, d,
                        [gy2, x2, ctx.var(gamma), mean1, rstd1, _rows(ctx, dx)])
    parts = ctx.view(f"max(1, min(({rows} + {LN_PART_ROWS - 1}) // {LN_PART_ROWS}, {LN_MAX_PARTS}))",
                     "n")
    part = ctx.reshaped(ctx.scratch("float64", f"{parts} * 2 * {d}"), (parts, "2", d))
    # reduce's block shape over (1, chunk, D): x-threads along D, y-threads along the rows
    blk = ctx.view(f"R.tree_block(({rows} + {parts} - 1) // {parts}, {d})", "b")
    groups = f"{parts} * (({d} + {blk}[0] - 1) // {blk}[0])"
    lines += ctx.launch(f"R.config({ctx.kernel('layer_norm_param_parts')}, "
                        f"R.grid_stride({groups}, 1), {blk})", [gy2, x2, mean1, rstd1, part])
    lines += ctx.launch1d(ctx.kernel("layer_norm_param_sum"), d,
                          [part, ctx.var(dgamma), ctx.var(dbeta)])
    return lines
