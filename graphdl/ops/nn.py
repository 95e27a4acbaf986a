"""Neural-network ops: softmax / log_softmax (and their backward ops), seeded dropout,
embedding (a row gather) and its scatter-add gradient."""

from __future__ import annotations

import math

import numpy as np

from graphdl.ir.types import TensorType
from graphdl.ops.random import hash_counters, mix64, python_seed_key, seed_key, uniform24
from graphdl.ops.reduce import _prod
from graphdl.ops.registry import Attr, OpDef, Pattern, ShapeError, cpu_kernel, register


def _axis(attrs, rank):
    a = attrs["axis"]
    if not -rank <= a < rank:
        raise ShapeError(f"axis {a} out of range for rank {rank}")
    return a % rank


def _infer_same(attrs, types):
    _axis(attrs, types[0].rank)
    if types[0].dtype not in ("float32", "float64"):
        raise ShapeError(f"expects a float tensor, got {types[0].dtype}")
    for t in types[1:]:
        if t.shape != types[0].shape:
            raise ShapeError(f"shapes differ: {types[0]} and {t}")
    return [types[0]]


def _ref_softmax(attrs, x):
    # subtract the max so exp never overflows
    z = x - x.max(axis=attrs["axis"], keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=attrs["axis"], keepdims=True)).astype(x.dtype)


def _ref_log_softmax(attrs, x):
    z = x - x.max(axis=attrs["axis"], keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=attrs["axis"], keepdims=True))).astype(x.dtype)


def _ref_softmax_grad(attrs, g, y):
    return (y * (g - (g * y).sum(axis=attrs["axis"], keepdims=True))).astype(g.dtype)


def _ref_log_softmax_grad(attrs, g, y):
    return (g - np.exp(y) * g.sum(axis=attrs["axis"], keepdims=True)).astype(g.dtype)


@cpu_kernel
def softmax_arb(x, out, log):
    """Softmax over the middle axis of (A, R, B)."""
    na, nr, nb = x.shape
    for a in range(na):
        for b in range(nb):
            m = x[a, 0, b]
            for r in range(1, nr):
                if x[a, r, b] > m:  # noqa: PLR1730  (as the CUDA kernel: no max())
                    m = x[a, r, b]
            s = 0.0
            for r in range(nr):
                s += math.exp(x[a, r, b] - m)
            if log:
                ls = math.log(s)
                for r in range(nr):
                    out[a, r, b] = x[a, r, b] - m - ls
            else:
                inv = 1.0 / s
                for r in range(nr):
                    out[a, r, b] = math.exp(x[a, r, b] - m) * inv


@cpu_kernel
def softmax_grad_arb(g, y, out, log):
    na, nr, nb = g.shape
    for a in range(na):
        for b in range(nb):
            s = 0.0
            if log:
                for r in range(nr):
                    s += g[a, r, b]
                for r in range(nr):
                    out[a, r, b] = g[a, r, b] - math.exp(y[a, r, b]) * s
            else:
                for r in range(nr):
                    s += g[a, r, b] * y[a, r, b]
                for r in range(nr):
                    out[a, r, b] = y[a, r, b] * (g[a, r, b] - s)


def _view3(ctx, v, axis):
    shape = ctx.shape(v)
    return f"{ctx.var(v)}.reshape(({_prod(shape[:axis])}, {shape[axis]}, {_prod(shape[axis + 1:])}))"


def _emit_along_axis(kernel: str, log: bool):
    """Emitter of `softmax_arb` / `softmax_grad_arb`: the inputs, then the output, each
    seen as (A, R, B) around ``axis``."""

    def emit(ctx, attrs, ins, outs):
        axis = _axis(attrs, ctx.type(ins[0]).rank)
        return [ctx.call(kernel, *(_view3(ctx, v, axis) for v in [*ins, outs[0]]), log)]

    return emit


def _g_softmax(grad_op):
    def rule(g, attrs, ins, outs, gouts):
        return [g.op(grad_op, gouts[0], outs[0], axis=attrs["axis"])]

    return rule


