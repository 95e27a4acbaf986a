"""The gradient of a scan: backpropagation through time as a reverse scan.

For a forward scan with body B (carries c, per-step slices x, invariants w -> next carries
c', per-step outputs y), `scan_gradient` builds the backward body from B's own gradient:

1. differentiate a copy of B from seeds ``dc'`` (gradients of the next carries, the
   backward scan's carries) and ``dy`` (per-step slices of the outputs' gradients) to its
   inputs, with the autodiff driver's `backprop`;
2. every forward value the gradient nodes read (an intermediate such as an LSTM gate, or
   the carry entering the step) becomes a per-step output of the forward scan, stacked
   over time, and a per-step input of the backward body: the forward loop saves what
   backpropagation needs and the backward loop recomputes nothing; a forward sequence
   slice is read from the sequence itself and an invariant from outside, as forward;
3. the backward scan runs the other way. Its carries are the carries' gradients and one
   accumulator per invariant that needs a gradient (``dw + dw_t``: weight gradients summed
   over the steps); its per-step outputs are the sequences' gradients.

The forward scan node is rewritten in place to emit the saved values (new outputs after
its own, so the values already read from it keep their indices).

``truncate: k`` (a positive int on the forward scan) is truncated BPTT: the carries'
gradient flows back at most k steps from where the backward loop starts (the end of the
sequence, or its start for a reverse scan); past that, a step receives only the gradient
of its own outputs. When the body reads a time mask of per-sample lengths (an input marked
``role: time_mask``), the k steps are each sample's own last real ones.
"""

from __future__ import annotations

from collections.abc import Callable

from graphdl.ir.graph import Graph, Provenance, Value
from graphdl.ir.scan import (
    TIME_MASK,
    add_scan,
    body_inputs,
    body_output_names,
    set_body_outputs,
    split_inputs,
)
from graphdl.ir.types import TensorType

SOURCES = ("input", "param", "state", "const")


def zeros(g: Graph, t: TensorType) -> Value:
    """Zeros of type ``t`` (its dims may be symbolic)."""
    return g.op("broadcast_to", g.const(0.0, t.dtype), shape=t.shape)


