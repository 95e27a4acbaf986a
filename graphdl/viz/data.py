"""The view model every output format draws from: plain JSON-able dicts.

``stage_data(graph)`` describes one graph: its nodes (op, spec layer and line, phase,
typed outputs with their size in bytes, attributes, estimated FLOPs, planned memory, fused
members, generated source) and the collapsible groups made from spec layer names
(``encoder.0.dense_2`` sits in ``encoder.0`` inside ``encoder``), split by phase so that a
layer's forward and backward ops form separate groups.

A ``scan`` node (a loop over time, `graphdl.ir.scan`) carries ``node["scan"]``: its
direction, whether it is the backward (BPTT) scan of another, the number of steps, the
role of each input (carry i, step slice of sequence j, invariant k; for a backward scan
gradient carries, gradient accumulators, saved per-step values, output gradients) and
output (next carry, per-step output, saved for BPTT), and its body drawn as a graph of its
own (``node["scan"]["body"]``, nodes in the same shape as a stage's). The renderers draw
it as one node that opens to its body (HTML), or as a box (SVG) or cluster (DOT) holding
the body.

``compare_data(a, b)`` maps the nodes of two stages onto each other. Passes keep node ids,
and a ``fused`` node records the original ids of its members, so a node of one stage
corresponds to the nodes of the other that share an id with it, counting a fused node as
its own id plus its members' ``orig_id``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphdl.ir.graph import Graph, Value
from graphdl.ir.scan import SCAN, body_inputs, body_output_names
from graphdl.ir.types import TensorType
from graphdl.ops.registry import get_op
from graphdl.passes.pipeline import PIPELINE

# friendly stage names -> PassContext snapshot names
STAGES = {
    "lowered": "lowered",
    "training": "autodiff",
    "fused": "fuse",
    "optimized": "plan_memory",
}
SNAPSHOTS = ("lowered",) + tuple(p.name for p in PIPELINE)  # every pass's graph
STAGE_TITLES = {
    "lowered": "lowered (from the spec)",
    "infer_shapes": "after shape inference",
    "hoist": "after hoisting out of loops",
    "autodiff": "training graph (after autodiff)",
    "simplify": "after simplify",
    "hoist_grads": "after hoisting gradient sums out of loops",
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
    if nd["op"] == SCAN:  # the body once per step (as graphdl.ops.cost.flops counts it)
        body = nd["attrs"]["body"]
        steps = ins[nd["attrs"]["num_carry"]].bind(b)[0] if len(ins) > nd["attrs"]["num_carry"] else 0
        per_step = [_node_flops(body, n, b) for n in body.nodes()]
        if any(f is None for f in per_step):
            return None
        return int(steps) * sum(per_step)
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


def node_title(op: str, name: str | None, fused: dict | None, scan: dict | None = None) -> str:
    if scan is not None:
        return scan_title(scan)
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
    nodes = _node_records(graph, b, plan, slot_bytes, node_sources(source))
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


def _node_records(graph: Graph, b: _Bindings, plan: dict | None, slot_bytes: list[int],
                  sources: dict[int, str]) -> list[dict]:
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
        scan = None
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
        elif nd["op"] == SCAN and isinstance(attrs.get("body"), Graph):
            scan = scan_view(graph, nid, b)
            body = attrs["body"]
            attrs["body"] = (f"<body: {len(body)} nodes, {len(body_inputs(body))} inputs, "
                             f"{len(body.outputs)} outputs; open the scan to see it>")
        ins = graph.inputs_of(nid)
        node = {
            "id": nid,
            "op": nd["op"],
            "name": nd["name"],
            "layer": nd["layer"],
            "line": nd["line"],
            "phase": nd["phase"],
            "title": node_title(nd["op"], nd["name"], fused, scan),
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
        if scan is not None:
            node["scan"] = scan
        if nid in sources:
            node["source"] = sources[nid]
        nodes.append(node)
    return nodes


# ----------------------------------------------------------------------------- scans

# names scan_autodiff gives the backward body's inputs (a name not listed here gets its
# positional role only)
_BWD_NAMES = (
    ("grad_carry", "carry", "gradient carry {i}", "∂loss/∂carry {i}, from the previous iteration"),
    ("grad_acc", "carry", "gradient accumulator {i}", "Σ over the steps of ∂loss/∂(invariant)"),
    ("grad_step", "sequence", "output gradient {i} [t]", "∂loss/∂(per-step output) at step t"),
    ("saved", "sequence", "saved value {i} [t]", "kept by the forward scan at step t"),
    ("truncate_mask", "sequence", "truncation mask [t]", "0 where truncated BPTT stops the carry"),
)


def scan_title(scan: dict) -> str:
    """A scan node's title: ``scan ×T forward`` / ``scan ×T reverse (BPTT)``."""
    return f"scan ×{scan['steps']} {scan['direction']}" + (" (BPTT)" if scan["bptt"] else "")


