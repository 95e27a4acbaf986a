"""The computation graph: a networkx.MultiDiGraph of op nodes with typed outputs.

Nodes are integer ids. Each node holds ``op`` (a registry name), ``attrs`` (plain data),
``types`` (one TensorType per output, ``None`` before shape inference) and provenance:
``layer`` (the spec layer that made it), ``line`` (its YAML line) and ``phase``
(forward / backward / update). Edges run producer -> consumer and carry
``out_index`` and ``in_slot`` so one value can feed two slots of one node (x * x).

Graph inputs, parameters, optimiser state and constants are nodes too
(``input``, ``param``, ``state``, ``const``). ``outputs`` names the values a program
returns; ``updates`` maps a param/state node to the value that replaces it after a step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

import networkx as nx
import numpy as np

from graphdl.ir.optable import lookup
from graphdl.ir.types import TensorType

PHASES = ("forward", "backward", "update")
SOURCE_OPS = ("input", "param", "state", "const")


class Value(NamedTuple):
    """One output of one node."""

    node: int
    index: int = 0


@dataclass
class Provenance:
    layer: str | None = None
    line: int | None = None
    phase: str = "forward"


class Graph:
    """A dataflow graph; see the module docstring for the data it holds."""

    def __init__(self) -> None:
        self.nx = nx.MultiDiGraph()
        self._next_id = 0
        self.outputs: dict[str, Value] = {}
        self.updates: dict[int, Value] = {}  # param/state node id -> its new value
        self.meta: dict[str, Any] = {}
        # the provenance new nodes get, so layer builders and autodiff need not repeat it
        self.provenance = Provenance()

    # ----------------------------------------------------------------- building
    def add_node(
        self,
        op: str,
        inputs: list[Value] | tuple[Value, ...] = (),
        attrs: dict | None = None,
        *,
        name: str | None = None,
        types: list[TensorType | None] | None = None,
        num_outputs: int | None = None,
        layer: str | None = None,
        line: int | None = None,
        phase: str | None = None,
    ) -> int:
        nid = self._next_id
        self._next_id += 1
        prov = self.provenance
        if num_outputs is None:
            num_outputs = len(types) if types is not None else _default_num_outputs(op)
        self.nx.add_node(
            nid,
            op=op,
            attrs=dict(attrs or {}),
            name=name,
            types=list(types) if types is not None else [None] * num_outputs,
            layer=layer if layer is not None else prov.layer,
            line=line if line is not None else prov.line,
            phase=phase or prov.phase,
        )
        for slot, v in enumerate(inputs):
            if not isinstance(v, Value):
                raise TypeError(f"input {slot} of {op} is {v!r}, not a Value")
            self.nx.add_edge(v.node, nid, out_index=v.index, in_slot=slot)
        return nid

    def op(self, op: str, *inputs: Value, **attrs) -> Value:
        """Add a single-output op and return its value (the builder's main verb).

        Attributes are checked against the op's signature and defaults filled; when every
        input is typed the output types are inferred at once.
        """
        return Value(self.apply(op, list(inputs), attrs), 0)

    def apply(self, op: str, inputs: list[Value], attrs: dict | None = None) -> int:
        """Add an op node with checked attributes; infer its types when inputs are typed."""
        opdef = lookup(op)
        attrs = self.apply_attrs(op, attrs or {})
        nid = self.add_node(op, inputs, attrs, num_outputs=opdef.num_outputs)
        self.infer_node(nid)
        return nid

    @staticmethod
    def apply_attrs(op: str, attrs: dict) -> dict:
        """``attrs`` checked against op's signature, defaults filled."""
        return lookup(op).check_attrs(attrs)

    def infer_node(self, nid: int) -> None:
        """Type the node's outputs with its op's `infer` when all its inputs are typed."""
        nd = self.nx.nodes[nid]
        in_types = [self.nx.nodes[v.node]["types"][v.index] for v in self.inputs_of(nid)]
        if all(t is not None for t in in_types):
            nd["types"] = list(lookup(nd["op"]).infer(nd["attrs"], in_types))

    def input(self, name: str, ttype: TensorType) -> Value:
        return Value(self.add_node("input", (), {}, name=name, types=[ttype]), 0)

    def param(self, name: str, ttype: TensorType, **attrs) -> Value:
        return Value(self.add_node("param", (), attrs, name=name, types=[ttype]), 0)

    def state(self, name: str, ttype: TensorType, **attrs) -> Value:
        return Value(self.add_node("state", (), attrs, name=name, types=[ttype]), 0)

    def const(self, value, dtype: str = "float32") -> Value:
        arr = np.asarray(value, dtype=dtype)
        ttype = TensorType(arr.shape, dtype)
        return Value(self.add_node("const", (), {"value": arr.tolist()}, types=[ttype]), 0)

    # ----------------------------------------------------------------- queries
    def node(self, nid: int) -> dict:
        return self.nx.nodes[nid]

    def __contains__(self, nid: int) -> bool:
        return nid in self.nx

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def nodes(self) -> list[int]:
        return list(self.nx.nodes)

    def op_of(self, nid: int) -> str:
        return self.nx.nodes[nid]["op"]

    def attrs(self, nid: int) -> dict:
        return self.nx.nodes[nid]["attrs"]

    def type_of(self, v: Value) -> TensorType:
        t = self.nx.nodes[v.node]["types"][v.index]
        if t is None:
            raise ValueError(f"value {v} of node {self.describe(v.node)} has no type yet")
        return t

    def set_type(self, v: Value, t: TensorType) -> None:
        self.nx.nodes[v.node]["types"][v.index] = t

    def num_outputs(self, nid: int) -> int:
        return len(self.nx.nodes[nid]["types"])

    def inputs_of(self, nid: int) -> list[Value]:
        """The node's input values, ordered by slot."""
        edges = sorted(self.nx.in_edges(nid, data=True), key=lambda e: e[2]["in_slot"])
        return [Value(u, d["out_index"]) for u, _, d in edges]

    def consumers(self, v: Value) -> list[tuple[int, int]]:
        """(node, slot) pairs that read ``v``."""
        return sorted(
            (dst, d["in_slot"])
            for _, dst, d in self.nx.out_edges(v.node, data=True)
            if d["out_index"] == v.index
        )

    def nodes_by_op(self, op: str) -> list[int]:
        return [n for n, d in self.nx.nodes(data=True) if d["op"] == op]

    def find(self, op: str, name: str) -> int:
        for n, d in self.nx.nodes(data=True):
            if d["op"] == op and d["name"] == name:
                return n
        raise KeyError(f"no {op} named {name!r}")

    def named(self, op: str) -> dict[str, int]:
        """name -> node id for every node of ``op`` (inputs, params, state)."""
        return {d["name"]: n for n, d in self.nx.nodes(data=True) if d["op"] == op}

    def topo_order(self) -> list[int]:
        """A deterministic topological order (ties broken by node id)."""
        return list(nx.lexicographical_topological_sort(self.nx))

    def describe(self, nid: int) -> str:
        d = self.nx.nodes[nid]
        where = f" (layer {d['layer']!r}, line {d['line']})" if d.get("layer") else ""
        label = d["name"] or d["op"]
        return f"%{nid}:{label}{where}"

    def roots(self) -> list[Value]:
        """Values that must stay alive: outputs and updates."""
        return list(self.outputs.values()) + list(self.updates.values())

    # ----------------------------------------------------------------- rewriting
    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Point every consumer of ``old`` (and outputs/updates) at ``new``."""
        if old == new:
            return
        for dst, slot in self.consumers(old):
            for key, d in list(self.nx.get_edge_data(old.node, dst).items()):
                if d["out_index"] == old.index and d["in_slot"] == slot:
                    self.nx.remove_edge(old.node, dst, key)
            self.nx.add_edge(new.node, dst, out_index=new.index, in_slot=slot)
        for k, v in self.outputs.items():
            if v == old:
                self.outputs[k] = new
        for k, v in self.updates.items():
            if v == old:
                self.updates[k] = new

    def set_inputs(self, nid: int, inputs: list[Value]) -> None:
        self.nx.remove_edges_from(list(self.nx.in_edges(nid, keys=True)))
        for slot, v in enumerate(inputs):
            self.nx.add_edge(v.node, nid, out_index=v.index, in_slot=slot)

    def remove_node(self, nid: int) -> None:
        self.nx.remove_node(nid)

    def copy(self) -> Graph:
        g = Graph()
        g.nx = self.nx.copy()
        for n in g.nx.nodes:
            d = g.nx.nodes[n]
            d["attrs"] = dict(d["attrs"])
            d["types"] = list(d["types"])
        g._next_id = self._next_id
        g.outputs = dict(self.outputs)
        g.updates = dict(self.updates)
        g.meta = json.loads(json.dumps(self.meta))
        return g

    # ----------------------------------------------------------------- JSON
    def to_json(self) -> dict:
        nodes = []
        for n in self.topo_order():
            d = self.nx.nodes[n]
            nodes.append(
                {
                    "id": n,
                    "op": d["op"],
                    "name": d["name"],
                    "attrs": _jsonable(d["attrs"]),
                    "types": [t.to_json() if t else None for t in d["types"]],
                    "inputs": [[v.node, v.index] for v in self.inputs_of(n)],
                    "layer": d["layer"],
                    "line": d["line"],
                    "phase": d["phase"],
                }
            )
        return {
            "format": "graphdl-graph/1",
            "nodes": nodes,
            "outputs": {k: list(v) for k, v in self.outputs.items()},
            "updates": [[k, list(v)] for k, v in self.updates.items()],
            "meta": self.meta,
        }

    @staticmethod
    def from_json(data: dict) -> Graph:
        g = Graph()
        for nd in data["nodes"]:
            nid = nd["id"]
            g.nx.add_node(
                nid,
                op=nd["op"],
                attrs=_from_jsonable(nd["attrs"]),
                name=nd["name"],
                types=[TensorType.from_json(t) if t else None for t in nd["types"]],
                layer=nd["layer"],
                line=nd["line"],
                phase=nd["phase"],
            )
            g._next_id = max(g._next_id, nid + 1)
        for nd in data["nodes"]:
            for slot, (u, idx) in enumerate(nd["inputs"]):
                g.nx.add_edge(u, nd["id"], out_index=idx, in_slot=slot)
        g.outputs = {k: Value(*v) for k, v in data["outputs"].items()}
        g.updates = {int(k): Value(*v) for k, v in data["updates"]}
        g.meta = data.get("meta", {})
        return g

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1)


def _default_num_outputs(op: str) -> int:
    return lookup(op).num_outputs


def _jsonable(attrs: dict) -> dict:
    out = {}
    for k, v in attrs.items():
        if isinstance(v, Graph):  # a scan's body
            out[k] = {"__graph__": v.to_json()}
        elif isinstance(v, tuple):
            out[k] = {"__tuple__": [list(x) if isinstance(x, tuple) else x for x in v]}
        elif isinstance(v, np.ndarray):
            out[k] = v.tolist()
        elif isinstance(v, np.generic):
            out[k] = v.item()
        else:
            out[k] = v
    return out


def _from_jsonable(attrs: dict) -> dict:
    out = {}
    for k, v in attrs.items():
        if isinstance(v, dict) and "__graph__" in v:
            out[k] = Graph.from_json(v["__graph__"])
        elif isinstance(v, dict) and "__tuple__" in v:
            out[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v["__tuple__"])
        else:
            out[k] = v
    return out
