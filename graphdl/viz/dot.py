"""Graphviz DOT: fused kernels as clusters of their member ops, a scan as a cluster of its
body (inputs named by role, one port per output), colours by phase (or the other
colourings), dtype and shape on every edge, pen width by bytes.

Rendering needs Graphviz's ``dot``; :func:`render_with_dot` runs it only when installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from graphdl.viz.data import inline_sources, scan_caption
from graphdl.viz.style import (
    ADDED,
    PHASE_COLORS,
    REMOVED,
    SOURCE_OPS,
    edge_width,
    human,
    lighter,
    metric,
    node_colors,
    shorten,
)


def _q(s) -> str:
    """A DOT double-quoted string."""
    text = str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _attrs(**kw) -> str:
    items = [f"{k}={_q(v)}" for k, v in kw.items() if v is not None]
    return "[" + ", ".join(items) + "]"


def _stage_lines(stage: dict, color: str, prefix: str, marks: dict, indent: str,
                 outputs: list[dict] | None = None, top: int | None = None) -> list[str]:
    """DOT statements of a stage, or of a scan's body (``outputs``: the scan's outputs,
    drawn as port nodes ``<prefix>o<i>``). A scan is a cluster ``cluster_<prefix>s<id>``
    holding its body (node names prefixed ``<prefix>s<id>_``): the edges into the scan go
    to the body's input of their slot, those out of it leave from the port of their output."""
    colors = node_colors(stage, color)
    by_id = {n["id"]: n for n in stage["nodes"]}
    if top is None:
        top = max([b or 0 for n in stage["nodes"] for b in n["bytes"]] or [1])
    lines: list[str] = []

    def out_port(nid: int, idx: int) -> str:
        """The DOT node that produces output ``idx`` of node ``nid`` (a fused node's last
        member, a scan's output port)."""
        n = by_id[nid]
        if n.get("fused"):
            return f"{prefix}n{nid}_{len(n['fused']['members']) - 1}"
        if n.get("scan"):
            return f"{prefix}s{nid}_o{idx}"
        return f"{prefix}n{nid}"

    for n in stage["nodes"]:
        fill, stroke = colors[n["id"]]
        mark = marks.get(n["id"])
        style_extra = {}
        if mark:
            style_extra = {"color": REMOVED if mark == "removed" else ADDED, "penwidth": "2.5"}
        tip = f"%{n['id']} {n['op']}; phase {n['phase']}"
        if color in ("flops", "memory"):
            tip += f"; {color} {human(metric(n, color))}"
        if mark:
            tip += f"; {mark}"
        label = shorten(n["title"]) + (f"\n{n['sub']}" if n["sub"] else "")
        if n.get("weights"):  # parameters and state read by the node, written inside it
            label += "\n" + "\n".join(n["weights"])
        if n.get("scan"):
            sc = n["scan"]
            cap = scan_caption(n)
            dashed = "rounded,dashed,filled"
            lines.append(f"{indent}subgraph {_q('cluster_' + prefix + 's' + str(n['id']))} {{")
            lines.append(f"{indent}  graph {_attrs(label=cap[0] + chr(10) + cap[1], style=dashed, fillcolor=lighter(fill), color=style_extra.get('color', stroke), penwidth=style_extra.get('penwidth', '1.8'), tooltip=tip, fontsize='10', labeljust='l')};")
            body = {"nodes": sc["body"]["nodes"], "phase": n["phase"]}
            lines += _stage_lines(body, color, f"{prefix}s{n['id']}_", {}, indent + "  ", sc["outputs"], top)
            lines.append(f"{indent}}}")
            continue
        if n.get("fused"):
            f = n["fused"]
            dashed = ",dashed" if mark else ""
            cluster = _q("cluster_" + prefix + "f" + str(n["id"]))
            clabel = "%" + str(n["id"]) + " fused (" + str(f["kind"]) + ")"
            if n["sub"]:
                clabel += "\n" + n["sub"]
            gattrs = _attrs(label=clabel, style="rounded,filled" + dashed, fillcolor=fill,
                            color=style_extra.get("color", stroke),
                            penwidth=style_extra.get("penwidth"), tooltip=tip, fontsize="9")
            lines.append(f"{indent}subgraph {cluster} {{")
            lines.append(f"{indent}  graph {gattrs};")
            for i, m in enumerate(f["members"]):
                orig = f" (was %{m['orig_id']})" if m.get("orig_id") is not None else ""
                lines.append(f"{indent}  {prefix}n{n['id']}_{i} {_attrs(label=m['op'], tooltip=m['op'] + orig, fillcolor='#ffffff', color=stroke)};")
            for i, m in enumerate(f["members"]):
                for r in m["inputs"]:
                    if r[0] == "member":
                        src = f["members"][r[1]]
                        lines.append(f"{indent}  {prefix}n{n['id']}_{r[1]} -> {prefix}n{n['id']}_{i} "
                                     f"{_attrs(label=src.get('type') or '', penwidth=str(edge_width(src.get('bytes'), top)))};")
            lines.append(f"{indent}}}")
            continue
        shape = "ellipse" if n["op"] in SOURCE_OPS else "box"
        style = "filled" if shape == "ellipse" else "rounded,filled"
        if mark or n.get("scan_input"):
            style += ",dashed"
        lines.append(f"{indent}{prefix}n{n['id']} {_attrs(label=label, shape=shape, style=style, fillcolor=fill, color=style_extra.get('color', stroke), penwidth=style_extra.get('penwidth'), tooltip=tip)};")
    ports = []
    for o in outputs or []:
        stroke = PHASE_COLORS.get(stage.get("phase", ""), ("", "#555555"))[1]
        port = f"{prefix}o{o['index']}"
        ports.append(port)
        lines.append(f"{indent}{port} {_attrs(label='→ ' + o['role'] + chr(10) + o['detail'], shape='box', style='rounded,bold,filled', fillcolor='#ffffff', color=stroke, tooltip=o['outer'] + ' (out ' + str(o['index']) + ' of the scan)')};")
    if ports:
        # the body's output ports share a rank (the body's last)
        lines.append(f"{indent}subgraph {_q(prefix + 'ports')} {{ rank=same; {'; '.join(ports)}; }}")

    for n in stage["nodes"]:
        targets: list[tuple[str, int]] = []  # (dot node, input slot)
        if n.get("fused"):
            for i, m in enumerate(n["fused"]["members"]):
                for r in m["inputs"]:
                    if r[0] == "input":
                        targets.append((f"{prefix}n{n['id']}_{i}", r[1]))
        elif n.get("scan"):
            targets = [(f"{prefix}s{n['id']}_n{e['body']}", e["slot"]) for e in n["scan"]["inputs"]
                       if e["body"] is not None]
        else:
            targets = [(f"{prefix}n{n['id']}", k) for k in range(len(n["inputs"]))]
        for dst, slot in targets:
            u, idx = n["inputs"][slot]
            if u not in by_id:
                continue
            src = by_id[u]
            text = src["types"][idx] or "?"
            if len(src["types"]) > 1:
                text = f"out {idx}: {text}"
            lines.append(f"{indent}{out_port(u, idx)} -> {dst} {_attrs(label=text, penwidth=str(edge_width(src['bytes'][idx], top)))};")
    for o in outputs or []:
        u, idx = o["value"]
        if u not in by_id:
            continue
        src = by_id[u]
        text = src["types"][idx] or "?"
        lines.append(f"{indent}{out_port(u, idx)} -> {prefix}o{o['index']} {_attrs(label=text, penwidth=str(edge_width(src['bytes'][idx], top)))};")
    return lines


