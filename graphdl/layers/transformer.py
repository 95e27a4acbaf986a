"""Transformer layers: positional_encoding and multihead_attention (the transformer's parts;
layer_norm is in ``norm``, gelu is an activation).

Each layer is defined once here: its keys (types, defaults, descriptions) and its lowering.

Padding masks. A sequence value [N, T, F] may travel with a key mask [N, T] (1.0 at real
steps, 0.0 at padding) that attention reads so that no query attends to padding, as
Keras's mask propagation does: an `embedding` with `padding_idx` makes one from its ids
(id != padding_idx), and every layer whose output keeps its input's [N, T] passes it on
(`graphdl.layers.lower`). A `lengths:` key (an int64 model input) builds it from the
lengths instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from graphdl.ir.graph import Value
from graphdl.ir.types import TensorType
from graphdl.layers.catalog import fmt_shape, layer
from graphdl.layers.schema import boolean, enum, integer, number, string
from graphdl.ops.nn import sinusoidal_positions

if TYPE_CHECKING:
    from graphdl.layers.lower import LayerCtx


def _sequence(ctx: LayerCtx, x: Value, kind: str) -> tuple:
    t = ctx.g.type_of(x)
    if t.rank != 3 or t.dtype not in ("float32", "float64") or isinstance(t.shape[2], str):
        raise ctx.shape_error(
            f"{kind} expects a sequence of feature vectors [T, features], got {fmt_shape(t)}",
            help="give it an embedding's output, a model input declared [T, features], or "
                 "another sequence layer's output")
    return t


@layer("positional_encoding", "adds a vector per position to a sequence [T, dim], as in "
       "\"Attention Is All You Need\": fixed sines and cosines, or learned", {
    "kind": enum("sinusoidal: sin/cos of the position at geometric frequencies (no weights); "
                 "learned: a trained vector per position (weight [max_len, dim], N(0, 1) "
                 "at the start)", ["sinusoidal", "learned"], default="sinusoidal"),
    "max_len": integer("the longest sequence the layer takes (positions 0 .. max_len - 1)",
                       minimum=1, default=512),
    "dropout": number("dropout rate applied to the sum (training only), as the original "
                      "transformer", minimum=0, exclusive_maximum=1, default=0.0),
    "scale": boolean("multiply the input by sqrt(dim) first (the original transformer scales "
                     "its embeddings so)", default=False),
})
def lower_positional_encoding(ctx: LayerCtx, inputs: list[Value]) -> Value:
    g, x = ctx.g, inputs[0]
    t = _sequence(ctx, x, "positional_encoding")
    rows, dim = int(ctx.arg("max_len")), int(t.shape[2])
    if ctx.arg("kind") == "sinusoidal":
        table = g.const(sinusoidal_positions(rows, dim).astype(t.dtype), t.dtype)
    else:
        table = ctx.param("weight", (rows, dim), "normal", fan_in=rows, fan_out=dim,
                          weight=True)
    if ctx.arg("scale"):
        x = g.op("mul_scalar", x, c=float(np.sqrt(dim)))
    if ctx.decode is not None:
        # one token of a decode_step program: the table's row at its position
        n = t.shape[0]
        rows = g.op("embedding", g.op("reshape", ctx.decode.pos, shape=(n, 1)), table)
        return g.op("add", x, rows)
    y = g.op("add_positions", x, table)
    rate = float(ctx.arg("dropout"))
    if ctx.training and rate > 0:
        y = g.op("dropout", y, ctx.step_seed, rate=rate, salt=ctx.salt)
    return y


@layer("multihead_attention", "multi-head scaled dot-product attention, as "
       "torch.nn.MultiheadAttention (batch_first): one input attends to itself; "
       "inputs: [query, key, value] attend across (key and value may be one layer)", {
    "heads": integer("number of attention heads (dim must be a multiple)", minimum=1,
                     required=True),
    "dim": integer("model dimension: the queries, keys and values are projected to it and "
                   "split into heads of dim / heads", minimum=1, required=True),
    "dropout": number("dropout rate on the attention weights (training only), as torch",
                      minimum=0, exclusive_maximum=1, default=0.0),
    "causal": boolean("a query sees only the keys up to its own position (a decoder's "
                      "self-attention)", default=False),
    "bias": boolean("learned biases on the projections", default=True),
    "lengths": string("a model input (int64, shape []) holding each sample's number of real "
                      "key steps; without it, keys are masked where the key sequence's "
                      "embedding had padding_idx"),
})
def lower_multihead_attention(ctx: LayerCtx, inputs: list[Value]) -> Value:
    g = ctx.g
    if len(inputs) not in (1, 2, 3):
        raise ctx.shape_error(
            f"multihead_attention takes 1 input (self-attention) or [query, key, value], got "
            f"{len(inputs)}", help="e.g. `inputs: [prev, memory, memory]`")
    q_in = inputs[0]
    k_in = inputs[1] if len(inputs) > 1 else q_in
    v_in = inputs[2] if len(inputs) > 2 else k_in
    tq, tk, tv = (_sequence(ctx, v, "multihead_attention") for v in (q_in, k_in, v_in))
    heads, dim = int(ctx.arg("heads")), int(ctx.arg("dim"))
    if dim % heads:
        options = [d for d in range(1, dim + 1) if dim % d == 0]
        raise ctx.shape_error(f"multihead_attention dim {dim} is not a multiple of heads "
                              f"{heads}: each head takes dim / heads features",
                              help=f"heads that divide dim {dim}: "
                                   f"{', '.join(map(str, options))} (e.g. heads: "
                                   f"{_divisor(dim, heads)}), or a dim that heads {heads} "
                                   f"divides (e.g. dim: {heads * max(1, round(dim / heads))})")
    if tk.shape[1] != tv.shape[1]:
        raise ctx.shape_error(f"multihead_attention: key and value have different numbers of "
                              f"steps ({fmt_shape(tk)} and {fmt_shape(tv)})")
    # torch's packed projection (in_proj_weight [3 dim, dim], rows q, k, v) when every
    # input has dim features; else separate ones, as torch names them then
    packed = tq.shape[2] == tk.shape[2] == tv.shape[2] == dim
    widths = {"q": tq.shape[2], "k": tk.shape[2], "v": tv.shape[2]}
    if ctx.decode is not None and k_in != q_in and ctx.decode.from_encoder(k_in, v_in):
        # one token of a decode_step program: keys and values from the encoder are projected
        # once per batch, in the encode program, and read here (memory_kv.<layer>.k|v|mask)
        kv = ctx.decode.per_batch(
            ctx, lambda c, k_e, v_e: _memory_kv(c, k_e, v_e, packed, widths, dim, heads),
            k_in, v_in)
        (q,) = _project_qkv(ctx, q_in, k_in, v_in, packed, widths, dim, "q")
        q, k, v, mask = _split_heads(g, q, heads), kv["k"], kv["v"], kv.get("mask")
    else:
        q, k, v = (_split_heads(g, x, heads)
                   for x in _project_qkv(ctx, q_in, k_in, v_in, packed, widths, dim, "qkv"))
        mask = None
    # q, k, v are [N, T, heads, dim / heads], reshapes of the projections (and the caches
    # and memory_kv of decoding are kept so): the attention op reads and writes its heads
    # in this layout (nthd), so nothing is transposed either way
    if ctx.decode is not None and ctx.layer.name in ctx.decode.plan.cached:
        out = _attend_cached(ctx, q, k, v)
    else:
        if mask is None:
            mask = key_mask(ctx, k_in)
        causal = bool(ctx.arg("causal"))
        out = attend(ctx, q, k, v, mask, causal=causal, rate=float(ctx.arg("dropout")))
        if ctx.weights is not None:  # drawn [N, heads, Tq, Tk]
            ins = [_heads_first(g, q), _heads_first(g, k)] + ([mask] if mask is not None else [])
            w = g.op("attention_weights", *ins, causal=causal, has_mask=mask is not None)
            kind = "cross" if k_in != q_in else ("causal" if causal else "self")
            ctx.weights[ctx.layer.name] = (w, kind)
    n, steps = tq.shape[0], tq.shape[1]
    out = g.op("reshape", out, shape=(n, steps, dim))
    wo = ctx.param("out_proj.weight", (dim, dim), "uniform_hidden", fan_in=dim, fan_out=dim,
                   weight=True)
    return _project(g, out, wo, _bias(ctx, "out_proj.bias", dim))


def _divisor(dim: int, heads: int) -> int:
    """The divisor of ``dim`` nearest ``heads`` (for the error's example)."""
    return min((d for d in range(1, dim + 1) if dim % d == 0), key=lambda d: abs(d - heads))


def _bias(ctx: LayerCtx, name: str, size: int) -> Value | None:
    if not ctx.arg("bias"):
        return None
    return ctx.param(name, (size,), "zeros", fan_in=size, fan_out=size, weight=False)


def _rows(g, w: Value, b: Value | None, start: int, stop: int) -> tuple:
    """Rows [start, stop) of the packed projection weight (and bias)."""
    w = g.op("slice", w, axis=0, start=start, stop=stop)
    return w, (None if b is None else g.op("slice", b, axis=0, start=start, stop=stop))


def _project_qkv(ctx: LayerCtx, q_in: Value | None, k_in: Value, v_in: Value, packed: bool,
                 widths: dict, dim: int, parts: str) -> tuple:
    """The queries, keys and values [N, T, dim] of a multihead_attention (those of
    ``parts``: "qkv", "q" or "kv"), with its parameters under the same names in every
    program: torch's packed in_proj_weight [3 dim, dim] (rows q, k, v) when ``packed``,
    else ``<part>_proj_weight`` [dim, features]; in_proj_bias [3 dim]. One GEMM for all
    three in self-attention, one for keys and values read from one value."""
    g = ctx.g
    if packed:
        w = ctx.param("in_proj_weight", (3 * dim, dim), "glorot_uniform", fan_in=dim,
                      fan_out=3 * dim, weight=True)
        b = _bias(ctx, "in_proj_bias", 3 * dim)
        if parts == "qkv" and k_in == q_in and v_in == q_in:
            qkv = _project(g, q_in, w, b)
            return tuple(g.op("slice", qkv, axis=2, start=i * dim, stop=(i + 1) * dim)
                         for i in range(3))
        out = []
        if "q" in parts:
            out.append(_project(g, q_in, *_rows(g, w, b, 0, dim)))
        if "k" in parts:
            if v_in == k_in:
                kv = _project(g, k_in, *_rows(g, w, b, dim, 3 * dim))
                out += [g.op("slice", kv, axis=2, start=i * dim, stop=(i + 1) * dim)
                        for i in range(2)]
            else:
                out.append(_project(g, k_in, *_rows(g, w, b, dim, 2 * dim)))
                out.append(_project(g, v_in, *_rows(g, w, b, 2 * dim, 3 * dim)))
        return tuple(out)
    # inputs of other widths: separate projections, as torch names them then
    projected, rows = [], []
    for i, (name, val) in enumerate((("q", q_in), ("k", k_in), ("v", v_in))):
        if name in parts:
            w = ctx.param(f"{name}_proj_weight", (dim, widths[name]), "glorot_uniform",
                          fan_in=widths[name], fan_out=dim, weight=True)
            projected.append(_project(g, val, w, None))
            rows.append(i)
    b = _bias(ctx, "in_proj_bias", 3 * dim)
    if b is not None:
        projected = [g.op("add", p, g.op("slice", b, axis=0, start=i * dim, stop=(i + 1) * dim))
                     for i, p in zip(rows, projected)]
    return tuple(projected)


def _memory_kv(ctx: LayerCtx, k_in: Value, v_in: Value, packed: bool, widths: dict, dim: int,
               heads: int) -> dict:
    """What a decoder's cross-attention computes from the encoder alone, built in the encode
    program: its keys and values split into heads [N, Tk, heads, dim / heads] (the layout
    the attention op reads) and its key mask [N, Tk] (None when every key is real)."""
    k, v = _project_qkv(ctx, None, k_in, v_in, packed, widths, dim, "kv")
    return {"k": _split_heads(ctx.g, k, heads), "v": _split_heads(ctx.g, v, heads),
            "mask": key_mask(ctx, k_in)}


def _project(g, x: Value, w: Value, b: Value | None) -> Value:
    """x W^T + b over the last axis (torch.nn.Linear's layout: w is [out, in])."""
    y = g.op("matmul", x, w, transpose_b=True)
    return y if b is None else g.op("add", y, b)


def _split_heads(g, x: Value, heads: int) -> Value:
    """[N, T, dim] -> [N, T, heads, dim / heads] (a reshape)."""
    n, steps, dim = g.type_of(x).shape
    return g.op("reshape", x, shape=(n, steps, heads, dim // heads))


def _heads_first(g, x: Value) -> Value:
    """[N, T, heads, d] -> [N, heads, T, d]."""
    return g.op("transpose", x, perm=(0, 2, 1, 3))


def key_mask(ctx: LayerCtx, keys: Value) -> Value | None:
    """The key mask [N, Tk] (1.0 real, 0.0 padding) of the layer: from its `lengths` key, else
    the one the key sequence carries (`LayerCtx.masks`), else None (every key is real)."""
    g = ctx.g
    t = g.type_of(keys)
    name = ctx.arg("lengths")
    if name is not None:
        lengths = ctx.model_input(name, "lengths")
        lt = g.type_of(lengths)
        if lt.rank != 1 or lt.dtype != "int64":
            raise ctx.shape_error(f"lengths: '{name}' must be int64 with shape [], got "
                                  f"{lt.dtype} {fmt_shape(lt)}")
        # seq_mask reads only the shape of a time-major [T, N, ...]: one feature suffices
        first = g.op("slice", keys, axis=2, start=0, stop=1)
        like = g.op("transpose", first, perm=(1, 0, 2))
        mask = g.op("seq_mask", lengths, like, dtype=t.dtype)  # [T, N, 1]
        return g.op("reshape", g.op("transpose", mask, perm=(1, 0, 2)),
                    shape=(t.shape[0], t.shape[1]))
    return (ctx.masks or {}).get(keys)


def attend(ctx: LayerCtx, q: Value, k: Value, v: Value, mask: Value | None, *, causal: bool,
           rate: float) -> Value:
    """The fused attention op over heads: softmax(q k^T / sqrt(d), masked) v, with dropout
    on the weights in training; q, k, v and the output [N, T, heads, d] (layout nthd)."""
    g = ctx.g
    ins = [q, k, v]
    attrs = {"causal": causal, "has_mask": mask is not None, "layout": "nthd"}
    if mask is not None:
        ins.append(mask)
    if ctx.training and rate > 0:
        ins.append(ctx.step_seed)
        attrs.update(rate=rate, salt=ctx.salt)
    return g.op("attention", *ins, **attrs)


def _attend_cached(ctx: LayerCtx, q: Value, k: Value, v: Value) -> Value:
    """Causal self-attention of one new token in a decode_step program (q, k, v [N, 1,
    heads, head_dim]): its key and value go into the caches (inputs ``cache.<layer>.k`` /
    ``.v`` [N, steps, heads, head_dim], returned as outputs of the same names) at its
    position, and it attends to the cache's positions up to its own."""
    g, plan, pos = ctx.g, ctx.decode.plan, ctx.decode.pos
    n, _one, heads, dh = g.type_of(q).shape
    steps, dtype = plan.steps, g.type_of(q).dtype
    where = g.op("reshape", pos, shape=(n, 1))
    slots = g.const(np.arange(steps, dtype=np.int64), "int64")
    at = g.op("cast", g.op("eq", slots, where), dtype=dtype)  # [N, steps]: the new slot
    at = g.op("reshape", at, shape=(n, steps, 1, 1))
    upto = g.op("cast", g.op("le", slots, where), dtype=dtype)  # [N, steps]: slots so far
    full = []
    for part, new in (("k", k), ("v", v)):
        name = f"cache.{ctx.layer.name}.{part}"
        cache = g.input(name, TensorType((n, steps, heads, dh), dtype))
        value = g.op("add", cache, g.op("mul", at, g.op("sub", new, cache)))
        g.outputs[name] = value
        full.append(value)
    return attend(ctx, q, full[0], full[1], upto, causal=False, rate=0.0)


# --------------------------------------------------------------------------- RNN attention
#
# Attention for recurrent encoder-decoders, as Keras's Attention (Luong's dot score) and
# AdditiveAttention (Bahdanau's score): inputs [query, value] or [query, value, key]
# (key = value by default), [Tq, dim] against [Tk, dim] -> one context vector per query
# step [Tq, dim(value)]. Keys that are padding (the key sequence's mask, or `lengths`) get
# no weight. With a single input, `attention` pools a sequence [T, F] into [F] with a
# learned query (additive score), padding-aware.

_RNN_ATTENTION_KEYS = {
    "lengths": string("a model input (int64, shape []) holding each sample's number of real "
                      "key steps; without it, keys are masked where the key sequence's "
                      "embedding had padding_idx"),
}


def _masked_softmax(g, scores: Value, mask: Value | None, axis: int) -> Value:
    """softmax over ``axis`` with the entries where ``mask`` (broadcast) is 0 left out."""
    if mask is not None:
        scores = g.op("add", scores, g.op("mul_scalar", g.op("add_scalar", mask, c=-1.0),
                                          c=1e30))
    return g.op("softmax", scores, axis=axis)


def _qkv(ctx: LayerCtx, inputs: list[Value], kind: str) -> tuple:
    if len(inputs) not in (2, 3):
        raise ctx.shape_error(f"{kind} takes inputs [query, value] or [query, value, key], got "
                              f"{len(inputs)} input{'s' if len(inputs) != 1 else ''}",
                              help="e.g. `inputs: [decoder, encoder]`")
    q, v = inputs[0], inputs[1]
    k = inputs[2] if len(inputs) == 3 else v
    tq, tv, tk = (_sequence(ctx, x, kind) for x in (q, v, k))
    if tk.shape[1] != tv.shape[1]:
        raise ctx.shape_error(f"{kind}: key and value have different numbers of steps "
                              f"({fmt_shape(tk)} and {fmt_shape(tv)})")
    return q, v, k, tq, tv, tk


@layer("attention", "Luong (dot-product) attention, as Keras's Attention: inputs [query, "
       "value] (or [query, value, key]) give each query step the value steps weighted by "
       "softmax(query . key); one input [T, F] is attention pooling to [F] (a learned query, "
       "additive score)", {
    "scale": boolean("divide the scores by sqrt(dim) (scaled dot-product)", default=False),
    "units": integer("attention pooling (one input): size of the additive score's hidden "
                     "layer (default: the features)", minimum=1),
    **_RNN_ATTENTION_KEYS,
})
def lower_attention(ctx: LayerCtx, inputs: list[Value]) -> Value:
    g = ctx.g
    if len(inputs) == 1:
        return _attention_pool(ctx, inputs[0])
    q, v, k, tq, tv, tk = _qkv(ctx, inputs, "attention")
    if tq.shape[2] != tk.shape[2]:
        raise ctx.shape_error(f"attention: the dot score needs query and key of one width, got "
                              f"{fmt_shape(tq)} and {fmt_shape(tk)}",
                              help="use additive_attention, or a dense layer to match them")
    # the fused attention op with one head: [N, T, D] -> [N, 1, T, D]
    n, steps_q, d = tq.shape
    q4, k4, v4 = (g.op("reshape", x, shape=(n, 1, t.shape[1], t.shape[2]))
                  for x, t in ((q, tq), (k, tk), (v, tv)))
    mask = key_mask(ctx, k)
    scale = 1.0 / float(np.sqrt(d)) if ctx.arg("scale") else 1.0
    masked = [mask] if mask is not None else []
    out = g.op("attention", q4, k4, v4, *masked, scale=scale, has_mask=mask is not None)
    if ctx.weights is not None:
        ctx.weights[ctx.layer.name] = (g.op("attention_weights", q4, k4, *masked, scale=scale,
                                            has_mask=mask is not None), "cross")
    return g.op("reshape", out, shape=(n, steps_q, tv.shape[2]))


def _weights(ctx: LayerCtx, p: Value) -> Value:
    """Record an RNN attention layer's weights [N, Tq, Tk] (as one head) for drawing."""
    if ctx.weights is not None:
        n, tq, tk = ctx.g.type_of(p).shape
        ctx.weights[ctx.layer.name] = (ctx.g.op("reshape", p, shape=(n, 1, tq, tk)), "cross")
    return p


@layer("additive_attention", "Bahdanau (additive) attention, as Keras's AdditiveAttention: "
       "inputs [query, value] (or [query, value, key]) give each query step the value steps "
       "weighted by softmax(v . tanh(W_q query + W_k key))", {
    "units": integer("size of the score's hidden layer (default: the query's features)",
                     minimum=1),
    **_RNN_ATTENTION_KEYS,
})
def lower_additive_attention(ctx: LayerCtx, inputs: list[Value]) -> Value:
    g = ctx.g
    q, v, k, tq, _tv, tk = _qkv(ctx, inputs, "additive_attention")
    n, steps_q, steps_k = tq.shape[0], tq.shape[1], tk.shape[1]
    units = int(ctx.arg("units") or tq.shape[2])
    wq = ctx.param("query_kernel", (tq.shape[2], units), "glorot_uniform", fan_in=tq.shape[2],
                   fan_out=units, weight=True)
    if ctx.decode is not None and ctx.decode.from_encoder(k):
        # one token of a decode_step program: the keys' projection (and their mask) come
        # from the encode program, computed once per batch (memory_kv.<layer>.k|mask)
        kv = ctx.decode.per_batch(ctx, lambda c, k_e: {
            "k": _additive_keys(c, k_e, _key_kernel(c, tk.shape[2], units)),
            "mask": key_mask(c, k_e)}, k)
        wk, ka, mask = None, kv["k"], kv.get("mask")
    else:
        wk, ka, mask = _key_kernel(ctx, tk.shape[2], units), None, None
    b = ctx.param("bias", (units,), "zeros", fan_in=units, fan_out=units, weight=False)
    u = ctx.param("score", (units, 1), "glorot_uniform", fan_in=units, fan_out=1, weight=True)
    qa = g.op("reshape", g.op("add", g.op("matmul", q, wq), b), shape=(n, steps_q, 1, units))
    if ka is None:
        ka = _additive_keys(ctx, k, wk)
        mask = key_mask(ctx, k)
    e = g.op("tanh", g.op("add", qa, ka))  # [N, Tq, Tk, units]
    scores = g.op("reshape", g.op("matmul", e, u), shape=(n, steps_q, steps_k))
    m = None if mask is None else g.op("reshape", mask, shape=(n, 1, steps_k))
    return g.op("matmul", _weights(ctx, _masked_softmax(g, scores, m, axis=-1)), v)


def _key_kernel(ctx: LayerCtx, feat: int, units: int) -> Value:
    """Additive attention's key projection W_k [feat, units] (parameter key_kernel)."""
    return ctx.param("key_kernel", (feat, units), "glorot_uniform", fan_in=feat, fan_out=units,
                     weight=True)


def _additive_keys(ctx: LayerCtx, k: Value, wk: Value) -> Value:
    """Additive attention's projected keys k W_k [N, 1, Tk, units]."""
    n, steps_k, _feat = ctx.g.type_of(k).shape
    units = ctx.g.type_of(wk).shape[1]
    return ctx.g.op("reshape", ctx.g.op("matmul", k, wk), shape=(n, 1, steps_k, units))


def _attention_pool(ctx: LayerCtx, x: Value) -> Value:
    """[N, T, F] -> [N, F]: the steps weighted by softmax over T of u . tanh(x W + b)."""
    g = ctx.g
    t = _sequence(ctx, x, "attention")
    n, steps, feat = t.shape
    units = int(ctx.arg("units") or feat)
    w = ctx.param("kernel", (feat, units), "glorot_uniform", fan_in=feat, fan_out=units,
                  weight=True)
    b = ctx.param("bias", (units,), "zeros", fan_in=units, fan_out=units, weight=False)
    u = ctx.param("query", (units, 1), "glorot_uniform", fan_in=units, fan_out=1, weight=True)
    scores = g.op("matmul", g.op("tanh", g.op("add", g.op("matmul", x, w), b)), u)  # [N, T, 1]
    mask = key_mask(ctx, x)
    m = None if mask is None else g.op("reshape", mask, shape=(n, steps, 1))
    p = _masked_softmax(g, scores, m, axis=1)
    if ctx.weights is not None:  # one query (the learned one) over the steps
        ctx.weights[ctx.layer.name] = (g.op("reshape", p, shape=(n, 1, 1, steps)), "pool")
    return g.op("sum", g.op("mul", x, p), axes=(1,), keepdims=False)
