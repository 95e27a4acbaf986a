"""2-D pooling, channels first: max, average and global average pooling.

Layout: x [N, C, H, W] -> y [N, C, OH, OW], OH = (H + pt + pb - KH) // sh + 1.

Ops (attributes are explicit ints; the pooling layers resolve the spec's int / pair):

- ``max_pool2d(x)``: ``kernel=(KH, KW)``, ``stride=(sh, sw)`` (None: the kernel),
  ``padding=(pt, pb, pl, pr)``. Padded cells never win. Its gradient is the op
  ``max_pool2d_grad(gy, x)``, which recomputes each window's argmax (ties go to the first
  cell in row-major window order; a NaN wins, the first NaN on several) and routes gy
  there, summing where windows overlap.
- ``avg_pool2d(x)``: the same attributes plus ``count_include_pad`` (True: divide by
  KH*KW; False: by the number of real cells in the window). Its gradient is
  ``avg_pool2d_grad(gy)`` with ``input_size=(H, W)``; that op is the adjoint of
  avg_pool2d, so its own gradient is avg_pool2d again.
- ``global_avg_pool2d(x)``: [N, C, H, W] -> [N, C], the mean over H and W (pattern
  REDUCTION, so elementwise epilogues fuse); its gradient is reshape + broadcast + scale.

A padding of more than half the window is rejected (as PyTorch does), so every window
holds at least one real cell.
"""

from __future__ import annotations

import numpy as np

from graphdl.ir.types import TensorType
from graphdl.ops.conv import _check_image, _fmt, _pair, _quad
from graphdl.ops.registry import (
    PAR_BLOCKS,
    Attr,
    OpDef,
    Pattern,
    ShapeError,
    cpu_helper,
    cpu_kernel,
    max_pool_tile,
    prange,
    register,
)

# ----------------------------------------------------------------------- attributes


def pool_params(attrs: dict):
    """(kh, kw), (sh, sw), (pt, pb, pl, pr) from a pooling op's attributes, checked."""
    kh, kw = _pair(attrs["kernel"], "pool kernel")
    stride = attrs["stride"]
    sh, sw = (kh, kw) if stride is None else _pair(stride, "pool stride")
    pad = _quad(attrs["padding"], "pool padding")
    if min(kh, kw) < 1:
        raise ShapeError(f"pool window must be at least 1x1, got {kh}x{kw}")
    if min(sh, sw) < 1:
        raise ShapeError(f"pool stride must be >= 1, got {stride!r}")
    pt, pb, pl, pr = pad
    if max(pt, pb) > kh // 2 or max(pl, pr) > kw // 2:
        raise ShapeError(
            f"pool padding {list(pad)} is more than half the {kh}x{kw} window",
            help="padding may be at most half the window on each side",
        )
    return (kh, kw), (sh, sw), pad


def _pool_out(op: str, x: TensorType, attrs: dict) -> tuple[int, int]:
    _check_image(x, "input", op)
    (kh, kw), (sh, sw), (pt, pb, pl, pr) = pool_params(attrs)
    h, w = x.shape[2] + pt + pb, x.shape[3] + pl + pr
    if kh > h or kw > w:
        padded = " padded" if (pt, pb, pl, pr) != (0, 0, 0, 0) else ""
        raise ShapeError(
            f"pool window {kh}x{kw} is larger than its {h}x{w}{padded} input {_fmt(x.shape)}",
            help="use a smaller window, or remove a downsampling layer before this one",
        )
    return (h - kh) // sh + 1, (w - kw) // sw + 1


def _infer_pool(op):
    def infer(attrs, types):
        (x,) = types
        oh, ow = _pool_out(op, x, attrs)
        return [TensorType((x.shape[0], x.shape[1], oh, ow), x.dtype)]

    return infer


def _check_gy(op: str, gy: TensorType, x: TensorType, oh: int, ow: int) -> None:
    want = (x.shape[0], x.shape[1], oh, ow)
    if gy.rank != 4 or tuple(gy.shape) != want or gy.dtype != x.dtype:
        raise ShapeError(
            f"{op}: the output gradient {gy} does not match the pooling output "
            f"{TensorType(want, x.dtype)}"
        )


