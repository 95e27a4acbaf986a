"""CUDA kernels of the attention ops (graphdl/ops/attention.py): one thread per query row
(per key row for dk and dv), grid-strided, no shared memory and no atomics.

- forward: the row's online softmax over its visible keys in order, accumulating the
  weighted values straight into its own row of ``out`` (rescaled when the running max
  grows), then out / sum and lse = max + log(sum);
- backward: D_i = sum(gout_i * out_i) (minus the lse gradient) per query row into a
  scratch buffer; then one thread per key row recomputes the weights of that key from q,
  k and lse and sums dk and dv over the queries, and (the same kernel, launched again) one
  thread per query row sums dq over the keys. Every output element has one writer, so
  results do not depend on the launch configuration.
- attention_weights: per query row, the scores, their max, exp and normalise;
  attention_mask: one thread per element.

With ``layout="nthd"`` (q, k, v and their outputs and gradients [N, T, H, D]) the same
kernels index rows through `_at`. The visibility test (key mask, bottom-right causal
mask), the order of the online softmax and the dropout hash (graphdl/ops/random.py: the
keep test of weight (n, h, i, j) hashes its flat index in [N, H, Tq, Tk]) are the CPU
kernels': a deliberate parallel of graphdl/ops/attention.py, to change together. The
arithmetic is in the input dtype, as there.
"""

from __future__ import annotations

import math

from graphdl.backends.cuda.device import cuda, device_function, jit
from graphdl.backends.cuda.kernels.nn import _mix64, _spread_seed, _uniform24
from graphdl.backends.cuda.registry import cuda_emitter, cuda_kernel
from graphdl.ops.attention import nthd, resolved_scale, split_inputs


@device_function
def _split_row(row, rows, heads):
    """(n, h, r) of the flat row index n * H * rows + h * rows + r."""
    bh = row // rows
    n = bh // heads
    return n, bh - n * heads, row - bh * rows


@device_function
def _at(h, r, nthd):
    """Axes 1 and 2 of row r of head h: (h, r) in [N, H, T, D], (r, h) in [N, T, H, D]."""
    if nthd:
        return r, h
    return h, r


@device_function
def _htt(q, k, nthd):
    """(H, Tq, Tk) of q and k in either layout."""
    if nthd:
        return q.shape[2], q.shape[1], k.shape[1]
    return q.shape[1], q.shape[2], k.shape[2]


@device_function
def _keys_seen(i, tq, tk, causal):
    """How many keys query i sees under the causal mask (keys 0.. of it; all without)."""
    if causal and i + tk - tq + 1 < tk:
        return i + tk - tq + 1
    return tk



@cuda_kernel
@jit
def attention_fwd(q, k, v, mask, seed, out, lse, causal, scale, has_mask, rate, salt, nthd):
    """out [N, H, Tq, Dv], lse [N, H, Tq] of q [N, H, Tq, D], k [N, H, Tk, D], v [N, H,
    Tk, Dv] (q, k, v and out [N, T, H, D] with ``nthd``); mask [N, Tk] read with
    ``has_mask``, seed [1] read when ``rate`` > 0."""
    nb, d = q.shape[0], q.shape[3]
    heads, tq, tk = _htt(q, k, nthd)
    dv = v.shape[3]
    zero = q.dtype.type(0)
    one = q.dtype.type(1)
    ninf = q.dtype.type(-math.inf)
    sc = q.dtype.type(scale)
    keep_scale = q.dtype.type(1.0 / (1.0 - rate))
    dropout = rate > 0.0
    key = _mix64(_spread_seed(seed[0]), salt)  # random.seed_key, from its parts
    for row in range(cuda.grid(1), nb * heads * tq, cuda.gridsize(1)):
        n, h, i = _split_row(row, tq, heads)
        ia, ib = _at(h, i, nthd)
        jend = _keys_seen(i, tq, tk, causal)
        for c in range(dv):
            out[n, ia, ib, c] = zero
        run_max = ninf
        run_sum = zero
        for j in range(jend):
            if has_mask and mask[n, j] == zero:
                continue
            ja, jb = _at(h, j, nthd)
            s = zero
            for c in range(d):
                s += q[n, ia, ib, c] * k[n, ja, jb, c]
            s *= sc
            if s > run_max:
                corr = math.exp(run_max - s)  # 0 at the first key
                run_sum *= corr
                for c in range(dv):
                    out[n, ia, ib, c] *= corr
                run_max = s
            w = math.exp(s - run_max)
            run_sum += w
            if dropout:
                if _uniform24(_mix64(key, row * tk + j)) >= rate:
                    w *= keep_scale
                else:
                    w = zero
            for c in range(dv):
                out[n, ia, ib, c] += w * v[n, ja, jb, c]
        if run_sum > zero:
            inv = one / run_sum
            for c in range(dv):
                out[n, ia, ib, c] *= inv
            lse[n, h, i] = run_max + math.log(run_sum)
        else:  # the row sees no key: out stays 0
            lse[n, h, i] = ninf


