"""The view model every output format draws from: plain JSON-able dicts.

``stage_data(graph)`` describes one graph: its nodes (op, spec layer and line, phase,
typed outputs with their size in bytes, attributes, estimated FLOPs, planned memory, fused
members, generated source) and the collapsible groups made from spec layer names
(``encoder.0.dense_2`` sits in ``encoder.0`` inside ``encoder``), split by phase so that a
layer's forward and backward ops form separate groups.

``compare_data(a, b)`` maps the nodes of two stages onto each other. Passes keep node ids,
and a ``fused`` node records the original ids of its members, so a node of one stage
corresponds to the nodes of the other that share an id with it, counting a fused node as
its own id plus its members' ``orig_id``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphdl.ir.graph import Graph
from graphdl.ir.types import TensorType
from graphdl.ops.registry import get_op

# friendly stage names -> PassContext snapshot names
STAGES = {
    "lowered": "lowered",
    "training": "autodiff",
    "fused": "fuse",
    "optimized": "plan_memory",
}
SNAPSHOTS = ("lowered", "infer_shapes", "autodiff", "simplify", "fuse", "schedule", "plan_memory")
STAGE_TITLES = {
    "lowered": "lowered (from the spec)",
    "infer_shapes": "after shape inference",
    "autodiff": "training graph (after autodiff)",
    "simplify": "after simplify",
    "fuse": "after fusion",
    "schedule": "after scheduling",
    "plan_memory": "optimized (final, memory planned)",
}
PHASES = ("forward", "backward", "update")
SOURCE_OPS = ("input", "param", "state", "const")
DEFAULT_BATCH = 32


class _Bindings(dict):
    """Symbol -> size; a symbol nobody bound takes the default batch size."""

    def __init__(self, values: dict | None = None, default: int = DEFAULT_BATCH):
        super().__init__(values or {})
        self.default = default

    def __missing__(self, key):
        return self.default

    def __bool__(self) -> bool:  # TensorType.numel treats an empty mapping as "no bindings"
        return True


def snapshot_name(stage: str) -> str:
    """The snapshot key of a stage given by friendly or pass name."""
    if stage in STAGES:
        return STAGES[stage]
    if stage in SNAPSHOTS:
        return stage
    raise KeyError(stage)


def type_text(t: TensorType | None) -> str | None:
    if t is None:
        return None
    return f"{t.dtype}[{', '.join(str(d) for d in t.shape)}]"


def _nbytes(t: TensorType | None, b: _Bindings) -> int | None:
    if t is None:
        return None
    return int(t.numel(b) * np.dtype(t.dtype).itemsize)


def _summarise(value: Any, depth: int = 0) -> Any:
    """Attributes as JSON, long lists shortened (constants can hold whole arrays)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        items = list(value)
        if len(items) > 12:
            flat = np.asarray(items, dtype=object).ravel().tolist() if depth == 0 else items
            return f"[{len(flat)} values: " + ", ".join(str(x) for x in flat[:6]) + ", ...]"
        return [_summarise(x, depth + 1) for x in items]
    if isinstance(value, dict):
        return {str(k): _summarise(v, depth + 1) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _op_flops(op: str, attrs: dict, ins: list[TensorType], out: TensorType, b) -> int | None:
    from graphdl.ops.cost import op_flops as cost_of

    try:
        return int(cost_of(op, attrs, ins, out, b))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        # an op the cost model cannot size: no estimate
        return None


def _node_flops(g: Graph, nid: int, b: _Bindings) -> int | None:
    nd = g.node(nid)
    if nd["op"] in SOURCE_OPS:
        return 0
    ins = [g.node(v.node)["types"][v.index] for v in g.inputs_of(nid)]
    if any(t is None for t in ins):
        return None
    if nd["op"] == "fused":
        total = 0
        vals: list[TensorType] = []
        for m in nd["attrs"]["members"]:
            mins = [ins[r[1]] if r[0] == "input" else vals[r[1]] for r in m["inputs"]]
            out = TensorType.from_json(m["type"])
            f = _op_flops(m["op"], m["attrs"], mins, out, b)
            if f is None:
                return None
            total += f
            vals.append(out)
        return total
    out = nd["types"][0] if nd["types"] else None
    if out is None:
        return None
    return _op_flops(nd["op"], nd["attrs"], ins, out, b)


def _memory(g: Graph, nid: int, plan: dict | None, slot_bytes: list[int], b) -> dict | None:
    nd = g.node(nid)
    out_bytes = [_nbytes(t, b) or 0 for t in nd["types"]]
    if nd["op"] in ("param", "state"):
        return {"bytes": sum(out_bytes), "plan": [f"{nd['op']} storage"]}
    if plan is None:
        return None
    total = 0
    notes = []
    for i, t in enumerate(nd["types"]):
        e = plan["values"].get(f"{nid}:{i}")
        if e is None:
            continue
        if "slot" in e:
            s = e["slot"]
            total += out_bytes[i]
            notes.append(f"out {i}: arena slot {s} ({plan['slots'][s]['dtype']}, "
                         f"{slot_bytes[s]:,} B, shared over the step)")
        elif "output" in e:
            total += out_bytes[i]
            notes.append(f"out {i}: fresh returned array ({out_bytes[i]:,} B)")
        elif "inplace" in e:
            what = e.get("param") or f"%{e['inplace']}"
            notes.append(f"out {i}: in place of {what} (0 B new)")
        elif "alias" in e:
            notes.append(f"out {i}: view of %{e['alias']} (0 B new)")
    return {"bytes": total, "plan": notes}


def _groups(nodes: list[dict]) -> list[dict]:
    """Layer groups (phase, dotted prefix) holding at least two nodes; sets node['group']."""
    counts: dict[tuple[str, str], int] = {}
    lines: dict[tuple[str, str], int] = {}
    for n in nodes:
        if not n["layer"]:
            continue
        parts = str(n["layer"]).split(".")
        for i in range(1, len(parts) + 1):
            key = (n["phase"], ".".join(parts[:i]))
            counts[key] = counts.get(key, 0) + 1
            if n["line"] is not None:
                lines[key] = min(lines.get(key, n["line"]), n["line"])
    phases = {n["phase"] for n in nodes}
    groups: dict[tuple[str, str], dict] = {}

    def deepest(phase: str, parts: list[str], upto: int) -> str | None:
        for i in range(upto, 0, -1):
            key = (phase, ".".join(parts[:i]))
            if counts.get(key, 0) >= 2:
                return f"{phase}:{key[1]}"
        return None

    for (phase, path), c in counts.items():
        if c < 2:
            continue
        parts = path.split(".")
        groups[(phase, path)] = {
            "id": f"{phase}:{path}",
            "path": path,
            "phase": phase,
            "label": path + (f" ({phase})" if len(phases) > 1 else ""),
            "parent": deepest(phase, parts, len(parts) - 1),
            "line": lines.get((phase, path)),
            "size": c,
        }
    for n in nodes:
        n["group"] = None
        if n["layer"]:
            parts = str(n["layer"]).split(".")
            n["group"] = deepest(n["phase"], parts, len(parts))
    order = {p: i for i, p in enumerate(PHASES)}

    def natural(path: str) -> list:
        return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.split(".")]

    return sorted(groups.values(),
                  key=lambda g: (order.get(g["phase"], 9), g["line"] or 0, natural(g["path"])))