def scan_gradient(g: Graph, nid: int, gouts: list[Value | None], wanted: list[bool],
                  backprop: Callable) -> list[Value | None]:
    """The gradients of scan ``nid``'s inputs (None where not ``wanted``), given its outputs'
    gradients ``gouts`` (None: zero); see the module docstring."""
    nd = g.node(nid)
    attrs = nd["attrs"]
    body: Graph = attrs["body"]
    k = attrs["num_carry"]
    ins = g.inputs_of(nid)
    carries_in, seqs_in, invs_in = split_inputs(attrs, ins)
    ids = body_inputs(body)
    c_ids, x_ids, w_ids = split_inputs(attrs, ids)
    out_names = body_output_names(body, k)
    q = len(out_names) - k

    # 1. the body's gradient, on a copy of the body
    bb = body.copy()
    forward_nodes = set(bb.nodes())
    bb.provenance = Provenance(layer=nd["layer"], line=nd["line"], phase="backward")
    dc_in = [bb.input(f"grad_carry{i}", body.type_of(Value(c))) for i, c in enumerate(c_ids)]
    dc = dc_in
    truncate = attrs["truncate"]
    keep = None
    # a body input marked as the time mask of the lengths: truncation counts each sample's
    # own real steps (padded steps pass the carry on unchanged and must not use up k)
    masks = [i for i, x in enumerate(x_ids) if body.node(x)["attrs"].get("role") == TIME_MASK]
    if truncate > 0:
        per_step = body.type_of(Value(x_ids[masks[0]])) if masks else \
            TensorType((), body.type_of(Value(c_ids[0])).dtype)
        keep = bb.input("truncate_mask", per_step)
        dc = [bb.op("mul", d, keep) for d in dc_in]
    dy_used = [j for j in range(q) if gouts[k + j] is not None]
    dy = {j: bb.input(f"grad_step{j}", body.type_of(body.outputs[out_names[k + j]]))
          for j in dy_used}
    seeds: dict[Value, list[Value]] = {}
    for i in range(k):
        seeds.setdefault(bb.outputs[out_names[i]], []).append(dc[i])
    for j in dy_used:
        seeds.setdefault(bb.outputs[out_names[k + j]], []).append(dy[j])
    seed_vals = {v: _sum(bb, s) for v, s in seeds.items()}
    want_x = [wanted[k + i] for i in range(len(x_ids))]
    want_w = [wanted[k + len(x_ids) + i] for i in range(len(w_ids))]
    wrt = list(c_ids) + [x for x, w in zip(x_ids, want_x) if w] + \
        [x for x, w in zip(w_ids, want_w) if w]
    grads = backprop(bb, seed_vals, wrt)

    # the outputs of the backward body, built before the forward part is cut away
    bb.provenance = Provenance(layer=nd["layer"], line=nd["line"], phase="backward")
    dc_prev = [grads.get(c) or zeros(bb, body.type_of(Value(c))) for c in c_ids]
    acc_w = [w for w, want in zip(w_ids, want_w) if want]
    acc_in = [bb.input(f"grad_acc{i}", body.type_of(Value(w))) for i, w in enumerate(acc_w)]
    acc_out = [bb.op("add", a, grads[w]) if w in grads else a for a, w in zip(acc_in, acc_w)]
    dx = [grads.get(x) or zeros(bb, body.type_of(Value(x)))
          for x, want in zip(x_ids, want_x) if want]
    set_body_outputs(bb, dc_prev + acc_out, dx)

    # 2. forward values the backward nodes read become saved per-step outputs
    saved: list[Value] = []
    for n in bb.nodes():
        if n in forward_nodes:
            continue
        for v in bb.inputs_of(n):
            if v.node in forward_nodes and v.node not in x_ids and v.node not in w_ids \
                    and v not in saved:
                saved.append(v)
    for v in bb.outputs.values():
        if v.node in forward_nodes and v.node not in x_ids and v.node not in w_ids \
                and v not in saved:
            saved.append(v)
    saved_in = []
    for i, v in enumerate(saved):
        s_in = bb.input(f"saved{i}", bb.type_of(v))
        saved_in.append(s_in)
        for dst, slot in bb.consumers(v):
            if dst not in forward_nodes:
                _set_input(bb, dst, slot, s_in)
        for name, o in bb.outputs.items():
            if o == v:
                bb.outputs[name] = s_in
    for n in sorted(forward_nodes):
        if n in x_ids or n in w_ids:
            continue
        bb.remove_node(n)
    x_used = [x for x in x_ids if bb.consumers(Value(x))]
    w_used = [w for w in w_ids if bb.consumers(Value(w))]
    for n in x_ids + w_ids:
        if n not in x_used and n not in w_used:
            bb.remove_node(n)

    # the forward scan emits the saved values, stacked
    fwd_body = body.copy()
    base = len(out_names)
    for i, v in enumerate(saved):
        fwd_body.outputs[f"y{q + i}"] = v
    nd["attrs"] = {**attrs, "body": fwd_body}
    nd["types"] = list(nd["types"]) + [
        TensorType((g.type_of(seqs_in[0]).shape[0],) + body.type_of(v).shape, body.type_of(v).dtype)
        for v in saved]
    stacked = [Value(nid, base + i) for i in range(len(saved))]

    # 3. the backward scan
    bb.meta["inputs"] = (
        [d.node for d in dc_in] + [a.node for a in acc_in]
        + [dy[j].node for j in dy_used] + [s.node for s in saved_in]
        + ([keep.node] if keep is not None else []) + x_used + w_used)
    b_carries = [gouts[i] if gouts[i] is not None else zeros(g, g.type_of(carries_in[i]))
                 for i in range(k)]
    b_carries += [zeros(g, g.type_of(invs_in[w_ids.index(w)])) for w in acc_w]
    b_seqs = [gouts[k + j] for j in dy_used] + stacked
    if keep is not None:
        dtype = bb.type_of(keep).dtype
        if masks:
            b_seqs.append(g.op("truncate_mask", seqs_in[masks[0]], k=truncate,
                               from_end=not attrs["reverse"], per_sample=True, dtype=dtype))
        else:
            b_seqs.append(_truncate_mask(g, seqs_in[0], truncate, attrs["reverse"], dtype))
    b_seqs += [seqs_in[x_ids.index(x)] for x in x_used]
    b_invs = [invs_in[w_ids.index(w)] for w in w_used]
    # the backward body's inputs, in the order add_scan expects: carries, slices, invariants
    bwd = add_scan(g, bb, b_carries, b_seqs, b_invs, reverse=not attrs["reverse"])
    result: list[Value | None] = [Value(bwd, i) for i in range(k)]
    nacc = len(acc_w)
    xi = 0
    for want in want_x:
        result.append(Value(bwd, k + nacc + xi) if want else None)
        xi += bool(want)
    wi = 0
    for want in want_w:
        result.append(Value(bwd, k + wi) if want else None)
        wi += bool(want)
    return result


def _truncate_mask(g: Graph, seq: Value, k: int, reverse: bool, dtype: str) -> Value:
    """[T] (per step a scalar): 1 where the carries' gradient may still flow into the step,
    0 past k steps from where the backward loop starts."""
    return g.op("truncate_mask", seq, k=k, from_end=not reverse, dtype=dtype)


def _sum(g: Graph, vals: list[Value]) -> Value:
    total = vals[0]
    for v in vals[1:]:
        total = g.op("add", total, v)
    return total


def _set_input(g: Graph, dst: int, slot: int, new: Value) -> None:
    ins = g.inputs_of(dst)
    ins[slot] = new
    g.set_inputs(dst, ins)

