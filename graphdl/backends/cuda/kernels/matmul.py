"""CUDA kernel of matmul (graphdl/ops/matmul.py): a tiled shared-memory GEMM, batched,
with the transpose flags read while tiles are loaded (no transpose copies).

Each block computes an MM_BM x MM_BM tile of C with MM_T x MM_T threads; each thread keeps
an MM_R x MM_R register tile (its rows and columns strided by MM_T, so the stores of a
warp are coalesced and its shared-memory reads are conflict-free). A and B go through
shared memory MM_BK columns (rows) at a time; the rows of the shared tiles are padded by
one element against bank conflicts when a tile is stored transposed. Shared memory per
block: 2 * MM_BK * (MM_BM + 1) elements (8.3 KB for float32 with the GPU constants).
"""

from __future__ import annotations

from graphdl.backends.cuda.device import (
    MM_BK,
    MM_BM,
    MM_MAX_REGISTERS,
    MM_R,
    MM_T,
    MM_THREADS,
    cuda,
    device_function,
    jit,
)
from graphdl.backends.cuda.registry import cuda_emitter, cuda_kernel

_PAD = MM_BM + 1


_LOADS = MM_BM * MM_BK // MM_THREADS  # elements of A (and of B) each thread loads per tile
assert _LOADS * MM_THREADS == MM_BM * MM_BK, "tile sizes must divide evenly between threads"


@device_function
def _fetch(a, b, pa, pb, z, zb, m0, n0, k0, M, N, K, ta, tb, tid):
    """Load this thread's share of the A and B tiles at depth k0 into registers (zeros
    outside the matrices), coalesced along each array's last axis."""
    zero = a.dtype.type(0)
    for l in range(_LOADS):
        idx = tid + l * MM_THREADS
        if ta:
            kk = idx // MM_BM
            gm = m0 + idx - kk * MM_BM
            gk = k0 + kk
            pa[l] = a[z, gk, gm] if gm < M and gk < K else zero
        else:
            mm = idx // MM_BK
            gm = m0 + mm
            gk = k0 + idx - mm * MM_BK
            pa[l] = a[z, gm, gk] if gm < M and gk < K else zero
        if tb:
            nn = idx // MM_BK
            gn = n0 + nn
            gk = k0 + idx - nn * MM_BK
            pb[l] = b[zb, gn, gk] if gn < N and gk < K else zero
        else:
            kk = idx // MM_BM
            gn = n0 + idx - kk * MM_BM
            gk = k0 + kk
            pb[l] = b[zb, gk, gn] if gn < N and gk < K else zero