def node_title(op: str, name: str | None, fused: dict | None) -> str:
    if fused is not None:
        ops = [m["op"] for m in fused["members"]]
        text = "fused: " + "+".join(ops)
        if len(text) <= 32:
            return text
        head = f"fused ×{len(ops)}: "
        for member_op in ops:
            if len(head) + len(member_op) > 30:
                break
            head += member_op + "+"
        return head.rstrip("+") + "+…"
    if name:
        return f"{op} {name}"
    return op


def node_subtitle(layer: str | None, line: int | None) -> str:
    if not layer:
        return ""
    return f"{layer}" + (f" · line {line}" if line is not None else "")


def stage_data(
    graph: Graph,
    *,
    name: str = "graph",
    title: str | None = None,
    source: str | None = None,
    bindings: dict[str, int] | None = None,
) -> dict:
    """One graph as the JSON the viewer and the static renderers use."""
    from graphdl.passes.plan_memory import slot_sizes
    from graphdl.viz.source import node_sources

    b = _Bindings(bindings)
    plan = graph.meta.get("memory_plan")
    slot_bytes: list[int] = []
    if plan is not None:
        sizes = slot_sizes(plan, b)
        slot_bytes = [n * np.dtype(s["dtype"]).itemsize for s, n in zip(plan["slots"], sizes)]
    sources = node_sources(source)
    order = graph.meta.get("schedule") or []
    if set(order) == set(graph.nodes()):
        nids = list(order)
    else:
        nids = graph.topo_order()
    roots = {}
    for k, v in graph.outputs.items():
        roots.setdefault(v.node, []).append(f"output {k}")
    for pid, v in graph.updates.items():
        roots.setdefault(v.node, []).append(f"updates {graph.node(pid)['name'] or pid}")
    nodes = []
    for nid in nids:
        nd = graph.node(nid)
        attrs = dict(nd["attrs"])
        fused = None
        if nd["op"] == "fused":
            members = attrs.pop("members", [])
            fused = {
                "kind": attrs.get("kind"),
                "members": [
                    {
                        "op": m["op"],
                        "orig_id": m.get("orig_id"),
                        "layer": m.get("layer"),
                        "line": m.get("line"),
                        "type": type_text(TensorType.from_json(m["type"])) if m.get("type") else None,
                        "bytes": _nbytes(TensorType.from_json(m["type"]), b) if m.get("type") else None,
                        "inputs": [list(r) for r in m["inputs"]],
                        "attrs": _summarise(m.get("attrs", {})),
                    }
                    for m in members
                ],
            }
        ins = graph.inputs_of(nid)
        node = {
            "id": nid,
            "op": nd["op"],
            "name": nd["name"],
            "layer": nd["layer"],
            "line": nd["line"],
            "phase": nd["phase"],
            "title": node_title(nd["op"], nd["name"], fused),
            "sub": node_subtitle(nd["layer"], nd["line"]),
            "types": [type_text(t) for t in nd["types"]],
            "bytes": [_nbytes(t, b) for t in nd["types"]],
            "inputs": [[v.node, v.index] for v in ins],
            "in_types": [type_text(graph.node(v.node)["types"][v.index]) for v in ins],
            "attrs": _summarise(attrs),
            "doc": get_op(nd["op"]).doc,
            "flops": _node_flops(graph, nid, b),
            "mem": _memory(graph, nid, plan, slot_bytes, b),
            "roots": roots.get(nid, []),
        }
        if fused is not None:
            node["fused"] = fused
        if nid in sources:
            node["source"] = sources[nid]
        nodes.append(node)
    groups = _groups(nodes)
    return {
        "name": name,
        "title": title or STAGE_TITLES.get(name, name),
        "nodes": nodes,
        "groups": groups,
        "bindings": {k: int(v) for k, v in (bindings or {}).items()},
        "default_batch": b.default,
        "has_plan": plan is not None,
    }


