"""simplify: constant folding, algebraic identities, CSE and dead-code elimination, to a
fixed point. The backward graph produces plenty of all four (x * 1, reshape of a reshape,
the same sum twice, gradients nobody reads), and sums of slice gradients that are
concatenations."""

from __future__ import annotations

import json

import numpy as np

from graphdl.ir.graph import Graph, Value
from graphdl.ir.scan import body_output_names, lift_consts, map_bodies, rebuild, split_inputs
from graphdl.ops.registry import get_op

SOURCES = ("input", "param", "state", "const")
FOLD_LIMIT = 4096  # elements: larger constants stay computed at run time


def _const_value(g: Graph, v: Value):
    nd = g.node(v.node)
    if nd["op"] != "const":
        return None
    return np.asarray(nd["attrs"]["value"], dtype=nd["types"][0].dtype)


def fold_constants(g: Graph) -> bool:
    changed = False
    for nid in g.topo_order():
        nd = g.node(nid)
        opdef = get_op(nd["op"]) if nd["op"] not in SOURCES else None
        if opdef is None or g.num_outputs(nid) != 1 or opdef.takes_bindings or opdef.body:
            continue
        ins = g.inputs_of(nid)
        vals = [_const_value(g, v) for v in ins]
        if not ins or any(x is None for x in vals):
            continue
        t = nd["types"][0]
        if not t.is_concrete() or t.numel() > FOLD_LIMIT:
            continue
        out = np.asarray(get_op(nd["op"]).reference(nd["attrs"], *vals), dtype=t.dtype)
        new = g.add_node("const", (), {"value": out.tolist()}, types=[t],
                         layer=nd["layer"], line=nd["line"], phase=nd["phase"])
        g.replace_all_uses(Value(nid), Value(new))
        changed = True
    return changed


def _is_identity(g: Graph, op: str, attrs: dict, ins: list, out_t) -> bool:
    """x * 1, x + 0, and a reshape or broadcast to the shape x already has."""
    if op == "mul_scalar":
        return attrs["c"] == 1.0 and not attrs["div"]
    if op == "add_scalar":
        return attrs["c"] == 0.0
    return op in ("reshape", "broadcast_to") and g.type_of(ins[0]).shape == out_t.shape


def _is_const(g: Graph, v: Value, x: float) -> bool:
    c = _const_value(g, v)
    return c is not None and c.size > 0 and bool(np.all(c == x))


def identities(g: Graph) -> bool:
    """Rewrite x*1, x+0, x-0, x/1, neg(neg x), reshape/broadcast to the same shape, ..."""
    changed = False
    for nid in g.topo_order():
        if nid not in g:
            continue
        nd = g.node(nid)
        op, attrs = nd["op"], nd["attrs"]
        if op in SOURCES or g.num_outputs(nid) != 1:
            continue
        ins = g.inputs_of(nid)
        out_t = nd["types"][0]
        repl = None
        if op in ("mul", "add", "sub", "div"):
            neutral = 1.0 if op in ("mul", "div") else 0.0
            a, b = ins
            if _is_const(g, b, neutral) and g.type_of(a) == out_t:
                repl = a
            elif op in ("mul", "add") and _is_const(g, a, neutral) and g.type_of(b) == out_t:
                repl = b
        elif _is_identity(g, op, attrs, ins, out_t):
            repl = ins[0]
        elif op == "neg" and g.op_of(ins[0].node) == "neg":
            repl = g.inputs_of(ins[0].node)[0]
        elif op == "reshape" and g.op_of(ins[0].node) == "reshape":
            g.set_inputs(nid, [g.inputs_of(ins[0].node)[0]])
            changed = True
        elif op == "mul_scalar" and g.op_of(ins[0].node) == "mul_scalar" and len(g.consumers(ins[0])) == 1:
            inner = g.attrs(ins[0].node)
            attrs["c"] = attrs["c"] * inner["c"]
            attrs["div"] = tuple(attrs["div"]) + tuple(inner["div"])
            g.set_inputs(nid, [g.inputs_of(ins[0].node)[0]])
            changed = True
        if repl is not None:
            g.replace_all_uses(Value(nid), repl)
            changed = True
    return changed


