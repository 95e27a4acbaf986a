"""CUDA kernels of 2-D convolution (graphdl/ops/conv.py): ``conv2d``, ``conv2d_grad_input``
and ``conv2d_grad_weight``, every stride, padding, dilation and group count, as implicit
GEMMs on shared-memory tiles.

Implicit GEMM is the standard design for convolution on a GPU: the im2col matrix is never
written to memory; each tile of it is gathered from the image straight into shared memory
while the tile of the other operand is loaded beside it, and the product runs as in the
tiled matmul (kernels/matmul.py: a register tile per thread, its rows and columns strided
by the block's side).
Per group g (cg = C / groups input channels, fg = F / groups filters, taps = KH * KW):

| mode | op | rows (M) | columns (P) | depth (K) | A [M, K] | B [K, P] |
|---|---|---|---|---|---|---|
| 0 | conv2d | fg filters | N*OH*OW outputs | cg*taps | w | x at (c, kh, kw) for (n, oh, ow) |
| 1 | grad_input | cg channels | N*H*W inputs | fg*taps | w, read [c, (f, kh, kw)] | gy at the output cell (f, kh, kw) reaches from (n, h, w), or 0 |
| 2 | grad_weight | fg filters | cg*taps | N*OH*OW | gy | x at (c, kh, kw) for (n, oh, ow) |

A is read through a 2-D view (the weight as [F, cg*taps], the output gradient as
[N, F*OH*OW]); the index arithmetic of B's columns is done once per tile
(`conv_b_column`), only the depth's per element.

The input gradient gathers (each input cell sums the outputs its window positions reach)
instead of scattering, so every output element is written once by one thread: no atomics.
The weight gradient's depth is the whole batch, so it is split into chunks (split-K): each
chunk's tiles write partial sums to a scratch [splits, F, cg*taps], and a second kernel
adds the chunks in order, as layer norm's dgamma does: the sums are the same on every run.

Fusion: ``conv2d`` and ``conv2d_grad_input`` kernels are written into the generated module
(`_fwd_source`), one per distinct epilogue: the elementwise ops that `fuse` appended to
the convolution (bias add, activation, a residual add) run on each output value before its
store, so conv + bias + activation is one launch (see `CudaCodegen._emit_fused_epilogue`).
A plain convolution is the same kernel with an empty epilogue. The gathers, the tile loop
and the index arithmetic are device functions here, shared by every generated kernel.

Outputs leave through shared memory: each thread puts its register tile into a TM x TP
stage (constant indices, so the register tile stays in registers: indexed by a loop the
compiler does not unroll, it would live in local memory), then the block's threads walk the
stage with consecutive threads on consecutive positions (coalesced stores, one simple loop
for the epilogue). With the GPU constants a block tile is 64 x 64: stage and operand tiles
take 40 KB for float64, under the 48 KB of static shared memory a block may have.
"""

from __future__ import annotations

from numba import int64

from graphdl.backends.cuda.device import (
    MM_BK,
    MM_R,
    MM_T,
    SIMULATOR,
    block_function,
    cuda,
    device_function,
    jit,
)
from graphdl.backends.cuda.registry import cuda_emitter, cuda_epilogue_emitter, cuda_kernel
from graphdl.ops.conv import conv_params

# register tile: outputs a thread holds along M and along P; depth of a shared-memory tile.
# Under the simulator every thread is Python, so there the tiles are larger and deeper
# (fewer repeated gathers and barriers: LeNet's training step at batch 4 took 120 s with
# 4 x 4 x 16 tiles, about 50 s with 8 x 16 x 32, on a busy 2-core machine).
if SIMULATOR:
    CV_RM, CV_RP, CV_BK = 4, 8, 32