@cuda_kernel
@jit
def attention_delta(gout, out, glse, delta, has_glse, nthd):
    """delta [N, H, Tq] = sum(gout * out) over the last axis (minus glse with ``has_glse``)."""
    nb, dv = out.shape[0], out.shape[3]
    heads, tq, _tk = _htt(out, out, nthd)
    for row in range(cuda.grid(1), nb * heads * tq, cuda.gridsize(1)):
        n, h, i = _split_row(row, tq, heads)
        ia, ib = _at(h, i, nthd)
        acc = out.dtype.type(0)
        for c in range(dv):
            acc += gout[n, ia, ib, c] * out[n, ia, ib, c]
        if has_glse:
            acc -= glse[n, h, i]
        delta[n, h, i] = acc


@cuda_kernel
@jit
def attention_bwd(gout, q, k, v, mask, seed, lse, delta, dq, dk, dv, for_keys, causal, scale,
                  has_mask, rate, salt, nthd):
    """One thread per key row summing dk and dv over the queries that see the key
    (``for_keys``), or one per query row summing dq over the keys it sees (layouts as
    `attention_fwd`)."""
    nb, d = q.shape[0], q.shape[3]
    heads, tq, tk = _htt(q, k, nthd)
    ndv = v.shape[3]
    zero = q.dtype.type(0)
    ninf = q.dtype.type(-math.inf)
    sc = q.dtype.type(scale)
    keep_scale = q.dtype.type(1.0 / (1.0 - rate))
    dropout = rate > 0.0
    key = _mix64(_spread_seed(seed[0]), salt)
    rows = tk if for_keys else tq
    for row in range(cuda.grid(1), nb * heads * rows, cuda.gridsize(1)):
        n, h, r = _split_row(row, rows, heads)
        bh = n * heads + h
        i = r
        j = r
        lo = 0
        hi = tq
        if for_keys:
            ja, jb = _at(h, j, nthd)
            for c in range(d):
                dk[n, ja, jb, c] = zero
            for c in range(ndv):
                dv[n, ja, jb, c] = zero
            if has_mask and mask[n, j] == zero:
                hi = 0
            if causal and j - (tk - tq) > 0:
                lo = j - (tk - tq)  # the first query that sees key j
        else:
            ia, ib = _at(h, i, nthd)
            for c in range(d):
                dq[n, ia, ib, c] = zero
            hi = _keys_seen(i, tq, tk, causal)
        for other in range(lo, hi):
            if for_keys:
                i = other
            else:
                j = other
                if has_mask and mask[n, j] == zero:
                    continue
            li = lse[n, h, i]
            if li == ninf:  # a query that sees no key has no gradient
                continue
            ia, ib = _at(h, i, nthd)
            ja, jb = _at(h, j, nthd)
            s = zero
            for c in range(d):
                s += q[n, ia, ib, c] * k[n, ja, jb, c]
            w = math.exp(s * sc - li)
            dw = zero  # gout_i . v_j: the gradient of the (dropped) weight
            for c in range(ndv):
                dw += gout[n, ia, ib, c] * v[n, ja, jb, c]
            wd = w
            if dropout:
                if _uniform24(_mix64(key, (bh * tq + i) * tk + j)) >= rate:
                    wd = w * keep_scale
                    dw *= keep_scale
                else:
                    wd = zero
                    dw = zero
            ds = w * (dw - delta[n, h, i]) * sc
            if for_keys:
                for c in range(ndv):
                    dv[n, ja, jb, c] += wd * gout[n, ia, ib, c]
                for c in range(d):
                    dk[n, ja, jb, c] += ds * q[n, ia, ib, c]
            else:
                for c in range(d):
                    dq[n, ia, ib, c] += ds * k[n, ja, jb, c]


@cuda_kernel
@jit
def attention_probs(q, k, mask, p, causal, scale, has_mask):
    """p [N, H, Tq, Tk] = softmax(scale q k^T, masked), zeros for a row that sees no key."""
    nb, heads, tq, d = q.shape
    tk = k.shape[2]
    zero = q.dtype.type(0)
    one = q.dtype.type(1)
    ninf = q.dtype.type(-math.inf)
    sc = q.dtype.type(scale)
    for row in range(cuda.grid(1), nb * heads * tq, cuda.gridsize(1)):
        n, h, i = _split_row(row, tq, heads)
        jend = _keys_seen(i, tq, tk, causal)
        top = ninf
        for j in range(tk):
            s = ninf
            if j < jend and not (has_mask and mask[n, j] == zero):
                s = zero
                for c in range(d):
                    s += q[n, h, i, c] * k[n, h, j, c]
                s *= sc
                if s > top:  # noqa: PLR1730  (as softmax_arb: no max())
                    top = s
            p[n, h, i, j] = s
        total = zero
        if top > ninf:
            for j in range(tk):
                e = math.exp(p[n, h, i, j] - top)
                p[n, h, i, j] = e
                total += e
        inv = zero
        if total > zero:
            inv = one / total
        for j in range(tk):
            if top > ninf:
                p[n, h, i, j] *= inv
            else:
                p[n, h, i, j] = zero


