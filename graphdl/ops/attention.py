"""Scaled dot-product attention as one fused op, its backward op, the attention weights for
drawing, and the mask op of the unfused composition that is their reference and oracle.

Layout: q [N, H, Tq, D], k [N, H, Tk, D], v [N, H, Tk, Dv] (heads on axis 1; N, Tq and
Tk may be symbols), or with ``layout="nthd"`` q [N, Tq, H, D], k [N, Tk, H, D], v [N,
Tk, H, Dv] and out, dq, dk, dv likewise: the layout a projection [N, T, H * D] has once
reshaped, so a multihead_attention needs no transposes to split and merge its heads (the
benchmark transformer trained at 57 -> 60 steps/s without them, `graphdl bench`). lse is
[N, H, Tq] in both layouts. A key is *visible* to query i when the optional ``key_mask``
[N, Tk] is nonzero there (1.0 = a real key, 0.0 = padding) and, with ``causal``, when j
<= i + (Tk - Tq): the causal mask is aligned bottom-right, so the last query sees every
key and a decoder step with a key/value cache (Tq = 1 < Tk) sees its whole prefix.

Ops (the optional inputs are trailing slots of a variadic op; attributes say which are
there, and `infer` checks the count):

- ``attention(q, k, v[, key_mask][, seed]) -> (out, lse)``, attrs ``causal``, ``scale``
  (None: 1/sqrt(D)), ``rate`` (dropout of the attention weights, as
  torch.nn.MultiheadAttention's ``dropout``; ``seed``, an int64 scalar, is an input iff
  rate > 0), ``salt``, ``has_mask``. out [N, H, Tq, Dv]; lse [N, H, Tq] is the row
  log-sum-exp of the scaled, masked scores, which the backward pass reads to recompute the
  weights. A query that sees no key (all padding, or before the first key under a causal
  mask with Tq > Tk) gets out = 0, lse = -inf and zero gradients.
- ``attention_grad(gout, q, k, v[, key_mask][, seed], out, lse[, glse]) -> (dq, dk, dv)``:
  the same attrs plus ``has_glse`` (the gradient of lse, when something reads lse).
- ``attention_weights(q, k[, key_mask]) -> p`` [N, H, Tq, Tk]: the softmax weights (no
  dropout), for drawing attention; a row that sees no key is all zeros.
- ``attention_mask(scores[, key_mask]) -> scores`` with the invisible entries set to -inf
  (``fill="-inf"``) or 0 (``fill="zero"``: its own gradient, gy where kept).

The composition ``matmul(q, k, transpose_b) -> mul_scalar(scale) -> attention_mask ->
softmax(axis=-1) [-> dropout(seed, rate, salt)] -> matmul(., v)`` (`build_composition`)
computes what ``attention`` does, and ``attention``'s reference computes exactly that in
float64. One difference: the softmax of a row that is all -inf is NaN (0/0), so in the
composition a query that sees no key gets NaN where the fused op gives zeros; the reference
gives zeros there, as the kernels do.

Dropout: the weight of (n, h, i, j) is kept when ``uniform24(mix64(seed_key(seed, salt),
c)) >= rate`` for c its flat index in [N, H, Tq, Tk] (graphdl/ops/random.py), exactly the
mask the ``dropout`` op draws for the weights tensor, so the composition with a dropout op
draws the same mask; the backward pass recomputes it, nothing is stored.

CPU kernels. A head of at most SMALL_T queries and keys (a transformer's usual training
shapes) is one work item of each pass, computed whole on the transposed scores S^T [Tk,
Tq], the queries along the vector lanes (`_fwd_heads_lanes`, `_bwd_heads_lanes`): the
products are register-blocked `VectorTile`s, and the softmax and its gradient run row by row
of keys, each step elementwise across LANES queries, with no reduction inside a vector. Longer
sequences follow the FlashAttention recipe: the forward pass never holds the Tq x Tk score
matrix. Work items are (n, h, query block of BLOCK_Q rows); an item walks the keys in blocks
of BLOCK_K with an online softmax per query row (a running max and sum; the accumulator is
rescaled when the max grows), then divides by the sum. A key block of BLAS_KEYS keys or
more gets its scores and its weighted values from BLAS (np.dot on the block), a smaller
one from loops (at T of about 10, BLAS's cost per call exceeds the work). The backward
pass recomputes the weights of each (query block, key block) tile from q, k and lse: with
D_i = sum(gout_i * out_i), dS = P * (dP - D_i) (minus the lse gradient), dq = scale dS k,
dk = scale dS^T q, dv = P_dropped^T gout, five BLAS products per tile. With at least
PAR_BLOCKS heads in the batch an item is one (n, h) and does everything; with fewer, one
pass over (n, h, key block) computes dk and dv and another over (n, h, query block)
computes dq, so even one long sequence uses every thread and nothing is summed across
threads. Threads: the items are split into at most PAR_BLOCKS runs run with `prange`, each
by a helper (as graphdl/ops/conv.py, "Threads"); every output element is written by one
item with a fixed order of operations, so results do not depend on the thread count.
Arithmetic is in the input dtype (float32 for float32, like the BLAS of the composition);
float32 exponentials are `exp_nonpositive_f32` (graphdl/ops/elementwise.py: plain
arithmetic that vectorises; libm's expf is one call per element), float64 ones libm's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.ops.elementwise import exp_shifted, is_f32
from graphdl.ops.random import hash_counters, mix64, python_seed_key, seed_key, uniform24
from graphdl.ops.registry import (
    PAR_BLOCKS,
    Attr,
    OpDef,
    Pattern,
    ShapeError,
    cpu_helper,
    cpu_kernel,
    prange,
    register,
    vector_tile,
)

FLOATS = ("float32", "float64")
BLOCK_Q = 64  # query rows of a forward work item
BLOCK_K = 64  # keys of one online-softmax step (and of a backward key block)
# from this many keys in a block the forward pass takes the block's products from BLAS
# (one np.dot for the scores, one for the weighted values); below, its loops are faster
BLAS_KEYS = 16
# below this many multiply-adds (visible pairs x (D + Dv)) a kernel runs on the calling
# thread: handing work to the pool costs more than the work (a decoding step, a batch-1
# forward pass). Waking the pool's sleeping threads (they spin only briefly, see
# `graphdl.backends.cpu.library.short_thread_spin`) took ~80 us on these 2-core machines: at
# 1 << 15 each of the batch-1 transformer's 6 attention calls (4 heads of 32 x 32, 131K)
# took ~100 us, the whole forward pass 0.85 ms; at 1 << 18 they run serially, 0.33 ms
# (tools/profile_step.py specs/bench_transformer.yaml --mode predict --batch 1).
SERIAL_WORK = 1 << 18
# a head with at most this many queries and keys is one work item of the forward and the
# backward pass, computed whole on its transposed scores (`_fwd_heads_lanes`,
# `_bwd_heads_lanes`)
SMALL_T = 64


# ----------------------------------------------------------------------- signature


@dataclass
class Parts:
    """An attention op's inputs by role (types or values); absent optional ones are None."""

    q: object
    k: object
    v: object | None
    mask: object | None
    seed: object | None
    out: object | None = None
    lse: object | None = None
    glse: object | None = None
    gout: object | None = None


def has_seed(attrs: dict) -> bool:
    """Whether the op takes a seed input: it does exactly when it drops weights."""
    return attrs.get("rate", 0.0) > 0.0


def _expected(attrs: dict, fixed: int, trailing: int = 0) -> int:
    return fixed + int(attrs["has_mask"]) + int(has_seed(attrs)) + trailing


def split_inputs(op: str, attrs: dict, ins: list) -> Parts:
    """The inputs of ``op`` (types or values) by role, checking their count against the
    attributes (``has_mask``, ``rate`` > 0, ``has_glse``)."""
    ins = list(ins)
    if op == "attention_grad":
        want = _expected(attrs, 6, int(attrs["has_glse"]))
        what = ("gout, q, k, v[, key_mask][, seed], out, lse[, glse] (has_mask="
                f"{attrs['has_mask']}, rate={attrs['rate']}, has_glse={attrs['has_glse']})")
    elif op == "attention":
        want = _expected(attrs, 3)
        what = f"q, k, v[, key_mask][, seed] (has_mask={attrs['has_mask']}, rate={attrs['rate']})"
    else:  # attention_weights
        want = 2 + int(attrs["has_mask"])
        what = f"q, k[, key_mask] (has_mask={attrs['has_mask']})"
    if len(ins) != want:
        raise ShapeError(f"{op} takes {want} inputs here, {what}, got {len(ins)}")
    gout = ins.pop(0) if op == "attention_grad" else None
    q, k = ins[0], ins[1]
    v = ins[2] if op != "attention_weights" else None
    pos = 2 if op == "attention_weights" else 3
    mask = seed = None
    if attrs["has_mask"]:
        mask = ins[pos]
        pos += 1
    if op != "attention_weights" and has_seed(attrs):
        seed = ins[pos]
        pos += 1
    parts = Parts(q, k, v, mask, seed, gout=gout)
    if op == "attention_grad":
        parts.out, parts.lse = ins[pos], ins[pos + 1]
        if attrs["has_glse"]:
            parts.glse = ins[pos + 2]
    return parts