def _infer_max_grad(attrs, types):
    gy, x = types
    oh, ow = _pool_out("max_pool2d_grad", x, attrs)
    _check_gy("max_pool2d_grad", gy, x, oh, ow)
    return [x]


def _infer_avg_grad(attrs, types):
    (gy,) = types
    if gy.rank != 4:
        raise ShapeError(f"avg_pool2d_grad expects gy [N, C, OH, OW], got {gy}")
    h, w = _pair(attrs["input_size"], "input_size")
    x = TensorType((gy.shape[0], gy.shape[1], h, w), gy.dtype)
    oh, ow = _pool_out("avg_pool2d_grad", x, attrs)
    _check_gy("avg_pool2d_grad", gy, x, oh, ow)
    return [x]


def _infer_global(attrs, types):
    (x,) = types
    _check_image(x, "input", "global_avg_pool2d")
    return [TensorType(x.shape[:2], x.dtype)]


# ----------------------------------------------------------------------- references
# NumPy in float64, one strided slice per window tap.


def _taps(attrs, h, w):
    """Per tap (kh, kw): the slices of the padded image it reads for every output cell."""
    (kh, kw), (sh, sw), (pt, pb, pl, pr) = pool_params(attrs)
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield (slice(i, i + (oh - 1) * sh + 1, sh), slice(j, j + (ow - 1) * sw + 1, sw))


def _padded(attrs, x, fill):
    _, _, (pt, pb, pl, pr) = pool_params(attrs)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=fill)
    valid = np.pad(np.ones(x.shape[2:], bool), ((pt, pb), (pl, pr)), constant_values=False)
    return xp, valid


def _argmax_taps(attrs, x):
    """The winning tap of every window (padded cells never win; ties and NaN: the first)."""
    xp, valid = _padded(attrs, x, 0.0)
    best = best_tap = None
    for t, (rs, cs) in enumerate(_taps(attrs, *x.shape[2:])):
        v = xp[:, :, rs, cs]
        ok = np.broadcast_to(valid[rs, cs], v.shape)
        if best is None:
            best = np.where(ok, v, np.nan)
            have = ok.copy()
            best_tap = np.zeros(v.shape, np.int64)
            continue
        with np.errstate(invalid="ignore"):
            win = ok & (~have | (v > best) | (np.isnan(v) & ~np.isnan(best)))
        best = np.where(win, v, best)
        best_tap = np.where(win, t, best_tap)
        have |= ok
    return best, best_tap


def _ref_max_pool(attrs, x):
    best, _ = _argmax_taps(attrs, x)
    return best.astype(x.dtype)


def _ref_max_pool_grad(attrs, gy, x):
    _, tap = _argmax_taps(attrs, x)
    _, _, (pt, pb, pl, pr) = pool_params(attrs)
    gxp = np.zeros(x.shape[:2] + (x.shape[2] + pt + pb, x.shape[3] + pl + pr))
    g64 = gy.astype(np.float64)
    for t, (rs, cs) in enumerate(_taps(attrs, *x.shape[2:])):
        gxp[:, :, rs, cs] += np.where(tap == t, g64, 0.0)
    gx = gxp[:, :, pt:pt + x.shape[2], pl:pl + x.shape[3]]
    if attrs.get("relu"):  # relu's gradient after it (x its output); inf * 0 is NaN
        with np.errstate(invalid="ignore"):
            gx = np.where(x > 0, gx, gx * 0.0)
    return gx.astype(x.dtype)


def _counts(attrs, h, w):
    """The divisor of every output cell, [OH, OW]."""
    (kh, kw), _, _ = pool_params(attrs)
    _, valid = _padded(attrs, np.zeros((1, 1, h, w)), 0.0)
    cnt = sum(valid[rs, cs].astype(np.float64) for rs, cs in _taps(attrs, h, w))
    return np.full_like(cnt, kh * kw) if attrs["count_include_pad"] else cnt