@cuda_kernel
@jit
def attention_mask_fill(x, mask, out, causal, has_mask, fill):
    """out = x where the key is visible, else ``fill``; x, out [N, H, Tq, Tk]."""
    heads, tq, tk = x.shape[1], x.shape[2], x.shape[3]
    f = x.dtype.type(fill)
    zero = x.dtype.type(0)
    for e in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        j = e % tk
        i = (e // tk) % tq
        n = e // (tk * tq * heads)
        h = (e // (tk * tq)) - n * heads
        seen = not (causal and j > i + tk - tq)
        if has_mask and mask[n, j] == zero:
            seen = False
        if seen:
            out[n, h, i, j] = x[n, h, i, j]
        else:
            out[n, h, i, j] = f


# ----------------------------------------------------------------------- emitters


def _mask_arg(ctx, p, dtype: str) -> str:
    """The key mask, or a [1, 1] buffer the kernels never read."""
    if p.mask is not None:
        return ctx.var(p.mask)
    return ctx.reshaped(ctx.scratch(dtype, "1"), ("1", "1"))


def _seed_arg(ctx, p) -> str:
    return ctx.var(p.seed) if p.seed is not None else ctx.scratch("int64", "1")


def _common(ctx, attrs, p) -> tuple[str, str, str]:
    d = ctx.type(p.q).shape[3]
    return str(bool(attrs["causal"])), repr(resolved_scale(attrs, d)), str(bool(attrs["has_mask"]))


def _rows(ctx, kernel: str, n: str, args: list[str]) -> list[str]:
    return ctx.launch(f"R.config_rows({ctx.kernel(kernel)}, {n})", args)


@cuda_emitter("attention")
def _emit_attention(ctx, attrs, ins, outs):
    p = split_inputs("attention", attrs, ins)
    dt = ctx.type(p.q).dtype
    causal, scale, has_mask = _common(ctx, attrs, p)
    args = [ctx.var(p.q), ctx.var(p.k), ctx.var(p.v), _mask_arg(ctx, p, dt), _seed_arg(ctx, p),
            ctx.var(outs[0]), ctx.var(outs[1]), causal, scale, has_mask,
            repr(float(attrs["rate"])), str(int(attrs["salt"])), str(nthd(attrs))]
    return _rows(ctx, "attention_fwd", ctx.size(outs[1]), args)


@cuda_emitter("attention_grad")
def _emit_attention_grad(ctx, attrs, ins, outs):
    p = split_inputs("attention_grad", attrs, ins)
    dt = ctx.type(p.q).dtype
    causal, scale, has_mask = _common(ctx, attrs, p)
    mask, seed = _mask_arg(ctx, p, dt), _seed_arg(ctx, p)
    rows_q = ctx.size(p.lse)
    delta = ctx.reshaped(ctx.scratch(dt, rows_q), ctx.shape(p.lse))
    glse = ctx.var(p.glse) if p.glse is not None else ctx.var(p.lse)  # not read without has_glse
    q, k, v, gout, lse = (ctx.var(x) for x in (p.q, p.k, p.v, p.gout, p.lse))
    rest = [causal, scale, has_mask, repr(float(attrs["rate"])), str(int(attrs["salt"])),
            str(nthd(attrs))]
    lines = _rows(ctx, "attention_delta", rows_q,
                  [gout, ctx.var(p.out), glse, delta, str(bool(attrs["has_glse"])),
                   str(nthd(attrs))])
    grads = [ctx.var(outs[0]), ctx.var(outs[1]), ctx.var(outs[2])]
    lines += _rows(ctx, "attention_bwd", " * ".join(ctx.shape(p.k)[:3]),
                   [gout, q, k, v, mask, seed, lse, delta, *grads, "True", *rest])
    lines += _rows(ctx, "attention_bwd", rows_q,
                   [gout, q, k, v, mask, seed, lse, delta, *grads, "False", *rest])
    return lines


@cuda_emitter("attention_weights")
def _emit_weights(ctx, attrs, ins, outs):
    p = split_inputs("attention_weights", attrs, ins)
    dt = ctx.type(p.q).dtype
    causal, scale, has_mask = _common(ctx, attrs, p)
    rows = " * ".join(ctx.shape(outs[0])[:3])
    return _rows(ctx, "attention_probs", rows,
                 [ctx.var(p.q), ctx.var(p.k), _mask_arg(ctx, p, dt), ctx.var(outs[0]), causal,
                  scale, has_mask])


@cuda_emitter("attention_mask")
def _emit_mask(ctx, attrs, ins, outs):
    dt = ctx.type(ins[0]).dtype
    mask = ctx.var(ins[1]) if attrs["has_mask"] else ctx.reshaped(ctx.scratch(dt, "1"), ("1", "1"))
    fill = "-math.inf" if attrs["fill"] == "-inf" else "0.0"
    return ctx.launch1d(ctx.kernel("attention_mask_fill"), ctx.size(outs[0]),
                        [ctx.var(ins[0]), mask, ctx.var(outs[0]), str(bool(attrs["causal"])),
                         str(bool(attrs["has_mask"])), fill])
