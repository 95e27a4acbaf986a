"""Convolution kernels: graphdl vs PyTorch, and the CPU strategies graphdl chose between.

    python tools/bench_conv.py                 # graphdl vs torch table + sgemm peak
    python tools/bench_conv.py --candidates    # also the strategy comparison
    python tools/bench_conv.py --seconds 0.3 --rounds 7

Cases: LeNet-5's two convolutions at batch 64 (conv1: 1->6, 5x5, pad 2, 28x28; conv2:
6->16, 5x5, 14x14) and a wider layer (32->64, 3x3, pad 1, 16x16). For each: forward,
backward-input and backward-weight in GFLOP/s (2 * N * F * C/groups * KH * KW * OH * OW
flops each), for graphdl's kernels (the functions the generated code calls, called
directly) and for PyTorch (torch.nn.functional.conv2d and aten.convolution_backward with
one output mask at a time) with 2 threads, plus PyTorch with 1 thread for context, and
the machine's measured sgemm peak (np.dot of 1024x1024 float32, best of the rounds).

Timing: each measurement is the mean of back-to-back calls over `--seconds`; the methods
alternate block by block (with a short pause so another pool's spinning threads go
idle), and the best block of `--rounds` is reported. The machine's load average is
printed: on a shared 2-core machine a busy neighbour halves what 2 threads can do.

`--candidates` compares the strategies measured before choosing (stride 1, dilation 1,
groups 1):
- graphdl (chosen): the forward pass on vector tiles (conv2d_fwd_vec: direct convolution,
  the filters' multiply-adds over vectors of 16 output positions in registers), the weight
  gradient on outer tiles (conv2d_bwd_weight_vec); the input gradient im2col + BLAS per
  sample, the batch split into blocks of samples run on
  Numba's threads; with stride 1 and few filters per group the GEMM runs over the padded
  width, so each im2col row is one contiguous copy ("wide rows"), otherwise each tap
  copies OH row segments (graphdl/ops/conv.py, WIDE_LIMIT);
- wide rows always / segments always: graphdl's im2col kernels (the forward pass too)
  compiled here with either choice forced;
- batch GEMM: im2col of the whole batch and one BLAS call (plus transposing copies; the
  unfolding on one thread, the GEMM on the threads SciPy's BLAS is allowed, which graphdl
  sets to one);
- direct prange: direct loops parallel over samples (or filters for the weight gradient)
  with numba's prange and per-thread buffers, no BLAS.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CASES = [
    # name, N, C, H, W, F, K, pad
    ("lenet conv1", 64, 1, 28, 28, 6, 5, 2),
    ("lenet conv2", 64, 6, 14, 14, 16, 5, 0),
    ("wide 3x3", 64, 32, 16, 16, 64, 3, 1),
]
DIRECTIONS = ("forward", "backward-input", "backward-weight")


def _block(fn, seconds: float) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        t = time.perf_counter() - t0
        if t >= seconds:
            return t / n


def best_times(fns: dict, seconds: float, rounds: int, pause: float = 0.1) -> dict:
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            time.sleep(pause)
            best[k] = min(best[k], _block(fn, seconds))
    return best


def sgemm_peak(rounds: int) -> float:
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    b, out = a.copy(), np.empty_like(a)
    t = min(best_times({"gemm": lambda: np.dot(a, b, out)}, 0.3, 1)["gemm"] for _ in range(rounds))
    return 2 * 1024**3 / t / 1e9


def case_data(n, c, h, w, f, k, pad, seed=0):
    r = np.random.default_rng(seed)
    oh = h + 2 * pad - k + 1
    return {
        "x": r.standard_normal((n, c, h, w)).astype(np.float32),
        "w": r.standard_normal((f, c, k, k)).astype(np.float32),
        "b": r.standard_normal(f).astype(np.float32),
        "gy": r.standard_normal((n, f, oh, oh)).astype(np.float32),
        "out": np.empty((n, f, oh, oh), np.float32),
        "gx": np.empty((n, c, h, w), np.float32),
        "gw": np.empty((f, c, k, k), np.float32),
        "flops": 2 * n * f * c * k * k * oh * oh,
    }


def graphdl_fns(d, pad):
    from graphdl.backends.cpu.library import load_library

    K = load_library()

    x, w, b, gy, out, gx, gw = (d[k] for k in ("x", "w", "b", "gy", "out", "gx", "gw"))
    return {
        "forward": lambda: K.conv2d_fwd_vec(x, w, b, out, pad, pad, False, False),
        "backward-input": lambda: K.conv2d_bwd_input(gy, w, gx, 1, 1, pad, pad, 1, 1, 1),
        "backward-weight": lambda: K.conv2d_bwd_weight_vec(x, gy, gw, pad, pad),
    }


def torch_fns(d, pad):
    import torch

    x, w, gy = (torch.from_numpy(d[k]) for k in ("x", "w", "gy"))
    bwd = torch.ops.aten.convolution_backward

    def back(mask):
        return lambda: bwd(gy, x, w, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, mask)

    return {
        "forward": lambda: torch.nn.functional.conv2d(x, w, padding=pad),
        "backward-input": back([True, False, False]),
        "backward-weight": back([False, True, False]),
    }


def with_threads(n, fn):
    import torch

    def run():
        old = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            fn()
        finally:
            torch.set_num_threads(old)

    return run


def check_against_torch(d, pad) -> None:
    g, t = graphdl_fns(d, pad), torch_fns(d, pad)
    for direction in DIRECTIONS:
        g[direction]()
    y = t["forward"]().numpy()
    gx, gw = t["backward-input"]()[0].numpy(), t["backward-weight"]()[1].numpy()
    for name, a, b in (("forward", d["out"], y), ("backward-input", d["gx"], gx),
                       ("backward-weight", d["gw"], gw)):
        err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)
        if err > 1e-4:
            raise SystemExit(f"graphdl {name} differs from torch: relative error {err:.2e}")


# ----------------------------------------------------------------------- candidates
# Written for this comparison only (stride 1, dilation 1, groups 1).

_CANDIDATES = None


def candidates():
    global _CANDIDATES
    if _CANDIDATES is not None:
        return _CANDIDATES
    from numba import njit, prange

    from graphdl.backends.cpu.library import FASTMATH as fm

    jit = njit(cache=False, error_model="numpy", fastmath=fm)
    pjit = njit(cache=False, error_model="numpy", fastmath=fm, parallel=True)

    @jit
    def batch_cols(x, cols, kh_, kw_, pad, oh, ow):
        # cols[(c, kh, kw), n * P + p] for the whole batch
        n_img, n_ch, h, w = x.shape
        npos = oh * ow
        xp = np.zeros((n_ch, oh + kh_ - 1, ow + kw_ - 1), x.dtype)
        for n in range(n_img):
            for c in range(n_ch):
                for i in range(h):
                    src = x[n, c, i]
                    dst = xp[c, i + pad, pad:pad + w]
                    for j in range(w):
                        dst[j] = src[j]
            for c in range(n_ch):
                for kh in range(kh_):
                    for kw in range(kw_):
                        row = cols[(c * kh_ + kh) * kw_ + kw, n * npos:(n + 1) * npos]
                        for i in range(oh):
                            dst = row[i * ow:(i + 1) * ow]
                            src = xp[c, i + kh, kw:kw + ow]
                            for j in range(ow):
                                dst[j] = src[j]

    @jit
    def batch_fwd(x, w, out):
        n_img = x.shape[0]
        nf, n_ch, kh_, kw_ = w.shape
        oh, ow = out.shape[2], out.shape[3]
        pad = (oh + kh_ - 1 - x.shape[2]) // 2
        npos = oh * ow
        cols = np.empty((n_ch * kh_ * kw_, n_img * npos), x.dtype)
        batch_cols(x, cols, kh_, kw_, pad, oh, ow)
        tmp = np.dot(w.reshape((nf, n_ch * kh_ * kw_)), cols)
        out3 = out.reshape((n_img, nf, npos))
        for n in range(n_img):
            for f in range(nf):
                dst = out3[n, f]
                src = tmp[f, n * npos:(n + 1) * npos]
                for j in range(npos):
                    dst[j] = src[j]

    @jit
    def gy_t(gy):
        n_img, nf, oh, ow = gy.shape
        npos = oh * ow
        t = np.empty((nf, n_img * npos), gy.dtype)
        g3 = gy.reshape((n_img, nf, npos))
        for n in range(n_img):
            for f in range(nf):
                dst = t[f, n * npos:(n + 1) * npos]
                src = g3[n, f]
                for j in range(npos):
                    dst[j] = src[j]
        return t

    @jit
    def batch_bwd_weight(x, gy, gw):
        n_img = x.shape[0]
        nf, n_ch, kh_, kw_ = gw.shape
        oh, ow = gy.shape[2], gy.shape[3]
        pad = (oh + kh_ - 1 - x.shape[2]) // 2
        cols = np.empty((n_ch * kh_ * kw_, n_img * oh * ow), x.dtype)
        batch_cols(x, cols, kh_, kw_, pad, oh, ow)
        np.dot(gy_t(gy), cols.T, gw.reshape((nf, n_ch * kh_ * kw_)))

    @jit
    def batch_bwd_input(gy, w, gx):
        n_img, n_ch, h, wd = gx.shape
        nf, _, kh_, kw_ = w.shape
        oh, ow = gy.shape[2], gy.shape[3]
        pad = (oh + kh_ - 1 - h) // 2
        npos = oh * ow
        gcols = np.dot(w.reshape((nf, n_ch * kh_ * kw_)).T, gy_t(gy))
        gxp = np.empty((n_ch, oh + kh_ - 1, ow + kw_ - 1), gx.dtype)
        for n in range(n_img):
            gxp[...] = 0
            for c in range(n_ch):
                for kh in range(kh_):
                    for kw in range(kw_):
                        row = gcols[(c * kh_ + kh) * kw_ + kw, n * npos:(n + 1) * npos]
                        for i in range(oh):
                            src = row[i * ow:(i + 1) * ow]
                            dst = gxp[c, i + kh, kw:kw + ow]
                            for j in range(ow):
                                dst[j] += src[j]
            for c in range(n_ch):
                for i in range(h):
                    src = gxp[c, i + pad, pad:pad + wd]
                    dst = gx[n, c, i]
                    for j in range(wd):
                        dst[j] = src[j]

    # direct: each sample's padded image flattened [C, Hp*Wp + KW]; outputs live on the same
    # "wide" grid (row length Wp, the last KW-1 columns of each row are discarded), so every
    # tap is one contiguous axpy of length OH*Wp
    @pjit
    def direct_fwd(x, w, out):
        n_img, n_ch, h, wd = x.shape
        nf, _, kh_, kw_ = w.shape
        oh, ow = out.shape[2], out.shape[3]
        pad = (oh + kh_ - 1 - h) // 2
        hp, wp = oh + kh_ - 1, ow + kw_ - 1
        length = oh * wp
        for n in prange(n_img):
            xp = np.zeros((n_ch, hp * wp + kw_), x.dtype)  # per-thread buffers
            acc = np.empty((4, length), x.dtype)
            for c in range(n_ch):
                for i in range(h):
                    src = x[n, c, i]
                    dst = xp[c, (i + pad) * wp + pad:(i + pad) * wp + pad + wd]
                    for j in range(wd):
                        dst[j] = src[j]
            for f0 in range(0, nf, 4):
                nb = min(4, nf - f0)
                acc[...] = 0
                for c in range(n_ch):
                    for kh in range(kh_):
                        for kw in range(kw_):
                            xs = xp[c, kh * wp + kw:kh * wp + kw + length]
                            if nb == 4:
                                a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
                                w0, w1 = w[f0, c, kh, kw], w[f0 + 1, c, kh, kw]
                                w2, w3 = w[f0 + 2, c, kh, kw], w[f0 + 3, c, kh, kw]
                                for q in range(length):
                                    v = xs[q]
                                    a0[q] += w0 * v
                                    a1[q] += w1 * v
                                    a2[q] += w2 * v
                                    a3[q] += w3 * v
                            else:
                                for jf in range(nb):
                                    aj = acc[jf]
                                    wv = w[f0 + jf, c, kh, kw]
                                    for q in range(length):
                                        aj[q] += wv * xs[q]
                for jf in range(nb):
                    for i in range(oh):
                        src = acc[jf, i * wp:i * wp + ow]
                        dst = out[n, f0 + jf, i]
                        for j in range(ow):
                            dst[j] = src[j]

    @pjit
    def direct_bwd_input(gy, w, gx):
        n_img, n_ch, h, wd = gx.shape
        nf, _, kh_, kw_ = w.shape
        oh, ow = gy.shape[2], gy.shape[3]
        pad = (oh + kh_ - 1 - h) // 2
        hp, wp = oh + kh_ - 1, ow + kw_ - 1
        length = oh * wp
        for n in prange(n_img):
            gyw = np.zeros((nf, length), gy.dtype)  # per-thread buffers
            acc = np.empty(hp * wp + kw_, gy.dtype)
            for f in range(nf):
                for i in range(oh):
                    src = gy[n, f, i]
                    dst = gyw[f, i * wp:i * wp + ow]
                    for j in range(ow):
                        dst[j] = src[j]
            for c in range(n_ch):
                acc[...] = 0
                for f in range(nf):
                    src = gyw[f]
                    for kh in range(kh_):
                        for kw in range(kw_):
                            wv = w[f, c, kh, kw]
                            dst = acc[kh * wp + kw:kh * wp + kw + length]
                            for q in range(length):
                                dst[q] += wv * src[q]
                for i in range(h):
                    src = acc[(i + pad) * wp + pad:(i + pad) * wp + pad + wd]
                    dst = gx[n, c, i]
                    for j in range(wd):
                        dst[j] = src[j]

    @pjit
    def direct_bwd_weight(x, gy, gw):
        n_img, n_ch, h, wd = x.shape
        nf, _, kh_, kw_ = gw.shape
        oh, ow = gy.shape[2], gy.shape[3]
        pad = (oh + kh_ - 1 - h) // 2
        hp, wp = oh + kh_ - 1, ow + kw_ - 1
        length = oh * wp
        xp = np.zeros((n_img, n_ch, hp * wp + kw_), x.dtype)  # scratch, once per call
        gyw = np.zeros((n_img, nf, length), x.dtype)
        for n in prange(n_img):
            for c in range(n_ch):
                for i in range(h):
                    src = x[n, c, i]
                    dst = xp[n, c, (i + pad) * wp + pad:(i + pad) * wp + pad + wd]
                    for j in range(wd):
                        dst[j] = src[j]
            for f in range(nf):
                for i in range(oh):
                    src = gy[n, f, i]
                    dst = gyw[n, f, i * wp:i * wp + ow]
                    for j in range(ow):
                        dst[j] = src[j]
        for fc in prange(nf * n_ch):  # each thread owns whole output rows: no races
            f, c = fc // n_ch, fc % n_ch
            for kh in range(kh_):
                for kw in range(kw_):
                    s = gw.dtype.type(0)
                    for n in range(n_img):
                        g = gyw[n, f]
                        xs = xp[n, c, kh * wp + kw:kh * wp + kw + length]
                        for q in range(length):
                            s += g[q] * xs[q]
                    gw[f, c, kh, kw] = s

    _CANDIDATES = {
        "wide rows always": _graphdl_variant(WIDE_LIMIT=10**9),
        "segments always": _graphdl_variant(WIDE_LIMIT=-1),
        "batch GEMM": (batch_fwd, batch_bwd_input, batch_bwd_weight),
        "direct prange": (direct_fwd, direct_bwd_input, direct_bwd_weight),
    }
    return _CANDIDATES


def _graphdl_variant(**consts):
    """graphdl's own kernels, compiled here with other module constants (WIDE_LIMIT: the
    wide / segment choice), called like the
    candidates below."""
    from graphdl.ops import conv

    fwd, bin_, bw = (
        _recompiled(fn, consts, {})
        for fn in (conv.conv2d_fwd, conv.conv2d_bwd_input, conv.conv2d_bwd_weight)
    )
    return (
        lambda x, w, out: fwd(x, w, w.reshape(-1), out, 1, 1, *_pads(x, out, w), 1, 1, 1, False),
        lambda gy, w, gx: bin_(gy, w, gx, 1, 1, *_pads(gx, gy, w), 1, 1, 1),
        lambda x, gy, gw: bw(x, gy, gw, 1, 1, *_pads(x, gy, gw), 1, 1, 1),
    )


def _recompiled(fn, consts: dict, memo: dict):
    """A jitted copy of a kernel or helper (plain functions, as graphdl.ops registers
    them) whose module constants are overridden by ``consts``, with the helpers it calls
    copied the same way and graphdl's `prange` marker bound to Numba's."""
    import types

    import numba
    from numba import njit

    from graphdl.backends.cpu.library import FASTMATH
    from graphdl.ops.registry import is_cpu_helper, is_parallel_kernel, prange

    if fn in memo:
        return memo[fn]
    glb = {**fn.__globals__, **consts}
    for name in fn.__code__.co_names:
        v = glb.get(name)
        if v is prange:
            glb[name] = numba.prange
        elif is_cpu_helper(v):
            glb[name] = _recompiled(v, consts, memo)
    copy = types.FunctionType(fn.__code__, glb, fn.__name__, fn.__defaults__)
    memo[fn] = njit(error_model="numpy", fastmath=FASTMATH,
                    parallel=is_parallel_kernel(fn.__name__))(copy)
    return memo[fn]


def _pads(x, y, w):
    """(top, left) padding of a stride-1 'same-sized' case from the shapes."""
    pad = (y.shape[2] + w.shape[2] - 1 - x.shape[2]) // 2
    return pad, pad


def candidate_fns(d, pad):
    out = {"graphdl (chosen)": graphdl_fns(d, pad)}
    x, w, gy, o, gx, gw = (d[k] for k in ("x", "w", "gy", "out", "gx", "gw"))
    for name, (fwd, bin_, bw) in candidates().items():
        out[name] = {
            "forward": lambda fwd=fwd: fwd(x, w, o),
            "backward-input": lambda bin_=bin_: bin_(gy, w, gx),
            "backward-weight": lambda bw=bw: bw(x, gy, gw),
        }
    return out


# ----------------------------------------------------------------------- main


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=0.2, help="length of one timed block")
    ap.add_argument("--rounds", type=int, default=5, help="blocks per method (best is kept)")
    ap.add_argument("--candidates", action="store_true", help="also compare the strategies")
    args = ap.parse_args(argv)

    import numba
    import torch

    torch.set_num_threads(2)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    print(f"numpy {np.__version__}, numba {numba.__version__} ({numba.config.NUMBA_NUM_THREADS} "
          f"threads), torch {torch.__version__} (2 threads; 1-thread column for context)")
    peak = sgemm_peak(args.rounds)
    print(f"sgemm peak (np.dot 1024^3 float32, best of {args.rounds}): {peak:.1f} GFLOP/s\n")

    head = (f"{'case':<12} {'direction':<16} {'MFLOP':>6} | {'graphdl ms':>10} {'GFLOP/s':>7} "
            f"{'%peak':>5} | {'torch ms':>8} {'GFLOP/s':>7} | {'torch1 GF/s':>11} | {'vs torch':>8}")
    print(head)
    print("-" * len(head))
    rows = []
    for name, n, c, h, w, f, k, pad in CASES:
        d = case_data(n, c, h, w, f, k, pad)
        check_against_torch(d, pad)
        g, t = graphdl_fns(d, pad), torch_fns(d, pad)
        for direction in DIRECTIONS:
            fns = {"g": g[direction], "t": t[direction], "t1": with_threads(1, t[direction])}
            best = best_times(fns, args.seconds, args.rounds)
            gf = {k_: d["flops"] / v / 1e9 for k_, v in best.items()}
            rows.append((name, direction, gf))
            print(f"{name:<12} {direction:<16} {d['flops'] / 1e6:6.1f} | {best['g'] * 1e3:10.3f} "
                  f"{gf['g']:7.1f} {100 * gf['g'] / peak:5.0f} | {best['t'] * 1e3:8.3f} "
                  f"{gf['t']:7.1f} | {gf['t1']:11.1f} | {best['t'] / best['g']:7.2f}x")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")

    if args.candidates:
        print("\nstrategy candidates (GFLOP/s; stride 1, groups 1):")
        names = None
        for name, n, c, h, w, f, k, pad in CASES:
            d = case_data(n, c, h, w, f, k, pad, seed=1)
            fns = candidate_fns(d, pad)
            if names is None:
                names = list(fns)
                print(f"{'case':<12} {'direction':<16} | " + " | ".join(f"{s:>17}" for s in names))
            for direction in DIRECTIONS:
                ref = None
                for s in names:  # every candidate computes the same numbers
                    fns[s][direction]()
                    val = {"forward": d["out"], "backward-input": d["gx"],
                           "backward-weight": d["gw"]}[direction].copy()
                    if ref is None:
                        ref = val
                    elif np.abs(val - ref).max() > 1e-3 * max(np.abs(ref).max(), 1.0):
                        raise SystemExit(f"candidate {s} {direction} disagrees on {name}")
                best = best_times({s: fns[s][direction] for s in names}, args.seconds, args.rounds)
                print(f"{name:<12} {direction:<16} | " + " | ".join(
                    f"{d['flops'] / best[s] / 1e9:17.1f}" for s in names))
        print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