def resolved_scale(attrs: dict, d) -> float:
    """The score scale: the ``scale`` attribute, or 1/sqrt(D)."""
    if attrs["scale"] is not None:
        return float(attrs["scale"])
    return 1.0 / math.sqrt(d)


def _check_qkv(op: str, attrs: dict, p: Parts) -> None:
    q, k, v = p.q, p.k, p.v
    named = [("q", q), ("k", k)] + ([("v", v)] if v is not None else [])
    for name, t in named:
        if t.rank != 4:
            raise ShapeError(f"{op} expects {name} of rank 4 ([N, heads, T, dim], or [N, T, "
                             f"heads, dim] with layout nthd), got {t}",
                             help="split the heads first: [N, T, heads * dim] -> [N, heads, T, dim]")
        if t.dtype not in FLOATS or t.dtype != q.dtype:
            raise ShapeError(f"{op} expects q, k and v of one float dtype, got {name} {t.dtype} "
                             f"and q {q.dtype}")
    if k.shape[:2] != q.shape[:2] or (v is not None and v.shape[:2] != q.shape[:2]):
        raise ShapeError(f"{op}: q, k and v must share [N, heads], got q {q}, k {k}"
                         + (f", v {v}" if v is not None else ""))
    if k.shape[3] != q.shape[3]:
        raise ShapeError(f"{op}: q and k must have the same dim, got q {q} and k {k}")
    if v is not None and v.shape[2] != k.shape[2]:
        raise ShapeError(f"{op}: k and v must have the same number of keys, got k {k} and v {v}")
    if attrs["scale"] is None and isinstance(q.shape[3], str):
        raise ShapeError(f"{op}: scale=None (1/sqrt(dim)) needs a static dim, got q {q}",
                         help="give the scale explicitly")
    if p.mask is not None:
        want = (q.shape[0], k.shape[2])
        if p.mask.shape != want or p.mask.dtype != q.dtype:
            raise ShapeError(f"{op}: key_mask must be {q.dtype} [N, Tk] = "
                             f"[{want[0]}, {want[1]}] (1 = key, 0 = padding), got {p.mask}")
    if p.seed is not None and (p.seed.dtype != "int64" or p.seed.rank != 0):
        raise ShapeError(f"{op}: the dropout seed must be an int64 scalar, got {p.seed}")
    if "rate" in attrs and not 0.0 <= attrs["rate"] < 1.0:
        raise ShapeError(f"{op}: dropout rate must be in [0, 1), got {attrs['rate']}")


def nthd(attrs: dict) -> bool:
    """Whether the op's q, k, v (and out, dq, dk, dv) are [N, T, H, D] (heads on axis 2)."""
    return attrs.get("layout", "nhtd") == "nthd"


def _swap_heads(t):
    """[N, A, B, D] <-> [N, B, A, D]: a type, or an array (as a view)."""
    if isinstance(t, TensorType):
        s = t.shape
        return TensorType((s[0], s[2], s[1], s[3]), t.dtype)
    return np.swapaxes(t, 1, 2)


def heads_first(attrs: dict, p: Parts) -> Parts:
    """``p`` with q, k, v, gout and out in the [N, H, T, D] layout (views or types): the
    layout the checks, the references and the costs are written in."""
    if not nthd(attrs):
        return p
    swap = {f: _swap_heads(getattr(p, f)) for f in ("q", "k", "v", "gout", "out")
            if getattr(p, f) is not None}
    return Parts(**{**p.__dict__, **swap})


def _in_layout(attrs: dict, t):
    """A [N, H, T, D] type or array in the op's layout, or one in the op's layout as [N, H,
    T, D] (swapping axes 1 and 2 is its own inverse)."""
    return _swap_heads(t) if nthd(attrs) else t


def _out_types(q: TensorType, v: TensorType) -> list[TensorType]:
    n, h, tq = q.shape[:3]
    return [TensorType((n, h, tq, v.shape[3]), q.dtype), TensorType((n, h, tq), q.dtype)]


def _infer_attention(attrs, types):
    p = heads_first(attrs, split_inputs("attention", attrs, types))
    _check_qkv("attention", attrs, p)
    out_t, lse_t = _out_types(p.q, p.v)
    return [_in_layout(attrs, out_t), lse_t]


def _infer_attention_grad(attrs, types):
    p = heads_first(attrs, split_inputs("attention_grad", attrs, types))
    _check_qkv("attention_grad", attrs, p)
    out_t, lse_t = _out_types(p.q, p.v)
    for name, t, want in (("gout", p.gout, out_t), ("out", p.out, out_t), ("lse", p.lse, lse_t),
                          ("glse", p.glse, lse_t)):
        if t is not None and t != want:
            raise ShapeError(f"attention_grad: {name} must be {_in_layout(attrs, want)}, got "
                             f"{_in_layout(attrs, t) if name in ('gout', 'out') else t}")
    return [_in_layout(attrs, x) for x in (p.q, p.k, p.v)]


def _infer_weights(attrs, types):
    p = split_inputs("attention_weights", attrs, types)
    _check_qkv("attention_weights", attrs, p)
    n, h, tq = p.q.shape[:3]
    return [TensorType((n, h, tq, p.k.shape[2]), p.q.dtype)]


def _infer_mask(attrs, types):
    want = 1 + int(attrs["has_mask"])
    if len(types) != want:
        raise ShapeError(f"attention_mask takes {want} inputs here, scores[, key_mask] "
                         f"(has_mask={attrs['has_mask']}), got {len(types)}")
    s = types[0]
    if s.rank != 4 or s.dtype not in FLOATS:
        raise ShapeError(f"attention_mask expects float scores [N, heads, Tq, Tk], got {s}")
    if attrs["has_mask"]:
        m = types[1]
        if m.shape != (s.shape[0], s.shape[3]) or m.dtype != s.dtype:
            raise ShapeError(f"attention_mask: key_mask must be {s.dtype} [N, Tk] = "
                             f"[{s.shape[0]}, {s.shape[3]}], got {m}")
    return [s]


# ----------------------------------------------------------------------- references


def visible(tq: int, tk: int, causal: bool, key_mask: np.ndarray | None) -> np.ndarray:
    """Which keys each query sees: bool, broadcastable to [N, H, Tq, Tk]."""
    seen = np.ones((1, 1, tq, tk), bool)
    if causal:
        i = np.arange(tq)[:, None]
        j = np.arange(tk)[None, :]
        seen = seen & (j <= i + (tk - tq))[None, None]
    if key_mask is not None:
        seen = seen & (key_mask != 0)[:, None, None, :]
    return seen


def _masked_scores(attrs, q, k, key_mask) -> np.ndarray:
    """scale * q k^T in float64 with the invisible entries -inf (matmul, mul_scalar,
    attention_mask)."""
    s = np.matmul(q.astype(np.float64), np.swapaxes(k.astype(np.float64), -1, -2))
    s = s * resolved_scale(attrs, q.shape[-1])
    return np.where(visible(q.shape[2], k.shape[2], attrs["causal"], key_mask), s, -np.inf)