def scan_caption(node: dict) -> tuple[str, str]:
    """The two caption lines of an open scan: what it is, which way; how often, its pair."""
    scan = node["scan"]
    steps = scan["steps"]
    order = f"t = 0 → {steps}−1" if scan["direction"] == "forward" else f"t = {steps}−1 → 0"
    what = "backward (BPTT) scan" if scan["bptt"] else "scan"
    first = f"%{node['id']} {what} · {scan['direction']}, {order}"
    second = f"the body below runs {steps} times"
    if scan.get("truncate"):
        second += f" (truncated BPTT: {scan['truncate']} steps)"
    if scan.get("pair") is not None:
        second += f" · the gradient of %{scan['pair']}" if scan["bptt"] else f" · its gradient: %{scan['pair']}"
    if node.get("sub"):
        second += f" · {node['sub']}"
    return first, second


def _source_text(graph: Graph, v: Value) -> str:
    nd = graph.node(v.node)
    label = nd["name"] or nd["op"]
    out = f".{v.index}" if len(nd["types"]) > 1 else ""
    return f"%{v.node}{out} {label}"


def scan_view(graph: Graph, nid: int, b: _Bindings) -> dict:
    """The roles of a scan node's inputs and outputs and its body as viewer data."""
    nd = graph.node(nid)
    attrs = nd["attrs"]
    body: Graph = attrs["body"]
    k, s = int(attrs["num_carry"]), int(attrs["num_seq"])
    ins = graph.inputs_of(nid)
    ids = body_inputs(body)
    names = [body.node(i)["name"] or "" for i in ids]
    bptt = nd["phase"] == "backward" or any(n.startswith("grad_carry") for n in names)
    seq_t = graph.node(ins[k].node)["types"][ins[k].index] if len(ins) > k else None
    steps = str(seq_t.shape[0]) if seq_t is not None and seq_t.shape else "T"
    # scans this one reads saved values from (its forward scan), and scans that read it
    sources = sorted({v.node for v in ins if graph.op_of(v.node) == SCAN and v.node != nid})
    readers = sorted({dst for i in range(graph.num_outputs(nid))
                      for dst, _ in graph.consumers(Value(nid, i)) if graph.op_of(dst) == SCAN})
    pair = (sources[0] if sources else None) if bptt else (readers[0] if readers else None)

    inputs = []
    counts = {"carry": 0, "sequence": 0, "invariant": 0}
    for slot, v in enumerate(ins):
        kind = "carry" if slot < k else "sequence" if slot < k + s else "invariant"
        index = counts[kind]
        counts[kind] += 1
        name = names[slot] if slot < len(names) else ""
        src = graph.node(v.node)
        role, detail = None, None
        for prefix, want, r, d in _BWD_NAMES:
            if bptt and name.startswith(prefix) and kind == want:
                digits = name[len(prefix):]
                role = r.format(i=digits if digits.isdigit() else index)
                detail = d.format(i=digits if digits.isdigit() else index)
                break
        if kind == "sequence" and src["op"] == SCAN and v.node != nid:
            role = role or f"saved value {index} [t]"
            detail = f"saved by scan %{v.node} (out {v.index}) at step t"
        elif kind == "sequence" and src["op"] == "seq_mask":
            role, detail = role or "time mask [t]", "1 where step t is within the sample's length"
        if role is None:
            role = {"carry": f"carry {index}", "sequence": f"step slice of seq {index}",
                    "invariant": f"invariant {index}"}[kind]
            detail = {"carry": "the state entering step t",
                      "sequence": "row t of " + _source_text(graph, v),
                      "invariant": _source_text(graph, v) + ", the same every step"}[kind]
        inputs.append({"slot": slot, "kind": kind, "index": index, "role": role,
                       "detail": detail, "name": name, "body": ids[slot] if slot < len(ids) else None,
                       "source": [v.node, v.index]})

    outputs = []
    nsaved = 0
    out_names = body_output_names(body, k)
    for i, oname in enumerate(out_names):
        val = body.outputs[oname]
        if i < k:
            cin = inputs[i]["role"] if i < len(inputs) else f"carry {i}"
            inner = f"next {cin}" if not cin.startswith("gradient accumulator") else f"{cin} + this step's"
            if cin.startswith("gradient carry"):
                outer = f"∂loss/∂(initial carry {i})"
            elif cin.startswith("gradient accumulator"):
                outer = f"{cin}: the gradient summed over the {steps} steps"
            else:
                outer = f"final carry {i}"
            kind = "carry"
            step = "t−1" if attrs.get("reverse") else "t+1"
            inner_detail = f"becomes {cin} at step {step}"
        else:
            j = i - k
            kind = "step"
            saved_for = sorted({dst for dst, _ in graph.consumers(Value(nid, i))
                                if graph.op_of(dst) == SCAN and dst != nid})
            if saved_for:
                inner = f"saved for BPTT {nsaved}"
                nsaved += 1
                outer = f"saved per-step values for scan %{saved_for[0]}"
            elif bptt:
                inner = f"per-step gradient {j}"
                outer = f"per-step gradient {j}, stacked over {steps} steps"
            else:
                inner = f"per-step output {j}"
                outer = f"per-step output {j}, stacked over {steps} steps"
            inner_detail = f"row t of out {i}"
        outputs.append({"index": i, "name": oname, "kind": kind, "role": inner,
                        "detail": inner_detail, "outer": outer, "value": [val.node, val.index]})

    body_nodes = _node_records(body, b, None, [], {})
    by_input = {e["body"]: e for e in inputs}
    by_value: dict[int, list[str]] = {}
    for o in outputs:
        by_value.setdefault(o["value"][0], []).append(f"{o['role']} (out {o['index']})")
    for n in body_nodes:
        n["group"] = None
        n["roots"] = by_value.get(n["id"], [])
        if n["layer"] in (None, nd["layer"]):
            n["sub"] = ""  # the scan's own layer: said once, on the scan
        e = by_input.get(n["id"])
        if e is not None:
            n["title"] = e["role"]
            n["sub"] = e["detail"]
            n["scan_input"] = {"slot": e["slot"], "kind": e["kind"], "index": e["index"]}
    return {
        "direction": "reverse" if attrs.get("reverse") else "forward",
        "bptt": bool(bptt),
        "steps": steps,
        "truncate": int(attrs.get("truncate") or 0),
        "num_carry": k,
        "num_seq": s,
        "num_inv": len(ins) - k - s,
        "pair": pair,
        "inputs": inputs,
        "outputs": outputs,
        "body": {"nodes": body_nodes, "groups": []},
    }


