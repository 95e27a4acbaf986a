"""The reference interpreter: runs any graph with the ops' NumPy references.

It is the ground truth the passes and kernels are tested against: a pass must not change
what this interpreter computes, and a backend must compute the same numbers.
"""

from __future__ import annotations

import numpy as np

from graphdl.ir.graph import Graph, Value
from graphdl.ops.registry import get_op


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
        opdef = get_op(op)
        if opdef.takes_bindings:
            result = opdef.reference(nd["attrs"], *args, bindings=bindings)
        else:
            result = opdef.reference(nd["attrs"], *args)
        if not isinstance(result, tuple):
            result = (result,)
        for i, r in enumerate(result):
            values[Value(nid, i)] = np.asarray(r)
    outputs = {k: values[v] for k, v in graph.outputs.items()}
    updates = {graph.node(k)["name"]: values[v] for k, v in graph.updates.items()}
    return outputs, updates, (values if keep_all else {})
