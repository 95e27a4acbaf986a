"""Static SVG from the pure-Python layered layout: for docs, READMEs and CI artefacts.

Each consumed output value gets a small label node (its dtype and shape) just below its
producer, so edge labels take part in the layout and never sit on top of a node. Edge
width grows with the log of the bytes the value holds, up to 2.5 px. Parameters,
optimiser state, constants and scalar inputs are written inside the nodes that read them
(``inline_sources``), with their shapes, instead of sending an edge across the drawing.
A training graph is drawn like the HTML viewer draws it (``_mirrored``): the forward pass
down, the backward pass beside it flowing up, the optimiser updates in rows below.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from graphdl.viz.data import inline_sources, scan_caption
from graphdl.viz.layout import Layout, layered_layout
from graphdl.viz.style import (
    ADDED,
    PHASE_COLORS,
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

TITLE_SIZE = 12.0
SUB_SIZE = 10.5
WEIGHT_SIZE = 10.5
WEIGHT_LINE = 13.0
VALUE_SIZE = 9.0
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"


def _q(s) -> str:
    return escape(str(s), {'"': "&quot;"})


SCAN_HEAD = 40.0  # the caption band of a scan's box
SCAN_PAD = 10.0


def _node_size(n: dict) -> tuple[float, float]:
    title = shorten(n["title"])
    sub = shorten(n["sub"], 52)
    weights = n.get("weights", [])
    w = max([text_width(title, TITLE_SIZE), text_width(sub, SUB_SIZE) if sub else 0]
            + [text_width(t, WEIGHT_SIZE) + 8 for t in weights]) + 18
    head = 36.0 if sub else 24.0
    return (max(w, 48.0), head + (len(weights) * WEIGHT_LINE + 5 if weights else 0))


def _port_text(o: dict) -> tuple[str, str]:
    return "→ " + o["role"], o["detail"]


def stage_layout(stage: dict, bodies: dict | None = None,
                 outputs: list[dict] | None = None) -> tuple[Layout, dict]:
    """The layout of one stage: op nodes ("n", id) and value-label nodes ("v", id, index).

    A scan node is a box as large as its body's own layout (stored in ``bodies[id]`` when
    given). For a body, ``outputs`` are the scan's outputs: port nodes ("o", index) on the
    bottom row; the body's inputs (its only sources) sit on the top row."""
    by_id = {n["id"]: n for n in stage["nodes"]}
    sizes: dict = {}
    edges: list = []
    values: dict = {}
    for n in stage["nodes"]:
        if n.get("scan"):
            inner: dict = {}
            blay, bvalues = stage_layout(n["scan"]["body"], inner, n["scan"]["outputs"])
            cap = scan_caption(n)
            w = max(blay.width + 2 * SCAN_PAD, text_width(cap[0], TITLE_SIZE) + 24,
                    text_width(cap[1], SUB_SIZE) + 24)
            sizes[("n", n["id"])] = (w, SCAN_HEAD + blay.height + SCAN_PAD)
            if bodies is not None:
                bodies[n["id"]] = {"layout": blay, "values": bvalues, "bodies": inner,
                                   "left": (w - blay.width) / 2, "caption": cap}
        else:
            sizes[("n", n["id"])] = _node_size(n)

    def value(u: int, i: int):
        vk = ("v", u, i)
        if vk not in sizes:
            text = by_id[u]["types"][i] or "?"
            sizes[vk] = (text_width(text, VALUE_SIZE) + 8, 13.0)
            values[vk] = (text, by_id[u]["bytes"][i])
            edges.append((("n", u), vk))
        return vk

    for n in stage["nodes"]:
        for u, i in n["inputs"]:
            if u in by_id:
                edges.append((value(u, i), ("n", n["id"])))
    ports = []
    for o in outputs or []:
        title, sub = _port_text(o)
        key = ("o", o["index"])
        sizes[key] = (max(text_width(title, TITLE_SIZE), text_width(sub, SUB_SIZE)) + 18, 34.0)
        ports.append(key)
        u, i = o["value"]
        if u in by_id:
            edges.append((value(u, i), key))
    phases = {n["phase"] for n in stage["nodes"]}
    if outputs is None and phases & {"backward", "update"} and len(phases) > 1:
        return _mirrored(sizes, edges, values, by_id), values
    lay = layered_layout(sizes, edges, node_gap=16, layer_gap=14, margin=10, pin_below=list(values),
                         tighten_sources=outputs is None, sinks_last=ports)
    return lay, values


