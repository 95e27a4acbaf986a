"""Cost estimates for `graphdl compile`: floating-point operations per graph execution."""

from __future__ import annotations

from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType

# rough per-element costs of the non-matmul ops (a multiply-add counts as 2)
PER_ELEMENT = {"softmax_cross_entropy": 5, "softmax_cross_entropy_grad": 6, "softmax": 4,
               "log_softmax": 4, "adam_update": 12, "momentum_update": 5, "sgd_update": 3,
               "dropout": 2}
SOURCES = ("input", "param", "state", "const")


def _op_flops(op: str, attrs: dict, ins: list[TensorType], out: TensorType, b: dict) -> int:
    if op.startswith("conv2d"):
        from graphdl.ops.conv import conv_flops

        return conv_flops(op, ins, out, b)
    if op == "matmul":
        a = ins[0]
        m, k = (a.shape[-1], a.shape[-2]) if attrs.get("transpose_a") else (a.shape[-2], a.shape[-1])
        batch = 1
        for d in a.shape[:-2]:
            batch *= b[d] if isinstance(d, str) else d
        m = b[m] if isinstance(m, str) else m
        k = b[k] if isinstance(k, str) else k
        n = out.shape[-1]
        return 2 * batch * m * k * (b[n] if isinstance(n, str) else n)
    if op in ("sum", "mean", "max"):
        return ins[0].numel(b)
    return PER_ELEMENT.get(op, 1) * max(out.numel(b), ins[0].numel(b) if ins else 1)


def flops(g: Graph, bindings: dict[str, int]) -> int:
    total = 0
    for nid in g.nodes():
        nd = g.node(nid)
        if nd["op"] in SOURCES:
            continue
        ins = [g.type_of(v) for v in g.inputs_of(nid)]
        if nd["op"] == "fused":
            vals: list[TensorType] = []
            for m in nd["attrs"]["members"]:
                mins = [ins[r[1]] if r[0] == "input" else vals[r[1]] for r in m["inputs"]]
                out = TensorType.from_json(m["type"])
                total += _op_flops(m["op"], m["attrs"], mins, out, bindings)
                vals.append(out)
            continue
        total += _op_flops(nd["op"], nd["attrs"], ins, g.type_of(Value(nid)), bindings)
    return total