def expansion(node: dict) -> set[int]:
    """The original node ids a node stands for: itself, plus fused members' orig_id."""
    ids = {node["id"]}
    for m in (node.get("fused") or {}).get("members", []):
        if m.get("orig_id") is not None:
            ids.add(m["orig_id"])
    return ids


def compare_data(a: dict, b: dict) -> dict:
    """Correspondence between two stages' nodes and what exists in only one of them."""

    def index(stage: dict) -> dict[int, list[int]]:
        idx: dict[int, list[int]] = {}
        for n in stage["nodes"]:
            for i in sorted(expansion(n)):
                idx.setdefault(i, []).append(n["id"])
        return idx

    def mapping(src: dict, dst_index: dict[int, list[int]]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for n in src["nodes"]:
            hits: list[int] = []
            for i in sorted(expansion(n)):
                for t in dst_index.get(i, []):
                    if t not in hits:
                        hits.append(t)
            out[str(n["id"])] = hits
        return out

    ab = mapping(a, index(b))
    ba = mapping(b, index(a))
    return {
        "a": a["name"],
        "b": b["name"],
        "ab": ab,
        "ba": ba,
        "removed": [int(k) for k, v in ab.items() if not v],
        "added": [int(k) for k, v in ba.items() if not v],
    }


def document(stages: list[dict], *, title: str, compare: bool = False, info: dict | None = None) -> dict:
    """What the HTML page inlines: one stage, or two with their correspondence."""
    doc: dict[str, Any] = {"format": "graphdl-viz/1", "title": title, "stages": stages,
                           "info": info or {}}
    if compare:
        if len(stages) != 2:
            raise ValueError("a comparison needs exactly two stages")
        doc["compare"] = compare_data(stages[0], stages[1])
    return doc