def inlinable(node: dict) -> bool:
    """Parameters, optimiser state, constants and scalar inputs (a learning rate, a step
    seed): drawn inside the nodes that read them rather than as nodes of their own (the
    HTML viewer applies the same rule, ``inlinable`` in assets/viewer.js)."""
    if node["op"] == "input":
        return bool(node["types"]) and (node["types"][0] or "").endswith("[]")
    return node["op"] in ("param", "state", "const")


def source_line(node: dict, index: int) -> str:
    """How an inlined source is written inside its reader: ``name [shape]``."""
    t = node["types"][index] or "?"
    if t.startswith("float32["):
        t = t[len("float32"):]
    name = node["name"] or node["op"]
    value = node["attrs"].get("value") if isinstance(node["attrs"], dict) else None
    if node["op"] == "const" and isinstance(value, (int, float)) and not isinstance(value, bool):
        name = f"const {value:g}"
    return f"{name} {t}"


def inline_sources(stage: dict) -> dict:
    """A copy of a stage without its inlinable source nodes (see :func:`inlinable`) that
    something reads: each reader lists them in ``node["weights"]`` instead, as the SVG and
    DOT renderers write them inside the node (Netron's way of drawing weights)."""
    by_id = {n["id"]: n for n in stage["nodes"]}
    read = {u for n in stage["nodes"] for u, _ in n["inputs"]}
    gone = {n["id"] for n in stage["nodes"] if inlinable(n) and n["id"] in read}
    nodes = []
    for n in stage["nodes"]:
        if n["id"] in gone:
            continue
        lines: list[str] = []
        for u, i in n["inputs"]:
            text = source_line(by_id[u], i) if u in gone else None
            if text is not None and text not in lines:
                lines.append(text)
        nodes.append({**n, "weights": lines} if lines else n)
    return {**stage, "nodes": nodes}


def scan_nodes(stage: dict) -> list[dict]:
    """Every scan node of a stage, bodies' scans included (outermost first)."""
    out = []
    todo = list(stage["nodes"])
    while todo:
        n = todo.pop(0)
        if n.get("scan"):
            out.append(n)
            todo.extend(n["scan"]["body"]["nodes"])
    return out


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
