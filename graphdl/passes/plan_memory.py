"""plan_memory: liveness analysis over the schedule, buffer reuse and in-place updates.

Every computed value gets one of:
- ``slot``: a region of a per-dtype arena; slots are reused once their values die, and
  a slot's size is the largest value it ever holds (sizes are products of dims, some
  symbolic, so a slot is sized when the program binds the batch size);
- ``alias``: a view of another value's buffer (reshape), which extends that buffer's life;
- ``inplace``: the buffer of a dying input of the same size (elementwise ops) or of the
  parameter/state it updates (optimiser updates write in place);
- ``output``: a fresh array returned to the caller (a view op's output is copied).
The plan lives in ``meta["memory_plan"]``; `peak_bytes` evaluates it for a batch size.
"""

from __future__ import annotations

from graphdl.ir.graph import Graph, Value
from graphdl.ir.scan import map_bodies
from graphdl.ops.registry import get_op

SOURCES = ("input", "param", "state", "const")
ALIGN = 16  # elements: keep every slot 64-byte aligned for float32 SIMD


def _vkey(v: Value) -> str:
    return f"{v.node}:{v.index}"


def plan_memory(graph: Graph) -> Graph:
    g = graph.copy()
    map_bodies(g, plan_body)
    order = g.meta.get("schedule") or g.topo_order()
    pos = {n: i for i, n in enumerate(order)}
    # a pair of scans with their prologues and epilogues (graphdl.passes.schedule) run on two
    # threads: their values live together (one position), so a node of theirs writes in
    # place only over a value no other node reads (`_sole_reader`)
    thread_of: dict[int, int] = {}
    prologue = {s: nodes for s, nodes in g.meta.get("prologues", [])}
    epilogue = {s: nodes for s, nodes in g.meta.get("epilogues", [])}
    for a, b in g.meta.get("parallel", []):
        for s in (a, b):
            for n in [*prologue.get(s, []), s, *epilogue.get(s, [])]:
                pos[n] = pos[a]
                thread_of[n] = s
    for a, b in g.meta.get("parallel_gemms", []):
        pos[b] = pos[a]
        thread_of[a], thread_of[b] = a, b
    outputs = set(g.outputs.values())
    update_of = {v: pid for pid, v in g.updates.items()}  # new value -> param/state node

    plan: dict[str, dict] = {}
    root: dict[Value, Value] = {}  # value -> value owning its buffer

    def owner(v: Value) -> Value:
        while v in root:
            v = root[v]
        return v

    # last use of every buffer owner, following aliases
    last_use: dict[Value, int] = {}
    for n in order:
        for v in g.inputs_of(n):
            last_use[v] = max(last_use.get(v, -1), pos[n])
    for v in list(outputs) + list(g.updates.values()):
        last_use[v] = len(order)

    slots: list[dict] = []  # {"dtype", "shapes": [...], "free_at": int}
    slot_of: dict[Value, int] = {}

    def life_end(v: Value) -> int:
        return last_use.get(v, pos[v.node])

    # aliases first, so owners know how long their views live
    for n in order:
        nd = g.node(n)
        if nd["op"] in SOURCES:
            continue
        if get_op(nd["op"]).view and Value(n, 0) not in outputs:
            src = g.inputs_of(n)[0]
            root[Value(n, 0)] = src
    end_of_owner: dict[Value, int] = {}
    for n in order:
        for i in range(g.num_outputs(n)):
            v = Value(n, i)
            o = owner(v)
            end_of_owner[o] = max(end_of_owner.get(o, -1), life_end(v))

    for n in order:
        nd = g.node(n)
        if nd["op"] in SOURCES:
            continue
        opdef = get_op(nd["op"])
        ins = g.inputs_of(n)
        for i in range(g.num_outputs(n)):
            v = Value(n, i)
            t = g.type_of(v)
            if opdef.view:
                # a returned view is copied out: the caller keeps it after the next call
                plan[_vkey(v)] = {"output": True, "view": True} if v in outputs else {"alias": _vkey(ins[0])}
                continue
            if v in update_of:
                pid = update_of[v]
                # write over the param/state this value replaces (its input slot)
                src = next((x for x in ins if x.node == pid), None)
                readers_done = all(pos[c] <= pos[n] for c, _ in g.consumers(Value(pid)))
                if src is not None and readers_done:
                    plan[_vkey(v)] = {"inplace": _vkey(src), "param": g.node(pid)["name"]}
                    continue
            if v in outputs:
                plan[_vkey(v)] = {"output": True}
                continue
            reuse = None
            if _can_inplace(g, n, opdef):
                for slot_in in opdef.inplace_ok if nd["op"] != "fused" else range(len(ins)):
                    if slot_in >= len(ins):
                        continue
                    x = owner(ins[slot_in])
                    # no other input may be a view of the same buffer: it would be read
                    # at other positions while the loop overwrites it
                    others = [owner(o) for k, o in enumerate(ins) if k != slot_in and o != ins[slot_in]]
                    if (x in slot_of and end_of_owner.get(x) == pos[n]
                            and g.type_of(ins[slot_in]) == t and x not in others
                            and (n not in thread_of or _sole_reader(g, x, n, owner))):
                        reuse = slot_of[x]
                        break
            if reuse is None:
                reuse = _pick_slot(slots, t, pos[n])
            slot_of[v] = reuse
            slots[reuse]["shapes"].append(list(t.shape))
            slots[reuse]["free_at"] = end_of_owner.get(v, pos[n])
            plan[_vkey(v)] = {"slot": reuse}
    g.meta["memory_plan"] = {
        "values": plan,
        "slots": [{"dtype": s["dtype"], "shapes": s["shapes"]} for s in slots],
    }
    return g


