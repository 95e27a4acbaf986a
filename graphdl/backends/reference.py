"""The reference interpreter: runs any graph with the ops' NumPy references.

It is the ground truth the passes and kernels are tested against: a pass must not change
what this interpreter computes, and a backend must compute the same numbers.
`run_reference` gives every value its own array and runs in topological order;
`run_planned` runs a scheduled, planned graph through its memory plan, as the generated
code does, so a wrong schedule or plan gives wrong numbers.
"""

from __future__ import annotations

import numpy as np

from graphdl.ir.graph import Graph, Value
from graphdl.ops.fused import run_members
from graphdl.ops.registry import get_op
from graphdl.passes.plan_memory import ALIGN, SOURCES, slot_sizes


def bind_symbols(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, int]:
    """Bind symbolic dims (N, T, ...) from the shapes of the fed inputs; check the rest."""
    bindings: dict[str, int] = {}
    for name, nid in graph.named("input").items():
        if name not in feeds:
            continue
        t = graph.type_of(Value(nid))
        arr = feeds[name]
        shape = arr.shape
        if len(shape) != t.rank:
            raise ValueError(f"input {name!r}: expected rank {t.rank} {t}, got shape {shape}")
        for d, s in zip(t.shape, shape):
            if isinstance(d, str):
                if bindings.setdefault(d, s) != s:
                    raise ValueError(f"input {name!r}: dim {d} is {bindings[d]} elsewhere, {s} here")
            elif d != s:
                raise ValueError(f"input {name!r}: expected shape {t}, got {shape}")
    return bindings


# run_reference and run_planned: a deliberate parallel of signatures and returns, so a test
# can run a graph through either; the evaluation loops differ (own arrays vs the plan).
def run_reference(
    graph: Graph,
    feeds: dict[str, np.ndarray],
    params: dict[str, np.ndarray] | None = None,
    state: dict[str, np.ndarray] | None = None,
    *,
    keep_all: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[Value, np.ndarray]]:
    """Evaluate the graph; returns (outputs by name, updates by param/state name, values).

    ``values`` holds every computed value when ``keep_all`` (for debugging and tests).
    """
    params = params or {}
    state = state or {}
    bindings = bind_symbols(graph, feeds)
    values: dict[Value, np.ndarray] = {}
    for nid in graph.topo_order():
        nd = graph.node(nid)
        op = nd["op"]
        if op == "input":
            values[Value(nid)] = np.asarray(feeds[nd["name"]])
            continue
        if op == "param":
            values[Value(nid)] = np.asarray(params[nd["name"]])
            continue
        if op == "state":
            values[Value(nid)] = np.asarray(state[nd["name"]])
            continue
        if op == "const":
            values[Value(nid)] = np.asarray(nd["attrs"]["value"], dtype=nd["types"][0].dtype)
            continue
        args = [values[v] for v in graph.inputs_of(nid)]
        result = _evaluate(get_op(op), nd["attrs"], args, bindings)
        for i, r in enumerate(result):
            values[Value(nid, i)] = np.asarray(r)
    outputs = {k: values[v] for k, v in graph.outputs.items()}
    updates = {graph.node(k)["name"]: values[v] for k, v in graph.updates.items()}
    return outputs, updates, (values if keep_all else {})


# ---------------------------------------------------------------- planned execution
#
# `run_planned` runs a graph the way its generated step function does: nodes in the
# schedule's order, every planned value in its arena slot, views over their base buffer,
# optimiser updates written over the parameter and state arrays. A wrong schedule or a
# wrong plan therefore gives wrong numbers here (or a `PlanError`), where `run_reference`,
# which gives every value its own array, cannot see it.

class PlanError(ValueError):
    """The schedule or the memory plan cannot be executed as it stands."""


