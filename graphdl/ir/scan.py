"""`scan`: the loop of the IR, a node that holds a body `Graph` run once per time step.

A scan node's inputs are, in order, the initial carries (``num_carry`` of them), the
sequences (``num_seq``: time-major ``[T, ...]`` values, sliced on axis 0) and the
loop-invariant values the body reads from outside (weights; everything else). Its outputs
are the final carries, then the body's per-step outputs stacked on a new leading time
axis ``[T, ...]``. ``reverse`` runs the steps from ``T - 1`` down to 0 (the stacked outputs
stay in time order).

The body is a graph of its own. Its inputs are ``input`` nodes listed in order in
``body.meta["inputs"]`` (carries, per-step slices, invariants, matching the scan node's
inputs one to one); its outputs are ``body.outputs["c<i>"]`` (the next value of carry i)
and ``body.outputs["y<j>"]`` (per-step output j). A body holds no ``const`` node: the
builder lifts constants out as invariants (`lift_consts`), so every number a generated
loop reads is an argument of the step, as outside.

Per-sample lengths are expressed by ops, not by the loop: a recurrent layer passes a time
mask (``seq_mask`` of the lengths) as one more sequence and its body keeps the carry where
the mask is 0 and zeroes the output there (`graphdl.layers.sequence`), so lengths need no
special case in any pass or backend and are differentiated like every other op.

Passes treat a body as a graph of their own (they recurse through `map_bodies`); a pass
never changes a body in place, it sets a new one: bodies are shared between copies of the
outer graph (`Graph.copy` copies attributes shallowly).
"""

from __future__ import annotations

from collections.abc import Callable

from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType

SCAN = "scan"
# the role of a body input that is the time mask of per-sample lengths ([N, 1] per step):
# truncated BPTT counts each sample's own real steps (graphdl.passes.scan_autodiff)
TIME_MASK = "time_mask"


def body_inputs(body: Graph) -> list[int]:
    """The body's input node ids in the scan node's input order."""
    return list(body.meta["inputs"])


def body_output_names(body: Graph, num_carry: int) -> list[str]:
    """The body's outputs in the scan node's output order: c0.., then y0.."""
    ys = len(body.outputs) - num_carry
    return [f"c{i}" for i in range(num_carry)] + [f"y{j}" for j in range(ys)]


def num_outputs_of(body: Graph) -> int:
    return len(body.outputs)


def split_inputs(attrs: dict, ins: list) -> tuple[list, list, list]:
    """(carries, sequences, invariants) of a scan node's inputs."""
    k, s = attrs["num_carry"], attrs["num_seq"]
    return list(ins[:k]), list(ins[k:k + s]), list(ins[k + s:])


def new_body(carry_types: list[TensorType], seq_types: list[TensorType],
             inv_types: list[TensorType]) -> tuple[Graph, list[Value], list[Value], list[Value]]:
    """An empty body with typed inputs for carries, per-step slices (the types given are the
    slices', without the time axis) and invariants; returns (body, carries, slices, invs)."""
    body = Graph()
    ids: list[int] = []
    groups = []
    for prefix, types in (("carry", carry_types), ("step", seq_types), ("inv", inv_types)):
        vals = []
        for i, t in enumerate(types):
            v = body.input(f"{prefix}{i}", t)
            ids.append(v.node)
            vals.append(v)
        groups.append(vals)
    body.meta["inputs"] = ids
    return body, groups[0], groups[1], groups[2]


def add_body_input(body: Graph, name: str, t: TensorType) -> Value:
    """A new invariant input of ``body`` (appended last)."""
    v = body.input(name, t)
    body.meta["inputs"] = body_inputs(body) + [v.node]
    return v


def set_body_outputs(body: Graph, next_carries: list[Value], ys: list[Value]) -> None:
    body.outputs = {f"c{i}": v for i, v in enumerate(next_carries)}
    body.outputs.update({f"y{j}": v for j, v in enumerate(ys)})


def add_scan(g: Graph, body: Graph, carries: list[Value], seqs: list[Value],
             invariants: list[Value], *, reverse: bool = False, truncate: int = 0) -> int:
    """Add a scan node running ``body`` (its consts lifted out first); returns its id. The
    node is typed at once when its inputs are."""
    if not seqs:
        raise ValueError("a scan needs at least one sequence input (its length is T)")
    body = body.copy()
    invariants = list(invariants)
    _lift(g, body, invariants)
    attrs = g.apply_attrs(SCAN, {"body": body, "num_carry": len(carries), "num_seq": len(seqs),
                                 "reverse": reverse, "truncate": truncate})
    nid = g.add_node(SCAN, list(carries) + list(seqs) + invariants, attrs,
                     num_outputs=num_outputs_of(body))
    g.infer_node(nid)
    return nid


def lift_consts(g: Graph, nid: int) -> None:
    """Move the ``const`` nodes of scan ``nid``'s body out to ``g`` as invariant inputs."""
    attrs = g.attrs(nid)
    body = attrs["body"]
    if not body.nodes_by_op("const"):
        return
    body = body.copy()
    invs = []
    _lift(g, body, invs)
    nd = g.node(nid)
    nd["attrs"] = {**attrs, "body": body}
    g.set_inputs(nid, g.inputs_of(nid) + invs)


def _lift(g: Graph, body: Graph, invariants: list[Value]) -> None:
    for c in sorted(body.nodes_by_op("const")):
        cnd = body.node(c)
        outer = Value(g.add_node("const", (), {"value": cnd["attrs"]["value"]},
                                 types=list(cnd["types"]), layer=cnd["layer"],
                                 line=cnd["line"], phase=cnd["phase"]))
        inner = add_body_input(body, f"inv_const{c}", cnd["types"][0])
        body.replace_all_uses(Value(c), inner)
        body.remove_node(c)
        invariants.append(outer)


def map_bodies(g: Graph, fn: Callable[[Graph], Graph]) -> None:
    """Replace the body of every scan node of ``g`` by ``fn(body)`` (in place on ``g``,
    which a pass has already copied)."""
    for nid in g.nodes_by_op(SCAN):
        nd = g.node(nid)
        nd["attrs"] = {**nd["attrs"], "body": fn(nd["attrs"]["body"])}


def rebuild(g: Graph, nid: int, body: Graph, carries: list[Value], seqs: list[Value],
            invariants: list[Value],
            old_outputs: dict[int, int | Callable[[int], Value]]) -> int:
    """Replace scan ``nid`` by a new scan over ``body`` (whose ``meta["inputs"]`` lists its
    inputs in the order carries, sequences, invariants); ``old_outputs`` maps each output
    index of the old node that is read to an output index of the new node, or to a
    function of the new node's id that builds the Value replacing it. Returns the new
    node's id."""
    nd = g.node(nid)
    attrs = {**nd["attrs"], "body": body, "num_carry": len(carries), "num_seq": len(seqs)}
    new = g.add_node(SCAN, list(carries) + list(seqs) + list(invariants), attrs,
                     num_outputs=num_outputs_of(body), layer=nd["layer"], line=nd["line"],
                     phase=nd["phase"])
    g.infer_node(new)
    for i in range(g.num_outputs(nid)):
        if not g.consumers(Value(nid, i)) and Value(nid, i) not in g.roots():
            continue
        to = old_outputs[i]
        g.replace_all_uses(Value(nid, i), Value(new, to) if isinstance(to, int) else to(new))
    g.remove_node(nid)
    return new

