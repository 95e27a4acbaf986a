"""Cost estimates for `graphdl compile`: floating-point operations per graph execution,
from each op's own `cost` (or `flops_per_element`) in its definition."""

from __future__ import annotations

from graphdl.ir.graph import SOURCE_OPS, Graph, Value
from graphdl.ir.types import TensorType
from graphdl.ops.registry import get_op


def op_flops(op: str, attrs: dict, ins: list[TensorType], out: TensorType, bindings: dict) -> int:
    """Operations of one op node (a multiply-add counts 2)."""
    opdef = get_op(op)
    if opdef.cost is not None:
        return opdef.cost(attrs, ins, out, bindings)
    return opdef.flops_per_element * max(out.numel(bindings), ins[0].numel(bindings) if ins else 1)


def flops(g: Graph, bindings: dict[str, int]) -> int:
    """Operations of one execution of ``g`` with its symbols bound (a fused node counts
    its members, a scan its body once per step)."""
    return sum(node_flops(g, nid, bindings) for nid in g.nodes())


def node_flops(g: Graph, nid, bindings: dict[str, int]) -> int:
    """Operations of one execution of node ``nid`` of ``g`` (0 for inputs, parameters,
    state and constants); the run report sums them per spec layer."""
    nd = g.node(nid)
    if nd["op"] in SOURCE_OPS:
        return 0
    ins = [g.type_of(v) for v in g.inputs_of(nid)]
    if nd["op"] == "scan":  # its body once per time step
        steps = ins[nd["attrs"]["num_carry"]].bind(bindings)[0]
        return steps * flops(nd["attrs"]["body"], bindings)
    if nd["op"] == "fused":
        total = 0
        vals: list[TensorType] = []
        for m in nd["attrs"]["members"]:
            mins = [ins[r[1]] if r[0] == "input" else vals[r[1]] for r in m["inputs"]]
            out = TensorType.from_json(m["type"])
            total += op_flops(m["op"], m["attrs"], mins, out, bindings)
            vals.append(out)
        return total
    return op_flops(nd["op"], nd["attrs"], ins, g.type_of(Value(nid)), bindings)