@cuda_kernel
@jit(max_registers=MM_MAX_REGISTERS)
def matmul_tiled(a, b, c, ta, tb):
    """c[z] = op(a[z]) @ op(b[z]) over 3-D (batch, rows, cols) arrays, where op transposes
    the last two axes when its flag is set; a ``b`` with batch 1 is shared by every z.

    The next tiles are fetched from global memory into registers while the current ones
    are multiplied from shared memory, so their latency hides behind the arithmetic."""
    As = cuda.shared.array((MM_BK, _PAD), dtype=c.dtype)  # As[k, m]
    Bs = cuda.shared.array((MM_BK, _PAD), dtype=c.dtype)  # Bs[k, n]
    acc = cuda.local.array((MM_R, MM_R), dtype=c.dtype)
    ra = cuda.local.array(MM_R, dtype=c.dtype)
    rb = cuda.local.array(MM_R, dtype=c.dtype)
    pa = cuda.local.array(_LOADS, dtype=c.dtype)
    pb = cuda.local.array(_LOADS, dtype=c.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * MM_T + tx
    nbat = c.shape[0]
    M = c.shape[1]
    N = c.shape[2]
    K = a.shape[1] if ta else a.shape[2]
    shared_b = b.shape[0] == 1
    tiles_n = (N + MM_BM - 1) // MM_BM
    per_z = ((M + MM_BM - 1) // MM_BM) * tiles_n
    zero = c.dtype.type(0)

    for tile in range(cuda.blockIdx.x, nbat * per_z, cuda.gridDim.x):
        z = tile // per_z
        rem = tile - z * per_z
        m0 = (rem // tiles_n) * MM_BM
        n0 = (rem - (rem // tiles_n) * tiles_n) * MM_BM
        zb = 0 if shared_b else z
        for i in range(MM_R):
            for j in range(MM_R):
                acc[i, j] = zero
        _fetch(a, b, pa, pb, z, zb, m0, n0, 0, M, N, K, ta, tb, tid)
        for k0 in range(0, K, MM_BK):
            # the fetched tiles into shared memory, transposed to [k, m] and [k, n]
            for l in range(_LOADS):
                idx = tid + l * MM_THREADS
                if ta:
                    kk = idx // MM_BM
                    As[kk, idx - kk * MM_BM] = pa[l]
                else:
                    mm = idx // MM_BK
                    As[idx - mm * MM_BK, mm] = pa[l]
                if tb:
                    nn = idx // MM_BK
                    Bs[idx - nn * MM_BK, nn] = pb[l]
                else:
                    kk = idx // MM_BM
                    Bs[kk, idx - kk * MM_BM] = pb[l]
            cuda.syncthreads()
            if k0 + MM_BK < K:
                _fetch(a, b, pa, pb, z, zb, m0, n0, k0 + MM_BK, M, N, K, ta, tb, tid)
            for kk in range(MM_BK):
                for i in range(MM_R):
                    ra[i] = As[kk, ty + i * MM_T]
                for j in range(MM_R):
                    rb[j] = Bs[kk, tx + j * MM_T]
                for i in range(MM_R):
                    for j in range(MM_R):
                        acc[i, j] += ra[i] * rb[j]
            cuda.syncthreads()
        for i in range(MM_R):
            gm = m0 + ty + i * MM_T
            for j in range(MM_R):
                gn = n0 + tx + j * MM_T
                if gm < M and gn < N:
                    c[z, gm, gn] = acc[i, j]


@cuda_emitter("matmul")
def _emit_matmul(ctx, attrs, ins, outs):
    at, bt = ctx.type(ins[0]), ctx.type(ins[1])
    ta, tb = bool(attrs["transpose_a"]), bool(attrs["transpose_b"])
    sh_a, sh_b, sh_o = ctx.shape(ins[0]), ctx.shape(ins[1]), ctx.shape(outs[0])
    if at.rank == 2 or (bt.rank == 2 and not ta):
        # one GEMM: the rows of every batch entry at once against a shared 2-D b
        rows_a = " * ".join(sh_a[:-1])
        rows_o = " * ".join(sh_o[:-1])
        a3 = ctx.reshaped(ins[0], ("1", rows_a, sh_a[-1]) if not ta else ("1", sh_a[-2], sh_a[-1]))
        o3 = ctx.reshaped(outs[0], ("1", rows_o, sh_o[-1]))
        batch, m = "1", rows_o
    else:
        batch = " * ".join(sh_a[:-2])
        a3 = ctx.reshaped(ins[0], (batch, sh_a[-2], sh_a[-1]))
        o3 = ctx.reshaped(outs[0], (batch, sh_o[-2], sh_o[-1]))
        m = sh_o[-2]
    if bt.rank == 2:
        b3 = ctx.reshaped(ins[1], ("1", sh_b[-2], sh_b[-1]))
    else:
        b3 = ctx.reshaped(ins[1], (" * ".join(sh_b[:-2]), sh_b[-2], sh_b[-1]))
    kernel = ctx.kernel("matmul_tiled")
    return ctx.launch(f"R.config_matmul({kernel}, {batch}, {m}, {sh_o[-1]})",
                      [a3, b3, o3, str(ta), str(tb)])


@cuda_emitter("matmul_rows")
def _emit_matmul_rows(ctx, attrs, ins, outs):
    sh_a, sh_b = ctx.shape(ins[0]), ctx.shape(ins[1])
    rows = " * ".join(sh_a[:-1])
    a3 = ctx.reshaped(ins[0], ("1", rows, sh_a[-1]))
    b3 = ctx.reshaped(ins[1], ("1", rows, sh_b[-1]))
    o3 = ctx.reshaped(outs[0], ("1", sh_a[-1], sh_b[-1]))
    kernel = ctx.kernel("matmul_tiled")
    return ctx.launch(f"R.config_matmul({kernel}, 1, {sh_a[-1]}, {sh_b[-1]})",
                      [a3, b3, o3, "True", "False"])