def _ref_avg_pool(attrs, x):
    xp, _ = _padded(attrs, x, 0.0)
    s = sum(xp[:, :, rs, cs] for rs, cs in _taps(attrs, *x.shape[2:]))
    return (s / _counts(attrs, *x.shape[2:])).astype(x.dtype)


def _ref_avg_pool_grad(attrs, gy):
    h, w = _pair(attrs["input_size"], "input_size")
    _, _, (pt, pb, pl, pr) = pool_params(attrs)
    g = gy.astype(np.float64) / _counts(attrs, h, w)
    gxp = np.zeros(gy.shape[:2] + (h + pt + pb, w + pl + pr))
    for rs, cs in _taps(attrs, h, w):
        gxp[:, :, rs, cs] += g
    return gxp[:, :, pt:pt + h, pl:pl + w].astype(gy.dtype)


def _ref_global(attrs, x):
    return x.astype(np.float64).mean(axis=(2, 3)).astype(x.dtype)


# ----------------------------------------------------------------------- gradients


def _g_max_pool(g, attrs, ins, outs, gouts):
    return [g.op("max_pool2d_grad", gouts[0], ins[0], **attrs)]


def _g_avg_pool(g, attrs, ins, outs, gouts):
    return [g.op("avg_pool2d_grad", gouts[0], input_size=tuple(g.type_of(ins[0]).shape[2:]), **attrs)]


def _g_avg_pool_grad(g, attrs, ins, outs, gouts):
    fwd = {k: v for k, v in attrs.items() if k != "input_size"}
    return [g.op("avg_pool2d", gouts[0], **fwd)]


def _g_global(g, attrs, ins, outs, gouts):
    n, c, h, w = g.type_of(ins[0]).shape
    gk = g.op("reshape", gouts[0], shape=(n, c, 1, 1))
    full = g.op("broadcast_to", gk, shape=(n, c, h, w))
    return [g.op("mul_scalar", full, c=1.0 / (h * w))]


# ----------------------------------------------------------------------- CPU kernels
# General path: per output row, per window tap (a, b), then along the output row j over
# the range where that tap falls inside the image (no bounds tests in the inner loop),
# with per-row state in small buffers allocated once per call. Updates are branch-free
# selects (random data would mispredict branches half the time), and stride 1 / 2 inner
# loops index with the loop variable alone (vectorisable). Max pooling also has an
# unrolled path for the common 2x2 / stride 2 window without top / left padding (LeNet's
# [64, 6, 28, 28]: forward 1.6 ms -> 0.06 ms, backward 1.7 ms -> 0.4 ms measured while
# writing them). Where the image's sizes are even, both run on `MaxPoolTile`s: LLVM left
# the unrolled loops scalar (the stride-2 reads), ~3 cycles a value; the tiles load two
# rows as vectors and split the windows' cells with shuffles (`_tiled_rows`; one thread,
# LeNet's pool1: forward 92 -> 27 us, backward 308 -> 164 us; LeNet training 360 -> 400
# steps/s, with simplify folding relu's gradient into the backward pass, relu=True).


POOL_LANES = 16
pool_16 = max_pool_tile(POOL_LANES, False)
pool_16_grad = max_pool_tile(POOL_LANES, True)


@cpu_helper
def _tiled_rows(xf, w, out, gy, gx, grad, rows, ow, positive):
    """2x2 / stride-2 max pooling (``grad``: its gradient) of ``rows`` row pairs of an
    even-sized flat image batch (row pair r at r * 2w, its ``ow`` windows' outputs, or gy,
    at r * ow) on `MaxPoolTile`s of POOL_LANES windows, as far as they can go; returns the
    first row pair left to the caller's scalar loop.

    A tile reads and writes whole vectors, past the row where ow is not a multiple of the
    lanes. Each row pair takes its last, partial chunk first and its full chunks after,
    and the rows go in order, so whatever a tile writes past its row (into the bottom row,
    or the next rows) is written again by a later tile. The last row pairs, whose spill
    would land past the rows given (another thread's block, or past the array), are left
    to the caller."""
    nfull = ow // POOL_LANES
    rem = ow - nfull * POOL_LANES
    tail = 0 if rem == 0 else (POOL_LANES - rem + ow - 1) // ow
    stop = max(rows - tail, 0)
    for r in range(stop):
        xo = r * 2 * w
        go = r * ow
        if rem > 0:
            j0 = nfull * POOL_LANES
            if grad:
                pool_16_grad(xf, xo + 2 * j0, w, gy, go + j0, gx, positive)
            else:
                pool_16(xf, xo + 2 * j0, w, out, go + j0)
        for ch in range(nfull):
            j0 = ch * POOL_LANES
            if grad:
                pool_16_grad(xf, xo + 2 * j0, w, gy, go + j0, gx, positive)
            else:
                pool_16(xf, xo + 2 * j0, w, out, go + j0)
    return stop