# Deliberate parallel of run_reference's signature and returns (see there).
def run_planned(
    graph: Graph,
    feeds: dict[str, np.ndarray],
    params: dict[str, np.ndarray] | None = None,
    state: dict[str, np.ndarray] | None = None,
    *,
    keep_all: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[Value, np.ndarray]]:
    """Evaluate a scheduled and planned graph through its memory plan; same results as
    `run_reference` when the schedule and plan are right.

    Every value the plan puts in a slot lives in a view of a per-dtype NumPy arena (sized
    with `slot_sizes`, laid out like the compiled program's) and is read back from there,
    so a slot reused while its value is still needed hands the reader the newer data. A
    node's output buffers are filled with NaN (or an out-of-range integer) before the
    node reads its inputs, unless the op declares that output may overwrite that very
    input (`OpDef.inplace_ok`, or a fused elementwise loop): a kernel is free to write its
    output before it has read everything. An epilogue group's head writes the output
    before the loop reads the other inputs. The interpreter works on copies of
    ``params`` and ``state`` (the caller's arrays are left alone) and updates them the
    way the generated code does: in place where planned so, copied back at the end
    otherwise.

    Returns (outputs by name, updates by param/state name, values); ``values`` holds a
    copy of every computed value taken when it was computed, when ``keep_all``.

    Raises `PlanError` when the graph has no memory plan, when the schedule runs a node
    before one of its inputs, or when a slot is too small or of the wrong dtype.
    """
    if "memory_plan" not in graph.meta:
        raise PlanError("the graph has no memory plan: run schedule and plan_memory first")
    plan = graph.meta["memory_plan"]
    order = graph.meta.get("schedule") or graph.topo_order()
    bindings = bind_symbols(graph, feeds)
    arenas = _Arenas(plan, bindings)
    values = _bind_sources(graph, feeds, params or {}, state or {})
    kept: dict[Value, np.ndarray] = {}
    done = {nid for nid in graph.nodes() if graph.op_of(nid) in SOURCES}
    for nid in order:
        if graph.op_of(nid) in SOURCES:
            continue
        for v in graph.inputs_of(nid):
            if v.node not in done:
                raise PlanError(f"the schedule runs {graph.describe(nid)} before its input "
                                f"{graph.describe(v.node)}")
        _run_planned_node(graph, nid, plan["values"], arenas, bindings, values)
        done.add(nid)
        if keep_all:
            for i in range(graph.num_outputs(nid)):
                kept[Value(nid, i)] = values[Value(nid, i)].copy()
    for pid, v in graph.updates.items():
        if "inplace" not in plan["values"].get(_key(v), {}):
            # the generated code copies an update that was not planned in place at the end
            values[Value(pid)][...] = values[v]
    outputs = {k: np.array(values[v]) for k, v in graph.outputs.items()}
    updates = {graph.node(pid)["name"]: values[Value(pid)] for pid in graph.updates}
    return outputs, updates, kept


def _key(v: Value) -> str:
    return f"{v.node}:{v.index}"


def _value(key: str) -> Value:
    node, index = key.split(":")
    return Value(int(node), int(index))


def _bind_sources(graph: Graph, feeds, params, state) -> dict[Value, np.ndarray]:
    """Private copies of the inputs, parameters, state and constants, in their declared
    dtypes and shapes (a rank-0 state may come as shape (1,), as the program keeps it)."""
    given = {"input": feeds, "param": params, "state": state}
    values = {}
    for nid in graph.nodes():
        op = graph.op_of(nid)
        if op not in SOURCES:
            continue
        t = graph.type_of(Value(nid))
        raw = graph.attrs(nid)["value"] if op == "const" else given[op][graph.node(nid)["name"]]
        arr = np.array(raw, dtype=t.dtype, copy=True)
        values[Value(nid)] = arr.reshape(t.shape) if op in ("param", "state") else arr
    return values


class _Arenas:
    """One NumPy array per dtype, carved into the plan's slots like the compiled program's
    arenas (slot after slot, each `slot_sizes` elements), poisoned before first use."""

    def __init__(self, plan: dict, bindings: dict[str, int]):
        self.slots = plan["slots"]
        self.sizes = slot_sizes(plan, bindings)
        self.bindings = bindings
        self.offsets = []
        totals: dict[str, int] = {}
        for slot, size in zip(self.slots, self.sizes):
            self.offsets.append(totals.get(slot["dtype"], 0))
            totals[slot["dtype"]] = self.offsets[-1] + size
        self.arrays = {d: np.empty(max(n, ALIGN), d) for d, n in totals.items()}
        for arr in self.arrays.values():
            _poison(arr)

    def view(self, slot: int, t, what: str) -> np.ndarray:
        if not 0 <= slot < len(self.slots):
            raise PlanError(f"{what} is planned in slot {slot}, which does not exist")
        if self.slots[slot]["dtype"] != t.dtype:
            raise PlanError(f"{what} ({t}) is planned in slot {slot} of dtype "
                            f"{self.slots[slot]['dtype']}")
        shape = t.bind(self.bindings)
        n = int(np.prod(shape, dtype=np.int64))
        if n > self.sizes[slot]:
            raise PlanError(f"{what} ({t}, {n} elements) does not fit slot {slot} "
                            f"({self.sizes[slot]} elements)")
        start = self.offsets[slot]
        return self.arrays[t.dtype][start:start + n].reshape(shape)


