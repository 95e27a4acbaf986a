"""The verifier run between passes: every value typed, edges well formed, acyclic."""

from __future__ import annotations

import networkx as nx

from graphdl.ir.graph import Graph, Value
from graphdl.ir.optable import lookup


class VerifyError(AssertionError):
    """A pass broke a graph invariant: a bug in graphdl, not a user error."""


def verify(g: Graph, after: str = "") -> None:
    where = f" after {after}" if after else ""
    if not nx.is_directed_acyclic_graph(g.nx):
        raise VerifyError(f"graph has a cycle{where}")
    for nid in g.nodes():
        nd = g.node(nid)
        op = lookup(nd["op"])
        ins = g.inputs_of(nid)
        slots = sorted(d["in_slot"] for _, _, d in g.nx.in_edges(nid, data=True))
        if slots != list(range(len(slots))):
            raise VerifyError(f"{g.describe(nid)} has input slots {slots}{where}")
        sized = nd["op"] not in ("input", "param", "state", "const") and not op.variadic
        if sized and len(ins) != len(op.inputs):
            raise VerifyError(
                f"{g.describe(nid)} has {len(ins)} inputs, {op.name} takes {len(op.inputs)}{where}"
            )
        if op.body:
            _verify_body(g, nid, where)
        elif len(nd["types"]) != op.num_outputs and nd["op"] not in ("input", "param", "state", "const"):
            raise VerifyError(f"{g.describe(nid)} has {len(nd['types'])} output types{where}")
        if any(t is None for t in nd["types"]):
            raise VerifyError(f"{g.describe(nid)} has an untyped output{where}")
        if nd["phase"] not in ("forward", "backward", "update"):
            raise VerifyError(f"{g.describe(nid)} has phase {nd['phase']!r}{where}")
        for v in ins:
            if v.index >= g.num_outputs(v.node):
                raise VerifyError(f"{g.describe(nid)} reads a missing output {v}{where}")
    for name, v in list(g.outputs.items()) + [(str(k), v) for k, v in g.updates.items()]:
        if v.node not in g or v.index >= g.num_outputs(v.node):
            raise VerifyError(f"output/update {name} points at a missing value{where}")
    for k in g.updates:
        if k not in g or g.op_of(k) not in ("param", "state"):
            raise VerifyError(f"update target {k} is not a param/state node{where}")
        if g.type_of(Value(k)) != g.type_of(g.updates[k]):
            raise VerifyError(f"update of {g.describe(k)} changes its type{where}")


def _verify_body(g: Graph, nid: int, where: str) -> None:
    """A scan's body: a verified graph of its own, with one input per scan input, one output
    per scan output and no constant (`graphdl.ir.scan`)."""
    nd = g.node(nid)
    body = nd["attrs"]["body"]
    ids = body.meta.get("inputs", [])
    if len(ids) != len(g.inputs_of(nid)) or any(body.op_of(i) != "input" for i in ids):
        raise VerifyError(f"{g.describe(nid)}: its body's inputs do not match its "
                          f"{len(g.inputs_of(nid))} inputs{where}")
    if len(body.outputs) != len(nd["types"]):
        raise VerifyError(f"{g.describe(nid)} has {len(nd['types'])} outputs, its body "
                          f"{len(body.outputs)}{where}")
    if body.nodes_by_op("const"):
        raise VerifyError(f"{g.describe(nid)}: its body holds a const (lift it){where}")
    verify(body, after=f"{after_of(where)} (body of {g.describe(nid)})")


def after_of(where: str) -> str:
    return where.removeprefix(" after ")