_AXIS = {"axis": Attr(int, -1)}
for _name, _ref, _log in (("softmax", _ref_softmax, False), ("log_softmax", _ref_log_softmax, True)):
    register(
        OpDef(
            name=_name,
            inputs=("x",),
            infer=_infer_same,
            reference=_ref,
            pattern=Pattern.OPAQUE,
            attrs=dict(_AXIS),
            flops_per_element=4,
            grad=_g_softmax(_name + "_grad"),
            emit_cpu=_emit_along_axis("softmax_arb", _log),
            doc=f"{_name} along `axis` (max-subtracted for stability)",
        )
    )
    register(
        OpDef(
            name=_name + "_grad",
            inputs=("g", "y"),
            infer=_infer_same,
            reference=_ref_softmax_grad if not _log else _ref_log_softmax_grad,
            pattern=Pattern.OPAQUE,
            attrs=dict(_AXIS),
            no_grad_reason="second order not needed for training",
            emit_cpu=_emit_along_axis("softmax_grad_arb", _log),
            doc=f"backward of {_name} from its output y",
        )
    )


# ------------------------------------------------------------------ dropout
# A counter-based generator: the keep decision for element i is a hash of (seed, salt, i),
# so the backward pass recomputes the same mask instead of storing it, and any backend
# that implements the same hash draws the same mask (graphdl/ops/random.py).

def dropout_mask_reference(n: int, seed: int, salt: int, rate: float) -> np.ndarray:
    """The keep mask as NumPy computes it: element i is kept when
    ``uniform24(mix64(key, i)) >= rate``, as in `dropout_flat`."""
    return uniform24(hash_counters(python_seed_key(seed, salt), n)) >= rate


@cpu_kernel
def dropout_flat(x, seed, out, salt, rate, scale):
    """out = x * keep / (1 - rate); x, out flat; seed a 1-element int64 array."""
    base = seed_key(seed[0], salt)
    for i in range(x.size):
        if uniform24(mix64(base, i)) >= rate:
            out[i] = x[i] * scale
        else:
            out[i] = x[i] * 0


def _infer_dropout(attrs, types):
    if types[1].dtype != "int64" or types[1].rank != 0:
        raise ShapeError(f"dropout's seed must be an int64 scalar, got {types[1]}")
    if not 0.0 <= attrs["rate"] < 1.0:
        raise ShapeError(f"dropout rate must be in [0, 1), got {attrs['rate']}")
    return [types[0]]


def _ref_dropout(attrs, x, seed):
    keep = dropout_mask_reference(x.size, int(seed), attrs["salt"], attrs["rate"])
    scale = x.dtype.type(1.0 / (1.0 - attrs["rate"]))
    return np.where(keep.reshape(x.shape), x * scale, x * 0).astype(x.dtype)


def _g_dropout(g, attrs, ins, outs, gouts):
    # the same mask applied to the gradient: dropout is linear in x for a fixed seed
    return [g.op("dropout", gouts[0], ins[1], **attrs), None]


def _emit_dropout(ctx, attrs, ins, outs):
    scale = 1.0 / (1.0 - attrs["rate"])
    return [ctx.call("dropout_flat", f"{ctx.var(ins[0])}.ravel()", ins[1], f"{ctx.var(outs[0])}.ravel()",
                     attrs["salt"], repr(attrs["rate"]), ctx.lit(scale, ctx.type(ins[0]).dtype))]


register(
    OpDef(
        name="dropout",
        flops_per_element=2,
        inputs=("x", "seed"),
        infer=_infer_dropout,
        reference=_ref_dropout,
        pattern=Pattern.OPAQUE,
        attrs={"rate": Attr(float), "salt": Attr(int, 0)},
        grad=_g_dropout,
        differentiable=(0,),
        emit_cpu=_emit_dropout,
        doc="training-mode inverted dropout with a counter-based mask from (seed, salt, index)",
    )
)