COLUMN = {"backward": 1, "update": 2}  # 0: the forward pass (and any other phase)
COL_GAP = 90.0  # between the forward and the backward column
ROW_GAP = 40.0  # between the columns and the rows of updates below them
MARGIN = 10.0


def _mirrored(sizes: dict, edges: list, values: dict, by_id: dict) -> Layout:
    """A training graph as the HTML viewer draws it: the forward pass top to bottom, the
    backward pass beside it as its mirror (bottom to top, each spec layer's gradient level
    with the layer), the optimiser updates in rows below both. Edges inside a column are
    routed by the layered layout; an edge between columns is a curve from side to side
    (forward to backward) or from bottom to top (to the updates), listed in ``side`` when
    it leaves sideways. A value label belongs to its producer's column."""
    def col(key) -> int:
        return COLUMN.get(by_id[key[1]]["phase"], 0) if key[0] in ("n", "v") else 0

    cols: list[list] = [[], [], []]
    for key in sizes:
        cols[col(key)].append(key)
    inner = [[(u, v) for u, v in edges if col(u) == col(v) == c] for c in (0, 1)]
    parts: list[Layout | None] = [None, None]
    for c in (0, 1):
        if cols[c]:
            parts[c] = layered_layout({k: sizes[k] for k in cols[c]}, inner[c], node_gap=16,
                                      layer_gap=14, margin=0,
                                      pin_below=[k for k in cols[c] if k in values])
    pos: dict = {}
    lines: dict = {}
    if parts[1] is not None:  # the backward pass flows up
        b = parts[1]
        b.pos = {k: (x, b.height - y) for k, (x, y) in b.pos.items()}
        b.edges = {e: [(x, b.height - y) for x, y in pts] for e, pts in b.edges.items()}
    offsets = [(MARGIN, MARGIN), (MARGIN, MARGIN)]
    if parts[0] is not None and parts[1] is not None:
        f, b = parts
        lf, lb = _layer_levels(f, by_id), _layer_levels(b, by_id)
        diffs = [lf[k] - lb[k] for k in lb if k in lf]
        dy = sum(diffs) / len(diffs) if diffs else f.height - b.height
        top = min(0.0, dy)  # neither column above the margin
        offsets = [(MARGIN, MARGIN - top), (MARGIN + f.width + COL_GAP, MARGIN + dy - top)]
    right = bottom = MARGIN
    for c, part in enumerate(parts):
        if part is None:
            continue
        ox, oy = offsets[c]
        for k, (x, y) in part.pos.items():
            pos[k] = (x + ox, y + oy)
        for e, pts in part.edges.items():
            lines[e] = [(x + ox, y + oy) for x, y in pts]
        right = max(right, ox + part.width)
        bottom = max(bottom, oy + part.height)
    if cols[2]:
        bottom = _update_rows(cols[2], sizes, edges, values, pos, max(right - MARGIN, 700.0), bottom + ROW_GAP)
        right = max(right, max(pos[k][0] + sizes[k][0] / 2 for k in cols[2]))
    side = set()
    for u, v in edges:
        if (u, v) in lines:
            continue
        (ax, ay), (aw, ah) = pos[u], sizes[u]
        (bx, by), (bw, bh) = pos[v], sizes[v]
        # down from a bottom to a top (to an update, or to a label right under it)
        if by - bh / 2 > ay + ah / 2 + 8 or (u[0] == "n" and v[0] == "v" and col(u) == 2):
            lines[(u, v)] = [(ax, ay + ah / 2), (bx, by - bh / 2)]
        else:
            s = 1 if bx > ax else -1
            lines[(u, v)] = [(ax + s * aw / 2, ay), (bx - s * bw / 2, by)]
            side.add((u, v))
    return Layout(pos=pos, size=dict(sizes), layer={k: col(k) for k in sizes}, edges=lines,
                  width=right + MARGIN, height=bottom + MARGIN, side=side)