else:
    CV_RM, CV_RP, CV_BK = max(1, MM_R // 2), max(1, MM_R // 2), MM_BK
CV_TM = MM_T * CV_RM  # block tile: TM x TP outputs
CV_TP = MM_T * CV_RP
CV_THREADS = MM_T * MM_T
_LOADS_A = CV_TM * CV_BK // CV_THREADS  # elements of the A (B) tile each thread loads
_LOADS_B = CV_TP * CV_BK // CV_THREADS
_PAD_M = CV_TM + 1  # shared tiles' rows, padded by one against bank conflicts
_PAD_P = CV_TP + 1
_TILE = CV_TM * CV_TP
assert _LOADS_A * CV_THREADS == CV_TM * CV_BK and _LOADS_B * CV_THREADS == CV_TP * CV_BK

# split-K of the weight gradient: a chunk takes at least SPLIT_MIN of the N*OH*OW depth,
# and the chunks times the tiles aim at SPLIT_BLOCKS blocks (tiny under the simulator, so
# tiny tests cross several chunks)
SPLIT_MIN = 16 if SIMULATOR else 512
SPLIT_BLOCKS = 8 if SIMULATOR else 1024

# the geometry tuple every kernel takes (`_geometry`):
# (N, C, H, W, F, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw, groups)


@device_function
def conv_dims(geo, mode):
    """(M, P, K) of one group's GEMM in ``mode`` (see the module's table)."""
    n_img, c, h, w, f, oh, ow, kh, kw = geo[0], geo[1], geo[2], geo[3], geo[4], geo[5], geo[6], geo[7], geo[8]
    groups = geo[15]
    cg = c // groups
    fg = f // groups
    taps = kh * kw
    if mode == 0:
        return fg, n_img * oh * ow, cg * taps
    if mode == 1:
        return cg, n_img * h * w, fg * taps
    return fg, cg * taps, n_img * oh * ow


@device_function
def conv_tiles(geo, mode, splits):
    """Blocks' work items of a launch: groups x splits x M tiles x P tiles."""
    m, p, _k = conv_dims(geo, mode)
    return geo[15] * splits * ((m + CV_TM - 1) // CV_TM) * ((p + CV_TP - 1) // CV_TP)


@device_function
def conv_tile_at(geo, mode, splits, tile):
    """(group, m0, p0, k0, k1, split) of work item ``tile``: its output tile's origin and
    its depth range (the whole depth unless split)."""
    m, p, k = conv_dims(geo, mode)
    tiles_m = (m + CV_TM - 1) // CV_TM
    tiles_p = (p + CV_TP - 1) // CV_TP
    per_g = splits * tiles_m * tiles_p
    g = tile // per_g
    rem = tile - g * per_g
    s = rem // (tiles_m * tiles_p)
    rem = rem - s * (tiles_m * tiles_p)
    tm = rem // tiles_p
    tp = rem - tm * tiles_p
    # a chunk is a whole number of shared-memory tiles
    chunk = (((k + splits - 1) // splits + CV_BK - 1) // CV_BK) * CV_BK
    k0 = s * chunk
    k1 = k0 + chunk
    if k1 > k:  # noqa: PLR1730  (no min(): as the other kernels)
        k1 = k
    return g, tm * CV_TM, tp * CV_TP, k0, k1, s


@device_function
def conv_a_at(a, geo, mode, g, m, k):
    """Element (m, k) of A from its 2-D view: the weight [F, cg*taps] (modes 0, 1) or the
    output gradient [N, F*OH*OW] (mode 2)."""
    taps = geo[7] * geo[8]
    fg = geo[4] // geo[15]
    if mode == 0:  # w[g*fg + m, (c, tap) = k]
        return a[g * fg + m, k]
    if mode == 1:  # w[g*fg + f, (m, tap)], k = (f, tap)
        f = k // taps
        return a[g * fg + f, m * taps + k - f * taps]
    # gy[n, (g*fg + m, q)], k = (n, q), q = (i, j)
    plane = geo[5] * geo[6]
    n = k // plane
    return a[n, (g * fg + m) * plane + k - n * plane]


@device_function
def conv_b_column(geo, mode, p):
    """What element (k, p) of B needs from p, worked out once per tile: (u, r, s), u = -1
    when p is outside. Mode 0: p = (n, i, j) gives n and the window's top-left input cell
    (i*sh - pt, j*sw - pl); mode 1: p = (n, h, w) gives n, h + pt, w + pl; mode 2:
    p = (c, kh, kw) gives c and the tap's offsets (kh*dh, kw*dw)."""
    _m, p_all, _k = conv_dims(geo, mode)
    if p >= p_all:
        return -1, 0, 0
    if mode == 2:
        taps = geo[7] * geo[8]
        c = p // taps
        r = p - c * taps
        kh = r // geo[8]
        return c, kh * geo[13], (r - kh * geo[8]) * geo[14]
    if mode == 0:
        rows = geo[5]
        cols = geo[6]
    else:
        rows = geo[2]
        cols = geo[3]
    plane = rows * cols
    n = p // plane
    q = p - n * plane
    i = q // cols
    j = q - i * cols
    if mode == 0:
        return n, i * geo[9] - geo[11], j * geo[10] - geo[12]
    return n, i + geo[11], j + geo[12]


@device_function
def conv_b_at(b, geo, mode, g, k, u, r, s):
    """Element (k, p) of B, p given by its `conv_b_column` (u, r, s): x at a tap (modes 0,
    2), or for mode 1 the output gradient at the output cell whose window puts tap
    (f, kh, kw) on input cell p (0 where the stride skips it or it lies outside)."""
    zero = b.dtype.type(0)
    if mode == 1:  # k = (f, kh, kw), (r, s) = (h + pt, w + pl)
        taps = geo[7] * geo[8]
        f = k // taps
        t = k - f * taps
        kh = t // geo[8]
        th = r - kh * geo[13]
        tw = s - (t - kh * geo[8]) * geo[14]
        if th < 0 or tw < 0:
            return zero
        i = th
        j = tw
        if geo[9] != 1:
            i = th // geo[9]
            if i * geo[9] != th:
                return zero
        if geo[10] != 1:
            j = tw // geo[10]
            if j * geo[10] != tw:
                return zero
        if i >= geo[5] or j >= geo[6]:
            return zero
        return b[u, g * (geo[4] // geo[15]) + f, i, j]
    if mode == 0:  # k = (c, kh, kw); (u, r, s) = (n, window row, window column)
        taps = geo[7] * geo[8]
        n = u
        c = k // taps
        t = k - c * taps
        kh = t // geo[8]
        ih = r + kh * geo[13]
        iw = s + (t - kh * geo[8]) * geo[14]
    else:  # mode 2: k = (n, i, j); (u, r, s) = (c, tap offsets)
        plane = geo[5] * geo[6]
        n = k // plane
        q = k - n * plane
        i = q // geo[6]
        c = u
        ih = i * geo[9] - geo[11] + r
        iw = (q - i * geo[6]) * geo[10] - geo[12] + s
    if ih >= 0 and ih < geo[2] and iw >= 0 and iw < geo[3]:
        return b[n, g * (geo[1] // geo[15]) + c, ih, iw]
    return zero


@device_function
def conv_out_at(geo, mode, g, m, p):
    """Where output (m, p) of group g goes: (n, channel, row, column) of y (mode 0) or dx
    (mode 1), (0, g*fg + m, p, 0) of a weight-gradient chunk (mode 2); n = -1 outside."""
    mm, pp, _kk = conv_dims(geo, mode)
    if m >= mm or p >= pp:
        return -1, 0, 0, 0
    if mode == 2:
        return 0, g * (geo[4] // geo[15]) + m, p, 0
    if mode == 0:
        rows = geo[5]
        cols = geo[6]
        ch = g * (geo[4] // geo[15]) + m
    else:
        rows = geo[2]
        cols = geo[3]
        ch = g * (geo[1] // geo[15]) + m
    plane = rows * cols
    n = p // plane
    q = p - n * plane
    i = q // cols
    return n, ch, i, q - i * cols


@block_function
def conv_accumulate(a, b, sa, sb, acc, geo, mode, g, m0, p0, k0, k1, tx, ty):
    """acc[i, j] = sum over depth k0..k1 of A[m0 + ty + i*T, k] * B[k, p0 + tx + j*T]:
    TM x BK and BK x TP tiles through shared memory (sa [k, m], sb [k, p]), loaded with the
    fastest index along the array's contiguous axis where the layout allows. Every thread
    of the block calls it (it synchronises the block)."""
    m_all, _p, _k = conv_dims(geo, mode)
    zero = acc.dtype.type(0)
    ra = cuda.local.array(CV_RM, dtype=acc.dtype)
    rb = cuda.local.array(CV_RP, dtype=acc.dtype)
    # the B columns this thread loads are the same at every depth: their index arithmetic
    # is done once per tile (integer division costs some twenty instructions on a GPU)
    bu = cuda.local.array(_LOADS_B, dtype=int64)
    br = cuda.local.array(_LOADS_B, dtype=int64)
    bs = cuda.local.array(_LOADS_B, dtype=int64)
    tid = ty * MM_T + tx
    for lb in range(_LOADS_B):
        idx = tid + lb * CV_THREADS
        u, r, s = conv_b_column(geo, mode, p0 + idx - (idx // CV_TP) * CV_TP)
        bu[lb] = u
        br[lb] = r
        bs[lb] = s
    for i in range(CV_RM):
        for j in range(CV_RP):
            acc[i, j] = zero
    for kb in range(k0, k1, CV_BK):
        # the A tile, then the B tile (the same walk over two shapes: a deliberate parallel)
        for la in range(_LOADS_A):
            idx = tid + la * CV_THREADS
            mm = idx // CV_BK
            kk = idx - mm * CV_BK
            gm = m0 + mm
            gk = kb + kk
            if gm < m_all and gk < k1:
                sa[kk, mm] = conv_a_at(a, geo, mode, g, gm, gk)
            else:
                sa[kk, mm] = zero
        for lb in range(_LOADS_B):
            idx = tid + lb * CV_THREADS
            kk = idx // CV_TP
            pp = idx - kk * CV_TP
            gk = kb + kk
            if bu[lb] >= 0 and gk < k1:
                sb[kk, pp] = conv_b_at(b, geo, mode, g, gk, bu[lb], br[lb], bs[lb])
            else:
                sb[kk, pp] = zero
        cuda.syncthreads()
        # the register-tile product of kernels/matmul.py's matmul_tiled (a deliberate
        # parallel: the tiles here are filled by gathers, there by plain loads)
        for kk in range(CV_BK):
            for i in range(CV_RM):
                ra[i] = sa[kk, ty + i * MM_T]
            for j in range(CV_RP):
                rb[j] = sb[kk, tx + j * MM_T]
            for i in range(CV_RM):
                for j in range(CV_RP):
                    acc[i, j] += ra[i] * rb[j]
        cuda.syncthreads()


@device_function
def conv_stage(acc, stage, tx, ty):
    """This thread's register tile into the block's output stage [TM, TP]."""
    for i in range(CV_RM):
        for j in range(CV_RP):
            stage[ty + i * MM_T, tx + j * MM_T] = acc[i, j]


# exported for generated kernels (K.conv_...), registered like kernels
for _fn in (conv_tiles, conv_tile_at, conv_out_at, conv_accumulate, conv_stage):
    cuda_kernel(_fn)


@cuda_kernel
@jit
def conv2d_wgrad_parts(x, gy2, part, geo, splits):
    """part[s, f, (c, tap)]: chunk s of the weight gradient's depth N*OH*OW (mode 2); gy2
    is the output gradient as [N, F*OH*OW]."""
    # deliberate parallel of the generated kernels' tile loop (`_fwd_source`)
    sa = cuda.shared.array((CV_BK, _PAD_M), dtype=part.dtype)
    sb = cuda.shared.array((CV_BK, _PAD_P), dtype=part.dtype)
    stage = cuda.shared.array((CV_TM, CV_TP), dtype=part.dtype)
    acc = cuda.local.array((CV_RM, CV_RP), dtype=part.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * MM_T + tx
    for tile in range(cuda.blockIdx.x, conv_tiles(geo, 2, splits), cuda.gridDim.x):
        g, m0, p0, k0, k1, s = conv_tile_at(geo, 2, splits, tile)
        conv_accumulate(gy2, x, sa, sb, acc, geo, 2, g, m0, p0, k0, k1, tx, ty)
        conv_stage(acc, stage, tx, ty)
        cuda.syncthreads()
        for e in range(tid, _TILE, CV_THREADS):
            mi = e // CV_TP
            pj = e - mi * CV_TP
            n, f, q, _z = conv_out_at(geo, 2, g, m0 + mi, p0 + pj)
            if n >= 0:
                part[s, f, q] = stage[mi, pj]
        cuda.syncthreads()


@cuda_kernel
@jit
def conv2d_wgrad_sum(part, gw):
    """gw[f, k] = the chunks' partial sums added in chunk order (one thread per element)."""
    splits, nf, nk = part.shape
    for e in range(cuda.grid(1), nf * nk, cuda.gridsize(1)):
        f = e // nk
        k = e - f * nk
        s = part.dtype.type(0)
        for t in range(splits):
            s += part[t, f, k]
        gw[f, k] = s


# ----------------------------------------------------------------------- emitters


def _geometry(ctx, x_shape, w_shape, y_shape, attrs) -> str:
    """The geometry tuple, bound once in setup (N is a symbol's value there)."""
    (sh, sw), (pt, _, pl, _), (dh, dw), groups = conv_params(attrs)
    n, c, h, w = x_shape
    f, _, kh, kw = w_shape
    oh, ow = y_shape[2], y_shape[3]
    dims = [n, c, h, w, f, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw, groups]
    text = [str(d) if str(d).isdigit() else f"int({d})" for d in dims]
    return ctx.view("(" + ", ".join(text) + ")", "geo")


def _weight_rows(ctx, w) -> str:
    """The weight [F, C/g, KH, KW] as A's 2-D view [F, C/g*KH*KW]."""
    f, cg, kh, kw = ctx.type(w).shape
    return ctx.reshaped(w, (str(f), str(cg * kh * kw)))


def _block() -> str:
    return f"({MM_T}, {MM_T})"


def _tiles(groups: int, m: int, p: str) -> str:
    """`conv_tiles` as an expression of setup: ``groups`` x M tiles x P tiles (``p`` an
    expression: N is a symbol)."""
    return f"{groups * -(-m // CV_TM)} * (({p} + {CV_TP - 1}) // {CV_TP})"


def _fwd_source(mode: int, has_bias: bool, chain: list[str]) -> list[str]:
    """The body of a generated conv kernel (mode 0 or 1) whose outputs go through the
    epilogue ``chain`` (lines that read ``v`` and store ``out[n, ch, i2, i3]``). Its local
    names never take the chain's forms (``e<i>``, ``k<i>``, ``t<j>``)."""
    lines = [
        f"sa = cuda.shared.array(({CV_BK}, {_PAD_M}), dtype=out.dtype)",
        f"sb = cuda.shared.array(({CV_BK}, {_PAD_P}), dtype=out.dtype)",
        f"stage = cuda.shared.array(({CV_TM}, {CV_TP}), dtype=out.dtype)",
        f"acc = cuda.local.array(({CV_RM}, {CV_RP}), dtype=out.dtype)",
        "tx = cuda.threadIdx.x",
        "ty = cuda.threadIdx.y",
        f"tid = ty * {MM_T} + tx",
        f"for tile in range(cuda.blockIdx.x, K.conv_tiles(geo, {mode}, 1), cuda.gridDim.x):",
        f"    g, m0, p0, lo, hi, part = K.conv_tile_at(geo, {mode}, 1, tile)",
        f"    K.conv_accumulate(a, src, sa, sb, acc, geo, {mode}, g, m0, p0, lo, hi, tx, ty)",
        "    K.conv_stage(acc, stage, tx, ty)",
        "    cuda.syncthreads()",
        f"    for e in range(tid, {_TILE}, {CV_THREADS}):",
        f"        mi = e // {CV_TP}",
        f"        pj = e - mi * {CV_TP}",
        f"        n, ch, i2, i3 = K.conv_out_at(geo, {mode}, g, m0 + mi, p0 + pj)",
        "        if n >= 0:",
        "            v = stage[mi, pj]",
    ]
    if has_bias:
        lines.append("            v += bias[ch]")
    lines += ["            " + line for line in chain]
    return lines + ["    cuda.syncthreads()  # the stage is read before the next tile fills it"]


def _emit_conv(mode: int):
    """Emitter of conv2d (mode 0) or conv2d_grad_input (mode 1), with or without an
    epilogue (`CudaCodegen._emit_fused_epilogue` passes one)."""

    def emit(ctx, attrs, ins, outs, epilogue=None):
        if mode == 0:
            x, w = ins[0], ins[1]
            has_bias = len(ins) == 3
            geo = _geometry(ctx, ctx.shape(x), ctx.type(w).shape, ctx.shape(outs[0]), attrs)
            params = ["src", "a", "out", "geo"] + (["bias"] if has_bias else [])
            args = [ctx.var(x), _weight_rows(ctx, w), ctx.var(outs[0]), geo] + (
                [ctx.var(ins[2])] if has_bias else [])
        else:
            gy, w = ins
            has_bias = False
            geo = _geometry(ctx, ctx.shape(outs[0]), ctx.type(w).shape, ctx.shape(gy), attrs)
            params = ["src", "a", "out", "geo"]
            args = [ctx.var(gy), _weight_rows(ctx, w), ctx.var(outs[0]), geo]
        chain, more_params, more_args = ctx.epilogue_chain(
            epilogue, ["n", "ch", "i2", "i3"], "v", "out[n, ch, i2, i3]")
        name = ctx.generated_kernel(_fwd_source(mode, has_bias, chain), params + more_params,
                                    ["conv2d" if mode == 0 else "conv2d_grad_input"], epilogue)
        n, c, h, wd = ctx.shape(x if mode == 0 else outs[0])
        oh, ow = ctx.shape(outs[0] if mode == 0 else gy)[2:]
        f = ctx.type(w).shape[0]
        groups = conv_params(attrs)[3]
        if mode == 0:
            tiles = _tiles(groups, f // groups, f"{n} * {oh} * {ow}")
        else:
            tiles = _tiles(groups, int(c) // groups, f"{n} * {h} * {wd}")
        tiles = ctx.view(tiles, "n")
        return ctx.launch(f"R.config({name}, R.grid_stride({tiles}, 1), {_block()})",
                          args + more_args)

    return emit


for _mode, _op in enumerate(("conv2d", "conv2d_grad_input")):
    _emit = _emit_conv(_mode)
    cuda_emitter(_op)(_emit)
    cuda_epilogue_emitter(_op)(_emit)


@cuda_emitter("conv2d_grad_weight")
def _emit_grad_weight(ctx, attrs, ins, outs):
    x, gy = ins
    gw = outs[0]
    wshape = ctx.type(gw).shape
    f, cg, kh, kw = wshape
    nk = cg * kh * kw
    geo = _geometry(ctx, ctx.shape(x), wshape, ctx.shape(gy), attrs)
    groups = conv_params(attrs)[3]
    base = ctx.view(_tiles(groups, f // groups, str(nk)), "n")
    n, _, oh, ow = ctx.shape(gy)
    depth = f"{n} * {oh} * {ow}"
    splits = ctx.view(f"max(1, min(({depth} + {SPLIT_MIN - 1}) // {SPLIT_MIN}, "
                      f"max(1, {SPLIT_BLOCKS} // {base})))", "n")
    part = ctx.reshaped(ctx.scratch(ctx.type(gw).dtype, f"{splits} * {f * nk}"), (splits, str(f), str(nk)))
    lines = ctx.launch(f"R.config({ctx.kernel('conv2d_wgrad_parts')}, "
                       f"R.grid_stride({base} * {splits}, 1), {_block()})",
                       [ctx.var(x), ctx.reshaped(gy, (n, f"{f} * {oh} * {ow}")), part, geo, splits])
    lines += ctx.launch1d(ctx.kernel("conv2d_wgrad_sum"), str(f * nk),
                          [part, ctx.reshaped(gw, (str(f), str(nk)))])
    return lines
