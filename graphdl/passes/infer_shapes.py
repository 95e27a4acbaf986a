"""infer_shapes: a type for every value, from the graph inputs through each op's `infer`."""

from __future__ import annotations

from graphdl.errors import Diagnostic, GraphdlError
from graphdl.ir.graph import Graph, Value
from graphdl.ops.registry import ShapeError, get_op


def infer_shapes(graph: Graph) -> Graph:
    """Re-infer every non-source node's output types; a failure names the node and layer."""
    g = graph.copy()
    for nid in g.topo_order():
        nd = g.node(nid)
        if nd["op"] in ("input", "param", "state", "const"):
            if any(t is None for t in nd["types"]):
                raise ValueError(f"source node {g.describe(nid)} has no type")
            continue
        in_types = [g.type_of(v) for v in g.inputs_of(nid)]
        if get_op(nd["op"]).body:  # a scan: its body's values are typed too
            nd["attrs"] = {**nd["attrs"], "body": infer_shapes(nd["attrs"]["body"])}
        try:
            nd["types"] = list(get_op(nd["op"]).infer(nd["attrs"], in_types))
        except ShapeError as e:
            raise GraphdlError(
                Diagnostic(
                    "E303",
                    f"{nd['op']} in layer {nd['layer']!r}: {e}",
                    file=g.meta.get("spec_path"),
                    line=nd["line"],
                    help=e.help,
                ),
                phase="shapes",
            ) from None
    for v in g.roots():
        g.type_of(Value(*v))
    return g
