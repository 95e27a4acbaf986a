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
    total = 0
    for nid in g.nodes():
        nd = g.node(nid)
        if nd["op"] in SOURCE_OPS:
            continue
        ins = [g.type_of(v) for v in g.inputs_of(nid)]
        if nd["op"] == "scan":  # its body once per time step
            steps = ins[nd["attrs"]["num_carry"]].bind(bindings)[0]
            total += steps * flops(nd["attrs"]["body"], bindings)
            continue
        if nd["op"] == "fused":
            vals: list[TensorType] = []
            for m in nd["attrs"]["members"]:
                mins = [ins[r[1]] if r[0] == "input" else vals[r[1]] for r in m["inputs"]]
                out = TensorType.from_json(m["type"])
                total += op_flops(m["op"], m["attrs"], mins, out, bindings)
                vals.append(out)
            continue
        total += op_flops(nd["op"], nd["attrs"], ins, g.type_of(Value(nid)), bindings)
    return total
