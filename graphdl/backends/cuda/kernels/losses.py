"""CUDA kernels of the losses and the accuracy count (graphdl/ops/losses.py).

The per-row arithmetic is the CPU kernels' (float64 accumulators, the same order within a
row), so both backends agree to rounding: a deliberate parallel of graphdl/ops/losses.py,
to change together. Cross-entropy and the count take logits [..., C] and labels [...]: the
emitters pass them as rows ([M, C] and [M] views, M the product of the leading dims, e.g.
N * T for one label per step). Losses and counts that end in one number run as
one block of RED_BLOCK threads: each thread takes rows (or elements) in turn, and the
shared-memory tree (`reduce.tree_reduce`) adds the partial sums. The cross-entropy
gradient runs one thread per row, after a one-block kernel has counted the rows that
count. (``max(a, b)`` of mixed float types is written as a conditional: numba's built-in
CUDA target rejects it.)
"""

from __future__ import annotations

import math

from numba import float64

from graphdl.backends.cuda.device import RED_BLOCK, cuda, jit
from graphdl.backends.cuda.kernels.reduce import tree_reduce
from graphdl.backends.cuda.registry import cuda_emitter, cuda_kernel


# Deliberate parallel of the CPU softmax_ce_fwd (per row) and, in its one-block two-sum
# layout, of count_correct_kernel below (the sums differ; the tree is shared).
@cuda_kernel
@jit
def softmax_ce_fwd(logits, labels, out, smoothing, ignore):
    tot = cuda.shared.array(RED_BLOCK, float64)
    cnt = cuda.shared.array(RED_BLOCK, float64)
    t = cuda.threadIdx.x
    n, c = logits.shape
    total = 0.0
    count = 0.0
    for i in range(t, n, cuda.blockDim.x):
        lab = labels[i]
        if lab != ignore and (lab < 0 or lab >= c):  # as the CPU kernel: NaN, no other row
            total += math.nan
            count += 1.0
        elif lab != ignore:
            m = logits[i, 0]
            for j in range(1, c):
                if logits[i, j] > m:  # noqa: PLR1730  (as the CPU kernel: no max())
                    m = logits[i, j]
            s = 0.0
            zsum = 0.0
            for j in range(c):
                z = logits[i, j] - m
                s += math.exp(z)
                zsum += z
            lse = math.log(s)
            nll = lse - (logits[i, lab] - m)
            smooth = lse - zsum / c
            total += (1.0 - smoothing) * nll + smoothing * smooth
            count += 1.0
    tot[t] = total
    cnt[t] = count
    tree_reduce(tot, t, cuda.blockDim.x, 0, 1, False)
    tree_reduce(cnt, t, cuda.blockDim.x, 0, 1, False)
    if t == 0:
        out[0] = tot[0] / (cnt[0] if cnt[0] > 1.0 else 1.0)  # noqa: FURB136


@cuda_kernel
@jit
def count_valid(labels, ignore, count):
    """count[0] = how many labels are not ``ignore`` (one block)."""
    cnt = cuda.shared.array(RED_BLOCK, float64)
    t = cuda.threadIdx.x
    k = 0.0
    for i in range(t, labels.size, cuda.blockDim.x):
        if labels[i] != ignore:
            k += 1.0
    cnt[t] = k
    tree_reduce(cnt, t, cuda.blockDim.x, 0, 1, False)
    if t == 0:
        count[0] = cnt[0]


# Deliberate parallel of the CPU softmax_ce_bwd (per row).
@cuda_kernel
@jit
def softmax_ce_bwd(g, logits, labels, count, out, smoothing, ignore):
    """One thread per row: (softmax - smoothed one-hot) * g / count."""
    n, c = logits.shape
    scale = g[0] / (count[0] if count[0] > 1.0 else 1.0)  # noqa: FURB136
    off = smoothing / c
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        lab = labels[i]
        if lab == ignore:
            for j in range(c):
                out[i, j] = 0
        else:
            m = logits[i, 0]
            for j in range(1, c):
                if logits[i, j] > m:  # noqa: PLR1730  (as the CPU kernel: no max())
                    m = logits[i, j]
            s = 0.0
            for j in range(c):
                s += math.exp(logits[i, j] - m)
            inv = 1.0 / s
            for j in range(c):
                p = math.exp(logits[i, j] - m) * inv
                tj = off + (1.0 - smoothing) if j == lab else off
                out[i, j] = (p - tj) * scale