@cpu_helper
def _even_max_pool_rows(xf, of, w, ow, rows):
    """2x2 / stride-2 max pooling of ``rows`` row pairs of an even-sized flat batch:
    tiles, then the rows they leave to a scalar loop."""
    first_scalar = _tiled_rows(xf, w, of, of, of, False, rows, ow, False)
    for r in range(first_scalar, rows):  # deliberate parallel of the loop below
        for j in range(ow):
            at = r * 2 * w + 2 * j
            m = xf[at]
            v = xf[at + 1]
            m = v if (v > m or v != v) else m  # noqa: PLR0124
            v = xf[at + w]
            m = v if (v > m or v != v) else m  # noqa: PLR0124
            v = xf[at + w + 1]
            m = v if (v > m or v != v) else m  # noqa: PLR0124
            of[r * ow + j] = m


# below this many input values the even-sized forward pass stays on the calling thread
POOL_SERIAL = 1 << 16


@cpu_kernel(parallel=True)
def max_pool2d_fwd(x, out, kh, kw, sh, sw, pt, pl):
    n_img, n_ch, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    ninf = out.dtype.type(-np.inf)
    fast = kh == 2 and kw == 2 and sh == 2 and sw == 2 and pt == 0 and pl == 0
    if fast and h == 2 * oh and w == 2 * ow:  # even sizes: vector tiles, see _tiled_rows
        xf, of = x.reshape(x.size), out.reshape(out.size)
        if n_img == 1 or x.size < POOL_SERIAL:
            _even_max_pool_rows(xf, of, w, ow, n_img * n_ch * oh)
            return
        # in blocks of samples, on the pool's threads: right after a convolution (whose
        # threads still spin) and before the next, where a pass on the calling thread
        # alone let them fall asleep, and the next convolution waited to wake them
        nblk = min(PAR_BLOCKS, n_img)
        xs, os_ = n_ch * h * w, n_ch * oh * ow
        for t in prange(nblk):
            n0, n1 = n_img * t // nblk, n_img * (t + 1) // nblk
            _even_max_pool_rows(xf[n0 * xs:n1 * xs], of[n0 * os_:n1 * os_], w, ow,
                                (n1 - n0) * n_ch * oh)
        return
    if fast and 2 * oh <= h and 2 * ow <= w:  # (bottom / right padding may add a window)
        # the common 2x2 / stride 2 window, unrolled; a NaN wins (v != v)
        for n in range(n_img):
            for c in range(n_ch):
                for i in range(oh):
                    r0 = x[n, c, 2 * i]
                    r1 = x[n, c, 2 * i + 1]
                    orow = out[n, c, i]
                    for j in range(ow):
                        m = r0[2 * j]
                        v = r0[2 * j + 1]
                        m = v if (v > m or v != v) else m  # noqa: PLR0124
                        v = r1[2 * j]
                        m = v if (v > m or v != v) else m  # noqa: PLR0124
                        v = r1[2 * j + 1]
                        m = v if (v > m or v != v) else m  # noqa: PLR0124
                        orow[j] = m
        return
    # General path. Deliberate parallel of _max_pool_bwd_block's general path: the same
    # window walk, which there also tracks the argmax cell; one kernel per direction.
    for n in range(n_img):
        for c in range(n_ch):
            for i in range(oh):
                orow = out[n, c, i]
                for j in range(ow):
                    orow[j] = ninf
                h0 = i * sh - pt
                for a in range(max(h0, 0), min(h0 + kh, h)):
                    xrow = x[n, c, a]
                    for b in range(kw):
                        jlo = max(0, (pl - b + sw - 1) // sw)
                        jhi = min(ow, (w - 1 + pl - b) // sw + 1)
                        if jhi <= jlo:
                            continue
                        xs = xrow[jlo * sw + b - pl:]
                        os = orow[jlo:jhi]
                        # the max; a NaN wins (v != v), so non-finite values show
                        if sw == 1:
                            for q in range(jhi - jlo):
                                v = xs[q]
                                m = os[q]
                                os[q] = v if (v > m or v != v) else m  # noqa: PLR0124
                        elif sw == 2:
                            for q in range(jhi - jlo):
                                v = xs[2 * q]
                                m = os[q]
                                os[q] = v if (v > m or v != v) else m  # noqa: PLR0124
                        else:
                            for q in range(jhi - jlo):
                                v = xs[q * sw]
                                m = os[q]
                                os[q] = v if (v > m or v != v) else m  # noqa: PLR0124


@cpu_helper
def _max_pool_bwd_block(gy, x, gx, kh, kw, sh, sw, pt, pl, relu):
    """gx for samples of one block; with ``relu`` each routed value g becomes g * 0 where
    its window's max is not positive (relu's gradient, x being relu's output)."""
    n_img, n_ch, h, w = x.shape
    oh, ow = gy.shape[2], gy.shape[3]
    zero = gx.dtype.type(0)
    fast = kh == 2 and kw == 2 and sh == 2 and sw == 2 and pt == 0 and pl == 0
    if fast and 2 * oh <= h and 2 * ow <= w:  # (bottom / right padding may add a window)
        # the common 2x2 / stride 2 window: every cell is in at most one window, so each is
        # written once (gy at the window's argmax, else 0) and nothing is scattered. Even
        # sizes (no leftover row / column) run as one loop over rows of a 2-D view: about
        # twice as fast as the nested loops (LLVM optimises the shallower loop better).
        even = h == 2 * oh and w == 2 * ow
        rows = n_img * n_ch * oh if even else 1
        x2 = x.reshape((rows, x.size // rows))
        g2 = gx.reshape((rows, x.size // rows))
        y2 = gy.reshape((rows, gy.size // rows))
        first_scalar = 0
        if even:
            first_scalar = _tiled_rows(x.reshape(x.size), w, gx, gy.reshape(gy.size),
                                       gx.reshape(gx.size), True, rows, ow, relu)
        for r in range(first_scalar, rows if even else 0):
            xr = x2[r]
            gr = g2[r]
            grow = y2[r]
            for j in range(ow):
                # strictly greater: ties keep the first; the first NaN wins. Bitwise | & ~
                # on the comparisons, then selects: no branches to mispredict. Deliberate
                # parallel of the 4-D loop below (same routing on a 2-D view, kept inline
                # in both: these loops are the hot path)
                a, b = xr[2 * j], xr[2 * j + 1]
                c2, d = xr[w + 2 * j], xr[w + 2 * j + 1]
                t1 = (b > a) | ((b != b) & (a == a))  # noqa: PLR0124
                m = b if t1 else a
                t2 = (c2 > m) | ((c2 != c2) & (m == m))  # noqa: PLR0124
                m = c2 if t2 else m
                t3 = (d > m) | ((d != d) & (m == m))  # noqa: PLR0124
                m = d if t3 else m
                gv = grow[j]
                gv = gv if ((m > 0) | (not relu)) else gv * zero  # relu's gradient folded in
                gr[2 * j] = zero if (t1 | t2 | t3) else gv
                gr[2 * j + 1] = gv if (t1 & ~t2 & ~t3) else zero
                gr[w + 2 * j] = gv if (t2 & ~t3) else zero
                gr[w + 2 * j + 1] = gv if t3 else zero
        if even:
            return
        for n in range(n_img):
            for c in range(n_ch):
                for i in range(oh):
                    r0 = x[n, c, 2 * i]
                    r1 = x[n, c, 2 * i + 1]
                    g0 = gx[n, c, 2 * i]
                    g1 = gx[n, c, 2 * i + 1]
                    grow = gy[n, c, i]
                    for j in range(ow):
                        # deliberate parallel of the even-size 2-D loop above: same routing
                        a, b = r0[2 * j], r0[2 * j + 1]
                        c2, d = r1[2 * j], r1[2 * j + 1]
                        t1 = (b > a) | ((b != b) & (a == a))  # noqa: PLR0124
                        m = b if t1 else a
                        t2 = (c2 > m) | ((c2 != c2) & (m == m))  # noqa: PLR0124
                        m = c2 if t2 else m
                        t3 = (d > m) | ((d != d) & (m == m))  # noqa: PLR0124
                        m = d if t3 else m
                        gv = grow[j]
                        gv = gv if ((m > 0) | (not relu)) else gv * zero  # relu's gradient folded in
                        g0[2 * j] = zero if (t1 | t2 | t3) else gv
                        g0[2 * j + 1] = gv if (t1 & ~t2 & ~t3) else zero
                        g1[2 * j] = gv if (t2 & ~t3) else zero
                        g1[2 * j + 1] = gv if t3 else zero
                for a in range(2 * oh, h):  # a last odd row / column is in no window
                    for b in range(w):
                        gx[n, c, a, b] = zero
                for a in range(2 * oh):
                    for b in range(2 * ow, w):
                        gx[n, c, a, b] = zero
        return
    # General path. Deliberate parallel of max_pool2d_fwd's general path (its window walk,
    # here also keeping the argmax cell) and of avg_pool2d_bwd's zeroed-plane scatter.
    best = np.empty(ow, x.dtype)  # per-row running max, once per call
    arg = np.empty(ow, np.int64)  # its cell (a * w + column), -1: none yet; once per call
    for n in range(n_img):
        for c in range(n_ch):
            gplane = gx[n, c].reshape(h * w)
            for k in range(h * w):
                gplane[k] = 0
            for i in range(oh):
                for j in range(ow):
                    arg[j] = -1
                h0 = i * sh - pt
                for a in range(max(h0, 0), min(h0 + kh, h)):
                    xrow = x[n, c, a]
                    for b in range(kw):
                        jlo = max(0, (pl - b + sw - 1) // sw)
                        jhi = min(ow, (w - 1 + pl - b) // sw + 1)
                        if jhi <= jlo:
                            continue
                        first = jlo * sw + b - pl
                        xs = xrow[first:]
                        bs = best[jlo:jhi]
                        ts = arg[jlo:jhi]
                        base = a * w + first
                        for q in range(jhi - jlo):
                            v = xs[q * sw]
                            m = bs[q]
                            t = ts[q]
                            # strictly greater: ties keep the first cell; the first NaN wins.
                            # Bitwise | and &: no short-circuit branches to mispredict
                            take = (t < 0) | (v > m) | ((v != v) & (m == m))  # noqa: PLR0124
                            bs[q] = v if take else m
                            ts[q] = base + q * sw if take else t
                grow = gy[n, c, i]
                for j in range(ow):
                    gv = grow[j]
                    if relu and not best[j] > 0:
                        gv = gv * zero
                    gplane[arg[j]] += gv


# Threads: the max-pooling gradient splits the batch into at most PAR_BLOCKS runs of samples
# run with `prange`, each by the helper above on its slice of the batch (as the
# convolutions do, see graphdl/ops/conv.py). The forward pass is a few times cheaper and
# stays on the calling thread: a parallel region costs a synchronisation, and on a shared
# machine every one of them is a chance to wait for a descheduled thread.


@cpu_kernel(parallel=True)
def max_pool2d_bwd(gy, x, gx, kh, kw, sh, sw, pt, pl, relu):
    n_img = x.shape[0]
    nblk = min(PAR_BLOCKS, n_img)
    for t in prange(nblk):
        n0, n1 = n_img * t // nblk, n_img * (t + 1) // nblk
        _max_pool_bwd_block(gy[n0:n1], x[n0:n1], gx[n0:n1], kh, kw, sh, sw, pt, pl, relu)


# Deliberate parallel of avg_pool2d_bwd: the same window walk, gathering here and
# scattering (the adjoint) there.
@cpu_kernel
def avg_pool2d_fwd(x, out, kh, kw, sh, sw, pt, pl, count_include_pad):
    n_img, n_ch, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    one = out.dtype.type(1)
    scale = np.empty(ow, out.dtype)  # 1 / divisor along a row, once per call
    for n in range(n_img):
        for c in range(n_ch):
            for i in range(oh):
                orow = out[n, c, i]
                for j in range(ow):
                    orow[j] = 0
                h0 = i * sh - pt
                a0, a1 = max(h0, 0), min(h0 + kh, h)
                for a in range(a0, a1):
                    xrow = x[n, c, a]
                    for b in range(kw):
                        jlo = max(0, (pl - b + sw - 1) // sw)
                        jhi = min(ow, (w - 1 + pl - b) // sw + 1)
                        if jhi <= jlo:
                            continue
                        xs = xrow[jlo * sw + b - pl:]
                        os = orow[jlo:jhi]
                        if sw == 1:
                            for q in range(jhi - jlo):
                                os[q] += xs[q]
                        elif sw == 2:
                            for q in range(jhi - jlo):
                                os[q] += xs[2 * q]
                        else:
                            for q in range(jhi - jlo):
                                os[q] += xs[q * sw]
                for j in range(ow):
                    w0 = j * sw - pl
                    cnt = kh * kw if count_include_pad else (a1 - a0) * (min(w0 + kw, w) - max(w0, 0))
                    scale[j] = one / out.dtype.type(cnt)
                for j in range(ow):
                    orow[j] *= scale[j]


# Deliberate parallel of avg_pool2d_fwd: its window walk, scattering gy back (the adjoint);
# its zeroed plane is _max_pool_bwd_block's.
@cpu_kernel
def avg_pool2d_bwd(gy, gx, kh, kw, sh, sw, pt, pl, count_include_pad):
    n_img, n_ch, h, w = gx.shape
    oh, ow = gy.shape[2], gy.shape[3]
    one = gx.dtype.type(1)
    g = np.empty(ow, gx.dtype)  # a row of gy over its divisors, once per call
    for n in range(n_img):
        for c in range(n_ch):
            gplane = gx[n, c].reshape(h * w)
            for k in range(h * w):
                gplane[k] = 0
            for i in range(oh):
                h0 = i * sh - pt
                a0, a1 = max(h0, 0), min(h0 + kh, h)
                grow = gy[n, c, i]
                for j in range(ow):
                    w0 = j * sw - pl
                    cnt = kh * kw if count_include_pad else (a1 - a0) * (min(w0 + kw, w) - max(w0, 0))
                    g[j] = grow[j] * (one / gx.dtype.type(cnt))
                for a in range(a0, a1):
                    xrow = gx[n, c, a]
                    for b in range(kw):
                        jlo = max(0, (pl - b + sw - 1) // sw)
                        jhi = min(ow, (w - 1 + pl - b) // sw + 1)
                        if jhi <= jlo:
                            continue
                        xs = xrow[jlo * sw + b - pl:]
                        gs = g[jlo:jhi]
                        if sw == 1:
                            for q in range(jhi - jlo):
                                xs[q] += gs[q]
                        elif sw == 2:
                            for q in range(jhi - jlo):
                                xs[2 * q] += gs[q]
                        else:
                            for q in range(jhi - jlo):
                                xs[q * sw] += gs[q]


@cpu_kernel
def global_avg_pool2d_fwd(x, out):
    """out[i] = mean(x[i, :]) for x viewed as (N*C, H*W)."""
    rows, npix = x.shape
    scale = out.dtype.type(1) / out.dtype.type(npix)
    for i in range(rows):
        row = x[i]
        s = out.dtype.type(0)
        for j in range(npix):
            s += row[j]
        out[i] = s * scale


# ----------------------------------------------------------------------- emitters


def _args(ctx, attrs) -> str:
    (kh, kw), (sh, sw), (pt, _, pl, _) = pool_params(attrs)
    return ctx.runtime(kh, kw, sh, sw, pt, pl)


def _emit_max(ctx, attrs, ins, outs):
    return [ctx.call("max_pool2d_fwd", ins[0], outs[0], _args(ctx, attrs))]


def _emit_max_grad(ctx, attrs, ins, outs):
    return [ctx.call("max_pool2d_bwd", ins[0], ins[1], outs[0], _args(ctx, attrs),
                     ctx.runtime(bool(attrs["relu"])))]


def _emit_avg(ctx, attrs, ins, outs):
    return [ctx.call("avg_pool2d_fwd", ins[0], outs[0], _args(ctx, attrs),
                     ctx.runtime(bool(attrs["count_include_pad"])))]


def _emit_avg_grad(ctx, attrs, ins, outs):
    return [ctx.call("avg_pool2d_bwd", ins[0], outs[0], _args(ctx, attrs),
                     ctx.runtime(bool(attrs["count_include_pad"])))]


def _emit_global(ctx, attrs, ins, outs):
    n, c, h, w = ctx.shape(ins[0])
    return [ctx.call("global_avg_pool2d_fwd", f"{ctx.var(ins[0])}.reshape(({n} * {c}, {h} * {w}))",
                     f"{ctx.var(outs[0])}.reshape(({n} * {c},))")]


# ----------------------------------------------------------------------- registration


def _pool_attrs() -> dict:
    return {
        "kernel": Attr(tuple),
        "stride": Attr(object, None),  # None: the kernel size
        "padding": Attr(tuple, (0, 0, 0, 0)),
    }


register(
    OpDef(
        name="max_pool2d",
        inputs=("x",),
        infer=_infer_pool("max_pool2d"),
        reference=_ref_max_pool,
        pattern=Pattern.OPAQUE,
        attrs=_pool_attrs(),
        grad=_g_max_pool,
        emit_cpu=_emit_max,
        doc="max over KHxKW windows of [N, C, H, W]; padded cells never win",
    )
)

register(
    OpDef(
        name="max_pool2d_grad",
        inputs=("gy", "x"),
        infer=_infer_max_grad,
        reference=_ref_max_pool_grad,
        pattern=Pattern.OPAQUE,
        attrs={**_pool_attrs(), "relu": Attr(bool, False)},
        no_grad_reason="second order through max pooling (a piecewise routing) is not needed "
        "for training",
        emit_cpu=_emit_max_grad,
        doc="gradient of max_pool2d: gy routed to each window's argmax (recomputed from x); "
        "relu=True: also relu's gradient, x being relu's output (`simplify` folds "
        "relu_grad(max_pool2d_grad(gy, y), y) into it)",
    )
)

register(
    OpDef(
        name="avg_pool2d",
        inputs=("x",),
        infer=_infer_pool("avg_pool2d"),
        reference=_ref_avg_pool,
        pattern=Pattern.OPAQUE,
        attrs={**_pool_attrs(), "count_include_pad": Attr(bool, True)},
        grad=_g_avg_pool,
        emit_cpu=_emit_avg,
        doc="mean over KHxKW windows of [N, C, H, W] (zero padding counted or not)",
    )
)

register(
    OpDef(
        name="avg_pool2d_grad",
        inputs=("gy",),
        infer=_infer_avg_grad,
        reference=_ref_avg_pool_grad,
        pattern=Pattern.OPAQUE,
        attrs={**_pool_attrs(), "count_include_pad": Attr(bool, True), "input_size": Attr(tuple)},
        grad=_g_avg_pool_grad,
        emit_cpu=_emit_avg_grad,
        doc="gradient of avg_pool2d (its adjoint): each gy spread evenly over its window",
    )
)

register(
    OpDef(
        name="global_avg_pool2d",
        inputs=("x",),
        infer=_infer_global,
        reference=_ref_global,
        pattern=Pattern.REDUCTION,
        grad=_g_global,
        emit_cpu=_emit_global,
        doc="mean over H and W: [N, C, H, W] -> [N, C]",
    )
)
