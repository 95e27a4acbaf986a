"""fuse: merge elementwise chains, and elementwise epilogues of out-fusable (matmul) and
reduction ops, into single `fused` kernel nodes.

The rule (TVM's pattern kinds, simplified to trees): an elementwise or broadcast node joins
the group of a producer when the producer's value has exactly one consumer (this node) and
is not a graph output, so the intermediate never needs a buffer. Because every member but
the group's root has its only consumer inside the group, merging cannot create a cycle.
A group whose first member is a matmul or a reduction is an *epilogue* group: the producer
writes the output buffer and the elementwise part finishes it in place, so the epilogue's
output must have the producer's shape. A `slice` whose only consumer is in a group joins it
as a *read* of a value outside the group: the loop reads that value at the slice's offset
instead of a copy (an LSTM's four gates are slices of one [N, 4H] product). Groups are
capped in size and external inputs.

A fused node keeps its members (op, attrs, types, original node id) for drawing and
debugging; the `fused` op's reference runs them with the members' references.
"""

from __future__ import annotations

from graphdl.ir.graph import Graph, Value
from graphdl.ir.scan import map_bodies
from graphdl.ops.registry import Pattern, get_op

MAX_MEMBERS = 64
MAX_INPUTS = 16


def _is_elementwise(g: Graph, nid: int) -> bool:
    nd = g.node(nid)
    if nd["op"] in ("input", "param", "state", "const", "fused"):
        return False
    op = get_op(nd["op"])
    return op.scalar is not None and op.pattern <= Pattern.BROADCAST and op.num_outputs == 1


def _is_epilogue_head(g: Graph, nid: int) -> bool:
    nd = g.node(nid)
    if nd["op"] in ("input", "param", "state", "const", "fused"):
        return False
    op = get_op(nd["op"])
    return op.pattern in (Pattern.OUT_FUSABLE, Pattern.REDUCTION) and op.num_outputs == 1 and op.emit_cpu is not None


def _is_sliced_read(g: Graph, nid: int) -> bool:
    return g.node(nid)["op"] == "slice"


def _reads_outside(g: Graph, members: list[int]) -> bool:
    """Whether every slice in ``members`` reads a value from outside the group (the loop
    reads it at an offset; a value inside the group has no buffer to read from)."""
    ms = set(members)
    return all(g.inputs_of(m)[0].node not in ms for m in members if _is_sliced_read(g, m))


def _single_private_consumer(g: Graph, v: Value, roots: set) -> int | None:
    if v in roots:
        return None
    cons = g.consumers(v)
    if len(cons) != 1:
        return None
    return cons[0][0]


def find_groups(g: Graph) -> list[list[int]]:
    """Groups of node ids (each in topological order, the root last)."""
    roots = set(g.roots())
    order = g.topo_order()
    position = {n: i for i, n in enumerate(order)}
    group_of: dict[int, int] = {}  # node -> group id
    groups: dict[int, list[int]] = {}
    next_gid = 0
    for nid in order:
        if not _is_elementwise(g, nid):
            continue
        out_type = g.node(nid)["types"][0]
        candidates: list[list[int]] = []
        for v in g.inputs_of(nid):
            if _single_private_consumer(g, v, roots) != nid:
                continue
            if v.node in group_of:
                candidates.append(groups[group_of[v.node]])
            elif _is_epilogue_head(g, v.node) or _is_sliced_read(g, v.node):
                candidates.append([v.node])
        merged = [nid]
        has_head = False
        absorbed = []
        for grp in candidates:
            if grp in absorbed:
                continue
            grp_head = _is_epilogue_head(g, grp[0])
            # the head writes the group's output buffer: it must have the output's full type
            if grp_head and (has_head or g.node(grp[0])["types"][0] != out_type):
                continue
            tentative = grp + merged
            if (len(tentative) > MAX_MEMBERS or _external_inputs(g, tentative) > MAX_INPUTS
                    or not _reads_outside(g, tentative)):
                continue
            merged = tentative
            has_head |= grp_head
            absorbed.append(grp)
        for grp in absorbed:
            groups.pop(group_of.get(grp[0], -1), None)
        gid = next_gid
        next_gid += 1
        merged.sort(key=position.__getitem__)
        if has_head:  # the head runs first; the rest are elementwise and order-free after it
            head = next(m for m in merged if _is_epilogue_head(g, m))
            merged = [head] + [m for m in merged if m != head]
        for m in merged:
            group_of[m] = gid
        groups[gid] = merged
    return list(groups.values())


def _external_inputs(g: Graph, members: list[int]) -> int:
    ms = set(members)
    return len({v for m in members for v in g.inputs_of(m) if v.node not in ms})


def fuse(graph: Graph) -> Graph:
    """Replace each group by one `fused` node (single-member elementwise groups too, so
    every elementwise op reaches the backend through one code path)."""
    g = graph.copy()
    map_bodies(g, fuse)
    for members in find_groups(g):
        _collapse(g, members)
    return g


def _collapse(g: Graph, members: list[int]) -> int:
    ms = set(members)
    ext: list[Value] = []
    spec = []
    index = {m: i for i, m in enumerate(members)}
    for m in members:
        nd = g.node(m)
        refs = []
        for v in g.inputs_of(m):
            if v.node in ms:
                refs.append(["member", index[v.node], v.index])
            else:
                if v not in ext:
                    ext.append(v)
                refs.append(["input", ext.index(v)])
        spec.append(
            {
                "op": nd["op"],
                "attrs": dict(nd["attrs"]),
                "inputs": refs,
                "type": nd["types"][0].to_json(),
                "orig_id": m,
                "layer": nd["layer"],
                "line": nd["line"],
            }
        )
    root = members[-1]
    rnd = g.node(root)
    head = g.node(members[0])
    kind = "epilogue" if _is_epilogue_head(g, members[0]) else "elementwise"
    new = g.add_node(
        "fused",
        ext,
        {"kind": kind, "members": spec},
        types=[rnd["types"][0]],
        layer=head["layer"] if kind == "epilogue" else rnd["layer"],
        line=head["line"] if kind == "epilogue" else rnd["line"],
        phase=rnd["phase"],
    )
    g.replace_all_uses(Value(root), Value(new))
    for m in members:
        g.remove_node(m)
    return new