def _layer_levels(part: Layout, by_id: dict) -> dict:
    """The mean y of each spec layer's op nodes in one column."""
    sums: dict = {}
    for k, (_, y) in part.pos.items():
        layer = by_id[k[1]]["layer"] if k[0] == "n" else None
        if layer:
            s = sums.setdefault(layer, [0.0, 0])
            s[0] += y
            s[1] += 1
    return {k: s / c for k, (s, c) in sums.items()}


def _update_rows(keys: list, sizes: dict, edges: list, values: dict, pos: dict,
                 max_width: float, y: float) -> float:
    """Place the optimiser updates in rows from ``y`` down: one rank per step of their
    own dependencies, each rank ordered by the x of what feeds it and wrapped at
    ``max_width``, each update's value labels right under it. Returns the bottom."""
    inside = set(keys)
    nodes = [k for k in keys if k[0] == "n"]
    labels: dict = {k: [] for k in nodes}
    for u, v in edges:
        if u in labels and v in values and v in inside:
            labels[u].append(v)
    preds: dict = {k: [] for k in nodes}
    for u, v in edges:
        if v in preds:
            preds[v].append(("n", u[1]) if u[0] == "v" else u)
    rank = dict.fromkeys(nodes, 0)
    for _ in range(len(nodes)):
        moved = False
        for k in nodes:
            for p in preds[k]:
                if p in rank and p != k and rank[p] + 1 > rank[k] and rank[p] + 1 <= len(nodes):
                    rank[k] = rank[p] + 1
                    moved = True
        if not moved:
            break

    def anchor(k) -> float:
        xs = [pos[p][0] for p in preds[k] if p in pos and p not in inside]
        return sum(xs) / len(xs) if xs else float("inf")

    def extent(k) -> tuple[float, float]:
        w, h = sizes[k]
        for lab in labels[k]:
            w = max(w, sizes[lab][0])
            h += sizes[lab][1] + 2
        return w, h

    gap = 22.0
    placed: list[list] = []
    for r in sorted(set(rank.values())):
        row: list = []
        width = 0.0
        for k in sorted((k for k in nodes if rank[k] == r), key=anchor):
            w, _ = extent(k)
            if row and width + gap + w > max_width:
                placed.append(row)
                row, width = [], 0.0
            width += (gap if row else 0.0) + w
            row.append(k)
        if row:
            placed.append(row)
    widest = max((sum(extent(k)[0] for k in row) + gap * (len(row) - 1) for row in placed), default=0.0)
    for row in placed:
        h = max(extent(k)[1] for k in row)
        w_row = sum(extent(k)[0] for k in row) + gap * (len(row) - 1)
        x = MARGIN + (widest - w_row) / 2
        for k in row:
            w, _ = extent(k)
            nh = sizes[k][1]
            pos[k] = (x + w / 2, y + nh / 2)
            ly = y + nh + 2
            for lab in labels[k]:
                pos[lab] = (x + w / 2, ly + sizes[lab][1] / 2)
                ly += sizes[lab][1] + 2
            x += w + gap
        y += h + 34.0
    return y - 34.0


def _side_path(pts) -> str:
    """A cubic from one node's side to another's, leaving and entering horizontally (an
    edge between the forward and the backward column)."""
    (x0, y0), (x1, y1) = pts[0], pts[-1]
    mx = (x0 + x1) / 2
    return f"M{x0:.1f},{y0:.1f} C{mx:.1f},{y0:.1f} {mx:.1f},{y1:.1f} {x1:.1f},{y1:.1f}"


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
    bodies: dict = {}
    lay, values = stage_layout(stage, bodies)
    top = max([b for _, b in values.values() if b] or [1])
    out = [f'<g class="stage" data-stage="{_q(stage["name"])}" transform="translate({dx:.1f},{dy:.1f})">']
    out += _graph_svg(stage, lay, values, bodies, color, marks or {}, top)
    out.append("</g>")
    return out, lay.width, lay.height


