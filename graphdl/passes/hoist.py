"""hoist: loop-invariant code motion out of scans (what cuDNN does to an RNN: most of its
FLOPs leave the sequential part).

Two passes share this module:

- `hoist` (before autodiff): a body op that reads no carry, only per-step slices of
  sequences and invariants, runs for every step at once before the loop, and the body
  reads its result as one more sequence. The input projection of a recurrent layer,
  x_t W_ih^T + b_ih for every t, becomes one GEMM over all N·T rows, and autodiff then
  differentiates it outside the loop too (dX and dW_ih are single GEMMs).
- `hoist_grads` (after autodiff): a carry that only accumulates, acc' = acc + a_t^T b_t (a
  weight's gradient) or acc' = acc + sum_n b_t (a bias's), leaves the loop: the body emits
  the per-step values (stacked [T, ...]) and one `matmul_rows` (or `sum`) after the loop
  adds every step at once.

An op moves out only when its stacked form is the same op on the stacked values:
elementwise ops whose per-step inputs have the output's rank and whose invariant inputs
no higher rank (broadcasting aligns from the right, so the leading T is free), a matmul of
a per-step matrix by an invariant one, and slices (the axis shifts by one). Each pass
records what it moved in ``graph.meta["hoisted"]``, which `graphdl compile` prints.
"""

from __future__ import annotations

from collections.abc import Callable

import networkx as nx

from graphdl.ir.graph import Graph, Provenance, Value
from graphdl.ir.scan import (
    body_inputs,
    body_output_names,
    rebuild,
    split_inputs,
)
from graphdl.ops.registry import Pattern, get_op
from graphdl.passes.simplify import cse, dce, dead_scan_outputs, duplicate_scan_outputs

SOURCES = ("input", "param", "state", "const")
SEQ, INV = "seq", "inv"


def hoist(graph: Graph) -> Graph:
    """Move the ops of every scan body that read no carry before the loop."""
    g = graph.copy()
    for nid in sorted(g.nodes_by_op("scan")):
        _hoist_invariant(g, nid)
    return g


def hoist_grads(graph: Graph) -> Graph:
    """Move the per-step accumulations of weight and bias gradients after the loop; a
    per-step value emitted for two of them (an LSTM's gate gradient, for W_ih and for
    W_hh) is stacked once, and the sums over it computed once (the two biases')."""
    g = graph.copy()
    for nid in sorted(g.nodes_by_op("scan")):
        _hoist_accumulators(g, nid)
    if duplicate_scan_outputs(g):
        dead_scan_outputs(g)
        cse(g)
        dce(g)
    return g


# ------------------------------------------------------------------ analysis

def _kinds(body: Graph, attrs: dict) -> dict[Value, str]:
    """The body values that read no carry: SEQ (differs per step) or INV (the same at
    every step), for the values whose stacked form is the same op (`_stackable`)."""
    _, x_ids, w_ids = split_inputs(attrs, body_inputs(body))
    kind = {Value(x): SEQ for x in x_ids}
    kind.update({Value(w): INV for w in w_ids})
    for n in body.topo_order():
        nd = body.node(n)
        if nd["op"] in SOURCES or body.num_outputs(n) != 1:
            continue
        ins = body.inputs_of(n)
        if ins and all(v in kind for v in ins) and _stackable(body, n, [kind[v] for v in ins]):
            kind[Value(n)] = SEQ if SEQ in (kind[v] for v in ins) else INV
    return kind


def _stackable(body: Graph, n: int, kinds: list[str]) -> bool:
    """Whether op ``n`` on the stacked per-step inputs ([T, ...]) and the invariants is
    the stack of its per-step results."""
    nd = body.node(n)
    op = get_op(nd["op"])
    ins = body.inputs_of(n)
    if SEQ not in kinds:
        return not op.body and op.name not in ("dropout",)  # computed once, outside
    out_rank = body.type_of(Value(n)).rank
    if op.scalar is not None and op.pattern <= Pattern.BROADCAST:
        return all((body.type_of(v).rank == out_rank) if k == SEQ else
                   (body.type_of(v).rank <= out_rank) for v, k in zip(ins, kinds))
    if nd["op"] == "matmul":
        a, b = ins
        return (kinds == [SEQ, INV] and body.type_of(a).rank == 2
                and body.type_of(b).rank == 2 and not nd["attrs"]["transpose_a"])
    return nd["op"] == "slice"