def _softmax_rows(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(softmax over the last axis, log-sum-exp) of masked scores; a row that is all -inf
    gives zeros and -inf (where softmax itself gives 0/0)."""
    m = s.max(axis=-1, keepdims=True)
    empty = m == -np.inf
    e = np.exp(s - np.where(empty, 0.0, m))  # the max subtracted: exp never overflows
    total = e.sum(axis=-1, keepdims=True)
    p = e / np.where(empty, 1.0, total)
    lse = np.where(empty, -np.inf, m + np.log(np.where(empty, 1.0, total)))
    return p, lse[..., 0]


def dropout_keep(shape: tuple[int, ...], seed: int, salt: int, rate: float) -> np.ndarray:
    """The attention-dropout keep mask of weights [N, H, Tq, Tk]: the `dropout` op's mask
    of that tensor (element c kept when ``uniform24(mix64(key, c)) >= rate``)."""
    n = int(np.prod(shape))
    return (uniform24(hash_counters(python_seed_key(seed, salt), n)) >= rate).reshape(shape)


def _keep_scale(attrs, shape, seed) -> np.ndarray | float:
    """keep / (1 - rate) for every weight (1 without dropout)."""
    if not has_seed(attrs):
        return 1.0
    return dropout_keep(shape, int(seed), attrs["salt"], attrs["rate"]) / (1.0 - attrs["rate"])


def _ref_attention(attrs, *ins):
    p = heads_first(attrs, split_inputs("attention", attrs, ins))
    s = _masked_scores(attrs, p.q, p.k, p.mask)
    w, lse = _softmax_rows(s)
    w = w * _keep_scale(attrs, s.shape, p.seed)
    out = np.matmul(w, p.v.astype(np.float64))
    return np.ascontiguousarray(_in_layout(attrs, out.astype(p.q.dtype))), lse.astype(p.q.dtype)


def _ref_attention_grad(attrs, *ins):
    p = heads_first(attrs, split_inputs("attention_grad", attrs, ins))
    dt = p.q.dtype
    q, k, v = (x.astype(np.float64) for x in (p.q, p.k, p.v))
    gout, out, lse = (x.astype(np.float64) for x in (p.gout, p.out, p.lse))
    scale = resolved_scale(attrs, q.shape[-1])
    s = _masked_scores(attrs, q, k, p.mask)
    finite = np.isfinite(lse)
    seen = finite[..., None] & (s > -np.inf)
    shift = np.where(finite, lse, 0.0)[..., None]
    w = np.where(seen, np.exp(np.where(seen, s, 0.0) - shift), 0.0)
    keep = _keep_scale(attrs, s.shape, p.seed)
    dv = np.matmul(np.swapaxes(w * keep, -1, -2), gout)
    dw = np.matmul(gout, np.swapaxes(v, -1, -2)) * keep
    delta = (gout * out).sum(axis=-1)
    if p.glse is not None:
        delta = delta - p.glse.astype(np.float64)
    ds = w * (dw - delta[..., None]) * scale
    dq = np.matmul(ds, k)
    dk = np.matmul(np.swapaxes(ds, -1, -2), q)
    return tuple(np.ascontiguousarray(_in_layout(attrs, x.astype(dt))) for x in (dq, dk, dv))


def _ref_weights(attrs, *ins):
    p = split_inputs("attention_weights", attrs, ins)
    w, _ = _softmax_rows(_masked_scores(attrs, p.q, p.k, p.mask))
    return w.astype(p.q.dtype)


def _ref_mask(attrs, scores, *mask):
    seen = visible(scores.shape[2], scores.shape[3], attrs["causal"], mask[0] if mask else None)
    fill = -np.inf if attrs["fill"] == "-inf" else 0.0
    return np.where(seen, scores, fill).astype(scores.dtype)


# ----------------------------------------------------------------------- gradients


def _g_attention(g, attrs, ins, outs, gouts):
    p = split_inputs("attention", attrs, ins)
    gout, glse = gouts
    if gout is None:  # only lse is read: the output's gradient is zero
        t = g.type_of(outs[0])
        gout = g.op("broadcast_to", g.const(0.0, t.dtype), shape=t.shape)
    args = [gout, p.q, p.k, p.v]
    args += [x for x in (p.mask, p.seed) if x is not None]
    args += [outs[0], outs[1]] + ([glse] if glse is not None else [])
    nid = g.apply("attention_grad", args, {**attrs, "has_glse": glse is not None})
    return [Value(nid, 0), Value(nid, 1), Value(nid, 2)] + [None] * (len(ins) - 3)


def _g_mask(g, attrs, ins, outs, gouts):
    # the gradient passes where the score was kept and is 0 where it was masked: the same
    # op filling zeros (its own gradient)
    grad = g.op("attention_mask", gouts[0], *ins[1:], causal=attrs["causal"],
                has_mask=attrs["has_mask"], fill="zero")
    return [grad] + [None] * (len(ins) - 1)


# ----------------------------------------------------------------------- CPU kernels


@cpu_helper
def _visible_end(i, k1, tq, tk, causal):
    """The end (exclusive) of the keys below ``k1`` that query ``i`` sees under the causal
    mask (bottom-right aligned: key j is seen when j <= i + tk - tq)."""
    if causal:
        return min(k1, i + tk - tq + 1)
    return k1


@cpu_helper
def _dots(a, b, i, k0, k1, out, scale):
    """out[j - k0] = scale * (a[i] . b[j]) for j in k0..k1 (a [T, D], b [S, D]): four keys at
    a time, so each load of a[i] serves four products."""
    d = a.shape[1]
    zero = a.dtype.type(0)
    j = k0
    while j + 4 <= k1:
        x0 = zero
        x1 = zero
        x2 = zero
        x3 = zero
        for c in range(d):
            ac = a[i, c]
            x0 += ac * b[j, c]
            x1 += ac * b[j + 1, c]
            x2 += ac * b[j + 2, c]
            x3 += ac * b[j + 3, c]
        out[j - k0] = x0 * scale
        out[j - k0 + 1] = x1 * scale
        out[j - k0 + 2] = x2 * scale
        out[j - k0 + 3] = x3 * scale
        j += 4
    while j < k1:
        x = zero
        for c in range(d):
            x += a[i, c] * b[j, c]
        out[j - k0] = x * scale
        j += 1


@cpu_helper
def _mask_row(s, mask, n, k0, k1, has_mask):
    """Set the scores of padding keys to -inf; returns the row's max (-inf: no key seen)."""
    top = s.dtype.type(-np.inf)
    for j in range(k0, k1):
        if has_mask and mask[n, j] == 0:
            s[j - k0] = -np.inf
        else:
            top = max(top, s[j - k0])
    return top


@cpu_helper
def _drop_row(w, key, counter, k0, k1, rate, keep_scale):
    """Dropout of the weights w[j - k0] of keys k0..k1: scaled by 1 / (1 - rate) or zeroed,
    by the hash of their flat index ``counter + j``."""
    for j in range(k0, k1):
        if uniform24(mix64(key, counter + j)) >= rate:
            w[j - k0] *= keep_scale
        else:
            w[j - k0] = 0


@cpu_helper
def _add_rows(dst, src):
    """dst += src for two [R, C] arrays."""
    for r in range(src.shape[0]):
        for c in range(src.shape[1]):
            dst[r, c] += src[r, c]


@cpu_helper
def _fwd_items(q, k, v, mask, seed, out, lse, lo, hi, causal, scale, has_mask, rate, salt):
    """Forward work items lo..hi: item = (n, h, query block), an online softmax over the key
    blocks for each query row, then out = acc / sum and lse = max + log(sum). A key block
    of BLAS_KEYS keys or more gets its scores and its weighted values from BLAS (np.dot on
    the block); a smaller one from the loops (`_dots`), which are faster there."""
    heads, tq = q.shape[1], q.shape[2]
    tk, dv = k.shape[2], v.shape[3]
    nqb = (tq + BLOCK_Q - 1) // BLOCK_Q
    zero = q.dtype.type(0)
    ninf = q.dtype.type(-np.inf)
    sbuf = np.empty(BLOCK_Q * BLOCK_K, q.dtype)  # the scores, then weights, of one block
    tbuf = np.empty(BLOCK_Q * dv, q.dtype)  # weights @ values of one block
    acc = np.empty((BLOCK_Q, dv), q.dtype)
    run_max = np.empty(BLOCK_Q, q.dtype)
    run_sum = np.empty(BLOCK_Q, q.dtype)
    dropout = rate > 0.0
    key = seed_key(seed[0], salt)
    keep_scale = q.dtype.type(1.0 / (1.0 - rate))
    fast = is_f32(q)
    for item in range(lo, hi):
        bh = item // nqb
        i0 = (item - bh * nqb) * BLOCK_Q
        i1 = min(i0 + BLOCK_Q, tq)
        nq = i1 - i0
        n = bh // heads
        h = bh - n * heads
        qb, kb, vb = q[n, h], k[n, h], v[n, h]
        for r in range(nq):
            run_max[r] = ninf
            run_sum[r] = zero
            for c in range(dv):
                acc[r, c] = zero
        kend = _visible_end(i1 - 1, tk, tq, tk, causal)  # the last row sees the most keys
        for k0 in range(0, kend, BLOCK_K):
            k1 = min(k0 + BLOCK_K, kend)
            nk = k1 - k0
            blas = nk >= BLAS_KEYS
            scores = sbuf[:nq * nk].reshape((nq, nk))
            if blas:
                np.dot(qb[i0:i1], kb[k0:k1].T, scores)
            for r in range(nq):
                i = i0 + r
                s = scores[r]
                jend = _visible_end(i, k1, tq, tk, causal)
                top = ninf
                if jend > k0:
                    if blas:
                        for j in range(jend - k0):
                            s[j] *= scale
                    else:
                        _dots(qb, kb, i, k0, jend, s, scale)
                    top = _mask_row(s, mask, n, k0, jend, has_mask)
                if top == ninf:  # this block holds no key the row sees
                    for j in range(nk):
                        s[j] = zero
                    continue
                for j in range(jend - k0, nk):  # past the causal limit
                    s[j] = zero
                if top > run_max[r]:
                    # rescale what the earlier blocks summed (exp(-inf) = 0 for the first)
                    corr = math.exp(run_max[r] - top)
                    run_sum[r] *= corr
                    for c in range(dv):
                        acc[r, c] *= corr
                    run_max[r] = top
                m = run_max[r]
                total = zero
                for j in range(jend - k0):
                    w = exp_shifted(s[j] - m, fast)  # 0 for a padding key
                    s[j] = w
                    total += w
                run_sum[r] += total
                if dropout:
                    _drop_row(s, key, (bh * tq + i) * tk, k0, jend, rate, keep_scale)
                if not blas:
                    # acc += w v, two keys at a time (one pass over the row of acc for two)
                    j = k0
                    while j + 2 <= jend:
                        w0 = s[j - k0]
                        w1 = s[j - k0 + 1]
                        for c in range(dv):
                            acc[r, c] += w0 * vb[j, c] + w1 * vb[j + 1, c]
                        j += 2
                    if j < jend:
                        w0 = s[j - k0]
                        for c in range(dv):
                            acc[r, c] += w0 * vb[j, c]
            if blas:
                weighted = tbuf[:nq * dv].reshape((nq, dv))
                np.dot(scores, vb[k0:k1], weighted)
                _add_rows(acc[:nq], weighted)
        for r in range(nq):
            i = i0 + r
            if run_sum[r] > zero:
                inv = q.dtype.type(1) / run_sum[r]
                for c in range(dv):
                    out[n, h, i, c] = acc[r, c] * inv
                lse[n, h, i] = run_max[r] + math.log(run_sum[r])
            else:  # the row sees no key
                for c in range(dv):
                    out[n, h, i, c] = zero
                lse[n, h, i] = ninf


@cpu_helper
def _pair_work(tq, tk, causal, dims):
    """Multiply-adds of one (n, h): visible (query, key) pairs (at most) x ``dims``."""
    if causal and tq > tk:
        return tk * (tk + 1) // 2 * dims
    return tq * tk * dims


@cpu_helper
def _padded_copy(src, dst, rows):
    """dst[:rows] = src (a [rows, C] head), dst[rows:] left as it is (zeros): flat loops."""
    n = rows * src.shape[1]
    s = src.reshape(n)
    d = dst.reshape(dst.size)
    for x in range(n):
        d[x] = s[x]


@cpu_helper
def _transposed_copy(src, dst, rows):
    """dst[:, :rows] = src^T (src a [rows, C] head); the rest of dst is left as it is
    (zeros). BLAS takes q k^T from q and this copy of k^T at half the cost of reading k
    transposed itself."""
    for j in range(rows):
        for c in range(src.shape[1]):
            dst[c, j] = src[j, c]


@cpu_helper
def _heads_tq_tk(q, k, nthd):
    """(H, Tq, Tk) of q and k in either layout."""
    if nthd:
        return q.shape[2], q.shape[1], k.shape[1]
    return q.shape[1], q.shape[2], k.shape[2]


@cpu_helper
def _get_head(x, n, h, nthd, dst, rows):
    """dst[:rows, :C] = head (n, h) of x ([N, H, T, C], or [N, T, H, C] with ``nthd``, where
    a head's rows are H * C apart); the rest of dst is left as it is (zeros)."""
    if nthd:
        for j in range(rows):
            for c in range(x.shape[3]):
                dst[j, c] = x[n, j, h, c]
    elif dst.shape[1] == x.shape[3]:
        _padded_copy(x[n, h], dst, rows)
    else:  # dst's rows padded
        for j in range(rows):
            for c in range(x.shape[3]):
                dst[j, c] = x[n, h, j, c]


@cpu_helper
def _get_head_t(x, n, h, nthd, dst, rows):
    """dst[:, :rows] = head (n, h) of x transposed (layouts as `_get_head`)."""
    if nthd:
        for j in range(rows):
            for c in range(x.shape[3]):
                dst[c, j] = x[n, j, h, c]
    else:
        _transposed_copy(x[n, h], dst, rows)


@cpu_helper
def _swap_into(src, dst):
    """dst[n, b, a, c] = src[n, a, b, c]."""
    for n in range(src.shape[0]):
        for a in range(src.shape[1]):
            for b in range(src.shape[2]):
                for c in range(src.shape[3]):
                    dst[n, b, a, c] = src[n, a, b, c]


@cpu_helper
def _heads_major(x):
    """A [N, H, T, C] copy of x [N, T, H, C]: the long-sequence kernels work on heads whose
    rows are contiguous (the copy is O(T C) per head against their O(T^2 C))."""
    out = np.empty((x.shape[0], x.shape[2], x.shape[1], x.shape[3]), x.dtype)
    _swap_into(x, out)
    return out


# Heads of at most SMALL_T queries and keys work on the transposed scores S^T [Tk, Tq],
# the queries along the vector lanes: the softmax over a query's keys is then a loop over
# rows of S^T, each step elementwise across LANES queries (a running max, exp, a running
# sum), where a row of S holds the reduction inside one vector (a max and a sum across
# lanes per row, which LLVM left scalar). The products are register-blocked VectorTiles
# reading k and v where they lie (either layout). The transformer benchmark's 128 heads of
# 32 x 31, causal, on one thread: forward 367 -> 245 us.
LANES = 16
tile_16x8 = vector_tile(LANES, 8)
tile_16x1 = vector_tile(LANES, 1)


@cpu_helper
def _lane_product(a, abase, a_rstride, rows, b, boff, nt, out, width):
    """out[r, c] = sum over t < nt of a[abase + r * a_rstride + t] * b[boff[t] + c] for
    r < rows and c < width (a multiple of LANES); ``a``, ``b`` and ``out`` flat, out's rows
    ``width`` apart. Rows go 8 at a time; the last rows of 8 or more are the last 8 again
    (a tile writes its sums, so computing a row twice changes nothing), as a one-row tile
    is one chain of dependent multiply-adds (31 keys: 7 such rows took most of a head's
    products)."""
    for c0 in range(0, width, LANES):
        r = 0
        while r + 8 <= rows:
            tile_16x8(a, abase + r * a_rstride, a_rstride, b, c0, boff, nt, out, r * width + c0,
                      width)
            r += 8
        if r < rows and rows >= 8:
            r = rows - 8
            tile_16x8(a, abase + r * a_rstride, a_rstride, b, c0, boff, nt, out, r * width + c0,
                      width)
            r = rows
        while r < rows:
            tile_16x1(a, abase + r * a_rstride, a_rstride, b, c0, boff, nt, out, r * width + c0,
                      width)
            r += 1


@cpu_helper
def _head_base(x, n, h, nthd):
    """(flat index of row 0 of head (n, h) of x, the distance between its rows)."""
    if nthd:
        return (n * x.shape[1] * x.shape[2] + h) * x.shape[3], x.shape[2] * x.shape[3]
    return (n * x.shape[1] + h) * x.shape[2] * x.shape[3], x.shape[3]


@cpu_helper
def _fwd_heads_lanes(q, k, v, mask, seed, out, lse, lo, hi, causal, scale, has_mask, rate,
                     salt, nthd):
    """Forward items lo..hi of heads that fit SMALL_T (one (n, h) each), on the transposed
    scores: S^T = k q^T, scaled and masked row by row of keys, each query's max over the
    rows, P^T = exp(S^T - max) and the sums, then O^T = v^T P^T, and out = O / sum. The
    queries are padded to ``tqp`` lanes (zeros in q^T, never written out)."""
    heads, tq, tk = _heads_tq_tk(q, k, nthd)
    d, ndv = q.shape[3], v.shape[3]
    tqp = (tq + LANES - 1) // LANES * LANES
    dt = q.dtype
    zero = dt.type(0)
    ninf = dt.type(-np.inf)
    fast = is_f32(q)
    qt = np.zeros((d, tqp), dt)
    vt = np.empty((ndv, tk), dt)
    st = np.empty((tk, tqp), dt)  # the scores, then the weights, transposed
    ot = np.empty((ndv, tqp), dt)
    top = np.empty(tqp, dt)
    shift = np.empty(tqp, dt)
    total = np.empty(tqp, dt)
    boff_q = np.arange(d) * tqp
    boff_p = np.arange(tk) * tqp
    kf = k.ravel()
    qtf, vtf = qt.reshape(qt.size), vt.reshape(vt.size)
    stf, otf = st.reshape(st.size), ot.reshape(ot.size)
    dropout = rate > 0.0
    key = seed_key(seed[0], salt)
    keep_scale = dt.type(1.0 / (1.0 - rate))
    for bh in range(lo, hi):
        n = bh // heads
        h = bh - n * heads
        _get_head_t(q, n, h, nthd, qt, tq)
        _get_head_t(v, n, h, nthd, vt, tk)
        kbase, krs = _head_base(k, n, h, nthd)
        _lane_product(kf, kbase, krs, tk, qtf, boff_q, d, stf, tqp)
        for i in range(tqp):
            top[i] = ninf
        for j in range(tk):
            row = st[j]
            if has_mask and mask[n, j] == 0:
                for i in range(tqp):
                    row[i] = ninf
                continue
            first = j - (tk - tq) if causal else 0  # the first query that sees key j
            for i in range(tqp):
                x = row[i] * scale
                if i < first:
                    x = ninf
                row[i] = x
                top[i] = max(top[i], x)
        for i in range(tqp):
            shift[i] = top[i] if top[i] > ninf else zero  # a query that sees no key: 0s
            total[i] = zero
        for j in range(tk):
            row = st[j]
            for i in range(tqp):
                w = exp_shifted(row[i] - shift[i], fast)
                row[i] = w
                total[i] += w
        if dropout:
            for i in range(tq):
                counter = (bh * tq + i) * tk
                for j in range(_visible_end(i, tk, tq, tk, causal)):
                    if uniform24(mix64(key, counter + j)) >= rate:
                        st[j, i] *= keep_scale
                    else:
                        st[j, i] = zero
        _lane_product(vtf, 0, tk, ndv, stf, boff_p, tk, otf, tqp)
        for i in range(tq):
            t = total[i]
            inv = zero
            if t == zero:
                lse[n, h, i] = ninf
            else:
                lse[n, h, i] = top[i] + math.log(t)
                inv = dt.type(1) / t
            if nthd:
                for c in range(ndv):
                    out[n, i, h, c] = ot[c, i] * inv
            else:
                for c in range(ndv):
                    out[n, h, i, c] = ot[c, i] * inv


# queries per head up to which the forward pass works row by row on the arrays themselves
# (`_fwd_rows`): a decoding step's single query, where the whole-head kernel's 16 lanes
# would be 15 of padding and its scratch allocations cost more than the head (a decode
# step's four attention calls at batch 1: ~30 us)
ROW_QUERIES = 2


@cpu_helper
def _fwd_rows(q, k, v, mask, seed, out, lse, causal, scale, has_mask, rate, salt, nthd):
    """Forward pass, one query row at a time: its scores against the keys it sees (dot
    products of contiguous rows, read where they lie in either layout), their softmax,
    the weighted sum of the values."""
    heads, tq, tk = _heads_tq_tk(q, k, nthd)
    d, ndv = q.shape[3], v.shape[3]
    dt = q.dtype
    zero = dt.type(0)
    ninf = dt.type(-np.inf)
    fast = is_f32(q)
    qf, kf, vf, of = q.ravel(), k.ravel(), v.ravel(), out.ravel()
    s = np.empty(tk, dt)
    acc = np.empty(ndv, dt)
    dropout = rate > 0.0
    key = seed_key(seed[0], salt)
    keep_scale = dt.type(1.0 / (1.0 - rate))
    for bh in range(q.shape[0] * heads):
        n = bh // heads
        h = bh - n * heads
        qb, qrs = _head_base(q, n, h, nthd)
        kb, krs = _head_base(k, n, h, nthd)
        vb, vrs = _head_base(v, n, h, nthd)
        ob, ors = _head_base(out, n, h, nthd)
        for i in range(tq):
            jend = _visible_end(i, tk, tq, tk, causal)
            top = ninf
            for j in range(max(jend, 0)):
                if has_mask and mask[n, j] == 0:  # a padding key (or a cache slot not
                    s[j] = ninf                   # yet written): no product
                    continue
                x = zero
                for c in range(d):
                    x += qf[qb + i * qrs + c] * kf[kb + j * krs + c]
                x *= scale
                s[j] = x
                top = max(top, x)
            for c in range(ndv):
                acc[c] = zero
            if top == ninf:  # the row sees no key
                lse[n, h, i] = ninf
                for c in range(ndv):
                    of[ob + i * ors + c] = zero
                continue
            total = zero
            for j in range(jend):
                w = exp_shifted(s[j] - top, fast)
                s[j] = w
                total += w
            if dropout:
                _drop_row(s, key, (bh * tq + i) * tk, 0, jend, rate, keep_scale)
            for j in range(jend):
                w = s[j]
                if w != zero:
                    for c in range(ndv):
                        acc[c] += w * vf[vb + j * vrs + c]
            lse[n, h, i] = top + math.log(total)
            inv = dt.type(1) / total
            for c in range(ndv):
                of[ob + i * ors + c] = acc[c] * inv


@cpu_kernel(parallel=True)
def attention_fwd(q, k, v, mask, seed, out, lse, causal, scale, has_mask, rate, salt, nthd):
    """out, lse = attention(q, k, v) for q [N, H, Tq, D], k [N, H, Tk, D], v [N, H, Tk, Dv]
    (with ``nthd``: [N, Tq, H, D], ...), mask [N, Tk] (read only with ``has_mask``), seed a
    1-element int64 array (read only when ``rate`` > 0); out like q with Dv, lse [N, H, Tq]."""
    heads, tq, tk = _heads_tq_tk(q, k, nthd)
    nbh = q.shape[0] * heads
    work = nbh * _pair_work(tq, tk, causal, q.shape[3] + v.shape[3])
    if tq <= ROW_QUERIES and work < SERIAL_WORK:
        _fwd_rows(q, k, v, mask, seed, out, lse, causal, scale, has_mask, rate, salt, nthd)
        return
    if tq <= SMALL_T and tk <= SMALL_T:
        if nbh <= 1 or work < SERIAL_WORK:
            _fwd_heads_lanes(q, k, v, mask, seed, out, lse, 0, nbh, causal, scale, has_mask,
                             rate, salt, nthd)
            return
        nblk = min(PAR_BLOCKS, nbh)
        for t in prange(nblk):
            _fwd_heads_lanes(q, k, v, mask, seed, out, lse, nbh * t // nblk,
                             nbh * (t + 1) // nblk, causal, scale, has_mask, rate, salt, nthd)
        return
    if nthd:  # long sequences: on heads-major copies
        qh, kh, vh = _heads_major(q), _heads_major(k), _heads_major(v)
        oh = np.empty((q.shape[0], heads, tq, v.shape[3]), q.dtype)
    else:
        qh, kh, vh, oh = q, k, v, out
    items = nbh * ((tq + BLOCK_Q - 1) // BLOCK_Q)
    if items <= 1 or work < SERIAL_WORK:
        _fwd_items(qh, kh, vh, mask, seed, oh, lse, 0, items, causal, scale, has_mask, rate,
                   salt)
    else:
        nblk = min(PAR_BLOCKS, items)
        for t in prange(nblk):
            _fwd_items(qh, kh, vh, mask, seed, oh, lse, items * t // nblk,
                       items * (t + 1) // nblk, causal, scale, has_mask, rate, salt)
    if nthd:
        _swap_into(oh, out)


@cpu_helper
def _bwd_tile(gout, q, k, v, mask, seed, out, lse, glse, dq, dk, dv, n, h, i0, i1, k0, k1,
              want_dq, want_dkv, sbuf, pbuf, tbuf, causal, scale, has_mask, rate, salt, has_glse):
    """Add the gradient terms of the pairs (query i in i0..i1, key j in k0..k1) of (n, h)
    into dq rows i (``want_dq``) and dk, dv rows j (``want_dkv``): the block's weights P
    recomputed from q, k and lse (the dropout mask from the hash), dP = gout v^T, dS = P *
    (dP - D_i) * scale, then dv += P_dropped^T gout, dk += dS^T q, dq += dS k. The five
    block products are BLAS calls (np.dot) on scratch of BLOCK_Q x BLOCK_K (sbuf, pbuf)
    and BLOCK_K x max(D, Dv) (tbuf)."""
    heads, tq, d = q.shape[1], q.shape[2], q.shape[3]
    tk, ndv = k.shape[2], v.shape[3]
    zero = q.dtype.type(0)
    ninf = q.dtype.type(-np.inf)
    if _visible_end(i1 - 1, k1, tq, tk, causal) <= k0:  # no row of the block sees a key
        return
    dropout = rate > 0.0
    key = seed_key(seed[0], salt)
    keep_scale = q.dtype.type(1.0 / (1.0 - rate))
    fast = is_f32(q)
    nq = i1 - i0
    nk = k1 - k0
    qb, kb, vb, gb, ob = q[n, h, i0:i1], k[n, h, k0:k1], v[n, h, k0:k1], gout[n, h, i0:i1], out[n, h, i0:i1]
    w = sbuf[:nq * nk].reshape((nq, nk))  # scores, then the (dropped) weights
    ds = pbuf[:nq * nk].reshape((nq, nk))  # dP, then dS
    np.dot(qb, kb.T, w)
    np.dot(gb, vb.T, ds)
    bh = n * heads + h
    for r in range(nq):
        i = i0 + r
        li = lse[n, h, i]
        jend = _visible_end(i, k1, tq, tk, causal) - k0
        delta = zero  # D_i = sum(gout_i * out_i) = sum_j P_ij dP_ij
        for c in range(ndv):
            delta += gb[r, c] * ob[r, c]
        if has_glse:
            delta -= glse[n, h, i]
        wr = w[r]
        dr = ds[r]
        if li == ninf or jend <= 0:  # the row sees no key here: no gradient
            for j in range(nk):
                wr[j] = zero
                dr[j] = zero
            continue
        for j in range(jend):
            wr[j] = exp_shifted(wr[j] * scale - li, fast)
        for j in range(jend, nk):  # past the causal limit
            wr[j] = zero
        if has_mask:
            for j in range(jend):
                if mask[n, k0 + j] == 0:
                    wr[j] = zero
        if dropout:
            counter = (bh * tq + i) * tk + k0
            for j in range(nk):
                p = wr[j]
                dp = zero
                wr[j] = zero
                if uniform24(mix64(key, counter + j)) >= rate:
                    dp = dr[j] * keep_scale
                    wr[j] = p * keep_scale
                dr[j] = p * (dp - delta) * scale
        else:
            for j in range(nk):
                dr[j] = wr[j] * (dr[j] - delta) * scale
    if want_dkv:
        tmp = tbuf[:nk * ndv].reshape((nk, ndv))
        np.dot(w.T, gb, tmp)
        _add_rows(dv[n, h, k0:k1], tmp)
        tmp = tbuf[:nk * d].reshape((nk, d))
        np.dot(ds.T, qb, tmp)
        _add_rows(dk[n, h, k0:k1], tmp)
    if want_dq:
        tmp = tbuf[:nq * d].reshape((nq, d))
        np.dot(ds, kb, tmp)
        _add_rows(dq[n, h, i0:i1], tmp)


@cpu_helper
def _bwd_scratch(q, v):
    """Scratch of one thread's backward tiles: sbuf, pbuf (BLOCK_Q x BLOCK_K), tbuf."""
    wide = max(q.shape[3], v.shape[3], 1)
    return (np.empty(BLOCK_Q * BLOCK_K, q.dtype), np.empty(BLOCK_Q * BLOCK_K, q.dtype),
            np.empty(max(BLOCK_Q, BLOCK_K) * wide, q.dtype))


@cpu_helper
def _bwd_heads(gout, q, k, v, mask, seed, out, lse, glse, dq, dk, dv, lo, hi, causal, scale,
               has_mask, rate, salt, has_glse):
    """Backward items lo..hi, one (n, h) each: every gradient of that head, tile by tile
    (heads longer than SMALL_T; shorter ones are `_bwd_heads_lanes`'s)."""
    heads, tq, tk = q.shape[1], q.shape[2], k.shape[2]
    sbuf, pbuf, tbuf = _bwd_scratch(q, v)
    for bh in range(lo, hi):
        n = bh // heads
        h = bh - n * heads
        dq[n, h, :, :] = 0
        dk[n, h, :, :] = 0
        dv[n, h, :, :] = 0
        for i0 in range(0, tq, BLOCK_Q):
            for k0 in range(0, tk, BLOCK_K):
                _bwd_tile(gout, q, k, v, mask, seed, out, lse, glse, dq, dk, dv, n, h, i0,
                          min(i0 + BLOCK_Q, tq), k0, min(k0 + BLOCK_K, tk), True, True,
                          sbuf, pbuf, tbuf, causal, scale, has_mask, rate, salt, has_glse)


@cpu_helper
def _bwd_blocks(gout, q, k, v, mask, seed, out, lse, glse, dq, dk, dv, lo, hi, for_keys,
                causal, scale, has_mask, rate, salt, has_glse):
    """Backward items lo..hi of one pass: (n, h, key block) computing dk and dv
    (``for_keys``), or (n, h, query block) computing dq."""
    heads, tq, tk = q.shape[1], q.shape[2], k.shape[2]
    rows = tk if for_keys else tq
    size = BLOCK_K if for_keys else BLOCK_Q
    nblocks = (rows + size - 1) // size
    sbuf, pbuf, tbuf = _bwd_scratch(q, v)
    for item in range(lo, hi):
        bh = item // nblocks
        r0 = (item - bh * nblocks) * size
        r1 = min(r0 + size, rows)
        n = bh // heads
        h = bh - n * heads
        if for_keys:
            dk[n, h, r0:r1, :] = 0
            dv[n, h, r0:r1, :] = 0
            for i0 in range(0, tq, BLOCK_Q):
                _bwd_tile(gout, q, k, v, mask, seed, out, lse, glse, dq, dk, dv, n, h, i0,
                          min(i0 + BLOCK_Q, tq), r0, r1, False, True, sbuf, pbuf, tbuf,
                          causal, scale, has_mask, rate, salt, has_glse)
        else:
            dq[n, h, r0:r1, :] = 0
            for k0 in range(0, tk, BLOCK_K):
                _bwd_tile(gout, q, k, v, mask, seed, out, lse, glse, dq, dk, dv, n, h, r0, r1,
                          k0, min(k0 + BLOCK_K, tk), True, False, sbuf, pbuf, tbuf,
                          causal, scale, has_mask, rate, salt, has_glse)


@cpu_helper
def _put_rows(src, x, n, h, nthd, rows):
    """Head (n, h) of x = src[:rows, :C] (src's rows may be longer: padded)."""
    for j in range(rows):
        for c in range(x.shape[3]):
            if nthd:
                x[n, j, h, c] = src[j, c]
            else:
                x[n, h, j, c] = src[j, c]


@cpu_helper
def _put_rows_t(src, x, n, h, nthd, rows):
    """Head (n, h) of x = src[:C, :rows]^T."""
    for j in range(rows):
        for c in range(x.shape[3]):
            if nthd:
                x[n, j, h, c] = src[c, j]
            else:
                x[n, h, j, c] = src[c, j]


@cpu_helper
def _bwd_heads_lanes(gout, q, k, v, mask, seed, out, lse, glse, dq, dk, dv, lo, hi, causal,
                     scale, has_mask, rate, salt, has_glse, nthd):
    """Backward items lo..hi of heads that fit SMALL_T (one (n, h) each), on transposed
    scores as `_fwd_heads_lanes`: S^T = k q^T and dP^T = v gout^T, then row by row of keys
    (each step across the query lanes) P^T = exp(scale S^T - lse) and dS^T = P^T (dP^T -
    D) scale (D_i = gout_i . out_i, less the lse gradient); dv = P^T gout, dk = dS^T q
    (into rows padded to LANES) and dq^T = k^T dS^T. Queries are padded to ``tqp`` lanes
    (zeros, never written out); dk and dv are computed into rows padded to LANES, from q
    and gout copied into such rows. (Reading q and gout and writing dk and dv in place
    where D is a multiple of LANES took twice as long, as did binding ``q.reshape(q.size)``
    in this function at all, used or not: 1.0 ms against 0.5 for the transformer
    benchmark's 128 heads on one thread.)"""
    heads, tq, tk = _heads_tq_tk(q, k, nthd)
    d, ndv = q.shape[3], v.shape[3]
    tqp = (tq + LANES - 1) // LANES * LANES
    dpad = (d + LANES - 1) // LANES * LANES
    dvpad = (ndv + LANES - 1) // LANES * LANES
    dt = q.dtype
    zero = dt.type(0)
    ninf = dt.type(-np.inf)
    fast = is_f32(q)
    qt = np.zeros((d, tqp), dt)
    gt = np.zeros((ndv, tqp), dt)
    ott = np.zeros((ndv, tqp), dt)
    kt = np.empty((d, tk), dt)
    qp = np.zeros((tq, dpad), dt)
    gp = np.zeros((tq, dvpad), dt)
    st = np.empty((tk, tqp), dt)  # S^T, then P^T (dropped)
    ds = np.empty((tk, tqp), dt)  # dP^T, then dS^T
    dkb = np.empty((tk, dpad), dt)
    dvb = np.empty((tk, dvpad), dt)
    dqt = np.empty((d, tqp), dt)
    delta = np.empty(tqp, dt)
    lsh = np.empty(tqp, dt)
    boff_q = np.arange(d) * tqp
    boff_g = np.arange(ndv) * tqp
    boff_p = np.arange(tk) * tqp
    boff_qp = np.arange(tq) * dpad
    boff_gp = np.arange(tq) * dvpad
    kf, vf = k.ravel(), v.ravel()
    qtf, gtf, ktf = qt.reshape(qt.size), gt.reshape(gt.size), kt.reshape(kt.size)
    qpf, gpf = qp.reshape(qp.size), gp.reshape(gp.size)
    stf, dsf = st.reshape(st.size), ds.reshape(ds.size)
    dkf, dvf, dqf = dkb.reshape(dkb.size), dvb.reshape(dvb.size), dqt.reshape(dqt.size)
    dropout = rate > 0.0
    key = seed_key(seed[0], salt)
    keep_scale = dt.type(1.0 / (1.0 - rate))
    inf = dt.type(np.inf)
    for bh in range(lo, hi):
        n = bh // heads
        h = bh - n * heads
        _get_head_t(q, n, h, nthd, qt, tq)
        _get_head_t(gout, n, h, nthd, gt, tq)
        _get_head_t(out, n, h, nthd, ott, tq)
        _get_head_t(k, n, h, nthd, kt, tk)
        kbase, krs = _head_base(k, n, h, nthd)
        vbase, vrs = _head_base(v, n, h, nthd)
        _get_head(q, n, h, nthd, qp, tq)
        _get_head(gout, n, h, nthd, gp, tq)
        _lane_product(kf, kbase, krs, tk, qtf, boff_q, d, stf, tqp)
        _lane_product(vf, vbase, vrs, tk, gtf, boff_g, ndv, dsf, tqp)
        for i in range(tqp):
            delta[i] = zero
            lsh[i] = inf  # a query that sees no key, or a padding lane: weights 0
        for c in range(ndv):
            for i in range(tqp):
                delta[i] += gt[c, i] * ott[c, i]
        for i in range(tq):
            li = lse[n, h, i]
            if li > ninf:
                lsh[i] = li
            if has_glse:
                delta[i] -= glse[n, h, i]
        for j in range(tk):
            sr = st[j]
            dr = ds[j]
            if has_mask and mask[n, j] == 0:
                for i in range(tqp):
                    sr[i] = zero
                    dr[i] = zero
                continue
            first = j - (tk - tq) if causal else 0  # the first query that sees key j
            for i in range(tqp):
                p = exp_shifted(sr[i] * scale - lsh[i], fast)
                if i < first:
                    p = zero
                sr[i] = p
            if not dropout:
                for i in range(tqp):
                    dr[i] = sr[i] * (dr[i] - delta[i]) * scale
        if dropout:
            for i in range(tq):
                counter = (bh * tq + i) * tk
                for j in range(tk):
                    p = st[j, i]
                    dp = zero
                    st[j, i] = zero
                    if p != zero and uniform24(mix64(key, counter + j)) >= rate:
                        dp = ds[j, i] * keep_scale
                        st[j, i] = p * keep_scale
                    ds[j, i] = p * (dp - delta[i]) * scale
        _lane_product(stf, 0, tqp, tk, gpf, boff_gp, tq, dvf, dvpad)
        _put_rows(dvb, dv, n, h, nthd, tk)
        _lane_product(dsf, 0, tqp, tk, qpf, boff_qp, tq, dkf, dpad)
        _put_rows(dkb, dk, n, h, nthd, tk)
        _lane_product(ktf, 0, tk, d, dsf, boff_p, tk, dqf, tqp)
        _put_rows_t(dqt, dq, n, h, nthd, tq)


@cpu_kernel(parallel=True)
def attention_bwd(gout, q, k, v, mask, seed, out, lse, glse, dq, dk, dv, causal, scale,
                  has_mask, rate, salt, has_glse, nthd):
    """dq, dk, dv of attention from gout (and glse, read with ``has_glse``), recomputing
    the weights blockwise from q, k and lse (shapes and layouts as `attention_fwd`)."""
    heads, tq, tk = _heads_tq_tk(q, k, nthd)
    nbh = q.shape[0] * heads
    work = nbh * _pair_work(tq, tk, causal, 2 * q.shape[3] + 2 * v.shape[3])
    if tq <= SMALL_T and tk <= SMALL_T:
        if nbh <= 1 or work < SERIAL_WORK:
            _bwd_heads_lanes(gout, q, k, v, mask, seed, out, lse, glse, dq, dk, dv, 0, nbh,
                             causal, scale, has_mask, rate, salt, has_glse, nthd)
            return
        nblk = min(PAR_BLOCKS, nbh)
        for t in prange(nblk):
            _bwd_heads_lanes(gout, q, k, v, mask, seed, out, lse, glse, dq, dk, dv,
                             nbh * t // nblk, nbh * (t + 1) // nblk, causal, scale, has_mask,
                             rate, salt, has_glse, nthd)
        return
    if nthd:  # long sequences: on heads-major copies
        gh, qh, kh, vh, oh = (_heads_major(gout), _heads_major(q), _heads_major(k),
                              _heads_major(v), _heads_major(out))
        dqh = np.empty(qh.shape, q.dtype)
        dkh = np.empty(kh.shape, q.dtype)
        dvh = np.empty(vh.shape, q.dtype)
    else:
        gh, qh, kh, vh, oh, dqh, dkh, dvh = gout, q, k, v, out, dq, dk, dv
    if work < SERIAL_WORK:
        _bwd_heads(gh, qh, kh, vh, mask, seed, oh, lse, glse, dqh, dkh, dvh, 0, nbh, causal,
                   scale, has_mask, rate, salt, has_glse)
    elif nbh >= PAR_BLOCKS:
        for t in prange(PAR_BLOCKS):
            _bwd_heads(gh, qh, kh, vh, mask, seed, oh, lse, glse, dqh, dkh, dvh,
                       nbh * t // PAR_BLOCKS, nbh * (t + 1) // PAR_BLOCKS, causal, scale,
                       has_mask, rate, salt, has_glse)
    else:
        # few heads (long sequences): a pass over key blocks (dk, dv), then one over query
        # blocks (dq), each recomputing the weights it needs
        items = nbh * ((tk + BLOCK_K - 1) // BLOCK_K)
        nblk = min(PAR_BLOCKS, items)
        for t in prange(nblk):
            _bwd_blocks(gh, qh, kh, vh, mask, seed, oh, lse, glse, dqh, dkh, dvh,
                        items * t // nblk, items * (t + 1) // nblk, True, causal, scale,
                        has_mask, rate, salt, has_glse)
        items = nbh * ((tq + BLOCK_Q - 1) // BLOCK_Q)
        nblk = min(PAR_BLOCKS, items)
        for t in prange(nblk):
            _bwd_blocks(gh, qh, kh, vh, mask, seed, oh, lse, glse, dqh, dkh, dvh,
                        items * t // nblk, items * (t + 1) // nblk, False, causal, scale,
                        has_mask, rate, salt, has_glse)
    if nthd:
        _swap_into(dqh, dq)
        _swap_into(dkh, dk)
        _swap_into(dvh, dv)


@cpu_helper
def _weights_rows(q, k, mask, p, lo, hi, causal, scale, has_mask):
    """Softmax weights of heads lo..hi (flat n * H + h): scores, row max, exp, normalise."""
    heads, tq = q.shape[1], q.shape[2]
    tk = k.shape[2]
    zero = q.dtype.type(0)
    ninf = q.dtype.type(-np.inf)
    fast = is_f32(q)
    for bh in range(lo, hi):
        n = bh // heads
        h = bh - n * heads
        qb, kb, pb = q[n, h], k[n, h], p[n, h]
        for i in range(tq):
            row = pb[i]
            jend = _visible_end(i, tk, tq, tk, causal)
            for j in range(max(jend, 0), tk):
                row[j] = zero
            if jend <= 0:
                continue
            _dots(qb, kb, i, 0, jend, row, scale)
            top = _mask_row(row, mask, n, 0, jend, has_mask)
            if top == ninf:  # the row sees no key
                for j in range(jend):
                    row[j] = zero
                continue
            total = zero
            for j in range(jend):
                e = exp_shifted(row[j] - top, fast)
                row[j] = e
                total += e
            inv = q.dtype.type(1) / total
            for j in range(jend):
                row[j] *= inv


@cpu_kernel(parallel=True)
def attention_probs(q, k, mask, p, causal, scale, has_mask):
    """p [N, H, Tq, Tk] = softmax(scale q k^T, masked) (zeros for a row that sees no key)."""
    nbh = q.shape[0] * q.shape[1]
    if nbh <= 1 or nbh * q.shape[2] * k.shape[2] * q.shape[3] < SERIAL_WORK:
        _weights_rows(q, k, mask, p, 0, nbh, causal, scale, has_mask)
        return
    nblk = min(PAR_BLOCKS, nbh)
    for t in prange(nblk):
        _weights_rows(q, k, mask, p, nbh * t // nblk, nbh * (t + 1) // nblk, causal, scale,
                      has_mask)


@cpu_kernel
def attention_mask_fill(x, mask, out, causal, has_mask, fill):
    """out = x where the key is visible, else ``fill``; x, out [N, H, Tq, Tk]."""
    nb, heads, tq, tk = x.shape
    for n in range(nb):
        for h in range(heads):
            for i in range(tq):
                jend = _visible_end(i, tk, tq, tk, causal)
                for j in range(tk):
                    if j < jend and not (has_mask and mask[n, j] == 0):
                        out[n, h, i, j] = x[n, h, i, j]
                    else:
                        out[n, h, i, j] = fill


# ----------------------------------------------------------------------- emitters


def _absent_mask(ctx, dtype: str) -> str:
    """What a kernel gets for an absent key mask: a [1, 1] array it never reads."""
    return f"np.ones((1, 1), np.{dtype})"


def _absent_seed() -> str:
    return "np.zeros(1, np.int64)"


def _common_args(ctx, attrs, q: Value) -> list[str]:
    t = ctx.type(q)
    return [ctx.runtime(bool(attrs["causal"])), ctx.lit(resolved_scale(attrs, t.shape[3]), t.dtype),
            ctx.runtime(bool(attrs["has_mask"]))]


def _mask_arg(ctx, p: Parts, dtype: str) -> str:
    return ctx.var(p.mask) if p.mask is not None else _absent_mask(ctx, dtype)


def _dropout_args(ctx, attrs, p: Parts) -> list[str]:
    seed = ctx.var(p.seed) if p.seed is not None else _absent_seed()
    return [seed, repr(float(attrs["rate"])), ctx.runtime(int(attrs["salt"]))]


def _emit_attention(ctx, attrs, ins, outs):
    p = split_inputs("attention", attrs, ins)
    dt = ctx.type(p.q).dtype
    causal, scale, has_mask = _common_args(ctx, attrs, p.q)
    seed, rate, salt = _dropout_args(ctx, attrs, p)
    return [ctx.call("attention_fwd", p.q, p.k, p.v, _mask_arg(ctx, p, dt), seed, outs[0], outs[1],
                     causal, scale, has_mask, rate, salt, ctx.runtime(nthd(attrs)))]


def _emit_attention_grad(ctx, attrs, ins, outs):
    p = split_inputs("attention_grad", attrs, ins)
    dt = ctx.type(p.q).dtype
    causal, scale, has_mask = _common_args(ctx, attrs, p.q)
    seed, rate, salt = _dropout_args(ctx, attrs, p)
    glse = ctx.var(p.glse) if p.glse is not None else ctx.var(p.lse)  # not read without has_glse
    return [ctx.call("attention_bwd", p.gout, p.q, p.k, p.v, _mask_arg(ctx, p, dt), seed, p.out,
                     p.lse, glse, outs[0], outs[1], outs[2], causal, scale, has_mask, rate, salt,
                     ctx.runtime(bool(attrs["has_glse"])), ctx.runtime(nthd(attrs)))]


def _emit_weights(ctx, attrs, ins, outs):
    p = split_inputs("attention_weights", attrs, ins)
    dt = ctx.type(p.q).dtype
    return [ctx.call("attention_probs", p.q, p.k, _mask_arg(ctx, p, dt), outs[0],
                     *_common_args(ctx, attrs, p.q))]


def mask_fill_literal(attrs, dtype: str) -> str:
    """attention_mask's fill value as a literal of generated code."""
    value = "-np.inf" if attrs["fill"] == "-inf" else "0"
    return f"np.{dtype}({value})"


def _emit_mask(ctx, attrs, ins, outs):
    dt = ctx.type(ins[0]).dtype
    mask = ctx.var(ins[1]) if attrs["has_mask"] else _absent_mask(ctx, dt)
    return [ctx.call("attention_mask_fill", ins[0], mask, outs[0], ctx.runtime(bool(attrs["causal"])),
                     ctx.runtime(bool(attrs["has_mask"])), mask_fill_literal(attrs, dt))]


# ----------------------------------------------------------------------- cost


def visible_pairs(tq: int, tk: int, causal: bool) -> int:
    """(query, key) pairs of one head under the causal mask (all of them without it)."""
    if not causal:
        return tq * tk
    off = tk - tq
    return sum(min(tk, max(0, i + off + 1)) for i in range(tq))


def _cost_attention(attrs, ins, out, bindings) -> int:
    """2 (D + Dv) per visible pair (scores and the weighted sum), plus the softmax's max,
    exp and sum (and the dropout test)."""
    q, k = (_in_layout(attrs, t).bind(bindings) for t in ins[:2])
    dv = out.bind(bindings)[3]
    pairs = q[0] * q[1] * visible_pairs(q[2], k[2], attrs["causal"])
    return pairs * (2 * (q[3] + dv) + 4 + int(has_seed(attrs)))


def _cost_attention_grad(attrs, ins, out, bindings) -> int:
    """Per visible pair: the recomputed score (2D) and weight, gout.v (2Dv), dv (2Dv), dq
    and dk (4D), the softmax's backward; plus D_i (2Dv per row)."""
    q, k, v = (_in_layout(attrs, t).bind(bindings) for t in ins[1:4])
    pairs = q[0] * q[1] * visible_pairs(q[2], k[2], attrs["causal"])
    return pairs * (6 * q[3] + 4 * v[3] + 5) + 2 * q[0] * q[1] * q[2] * v[3]


def _cost_weights(attrs, ins, out, bindings) -> int:
    q, k = ins[0].bind(bindings), ins[1].bind(bindings)
    return q[0] * q[1] * q[2] * k[2] * (2 * q[3] + 4)


def _cost_mask(attrs, ins, out, bindings) -> int:
    return 0  # a select


# ----------------------------------------------------------------------- registration

_ATTRS = {
    "causal": Attr(bool, False),
    "scale": Attr(float, None),
    "rate": Attr(float, 0.0),
    "salt": Attr(int, 0),
    "has_mask": Attr(bool, False),
    "layout": Attr(str, "nhtd", allowed=("nhtd", "nthd")),
}

register(
    OpDef(
        name="attention",
        inputs=("q", "k", "v", "key_mask", "seed"),
        outputs=("out", "lse"),
        variadic=True,  # key_mask (has_mask) and seed (rate > 0) are optional
        infer=_infer_attention,
        reference=_ref_attention,
        pattern=Pattern.OPAQUE,
        attrs=dict(_ATTRS),
        grad=_g_attention,
        differentiable=(0, 1, 2),
        cost=_cost_attention,
        emit_cpu=_emit_attention,
        doc="fused scaled dot-product attention softmax(scale q k^T, masked) v over [N, heads, "
            "T, dim] (causal and key-padding masks, weight dropout); also the row log-sum-exp",
    )
)

register(
    OpDef(
        name="attention_grad",
        inputs=("gout", "q", "k", "v", "key_mask", "seed", "out", "lse", "glse"),
        outputs=("dq", "dk", "dv"),
        variadic=True,
        infer=_infer_attention_grad,
        reference=_ref_attention_grad,
        pattern=Pattern.OPAQUE,
        attrs={**_ATTRS, "has_glse": Attr(bool, False)},
        no_grad_reason="second order not needed for training",
        cost=_cost_attention_grad,
        emit_cpu=_emit_attention_grad,
        doc="backward of attention, recomputing the weights blockwise from q, k and lse",
    )
)

register(
    OpDef(
        name="attention_weights",
        inputs=("q", "k", "key_mask"),
        variadic=True,
        infer=_infer_weights,
        reference=_ref_weights,
        pattern=Pattern.OPAQUE,
        attrs={k: _ATTRS[k] for k in ("causal", "scale", "has_mask")},  # heads on axis 1
        no_grad_reason="the weights are drawn, not trained through (attention differentiates "
                       "its own)",
        cost=_cost_weights,
        emit_cpu=_emit_weights,
        doc="attention's softmax weights [N, heads, Tq, Tk] (no dropout), for drawing them",
    )
)

register(
    OpDef(
        name="attention_mask",
        inputs=("scores", "key_mask"),
        variadic=True,
        infer=_infer_mask,
        reference=_ref_mask,
        pattern=Pattern.OPAQUE,
        attrs={"causal": Attr(bool, False), "has_mask": Attr(bool, False),
               "fill": Attr(str, "-inf", allowed=("-inf", "zero"))},
        grad=_g_mask,
        differentiable=(0,),
        cost=_cost_mask,
        emit_cpu=_emit_mask,
        doc="scores [N, heads, Tq, Tk] with the keys a query does not see (causal, padding) "
            "set to -inf (fill=zero: to 0)",
    )
)


# ----------------------------------------------------------------------- the composition


def build_composition(g: Graph, q: Value, k: Value, v: Value, key_mask: Value | None = None,
                      seed: Value | None = None, *, causal: bool = False,
                      scale: float | None = None, rate: float = 0.0, salt: int = 0) -> Value:
    """The unfused attention ``matmul -> mul_scalar -> attention_mask -> softmax [->
    dropout] -> matmul`` that the fused op is checked against; returns out [N, H, Tq, Dv].
    A query that sees no key gets NaN here (the softmax of an all -inf row), zeros from
    ``attention``."""
    d = g.type_of(q).shape[3]
    scores = g.op("matmul", q, k, transpose_b=True)
    scores = g.op("mul_scalar", scores, c=resolved_scale({"scale": scale}, d))
    masks = [key_mask] if key_mask is not None else []
    scores = g.op("attention_mask", scores, *masks, causal=causal, has_mask=key_mask is not None)
    weights = g.op("softmax", scores, axis=-1)
    if rate > 0.0:
        weights = g.op("dropout", weights, seed, rate=rate, salt=salt)
    return g.op("matmul", weights, v)
