"""Static SVG from the pure-Python layered layout: for docs, READMEs and CI artefacts.

Each consumed output value gets a small label node (its dtype and shape) just below its
producer, so edge labels take part in the layout and never sit on top of a node. Edge
width grows with the log of the bytes the value holds.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from graphdl.viz.layout import Layout, layered_layout
from graphdl.viz.style import (
    ADDED,
    REMOVED,
    SOURCE_OPS,
    edge_width,
    human,
    legend,
    metric,
    node_colors,
    shorten,
    text_width,
)

TITLE_SIZE = 11.5
SUB_SIZE = 9.5
VALUE_SIZE = 9.0
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"


def _q(s) -> str:
    return escape(str(s), {'"': "&quot;"})


def stage_layout(stage: dict) -> tuple[Layout, dict]:
    """The layout of one stage: op nodes ("n", id) and value-label nodes ("v", id, index)."""
    by_id = {n["id"]: n for n in stage["nodes"]}
    sizes: dict = {}
    edges: list = []
    values: dict = {}
    for n in stage["nodes"]:
        title = shorten(n["title"])
        sub = n["sub"]
        w = max(text_width(title, TITLE_SIZE), text_width(sub, SUB_SIZE) if sub else 0) + 18
        sizes[("n", n["id"])] = (max(w, 48.0), 34.0 if sub else 22.0)
    for n in stage["nodes"]:
        for u, i in n["inputs"]:
            if u not in by_id:
                continue
            vk = ("v", u, i)
            if vk not in sizes:
                text = by_id[u]["types"][i] or "?"
                sizes[vk] = (text_width(text, VALUE_SIZE) + 8, 13.0)
                values[vk] = (text, by_id[u]["bytes"][i])
                edges.append((("n", u), vk))
            edges.append((vk, ("n", n["id"])))
    lay = layered_layout(sizes, edges, node_gap=16, layer_gap=14, margin=10, pin_below=list(values))
    return lay, values


def _path(pts) -> str:
    """A smooth path through the points: each segment a cubic leaving and entering
    vertically, so layer-to-layer jogs read as S-bends."""
    (x0, y0), rest = pts[0], pts[1:]
    d = [f"M{x0:.1f},{y0:.1f}"]
    for x1, y1 in rest:
        my = (y0 + y1) / 2
        if abs(x1 - x0) < 0.5:
            d.append(f"L{x1:.1f},{y1:.1f}")
        else:
            d.append(f"C{x0:.1f},{my:.1f} {x1:.1f},{my:.1f} {x1:.1f},{y1:.1f}")
        x0, y0 = x1, y1
    return " ".join(d)


def _stage_svg(stage: dict, color: str, dx: float, dy: float, marks: dict | None = None) -> tuple[list[str], float, float]:
    lay, values = stage_layout(stage)
    colors = node_colors(stage, color)
    top = max([b for _, b in values.values() if b] or [1])
    out = [f'<g class="stage" data-stage="{_q(stage["name"])}" transform="translate({dx:.1f},{dy:.1f})">']
    out.append('<g class="edges" fill="none" stroke="#6b6b6b">')
    for (u, v), pts in lay.edges.items():
        vk = u if u[0] == "v" else v
        w = edge_width(values[vk][1], top)
        arrow = ' marker-end="url(#arrow)"' if v[0] == "n" else ""
        out.append(f'<path d="{_path(pts)}" stroke-width="{w}"{arrow}/>')
    out.append("</g>")
    out.append(f'<g class="values" font-size="{VALUE_SIZE}" fill="#444444" text-anchor="middle">')
    for vk, (text, nbytes) in values.items():
        x, y = lay.pos[vk]
        w, h = lay.size[vk]
        tip = f"{text}, {human(nbytes)}B" if nbytes is not None else text
        out.append(
            f'<g class="value" data-value="{vk[1]}:{vk[2]}"><title>{_q(tip)}</title>'
            f'<rect x="{x - w / 2:.1f}" y="{y - h / 2:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'fill="#ffffff" fill-opacity="0.85" stroke="none"/>'
            f'<text x="{x:.1f}" y="{y + 3.2:.1f}">{_q(text)}</text></g>'
        )
    out.append("</g>")
    out.append('<g class="nodes" text-anchor="middle">')
    marks = marks or {}
    for n in stage["nodes"]:
        key = ("n", n["id"])
        x, y = lay.pos[key]
        w, h = lay.size[key]
        fill, stroke = colors[n["id"]]
        extra = ""
        cls = "node"
        mark = marks.get(n["id"])
        if mark:
            stroke = REMOVED if mark == "removed" else ADDED
            extra = ' stroke-dasharray="5,3" stroke-width="2.2"'
            cls += f" {mark}"
        rx = 11 if n["op"] in SOURCE_OPS else 4
        tip = [f"%{n['id']} {n['title']}"]
        if n["sub"]:
            tip.append(n["sub"])
        tip.append(f"phase: {n['phase']}")
        tip.append("out: " + ", ".join(t or "?" for t in n["types"]))
        if color in ("flops", "memory"):
            tip.append(f"{color}: {human(metric(n, color))}")
        if mark:
            tip.append(f"{mark} by the later stage" if mark == "removed" else "added by the later stage")
        out.append(
            f'<g class="{cls}" data-id="{n["id"]}" data-op="{_q(n["op"])}"><title>{_q(chr(10).join(tip))}</title>'
            f'<rect x="{x - w / 2:.1f}" y="{y - h / 2:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{rx}" '
            f'fill="{fill}" stroke="{stroke}"{extra}/>'
        )
        if n["sub"]:
            out.append(f'<text x="{x:.1f}" y="{y - 2:.1f}" font-size="{TITLE_SIZE}">{_q(shorten(n["title"]))}</text>')
            out.append(f'<text x="{x:.1f}" y="{y + 11:.1f}" font-size="{SUB_SIZE}" fill="#555555">{_q(n["sub"])}</text>')
        else:
            out.append(f'<text x="{x:.1f}" y="{y + 4:.1f}" font-size="{TITLE_SIZE}">{_q(shorten(n["title"]))}</text>')
        out.append("</g>")
    out.append("</g></g>")
    return out, lay.width, lay.height


def _legend(stage: dict, color: str, x: float, y: float) -> list[str]:
    out = [f'<g class="legend" font-size="10" transform="translate({x:.1f},{y:.1f})">']
    cx = 0.0
    for label, fill, stroke in legend(stage, color):
        out.append(f'<rect x="{cx:.1f}" y="0" width="14" height="10" rx="2" fill="{fill}" stroke="{stroke}"/>')
        out.append(f'<text x="{cx + 18:.1f}" y="9">{_q(label)}</text>')
        cx += 18 + text_width(label, 10) + 14
    out.append("</g>")
    return out


HEADER = 44.0


def render_svg(stages: list[dict], *, color: str = "phase", title: str = "", compare: dict | None = None) -> str:
    """An SVG document of one stage, or of two side by side (``compare`` marks the nodes
    only one of them has)."""
    parts: list[str] = []
    x = 0.0
    height = 0.0
    marks = [{}, {}]
    if compare is not None:
        marks[0] = {i: "removed" for i in compare["removed"]}
        marks[1] = {i: "added" for i in compare["added"]}
    for k, stage in enumerate(stages):
        body, w, h = _stage_svg(stage, color, x, HEADER + 18, marks[k] if compare else None)
        sub = stage["title"] + f" — {len(stage['nodes'])} nodes"
        parts.append(f'<text x="{x + 10:.1f}" y="{HEADER + 10:.1f}" font-size="12" font-weight="bold">{_q(sub)}</text>')
        parts.extend(body)
        x += max(w, text_width(sub, 12) + 20) + (30 if k + 1 < len(stages) else 0)
        height = max(height, h + HEADER + 18)
    width = max(x, 420.0)
    head = [f'<text x="10" y="18" font-size="14" font-weight="bold">{_q(title)}</text>']
    head += _legend(stages[0], color, 10, 26)
    if compare is not None:
        head.append(
            f'<text x="{width - 10:.1f}" y="18" font-size="10" text-anchor="end">'
            f'<tspan fill="{REMOVED}">dashed red: only in {_q(compare["a"])}</tspan>'
            f'<tspan dx="10" fill="{ADDED}">dashed green: only in {_q(compare["b"])}</tspan></text>'
        )
    svg = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
         f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{FONT}">'),
        ("<defs>"
         '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
         'markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#6b6b6b"/>'
         "</marker></defs>"),
        f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
    ]
    return "\n".join(svg + head + parts + ["</svg>", ""])