def render_dot(stages: list[dict], *, color: str = "phase", title: str = "", compare: dict | None = None) -> str:
    """A DOT digraph of one stage, or of two as side-by-side clusters (``compare`` marks
    nodes only one stage has: dashed red in the first, dashed green in the second)."""
    lines = [
        f"digraph {_q(title or 'graphdl')} {{",
        f"  graph {_attrs(rankdir='TB', label=title, labelloc='t', fontname='Helvetica', fontsize='12', newrank='true')};",
        f"  node {_attrs(shape='box', style='rounded,filled', fontname='Helvetica', fontsize='10')};",
        f"  edge {_attrs(fontname='Helvetica', fontsize='8', color='#6b6b6b', fontcolor='#444444')};",
    ]
    stages = [inline_sources(s) for s in stages]
    if len(stages) == 1:
        lines += _stage_lines(stages[0], color, "", {}, "  ")
    else:
        marks = [{}, {}]
        if compare is not None:
            marks[0] = {i: "removed" for i in compare["removed"]}
            marks[1] = {i: "added" for i in compare["added"]}
        for k, stage in enumerate(stages):
            p = "ab"[k] if k < 2 else f"s{k}"
            lines.append(f"  subgraph {_q('cluster_' + p)} {{")
            lines.append(f"    graph {_attrs(label=stage['title'], style='dashed', color='#bbbbbb')};")
            lines += _stage_lines(stage, color, f"{p}_", marks[k] if k < 2 else {}, "    ")
            lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_with_dot(dot_path: str | Path, out_path: str | Path, fmt: str) -> bool:
    """Run Graphviz on a DOT file if ``dot`` is installed; False when it is not."""
    exe = shutil.which("dot")
    if exe is None:
        return False
    subprocess.run([exe, f"-T{fmt}", str(dot_path), "-o", str(out_path)], check=True)
    return True