# Deliberate parallel of the CPU count_correct_kernel (per row), in softmax_ce_fwd's
# one-block two-sum layout.
@cuda_kernel
@jit
def count_correct_kernel(logits, labels, correct, total, ignore):
    hit_sh = cuda.shared.array(RED_BLOCK, float64)
    cnt_sh = cuda.shared.array(RED_BLOCK, float64)
    t = cuda.threadIdx.x
    n, c = logits.shape
    hits = 0.0
    count = 0.0
    for i in range(t, n, cuda.blockDim.x):
        if labels[i] != ignore:
            best = 0
            for j in range(1, c):
                if logits[i, j] > logits[i, best]:
                    best = j
            count += 1.0
            if best == labels[i]:
                hits += 1.0
    hit_sh[t] = hits
    cnt_sh[t] = count
    tree_reduce(hit_sh, t, cuda.blockDim.x, 0, 1, False)
    tree_reduce(cnt_sh, t, cuda.blockDim.x, 0, 1, False)
    if t == 0:
        correct[0] = hit_sh[0]
        total[0] = cnt_sh[0]


@cuda_kernel
@jit
def pair_loss_flat(p, t, out, bce):
    """mean((p - t)^2), or with ``bce`` the mean of the stable binary cross-entropy of
    logits p against targets t (one block)."""
    acc = cuda.shared.array(RED_BLOCK, float64)
    k = cuda.threadIdx.x
    s = 0.0
    for i in range(k, p.size, cuda.blockDim.x):
        v = p[i]
        if bce:
            s += (v if v > 0.0 else 0.0) - v * t[i] + math.log1p(math.exp(-abs(v)))  # noqa: FURB136
        else:
            d = v - t[i]
            s += d * d
    acc[k] = s
    tree_reduce(acc, k, cuda.blockDim.x, 0, 1, False)
    if k == 0:
        out[0] = acc[0] / p.size


def _logit_rows(ctx, v) -> tuple[str, str]:
    """Logits [..., C] as a device view [M, C] (M the product of the leading dims: one
    row per position, as graphdl/ops/losses.py's `_logit_rows`) and M's expression."""
    shape = ctx.shape(v)
    rows = " * ".join(shape[:-1])
    if len(shape) == 2:
        return ctx.var(v), rows
    return ctx.reshaped(v, (rows, shape[-1])), rows


def _label_rows(ctx, v) -> str:
    """Labels [...] as a 1-D device view, one per row of `_logit_rows`."""
    return ctx.var(v) if len(ctx.shape(v)) == 1 else ctx.flat(v)


@cuda_emitter("softmax_cross_entropy")
def _emit_ce(ctx, attrs, ins, outs):
    kernel = ctx.kernel("softmax_ce_fwd")
    return ctx.launch(f"R.config_block({kernel})",
                      [_logit_rows(ctx, ins[0])[0], _label_rows(ctx, ins[1]), ctx.var(outs[0]),
                       repr(float(attrs["label_smoothing"])), str(int(attrs["ignore_index"]))])


@cuda_emitter("softmax_cross_entropy_grad")
def _emit_ce_grad(ctx, attrs, ins, outs):
    count = ctx.scratch("float64", "1")
    labels = _label_rows(ctx, ins[2])
    lines = ctx.launch(f"R.config_block({ctx.kernel('count_valid')})",
                       [labels, str(int(attrs["ignore_index"])), count])
    logits, n = _logit_rows(ctx, ins[1])
    lines += ctx.launch(f"R.config_rows({ctx.kernel('softmax_ce_bwd')}, {n})",
                        [ctx.var(ins[0]), logits, labels, count, _logit_rows(ctx, outs[0])[0],
                         repr(float(attrs["label_smoothing"])), str(int(attrs["ignore_index"]))])
    return lines


@cuda_emitter("count_correct")
def _emit_correct(ctx, attrs, ins, outs):
    kernel = ctx.kernel("count_correct_kernel")
    return ctx.launch(f"R.config_block({kernel})",
                      [_logit_rows(ctx, ins[0])[0], _label_rows(ctx, ins[1]), ctx.var(outs[0]),
                       ctx.var(outs[1]), str(int(attrs["ignore_index"]))])


def _emit_pair(bce: bool):
    def emit(ctx, attrs, ins, outs):
        kernel = ctx.kernel("pair_loss_flat")
        return ctx.launch(f"R.config_block({kernel})",
                          [ctx.flat(ins[0]), ctx.flat(ins[1]), ctx.var(outs[0]), str(bce)])

    return emit


cuda_emitter("mse")(_emit_pair(False))
cuda_emitter("bce_with_logits")(_emit_pair(True))