def _sum_leaves(g: Graph, v: Value, t) -> list[Value]:
    """The terms of a tree of ``add`` nodes of type ``t`` rooted at ``v``; an inner add
    counts only where its value is read by the tree alone."""
    nd = g.node(v.node)
    if nd["op"] != "add" or nd["types"][0] != t:
        return [v]
    out = []
    for x in g.inputs_of(v.node):
        inner = g.node(x.node)
        if inner["op"] == "add" and len(g.consumers(x)) == 1 and inner["types"][0] == t:
            out += _sum_leaves(g, x, t)
        else:
            out.append(x)
    return out


def slice_grads_to_concat(g: Graph) -> bool:
    """A sum of slice gradients that tile their axis is the concatenation of the pieces:
    the gradient of the gate slices of an LSTM or GRU step, or of the q/k/v split of an
    attention projection, was zeros + copy per piece, then the pieces' sum; now one copy
    of each piece."""
    changed = False
    for nid in g.topo_order():
        if nid not in g or g.op_of(nid) != "add":
            continue
        t = g.node(nid)["types"][0]
        if t is None:
            continue
        leaves = _sum_leaves(g, Value(nid), t)
        if len(leaves) < 2 or any(g.op_of(v.node) != "slice_grad" for v in leaves):
            continue
        pieces = []
        for v in leaves:
            a = g.attrs(v.node)
            src_t = g.type_of(g.inputs_of(v.node)[0])
            axis = a["axis"] % t.rank
            if g.type_of(v) != t or a["size"] != t.shape[axis]:
                break
            pieces.append((axis, a["start"], src_t.shape[axis], g.inputs_of(v.node)[0]))
        else:
            axes = {p[0] for p in pieces}
            pieces.sort(key=lambda p: p[1])
            at = 0
            for _, start, size, _ in pieces:
                if start != at:
                    break
                at += size
            else:
                if len(axes) == 1 and at == t.shape[pieces[0][0]]:
                    nd = g.node(nid)
                    new = g.add_node("concat", [p[3] for p in pieces], {"axis": pieces[0][0]},
                                     types=[t], layer=nd["layer"], line=nd["line"],
                                     phase=nd["phase"])
                    g.replace_all_uses(Value(nid), Value(new))
                    changed = True
    return changed


def relu_into_max_pool_grad(g: Graph) -> bool:
    """relu_grad(max_pool2d_grad(gy, y), y), the pooling gradient read by nothing else, is
    max_pool2d_grad(gy, y, relu=True): relu then max pooling (a CNN's every block) gets its
    input gradient in one pass over the image, not a pass that routes gy and a second that
    masks it."""
    changed = False
    for nid in g.nodes_by_op("relu_grad"):
        pooled, y = g.inputs_of(nid)
        nd = g.node(pooled.node)
        if (nd["op"] != "max_pool2d_grad" or g.attrs(pooled.node).get("relu")
                or g.inputs_of(pooled.node)[1] != y or len(g.consumers(pooled)) != 1):
            continue
        new = g.add_node("max_pool2d_grad", list(g.inputs_of(pooled.node)),
                         {**g.attrs(pooled.node), "relu": True}, types=[g.type_of(Value(nid))],
                         layer=nd["layer"], line=nd["line"], phase=nd["phase"])
        g.replace_all_uses(Value(nid), Value(new))
        changed = True
    return changed


def _key(g: Graph, nid: int):
    nd = g.node(nid)
    return (
        nd["op"],
        json.dumps(nd["attrs"], sort_keys=True, default=str),
        tuple(g.inputs_of(nid)),
        tuple(str(t) for t in nd["types"]),
    )