def _poison(buf: np.ndarray) -> None:
    """Fill a buffer with values no correct computation reads: NaN, or an integer far out
    of range (an index read from it fails loudly)."""
    if buf.dtype.kind in "fc":
        buf.fill(np.nan)
    elif buf.dtype.kind == "b":
        buf.fill(True)
    else:
        buf.fill(np.iinfo(buf.dtype).min)


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    ia, ib = a.__array_interface__, b.__array_interface__
    return ia["data"][0] == ib["data"][0] and a.nbytes == b.nbytes and a.dtype == b.dtype


def _run_planned_node(graph: Graph, nid: int, plan: dict, arenas: _Arenas,
                      bindings: dict[str, int], values: dict[Value, np.ndarray]) -> None:
    """Run one scheduled node: outputs into their planned buffers, inputs read from theirs."""
    nd = graph.node(nid)
    opdef = get_op(nd["op"])
    ins = graph.inputs_of(nid)
    outs = [Value(nid, i) for i in range(graph.num_outputs(nid))]
    if opdef.view:
        # a view is its base buffer, reshaped; a returned view is copied out at once
        (out,) = outs
        base = values[ins[0]]
        view = base.reshape(graph.type_of(out).bind(bindings))
        if not np.shares_memory(view, base):
            raise PlanError(f"{graph.describe(nid)}: a view of a non-contiguous value")
        values[out] = view.copy() if plan.get(_key(out), {}).get("view") else view
        return
    bufs = [_planned_buffer(graph, v, plan, arenas, values) for v in outs]
    args = [values[v] for v in ins]
    fused_loop = nd["op"] == "fused" and nd["attrs"]["kind"] == "elementwise"
    for i, buf in enumerate(bufs):
        if buf is None:
            continue
        if fused_loop:
            may_overwrite = range(len(ins))
        elif len(outs) > 1:  # an optimiser update: output i over its own input
            may_overwrite = opdef.inplace_ok[i:i + 1]
        else:
            may_overwrite = opdef.inplace_ok
        if not any(j < len(args) and _same_memory(args[j], buf) for j in may_overwrite):
            _poison(buf)
    if nd["op"] == "fused" and nd["attrs"]["kind"] == "epilogue":
        results = (_run_epilogue(nd["attrs"]["members"], args, bufs[0], bindings),)
    else:
        results = _evaluate(opdef, nd["attrs"], args, bindings)
    for v, buf, r in zip(outs, bufs, results):
        if buf is None:
            values[v] = np.array(r, dtype=graph.type_of(v).dtype)
        else:
            buf[...] = r
            values[v] = buf


def _planned_buffer(graph: Graph, v: Value, plan: dict, arenas: _Arenas,
                    values: dict[Value, np.ndarray]) -> np.ndarray | None:
    """Where the plan puts a value: an arena slot, the buffer of the value it is updated in
    place over (a parameter or state), or None for a fresh array (a returned output)."""
    p = plan.get(_key(v))
    t = graph.type_of(v)
    what = f"{graph.describe(v.node)} output {v.index}"
    if p is None or "output" in p:
        return None
    if "slot" in p:
        return arenas.view(p["slot"], t, what)
    if "inplace" in p:
        target = values.get(_value(p["inplace"]))
        if target is None:
            raise PlanError(f"{what} is planned in place over {p['inplace']}, not yet computed")
        if target.size != t.numel(arenas.bindings) or target.dtype != np.dtype(t.dtype):
            raise PlanError(f"{what} ({t}) is planned in place over {p['inplace']} "
                            f"({target.dtype}{list(target.shape)})")
        return target.reshape(t.bind(arenas.bindings))
    raise PlanError(f"{what}: unknown plan entry {p}")


def _evaluate(opdef, attrs: dict, args: list[np.ndarray], bindings: dict[str, int]) -> tuple:
    if opdef.takes_bindings:
        result = opdef.reference(attrs, *args, bindings=bindings)
    else:
        result = opdef.reference(attrs, *args)
    return result if isinstance(result, tuple) else (result,)


def _run_epilogue(members: list[dict], args: list[np.ndarray], out: np.ndarray | None,
                  bindings: dict[str, int]) -> np.ndarray:
    """An epilogue group as the generated code runs it: the head (a matmul, a reduction)
    writes the output buffer first, then the loop reads the other inputs, so an input that
    shares the output's buffer is read clobbered."""
    if out is not None:
        out[...] = run_members(members[:1], args, bindings)
    return run_members(members, args, bindings)