# ------------------------------------------------------------------ embedding
# A row gather, as torch.nn.functional.embedding. Ids are data, so the kernels check each
# one against the vocabulary: an id outside [0, vocab) gives a NaN row in the forward pass
# and adds nothing in the backward pass; no kernel reads or writes another row for it
# (ARCHITECTURE.md, "No out-of-bounds access").

def _check_ids(ids):
    if ids.dtype != "int64":
        raise ShapeError(f"embedding ids must be int64, got {ids}")


def _infer_embedding(attrs, types):
    ids, weight = types
    _check_ids(ids)
    if weight.rank != 2 or weight.dtype not in ("float32", "float64"):
        raise ShapeError(f"embedding weight must be a float [vocab, dim] matrix, got {weight}")
    if any(isinstance(d, str) for d in weight.shape):
        raise ShapeError(f"embedding weight must have static dims, got {weight}")
    return [TensorType(ids.shape + (weight.shape[1],), weight.dtype)]


def _ref_embedding(attrs, ids, weight):
    inside = (ids >= 0) & (ids < weight.shape[0])
    rows = weight[np.where(inside, ids, 0)]
    return np.where(inside[..., None], rows, np.nan).astype(weight.dtype)  # as the kernel


def _g_embedding(g, attrs, ins, outs, gouts):
    vocab = g.type_of(ins[1]).shape[0]
    return [None, g.op("embedding_grad", ins[0], gouts[0], vocab=vocab,
                       padding_idx=attrs["padding_idx"])]


# The CUDA embedding_gather is its deliberate parallel (the same id test, one thread per
# element instead of a loop): change both together.
@cpu_kernel
def embedding_gather(ids, weight, out):
    """out[i, :] = weight[ids[i], :] for flat ids [M]; a NaN row for an id outside [0, V)."""
    vocab, dim = weight.shape
    for i in range(ids.size):
        k = ids[i]
        if k < 0 or k >= vocab:
            for d in range(dim):
                out[i, d] = math.nan
            continue
        for d in range(dim):
            out[i, d] = weight[k, d]


def _flat_ids(ctx, v):
    """Ids [...] as one flat axis [M]."""
    return f"{ctx.var(v)}.reshape(({_prod(ctx.shape(v))},))"


def _flat_rows(ctx, v):
    """Rows [..., dim] as a matrix [M, dim]."""
    shape = ctx.shape(v)
    return f"{ctx.var(v)}.reshape(({_prod(shape[:-1])}, {shape[-1]}))"


def _emit_embedding(ctx, attrs, ins, outs):
    return [ctx.call("embedding_gather", _flat_ids(ctx, ins[0]), ins[1], _flat_rows(ctx, outs[0]))]


def _embedding_cost(attrs, ins, out, bindings):
    return 0  # a copy


register(
    OpDef(
        name="embedding",
        inputs=("ids", "weight"),
        infer=_infer_embedding,
        reference=_ref_embedding,
        pattern=Pattern.OPAQUE,
        attrs={"padding_idx": Attr(int, -1)},
        grad=_g_embedding,
        differentiable=(1,),
        cost=_embedding_cost,
        emit_cpu=_emit_embedding,
        doc="weight[ids]: rows of weight [vocab, dim] gathered by int64 ids (a NaN row for "
            "an id outside the vocabulary)",
    )
)


def _infer_embedding_grad(attrs, types):
    ids, gy = types
    _check_ids(ids)
    if gy.shape[:-1] != ids.shape or gy.rank != ids.rank + 1:
        raise ShapeError(f"embedding_grad expects a gradient of shape ids + [dim], got ids "
                         f"{ids} and gradient {gy}")
    if attrs["vocab"] < 1 or isinstance(gy.shape[-1], str):
        raise ShapeError(f"embedding_grad needs vocab >= 1 and a static dim, got "
                         f"vocab {attrs['vocab']} and {gy}")
    return [TensorType((attrs["vocab"], gy.shape[-1]), gy.dtype)]