def _port_at(lay: Layout, box_key, body: dict, key) -> tuple[float, float, float]:
    """(x, top, bottom) of a port of a scan's body in the coordinates of the scan's graph."""
    x0, y0, _, _ = lay.box(box_key)
    px, py = body["layout"].pos[key]
    _, ph = body["layout"].size[key]
    x = x0 + body["left"] + px
    y = y0 + SCAN_HEAD + py
    return x, y - ph / 2, y + ph / 2


def _graph_svg(stage: dict, lay: Layout, values: dict, bodies: dict, color: str, marks: dict,
               top: int, outputs: list[dict] | None = None) -> list[str]:
    """The edges, value labels and nodes of a laid-out graph (a stage or a scan's body)."""
    colors = node_colors(stage, color)
    by_id = {n["id"]: n for n in stage["nodes"]}
    in_body = outputs is not None
    out = ['<g class="edges" fill="none" stroke="#6b6b6b">']
    leads = []
    side = lay.side
    for (u, v), pts in lay.edges.items():
        vk = u if u[0] == "v" else v
        w = edge_width(values[vk][1], top)
        arrow = ' marker-end="url(#arrow)"' if v[0] in ("n", "o") else ""
        # an edge at a scan runs to (from) the box's edge above (below) the port of its
        # slot (output); a straight lead joins it to the port
        if v[0] == "n" and v[1] in bodies:
            scan = by_id[v[1]]["scan"]
            body = bodies[v[1]]
            for slot, (src, idx) in enumerate(by_id[v[1]]["inputs"]):
                if (src, idx) != (u[1], u[2]) or scan["inputs"][slot]["body"] is None:
                    continue
                x, ptop, _ = _port_at(lay, v, body, ("n", scan["inputs"][slot]["body"]))
                box_top = lay.box(v)[1]
                out.append(f'<path d="{_path(list(pts[:-1]) + [(x, box_top)])}" stroke-width="{w}"/>')
                leads.append(f'<path d="M{x:.1f},{box_top:.1f} L{x:.1f},{ptop:.1f}" stroke-width="{w}" marker-end="url(#arrow)"/>')
            continue
        if u[0] == "n" and u[1] in bodies:
            body = bodies[u[1]]
            x, _, pbottom = _port_at(lay, u, body, ("o", v[2]))
            box_bottom = lay.box(u)[3]
            out.append(f'<path d="{_path([(x, box_bottom)] + list(pts[1:]))}" stroke-width="{w}"/>')
            leads.append(f'<path d="M{x:.1f},{pbottom:.1f} L{x:.1f},{box_bottom:.1f}" stroke-width="{w}"/>')
            continue
        d = _side_path(pts) if (u, v) in side else _path(pts)
        out.append(f'<path d="{d}" stroke-width="{w}"{arrow}/>')
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
    for n in stage["nodes"]:
        key = ("n", n["id"])
        x, y = lay.pos[key]
        w, h = lay.size[key]
        fill, stroke = colors[n["id"]]
        extra = ""
        cls = "body-node" if in_body else "node"
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
        data = f'data-body-id="{n["id"]}"' if in_body else f'data-id="{n["id"]}"'
        if n.get("scan_input"):
            data += f' data-role="{_q(n["title"])}" data-slot="{n["scan_input"]["slot"]}"'
            extra += ' stroke-dasharray="3,2"'
        if n["id"] in bodies:
            body = bodies[n["id"]]
            sc = n["scan"]
            tip += list(body["caption"])
            data += (f' data-scan="{sc["direction"]}" data-bptt="{int(sc["bptt"])}"'
                     f' data-steps="{_q(sc["steps"])}"')
            x0, y0 = x - w / 2, y - h / 2
            out.append(
                f'<g class="{cls}" {data} data-op="{_q(n["op"])}"><title>{_q(chr(10).join(tip))}</title>'
                f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{w:.1f}" height="{h:.1f}" rx="8" '
                f'fill="{fill}" fill-opacity="0.25" stroke="{stroke}" stroke-width="1.8" stroke-dasharray="8,3"{extra}/>'
                f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{w:.1f}" height="{SCAN_HEAD - 6:.1f}" rx="8" '
                f'fill="{fill}" fill-opacity="0.8" stroke="none"/>'
            )
            out.append("</g>")
            continue
        out.append(
            f'<g class="{cls}" {data} data-op="{_q(n["op"])}"><title>{_q(chr(10).join(tip))}</title>'
            f'<rect x="{x - w / 2:.1f}" y="{y - h / 2:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{rx}" '
            f'fill="{fill}" stroke="{stroke}"{extra}/>'
        )
        sub = shorten(n["sub"], 52)
        y0 = y - h / 2
        out.append(f'<text x="{x:.1f}" y="{y0 + 16:.1f}" font-size="{TITLE_SIZE}">{_q(shorten(n["title"]))}</text>')
        if sub:
            out.append(f'<text x="{x:.1f}" y="{y0 + 29:.1f}" font-size="{SUB_SIZE}" fill="#555555">{_q(sub)}</text>')
        weights = n.get("weights", [])
        if weights:
            top_w = y0 + (36.0 if sub else 24.0)
            out.append(f'<rect x="{x - w / 2 + 2:.1f}" y="{top_w:.1f}" width="{w - 4:.1f}" '
                       f'height="{h - (top_w - y0) - 2:.1f}" rx="2" fill="#ffffff" fill-opacity="0.8"/>')
            for i, text in enumerate(weights):
                out.append(f'<text class="weight" x="{x - w / 2 + 8:.1f}" y="{top_w + 11 + i * WEIGHT_LINE:.1f}" '
                           f'font-size="{WEIGHT_SIZE}" text-anchor="start" fill="#333333">{_q(text)}</text>')
        out.append("</g>")
    for o in outputs or []:
        key = ("o", o["index"])
        x, y = lay.pos[key]
        w, h = lay.size[key]
        title, sub = _port_text(o)
        out.append(
            f'<g class="scan-output" data-out="{o["index"]}" data-role="{_q(o["role"])}">'
            f'<title>{_q(o["role"] + " (" + o["detail"] + "): " + o["outer"])}</title>'
            f'<rect x="{x - w / 2:.1f}" y="{y - h / 2:.1f}" width="{w:.1f}" height="{h:.1f}" rx="11" '
            f'fill="#ffffff" stroke="{PHASE_COLORS.get(stage.get("phase", ""), ("", "#555555"))[1]}" stroke-width="1.6"/>'
            f'<text x="{x:.1f}" y="{y - 2:.1f}" font-size="{TITLE_SIZE}" font-weight="bold">{_q(title)}</text>'
            f'<text x="{x:.1f}" y="{y + 11:.1f}" font-size="{SUB_SIZE}" fill="#555555">{_q(sub)}</text></g>'
        )
    out.append("</g>")
    # each scan's body over its box, the leads from the box's edge to the ports, and the
    # captions over the leads
    captions = []
    for nid, body in bodies.items():
        n = by_id[nid]
        x0, y0, _, _ = lay.box(("n", nid))
        sc = n["scan"]
        stage_b = {"nodes": sc["body"]["nodes"], "name": f"body of %{nid}", "phase": n["phase"]}
        out.append(f'<g class="scan-body" data-scan-id="{nid}" transform="translate({x0 + body["left"]:.1f},{y0 + SCAN_HEAD:.1f})">')
        out += _graph_svg(stage_b, body["layout"], body["values"], body["bodies"], color, {}, top, sc["outputs"])
        out.append("</g>")
        captions.append(
            f'<g class="caption" data-scan-id="{nid}" text-anchor="start" stroke="{colors[nid][0]}" stroke-width="4" '
            f'stroke-linejoin="round" paint-order="stroke">'
            f'<text x="{x0 + 10:.1f}" y="{y0 + 15:.1f}" font-size="{TITLE_SIZE}" font-weight="bold" fill="#222222">{_q(body["caption"][0])}</text>'
            f'<text x="{x0 + 10:.1f}" y="{y0 + 29:.1f}" font-size="{SUB_SIZE}" fill="#444444">{_q(body["caption"][1])}</text></g>'
        )
    if leads:
        out.append('<g class="leads" fill="none" stroke="#6b6b6b">')
        out += leads
        out.append("</g>")
    out += captions
    return out


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
    stages = [inline_sources(s) for s in stages]
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