def cse(g: Graph) -> bool:
    """Merge nodes with the same op, attributes and inputs (constants by value).

    Random ops (dropout, augmentation) merge too: the same seed and salt draw the same
    numbers (graphdl/ops/random.py)."""
    seen: dict = {}
    changed = False
    for nid in g.topo_order():
        nd = g.node(nid)
        if nd["op"] in ("input", "param", "state"):
            continue
        k = _key(g, nid)
        if k in seen:
            for i in range(g.num_outputs(nid)):
                g.replace_all_uses(Value(nid, i), Value(seen[k], i))
            changed = True
        else:
            seen[k] = nid
    return changed


def duplicate_scan_outputs(g: Graph) -> bool:
    """Read a scan's per-step output that repeats another (the same body value stacked
    twice: a BPTT loop returns its gate gradient once for the input weights' gradient and
    once for the recurrent weights') from the first; `dead_scan_outputs` then drops the
    copy, and CSE merges what was computed from both (the two bias gradients)."""
    changed = False
    roots = set(g.roots())
    for nid in g.nodes_by_op("scan"):
        attrs = g.attrs(nid)
        body = attrs["body"]
        k = attrs["num_carry"]
        names = body_output_names(body, k)
        first: dict[Value, int] = {}
        for i in range(k, len(names)):
            v = body.outputs[names[i]]
            if v not in first:
                first[v] = i
            elif g.consumers(Value(nid, i)) or Value(nid, i) in roots:
                g.replace_all_uses(Value(nid, i), Value(nid, first[v]))
                changed = True
    return changed


def dead_scan_outputs(g: Graph) -> bool:
    """Drop the per-step outputs of a scan that nothing reads (the sequence of a layer whose
    final state alone is used): the loop stops writing them. Carries stay: the loop needs
    them whether or not their final value is read."""
    changed = False
    roots = set(g.roots())
    for nid in g.nodes_by_op("scan"):
        attrs = g.attrs(nid)
        body = attrs["body"]
        k = attrs["num_carry"]
        names = body_output_names(body, k)
        read = [i for i in range(k, len(names))
                if g.consumers(Value(nid, i)) or Value(nid, i) in roots]
        if len(read) == len(names) - k:
            continue
        new_body = body.copy()
        new_body.outputs = {f"c{i}": body.outputs[names[i]] for i in range(k)}
        new_body.outputs.update({f"y{j}": body.outputs[names[i]] for j, i in enumerate(read)})
        carries, seqs, invs = split_inputs(attrs, g.inputs_of(nid))
        old = {i: i for i in range(k)}
        old.update({i: k + j for j, i in enumerate(read)})
        rebuild(g, nid, new_body, carries, seqs, invs, old)
        changed = True
    return changed


def dce(g: Graph) -> bool:
    """Remove nodes that no output or update needs (graph inputs stay: they are the API)."""
    import networkx as nx

    live = set()
    for v in g.roots():
        live.add(v.node)
        live |= nx.ancestors(g.nx, v.node)
    live |= set(g.updates)
    dead = [n for n in g.nodes() if n not in live and g.op_of(n) != "input"]
    for n in dead:
        g.remove_node(n)
    return bool(dead)


def simplify(graph: Graph) -> Graph:
    """Simplify to a fixed point; a scan's body is simplified as a graph of its own (the
    constants that leaves in it are lifted out as invariants, `graphdl.ir.scan`)."""
    g = graph.copy()
    for _ in range(20):
        changed = fold_constants(g)
        changed |= identities(g)
        changed |= slice_grads_to_concat(g)
        changed |= relu_into_max_pool_grad(g)
        changed |= duplicate_scan_outputs(g)
        changed |= dead_scan_outputs(g)
        changed |= dce(g)
        changed |= cse(g)
        changed |= dce(g)
        if not changed:
            break
    map_bodies(g, simplify)  # after dead_scan_outputs: what only a dropped output read goes
    for nid in g.nodes_by_op("scan"):
        lift_consts(g, nid)
    return g