def _ref_embedding_grad(attrs, ids, gy):
    vocab, pad = attrs["vocab"], attrs["padding_idx"]
    flat = ids.reshape(-1)
    rows = gy.reshape(flat.size, gy.shape[-1]).astype(np.float64)
    keep = (flat >= 0) & (flat < vocab) & (flat != pad)
    out = np.zeros((vocab, gy.shape[-1]))
    np.add.at(out, flat[keep], rows[keep])
    return out.astype(gy.dtype)


def _g_embedding_grad(g, attrs, ins, outs, gouts):
    # linear in gy: its adjoint is the gather, with the padding row's gradient masked out
    gw = gouts[0]
    pad = attrs["padding_idx"]
    if 0 <= pad < attrs["vocab"]:
        t = g.type_of(gw)
        mask = np.ones(t.shape, t.dtype)
        mask[pad] = 0
        gw = g.op("mul", gw, g.const(mask, t.dtype))
    return [None, g.op("embedding", ins[0], gw)]


@cpu_kernel
def embedding_scatter_add(ids, gy, out, padding_idx):
    """out = 0, then out[ids[i], :] += gy[i, :] for ids in [0, V) other than padding_idx.

    One thread in id order, so the sums never depend on the thread count (the CUDA kernel
    uses atomics and sums in another order)."""
    vocab, dim = out.shape
    out[:, :] = 0
    for i in range(ids.size):
        k = ids[i]
        if k < 0 or k >= vocab or k == padding_idx:
            continue
        for d in range(dim):
            out[k, d] += gy[i, d]


def _emit_embedding_grad(ctx, attrs, ins, outs):
    return [ctx.call("embedding_scatter_add", _flat_ids(ctx, ins[0]), _flat_rows(ctx, ins[1]), outs[0],
                     ctx.runtime(attrs["padding_idx"]))]


def _embedding_grad_cost(attrs, ins, out, bindings):
    return ins[1].numel(bindings)  # one add per gradient element


register(
    OpDef(
        name="embedding_grad",
        inputs=("ids", "gy"),
        infer=_infer_embedding_grad,
        reference=_ref_embedding_grad,
        pattern=Pattern.OPAQUE,
        attrs={"vocab": Attr(int), "padding_idx": Attr(int, -1)},
        grad=_g_embedding_grad,
        differentiable=(1,),
        cost=_embedding_grad_cost,
        emit_cpu=_emit_embedding_grad,
        doc="the gradient of embedding: gy's rows summed into [vocab, dim] by id (scatter-add; "
            "none for padding_idx or an id outside the vocabulary)",
    )
)


# ------------------------------------------------------------------ positions
# add_positions(x, table): x [N, T, D] + table[:T] for a table of positions [L, D] (a
# sinusoidal constant or a learned parameter); T may be a symbol bound per batch, so the
# op reads only the table's first T rows. A step t >= L has no position: its row is NaN
# (as an embedding id outside the vocabulary), which the trainer's numerical check
# reports; the data side refuses such sequences before they get here.


_POS_FLOATS = ("float32", "float64")


def _infer_add_positions(attrs, types):
    x, table = types
    if x.rank != 3 or table.rank != 2 or x.dtype not in _POS_FLOATS or table.dtype != x.dtype:
        raise ShapeError(f"add_positions expects x [N, T, D] and a table [L, D] of one float "
                         f"dtype, got {x} and {table}")
    if x.shape[2] != table.shape[1]:
        raise ShapeError(f"add_positions: x has {x.shape[2]} features per step but the table "
                         f"of positions has {table.shape[1]}")
    steps, rows = x.shape[1], table.shape[0]
    if isinstance(steps, int) and isinstance(rows, int) and steps > rows:
        raise ShapeError(f"the sequence has {steps} steps but positions are defined for "
                         f"{rows} (max_len)", help=f"raise max_len to at least {steps}")
    return [x]


def _ref_add_positions(attrs, x, table):
    steps, rows = x.shape[1], table.shape[0]
    pos = np.full((steps, table.shape[1]), np.nan, table.dtype)
    pos[:min(steps, rows)] = table[:steps]
    return (x + pos[None]).astype(x.dtype)


