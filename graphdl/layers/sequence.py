"""Sequence layers: embedding (int64 token ids [T] -> vectors [T, dim]) and the recurrent
layers rnn, lstm and gru, and seq_pool.

Each layer is defined once here: its keys (types, defaults, descriptions) and its lowering.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from graphdl.ir.graph import Value
from graphdl.ir.scan import TIME_MASK, add_scan, new_body, set_body_outputs
from graphdl.ir.types import TensorType
from graphdl.layers.catalog import fmt_shape, layer
from graphdl.layers.schema import boolean, enum, integer, number, string

if TYPE_CHECKING:
    from graphdl.layers.lower import LayerCtx


@layer("embedding", "a learned vector per token id, as torch.nn.Embedding: int64 ids [T] "
       "-> [T, dim] (an id outside [0, vocab) gives a NaN row)", {
    "vocab": integer("number of token ids (rows of the table)", minimum=1, required=True),
    "dim": integer("length of each id's vector", minimum=1, required=True),
    "padding_idx": integer("an id whose row starts at zero and never gets a gradient "
                           "(e.g. the padding token), as in PyTorch", minimum=0),
    "init": enum("table initializer: normal is N(0, 1), as PyTorch", ["normal", "glorot_uniform"],
                 default="normal"),
})
def lower_embedding(ctx: LayerCtx, inputs: list[Value]) -> Value:
    g, ids = ctx.g, inputs[0]
    t = g.type_of(ids)
    if t.dtype != "int64":
        raise ctx.shape_error(f"embedding expects int64 token ids, got {t.dtype} {fmt_shape(t)}",
                              help="declare the model input with `dtype: int64`")
    vocab, dim = int(ctx.arg("vocab")), int(ctx.arg("dim"))
    pad = ctx.arg("padding_idx")
    if pad is not None and not 0 <= pad < vocab:
        raise ctx.shape_error(f"embedding padding_idx {pad} is outside [0, {vocab})",
                              help=f"give an id below vocab ({vocab})")
    pad = -1 if pad is None else int(pad)
    weight = ctx.param("weight", (vocab, dim), ctx.arg("init"), fan_in=vocab, fan_out=dim,
                       weight=True, zero_row=pad)
    out = g.op("embedding", ids, weight, padding_idx=pad)
    if pad >= 0 and t.rank == 2 and ctx.masks is not None:
        # the key mask attention reads: 1.0 where the id is not padding_idx
        real = g.op("ne", ids, g.const(np.array(pad, np.int64), "int64"))
        ctx.masks[out] = g.op("cast", real, dtype="float32")
    return out


# --------------------------------------------------------------------------- recurrent
#
# rnn, lstm and gru run their cell as the body of a `scan` (graphdl.ir.scan) over the
# time-major sequence [T, N, F]. Weights have PyTorch's names, shapes and gate order
# (weight_ih_l<k>[_reverse] [G*hidden, in], weight_hh_l<k> [G*hidden, hidden], bias_ih_l<k>,
# bias_hh_l<k> [G*hidden]; LSTM gates i, f, g, o; GRU r, z, n), so weights load from and
# compare with torch.nn.RNN/LSTM/GRU. The body computes the input projection x_t W_ih^T
# too; the `hoist` pass moves it out of the loop as one GEMM over all steps.
#
# Lengths: with `lengths:` (an int64 model input [N]), or from the padding mask of an
# embedding with padding_idx (`_lengths`), the body reads the step's mask
# m_t [N, 1] (seq_mask) and keeps a sample's carry past its length (h + m (h' - h)) and
# zeroes its output there (m h'): the final carry is the state at the sample's own last
# step, forward and backward, as torch's pack_padded_sequence gives it.

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
RECURRENT_KEYS = {
    "hidden": integer("size of the hidden state (per direction)", minimum=1, required=True),
    "num_layers": integer("recurrent layers stacked, each reading the previous one's "
                          "sequence", minimum=1, default=1),
    "bidirectional": boolean("also run each layer from the end of the sequence; the two "
                             "directions' states are joined by `merge`", default=False),
    "merge": enum("how the layer's output joins the two directions (between stacked "
                  "layers they are always concatenated, as PyTorch)", ["concat", "sum", "mean"],
                  default="concat"),
    "output": enum("sequence: the state at every step [T, hidden]; last: the state at each "
                   "sample's own last step [hidden] (the backward direction's after step 0)",
                   ["sequence", "last"], default="sequence"),
    "dropout": number("dropout rate between stacked layers (training only)", minimum=0,
                      maximum=1, default=0.0),
    "truncate": integer("truncated backpropagation through time: gradients flow back through "
                        "at most this many steps (0: the whole sequence)", minimum=0, default=0),
    "lengths": string("a model input (int64, shape []) holding each sample's length: steps "
                      "past it leave the state unchanged and output zeros"),
}


def _recurrent(kind: str, ctx: LayerCtx, inputs: list[Value]) -> Value:
    g, x = ctx.g, inputs[0]
    t = g.type_of(x)
    if t.rank != 3 or t.dtype not in ("float32", "float64") or isinstance(t.shape[2], str):
        raise ctx.shape_error(
            f"{kind} expects a sequence of feature vectors [T, features], got {fmt_shape(t)}",
            help="give it a model input declared with shape [T, features] (or [steps, "
                 "features]), an embedding's output or another recurrent layer's sequence")
    hidden = int(ctx.arg("hidden"))
    layers = int(ctx.arg("num_layers"))
    directions = 2 if ctx.arg("bidirectional") else 1
    h0 = _initial_state(ctx, inputs, hidden)
    seq = g.op("transpose", x, perm=(1, 0, 2))  # [T, N, F]: the scan slices axis 0
    lengths = _lengths(ctx, x)
    mask = None if lengths is None else g.op("seq_mask", lengths, seq, dtype=t.dtype)
    finals: list[Value] = []
    for k in range(layers):
        if k > 0 and ctx.training and float(ctx.arg("dropout")) > 0:
            seq = g.op("dropout", seq, ctx.step_seed, rate=float(ctx.arg("dropout")),
                       salt=ctx.salt * 1000 + k)
        outs = []
        finals = []
        for d in range(directions):
            init = _initial_carries(ctx, kind, h0, t, hidden, k)
            ys, h_last = _direction(kind, ctx, seq, mask, hidden, k, reverse=d == 1,
                                    init=init)
            outs.append(ys)
            finals.append(h_last)
        seq = outs[0] if directions == 1 else g.op("concat", *outs, axis=2)
        last_outs = outs
    merged_from = finals if ctx.arg("output") == "last" else last_outs
    axis = 1 if ctx.arg("output") == "last" else 2
    out = _merge(g, merged_from, ctx.arg("merge"), axis)
    if ctx.arg("output") == "last":
        return out
    return g.op("transpose", out, perm=(1, 0, 2))


def _merge(g, parts: list[Value], how: str, axis: int) -> Value:
    if len(parts) == 1:
        return parts[0]
    if how == "concat":
        return g.op("concat", *parts, axis=axis)
    total = g.op("add", parts[0], parts[1])
    return total if how == "sum" else g.op("mul_scalar", total, c=0.5)


def _initial_state(ctx: LayerCtx, inputs: list[Value], hidden: int) -> Value | None:
    """The layer's second input, if it has one: the initial hidden state [N, hidden] of
    every layer and direction (as Keras's initial_state; an LSTM's cell starts at 0)."""
    if len(inputs) == 1:
        return None
    if len(inputs) > 2:
        raise ctx.shape_error(f"a recurrent layer takes a sequence and optionally an initial "
                              f"state, got {len(inputs)} inputs")
    st = ctx.g.type_of(inputs[1])
    if st.rank != 2 or st.shape[1] != hidden:
        raise ctx.shape_error(f"the initial state (the second input) must be [{hidden}] "
                              f"(hidden), got {fmt_shape(st)}",
                              help=f"map it with a dense layer of {hidden} units first")
    return inputs[1]


def _initial_carries(ctx: LayerCtx, kind: str, h0: Value | None, t: TensorType, hidden: int,
                     k: int) -> list[Value]:
    """The carries a layer's scan starts from: zeros or h0 (an LSTM's cell: zeros); in a
    decode_step program the caches ``cache.<layer>.l<k>.c<j>`` (the state after the
    previous token; at position 0 the initial state)."""
    g = ctx.g
    n = t.shape[0]
    zero = g.op("broadcast_to", g.const(0.0, t.dtype), shape=(n, hidden))
    carries = [h0 if h0 is not None else zero] + ([zero] if kind == "lstm" else [])
    if ctx.decode is None:
        return carries
    first = g.op("cast", g.op("eq", g.op("reshape", ctx.decode.pos, shape=(n, 1)),
                              g.const(np.array(0, np.int64), "int64")), dtype=t.dtype)
    out = []
    for j, start in enumerate(carries):
        cache = g.input(f"cache.{ctx.layer.name}.l{k}.c{j}", TensorType((n, hidden), t.dtype))
        out.append(g.op("add", cache, g.op("mul", first, g.op("sub", start, cache))))
    return out


def _direction(kind: str, ctx: LayerCtx, seq: Value, mask: Value | None, hidden: int,
               k: int, reverse: bool, init: list[Value]) -> tuple[Value, Value]:
    """One layer, one direction: (its sequence [T, N, hidden], its final state [N, hidden]),
    from the carries ``init``; in a decode_step program its final carries are also the
    outputs ``cache.<layer>.l<k>.c<j>``."""
    g = ctx.g
    st = g.type_of(seq)
    _steps, n, feat = st.shape
    dtype = st.dtype
    gates = GATES[kind] * hidden
    suffix = f"_l{k}" + ("_reverse" if reverse else "")
    w_ih = ctx.param(f"weight_ih{suffix}", (gates, feat), "uniform_hidden", fan_in=hidden,
                     fan_out=hidden, weight=True)
    w_hh = ctx.param(f"weight_hh{suffix}", (gates, hidden), "uniform_hidden", fan_in=hidden,
                     fan_out=hidden, weight=True)
    b_ih = ctx.param(f"bias_ih{suffix}", (gates,), "uniform_hidden", fan_in=hidden,
                     fan_out=hidden, weight=False)
    b_hh = ctx.param(f"bias_hh{suffix}", (gates,), "uniform_hidden", fan_in=hidden,
                     fan_out=hidden, weight=False)
    state = TensorType((n, hidden), dtype)
    carries = [state] * (2 if kind == "lstm" else 1)
    slices = [TensorType((n, feat), dtype)]
    if mask is not None:
        slices.append(TensorType((n, 1), dtype))
    invs = [g.type_of(w) for w in (w_ih, w_hh, b_ih, b_hh)]
    body, cs, xs, (wi, wh, bi, bh) = new_body(carries, slices, invs)
    body.provenance = g.provenance
    if mask is not None:
        body.node(xs[1].node)["attrs"]["role"] = TIME_MASK
    xt = xs[0]
    gi = body.op("add", body.op("matmul", xt, wi, transpose_b=True), bi)
    gh = body.op("add", body.op("matmul", cs[0], wh, transpose_b=True), bh)
    new = _CELLS[kind](ctx, body, cs, gi, gh, hidden)
    if mask is not None:
        m = xs[1]
        nexts = [body.op("add", c, body.op("mul", m, body.op("sub", c_new, c)))
                 for c, c_new in zip(cs, new)]
        y = body.op("mul", m, new[0])
    else:
        nexts, y = new, new[0]
    set_body_outputs(body, nexts, [y])
    seqs = [seq] + ([mask] if mask is not None else [])
    nid = add_scan(g, body, init, seqs, [w_ih, w_hh, b_ih, b_hh],
                   reverse=reverse, truncate=int(ctx.arg("truncate")))
    if ctx.decode is not None:
        for j in range(len(carries)):
            g.outputs[f"cache.{ctx.layer.name}.l{k}.c{j}"] = Value(nid, j)
    return Value(nid, len(carries)), Value(nid, 0)


def _cell_rnn(ctx, b, cs, gi, gh, hidden):
    pre = b.op("add", gi, gh)
    return [b.op("tanh", pre) if ctx.arg("activation") == "tanh" else b.op("relu", pre)]


def _gate(b, v, i, hidden):
    return b.op("slice", v, axis=1, start=i * hidden, stop=(i + 1) * hidden)


def _cell_lstm(ctx, b, cs, gi, gh, hidden):
    _h, c = cs
    pre = b.op("add", gi, gh)
    i = b.op("sigmoid", _gate(b, pre, 0, hidden))
    f = b.op("sigmoid", _gate(b, pre, 1, hidden))
    gg = b.op("tanh", _gate(b, pre, 2, hidden))
    o = b.op("sigmoid", _gate(b, pre, 3, hidden))
    c_new = b.op("add", b.op("mul", f, c), b.op("mul", i, gg))
    h_new = b.op("mul", o, b.op("tanh", c_new))
    return [h_new, c_new]


def _cell_gru(ctx, b, cs, gi, gh, hidden):
    (h,) = cs
    r = b.op("sigmoid", b.op("add", _gate(b, gi, 0, hidden), _gate(b, gh, 0, hidden)))
    z = b.op("sigmoid", b.op("add", _gate(b, gi, 1, hidden), _gate(b, gh, 1, hidden)))
    nn = b.op("tanh", b.op("add", _gate(b, gi, 2, hidden),
                           b.op("mul", r, _gate(b, gh, 2, hidden))))
    return [b.op("add", nn, b.op("mul", z, b.op("sub", h, nn)))]  # (1 - z) n + z h


_CELLS = {"rnn": _cell_rnn, "lstm": _cell_lstm, "gru": _cell_gru}


@layer("rnn", "a simple (Elman) recurrent layer, as torch.nn.RNN: h_t = activation(x_t "
       "W_ih^T + b_ih + h_(t-1) W_hh^T + b_hh) over [T, features]", {
    **RECURRENT_KEYS,
    "activation": enum("the cell's nonlinearity", ["tanh", "relu"], default="tanh"),
})
def lower_rnn(ctx: LayerCtx, inputs: list[Value]) -> Value:
    return _recurrent("rnn", ctx, inputs)


@layer("lstm", "a long short-term memory layer, as torch.nn.LSTM (gates i, f, g, o) over "
       "[T, features]", dict(RECURRENT_KEYS))
def lower_lstm(ctx: LayerCtx, inputs: list[Value]) -> Value:
    return _recurrent("lstm", ctx, inputs)


@layer("gru", "a gated recurrent unit layer, as torch.nn.GRU (gates r, z, n) over "
       "[T, features]", dict(RECURRENT_KEYS))
def lower_gru(ctx: LayerCtx, inputs: list[Value]) -> Value:
    return _recurrent("gru", ctx, inputs)


@layer("seq_pool", "pools a sequence [T, features] over time to [features]: the mean or "
       "the max of the steps, or the last step (each sample's own with `lengths`)", {
    "mode": enum("how the steps are pooled", ["mean", "max", "last"], required=True),
    "lengths": RECURRENT_KEYS["lengths"],
})
def lower_seq_pool(ctx: LayerCtx, inputs: list[Value]) -> Value:
    g, x = ctx.g, inputs[0]
    t = g.type_of(x)
    if t.rank != 3 or t.dtype not in ("float32", "float64"):
        raise ctx.shape_error(f"seq_pool expects a sequence [T, features], got {fmt_shape(t)}",
                              help="pool a recurrent layer's `output: sequence` or an "
                                   "embedding's output")
    mode = ctx.arg("mode")
    lengths = _lengths(ctx, x)
    if lengths is None:
        if mode == "mean":
            return g.op("mean", x, axes=(1,), keepdims=False)
        if mode == "max":
            return g.op("max", x, axes=(1,), keepdims=False)
        last = g.op("truncate_mask", g.op("transpose", x, perm=(1, 0, 2)), k=1, dtype=t.dtype)
        weights = g.op("reshape", last, shape=(1, t.shape[1], 1))
        return g.op("sum", g.op("mul", x, weights), axes=(1,), keepdims=False)
    seq = g.op("transpose", x, perm=(1, 0, 2))
    mask = g.op("transpose", g.op("seq_mask", lengths, seq, dtype=t.dtype, last=mode == "last"),
                perm=(1, 0, 2))  # [N, T, 1]
    if mode == "max":  # padded steps sit far below every real one
        return g.op("max", g.op("add", x, g.op("mul_scalar", g.op("add_scalar", mask, c=-1.0),
                                                c=1e30)), axes=(1,), keepdims=False)
    total = g.op("sum", g.op("mul", x, mask), axes=(1,), keepdims=False)
    if mode == "last":
        return total
    count = g.op("maximum", g.op("reshape", g.op("cast", lengths, dtype=t.dtype),
                                 shape=(t.shape[0], 1)), g.const(1.0, t.dtype))
    return g.op("div", total, count)


def _lengths(ctx: LayerCtx, x: Value | None = None) -> Value | None:
    """The model input the layer's `lengths` key names (int64 [N]), if it names one; else,
    for a sequence ``x`` that carries a padding mask (after an embedding with
    padding_idx), each sample's count of real steps (padding comes after them)."""
    name = ctx.arg("lengths")
    if name is None:
        mask = None if x is None else (ctx.masks or {}).get(x)
        if mask is None:
            return None
        return ctx.g.op("cast", ctx.g.op("sum", mask, axes=(1,), keepdims=False), dtype="int64")
    lengths = ctx.model_input(name, "lengths")
    lt = ctx.g.type_of(lengths)
    if lt.dtype != "int64" or lt.rank != 1:
        raise ctx.shape_error(f"lengths: '{name}' must be int64 with shape [], got "
                              f"{fmt_shape(lt)}", help="declare it as {shape: [], dtype: int64}")
    return lengths