class _Stacker:
    """Builds, in the outer graph, the stacked form of body values (memoised)."""

    def __init__(self, g: Graph, body: Graph, kind: dict[Value, str], x_ids: list[int],
                 seqs: list[Value], w_ids: list[int], invs: list[Value]):
        self.g, self.body, self.kind = g, body, kind
        # the body's sequence slices stand for the sequences, its invariants for themselves
        self.outer = {Value(x): s for x, s in zip(x_ids, seqs)}
        self.outer.update({Value(w): v for w, v in zip(w_ids, invs)})
        self.moved: list[str] = []

    def __call__(self, v: Value) -> Value:
        if v in self.outer:
            return self.outer[v]
        nd = self.body.node(v.node)
        ins = [self(x) for x in self.body.inputs_of(v.node)]
        attrs = dict(nd["attrs"])
        if nd["op"] == "slice" and self.kind[v] == SEQ:
            rank = self.body.type_of(v).rank
            attrs["axis"] = attrs["axis"] % rank + 1
        self.g.provenance = Provenance(layer=nd["layer"], line=nd["line"], phase=nd["phase"])
        out = Value(self.g.apply(nd["op"], ins, attrs), 0)
        want, got = self.body.type_of(v), self.g.type_of(out)
        stacked = got.shape[1:] if self.kind[v] == SEQ else got.shape
        assert stacked == want.shape, f"hoisting {nd['op']}: {got} is not {want} stacked"
        self.outer[v] = out
        self.moved.append(nd["op"])
        return out


def _dce(body: Graph) -> None:
    live = set()
    for v in body.outputs.values():
        live |= nx.ancestors(body.nx, v.node) | {v.node}
    for n in body.nodes():
        if n not in live and body.op_of(n) != "input":
            body.remove_node(n)


# ------------------------------------------------------------------ hoist

def _hoist_invariant(g: Graph, nid: int) -> int:
    nd = g.node(nid)
    attrs = nd["attrs"]
    body: Graph = attrs["body"]
    carries, seqs, invs = split_inputs(attrs, g.inputs_of(nid))
    c_ids, x_ids, w_ids = split_inputs(attrs, body_inputs(body))
    kind = _kinds(body, attrs)
    outputs = set(body.outputs.values())
    moving = []
    for n in body.topo_order():
        v = Value(n)
        if body.op_of(n) in SOURCES or v not in kind:
            continue
        readers = [c for c, _ in body.consumers(v)]
        if v in outputs or any(Value(r) not in kind for r in readers):
            moving.append(v)
    if not moving:
        return nid
    stack = _Stacker(g, body, kind, x_ids, seqs, w_ids, invs)
    bb = body.copy()
    new_seq, new_inv, seq_in, inv_in = [], [], [], []
    for i, v in enumerate(moving):
        o = stack(v)
        b_in = bb.input(f"hoisted{i}", body.type_of(v))
        bb.replace_all_uses(v, b_in)
        (new_seq if kind[v] == SEQ else new_inv).append(o)
        (seq_in if kind[v] == SEQ else inv_in).append(b_in.node)
    _dce(bb)
    bb.meta["inputs"] = c_ids + x_ids + seq_in + w_ids + inv_in
    all_seqs, all_invs = seqs + new_seq, invs + new_inv
    k = len(c_ids)
    n_seq = len(all_seqs)
    keep = _prune_inputs(bb, k, n_seq)
    seqs_kept = [all_seqs[p - k] for p in keep if k <= p < k + n_seq]
    invs_kept = [all_invs[p - k - n_seq] for p in keep if p >= k + n_seq]
    _record(g, nd, "before the loop", stack.moved)
    outs = {i: i for i in range(g.num_outputs(nid))}
    return rebuild(g, nid, bb, carries, seqs_kept, invs_kept, outs)


def _prune_inputs(body: Graph, k: int, n_seq: int) -> list[int]:
    """Remove the body inputs nothing reads but the carries and one sequence (its length is
    the loop's); returns the positions kept, in the scan's input order."""
    ids = body_inputs(body)
    read = [bool(body.consumers(Value(b))) or Value(b) in body.outputs.values() for b in ids]
    if not any(read[k:k + n_seq]):
        read[k] = True
    kept = [p for p in range(len(ids)) if p < k or read[p]]
    for p in range(len(ids)):
        if p not in kept:
            body.remove_node(ids[p])
    body.meta["inputs"] = [ids[p] for p in kept]
    return kept