def _g_add_positions(g, attrs, ins, outs, gouts):
    rows = g.type_of(ins[1]).shape[0]
    return [gouts[0], g.op("add_positions_grad", gouts[0], rows=rows)]


# The CUDA kernels (backends/cuda/kernels/nn.py) are their deliberate parallels.
@cpu_kernel
def add_positions_fwd(x, table, out):
    """out[n, t, :] = x[n, t, :] + table[t, :] (NaN past the table's rows)."""
    n, steps, dim = x.shape
    rows = table.shape[0]
    for i in range(n):
        for t in range(steps):
            if t >= rows:
                for d in range(dim):
                    out[i, t, d] = math.nan
                continue
            for d in range(dim):
                out[i, t, d] = x[i, t, d] + table[t, d]


@cpu_kernel
def add_positions_bwd(gy, out):
    """out[t, :] = sum over n of gy[n, t, :] for t < T, 0 for the table's other rows."""
    n, steps, dim = gy.shape
    out[:, :] = 0
    for i in range(n):
        for t in range(min(steps, out.shape[0])):
            for d in range(dim):
                out[t, d] += gy[i, t, d]


def _emit_add_positions(ctx, attrs, ins, outs):
    return [ctx.call("add_positions_fwd", ins[0], ins[1], outs[0])]


register(
    OpDef(
        name="add_positions",
        inputs=("x", "table"),
        infer=_infer_add_positions,
        reference=_ref_add_positions,
        pattern=Pattern.OPAQUE,
        grad=_g_add_positions,
        flops_per_element=1,
        emit_cpu=_emit_add_positions,
        doc="x [N, T, D] + table[:T] (the table of positions [L, D]; NaN rows past L)",
    )
)


def _infer_add_positions_grad(attrs, types):
    gy = types[0]
    if gy.rank != 3 or gy.dtype not in _POS_FLOATS:
        raise ShapeError(f"add_positions_grad expects a float gradient [N, T, D], got {gy}")
    return [TensorType((attrs["rows"], gy.shape[2]), gy.dtype)]


def _ref_add_positions_grad(attrs, gy):
    out = np.zeros((attrs["rows"], gy.shape[2]), np.float64)
    steps = min(gy.shape[1], attrs["rows"])
    out[:steps] = gy[:, :steps].astype(np.float64).sum(axis=0)
    return out.astype(gy.dtype)


def _g_add_positions_grad(g, attrs, ins, outs, gouts):
    # linear in gy: its adjoint broadcasts the table's gradient back over the batch
    zeros = g.op("mul_scalar", ins[0], c=0.0)
    return [g.op("add_positions", zeros, gouts[0])]


def _emit_add_positions_grad(ctx, attrs, ins, outs):
    return [ctx.call("add_positions_bwd", ins[0], outs[0])]


register(
    OpDef(
        name="add_positions_grad",
        inputs=("gy",),
        infer=_infer_add_positions_grad,
        reference=_ref_add_positions_grad,
        pattern=Pattern.OPAQUE,
        attrs={"rows": Attr(int)},
        grad=_g_add_positions_grad,
        emit_cpu=_emit_add_positions_grad,
        doc="the gradient of add_positions for its table: gy summed over the batch into "
            "[rows, D], zero past T",
    )
)


def sinusoidal_positions(rows: int, dim: int) -> np.ndarray:
    """The table of "Attention Is All You Need" (Vaswani et al. 2017, section 3.5):
    PE[t, 2i] = sin(t / 10000^(2i/dim)), PE[t, 2i+1] = cos(t / 10000^(2i/dim)), float32."""
    t = np.arange(rows, dtype=np.float64)[:, None]
    freq = np.exp(-math.log(10000.0) * np.arange(0, dim, 2, dtype=np.float64) / dim)
    table = np.zeros((rows, dim))
    table[:, 0::2] = np.sin(t * freq)
    table[:, 1::2] = np.cos(t * freq)[:, : dim // 2]
    return table.astype(np.float32)