def plan_body(body: Graph) -> Graph:
    """The plan of a scan's body: a view op aliases its input, every other value has a
    buffer of its own, allocated once before the loop and written at every step (a body's
    values are one step's: [N, H], not [T, N, H])."""
    g = body.copy()
    map_bodies(g, plan_body)
    plan: dict[str, dict] = {}
    for n in g.meta.get("schedule") or g.topo_order():
        nd = g.node(n)
        if nd["op"] in SOURCES:
            continue
        view = get_op(nd["op"]).view
        for i in range(g.num_outputs(n)):
            v = Value(n, i)
            plan[_vkey(v)] = {"alias": _vkey(g.inputs_of(n)[0])} if view else {"output": True}
    g.meta["memory_plan"] = {"values": plan, "slots": []}
    return g


def _sole_reader(g: Graph, x: Value, n: int, owner) -> bool:
    """Whether node ``n`` is the only reader of buffer ``x`` and of every view of it."""
    readers = {c for v in [x, *(Value(m, i) for m in g.nodes() for i in range(g.num_outputs(m)))]
               if owner(v) == x for c, _ in g.consumers(v)}
    return readers == {n}


def _can_inplace(g: Graph, n: int, opdef) -> bool:
    nd = g.node(n)
    if nd["op"] == "fused":
        # an epilogue head writes the output before the loop reads the other inputs
        return nd["attrs"]["kind"] == "elementwise"
    return bool(opdef.inplace_ok) and opdef.scalar is not None


def _pick_slot(slots: list[dict], t, now: int) -> int:
    """A free slot of the dtype, preferring one whose values have the same shape."""
    best = None
    for i, s in enumerate(slots):
        if s["dtype"] != t.dtype or s["free_at"] >= now:
            continue
        score = 0 if list(t.shape) in s["shapes"] else 1
        if best is None or score < best[0]:
            best = (score, i)
    if best is not None:
        return best[1]
    slots.append({"dtype": t.dtype, "shapes": [], "free_at": now})
    return len(slots) - 1


def slot_sizes(plan: dict, bindings: dict[str, int]) -> list[int]:
    """Elements per slot under ``bindings`` (rank-0 values take one element)."""
    sizes = []
    for s in plan["slots"]:
        n = 0
        for shape in s["shapes"]:
            k = 1
            for d in shape:
                k *= bindings[d] if isinstance(d, str) else d
            n = max(n, k)
        sizes.append((max(n, 1) + ALIGN - 1) // ALIGN * ALIGN)
    return sizes


def peak_bytes(g: Graph, bindings: dict[str, int]) -> int:
    """Planned bytes: arena slots + parameters + state (+ returned outputs)."""
    import numpy as np

    plan = g.meta["memory_plan"]
    total = 0
    for s, n in zip(plan["slots"], slot_sizes(plan, bindings)):
        total += n * np.dtype(s["dtype"]).itemsize
    for n in g.nodes():
        if g.op_of(n) in ("param", "state"):
            total += g.type_of(Value(n)).nbytes(bindings)
    for v in g.outputs.values():
        total += g.type_of(v).nbytes(bindings)
    for nid in g.nodes_by_op("scan"):  # a body's buffers, one step's values each
        body = g.attrs(nid)["body"]
        for key, p in body.meta["memory_plan"]["values"].items():
            if "output" in p:
                total += body.type_of(Value(*map(int, key.split(":")))).nbytes(bindings)
    return total