def _record(g: Graph, nd: dict, where: str, ops: list[str]) -> None:
    if ops:
        g.meta.setdefault("hoisted", []).append(
            {"layer": nd["layer"], "phase": nd["phase"], "where": where, "ops": ops})


# ------------------------------------------------------------------ accumulators

def _hoist_accumulators(g: Graph, nid: int) -> int:
    nd = g.node(nid)
    attrs = nd["attrs"]
    body: Graph = attrs["body"]
    k = attrs["num_carry"]
    carries, seqs, invs = split_inputs(attrs, g.inputs_of(nid))
    c_ids, x_ids, w_ids = split_inputs(attrs, body_inputs(body))
    names = body_output_names(body, k)
    kind = _kinds(body, attrs)
    found = {}  # carry index -> (how, [per-step values])
    for i, c in enumerate(c_ids):
        o = body.outputs[names[i]]
        if body.op_of(o.node) != "add" or list(body.outputs.values()).count(o) != 1:
            continue
        a, b = body.inputs_of(o.node)
        contrib = b if a == Value(c) else a if b == Value(c) else None
        if contrib is None or [x for x, _ in body.consumers(Value(c))] != [o.node]:
            continue
        if body.consumers(o) or len(body.consumers(contrib)) != 1:
            continue
        cnd = body.node(contrib.node)
        cins = body.inputs_of(contrib.node)
        if (cnd["op"] == "matmul" and cnd["attrs"]["transpose_a"]
                and not cnd["attrs"]["transpose_b"]
                and all(body.type_of(v).rank == 2 for v in cins)):
            found[i] = ("matmul_rows", cins)
        elif (cnd["op"] == "sum" and tuple(cnd["attrs"]["axes"] or ()) == (0,)
              and not cnd["attrs"]["keepdims"] and body.type_of(cins[0]).rank == 2):
            found[i] = ("sum", cins)
    if not found:
        return nid
    stack = _Stacker(g, body, kind, x_ids, seqs, w_ids, invs)
    bb = body.copy()
    q = len(names) - k
    extra: list[Value] = []  # per-step values the loop now emits
    plans = {}
    for i, (how, vals) in found.items():
        srcs = []
        for v in vals:
            if kind.get(v) == SEQ:
                srcs.append(("outer", stack(v)))
            else:
                if v not in extra:
                    extra.append(v)
                srcs.append(("emitted", extra.index(v)))
        plans[i] = (how, srcs)
    removed = sorted(found)
    kept_carries = [i for i in range(k) if i not in found]
    new_outputs = {}
    for new_i, i in enumerate(kept_carries):
        new_outputs[f"c{new_i}"] = body.outputs[names[i]]
    for j in range(q):
        new_outputs[f"y{j}"] = body.outputs[names[k + j]]
    for e, v in enumerate(extra):
        new_outputs[f"y{q + e}"] = v
    bb.outputs = new_outputs
    for i in removed:
        bb.remove_node(c_ids[i])
    _dce(bb)
    nk = len(kept_carries)
    bb.meta["inputs"] = [c_ids[i] for i in kept_carries] + x_ids + w_ids
    old = {}
    for new_i, i in enumerate(kept_carries):
        old[i] = new_i
    for j in range(q):
        old[k + j] = nk + j
    for i in removed:
        old[i] = _total(g, nd, carries[i], plans[i], nk + q)
    _record(g, nd, "after the loop", [plans[i][0] for i in removed] + stack.moved)
    return rebuild(g, nid, bb, [carries[i] for i in kept_carries], seqs, invs, old)


def _total(g: Graph, nd: dict, init: Value, plan, first_extra: int) -> Callable[[int], Value]:
    """The accumulated value after the loop: init + every step's contribution at once."""
    how, srcs = plan

    def build(new: int) -> Value:
        vals = [v if where == "outer" else Value(new, first_extra + v) for where, v in srcs]
        g.provenance = Provenance(layer=nd["layer"], line=nd["line"], phase=nd["phase"])
        if how == "matmul_rows":
            total = g.op("matmul_rows", *vals)
        else:
            total = g.op("sum", vals[0], axes=(0, 1), keepdims=False)
        return g.op("add", init, total)

    return build

