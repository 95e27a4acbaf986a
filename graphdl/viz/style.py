"""Colours and sizes shared by the static renderers (SVG, DOT).

The HTML viewer implements the same four colourings in JavaScript (assets/viewer.js):
phase, fused group, estimated FLOPs and planned memory.
"""

from __future__ import annotations

import colorsys
import math

COLOR_MODES = ("phase", "group", "flops", "memory")

PHASE_COLORS = {  # fill, stroke
    "forward": ("#dce9f7", "#3b6ea8"),
    "backward": ("#fbe2cc", "#c0622b"),
    "update": ("#dcefd3", "#4a8a3a"),
}
OTHER = ("#eeeeee", "#777777")
REMOVED = "#d62728"
ADDED = "#2ca02c"
SOURCE_OPS = ("input", "param", "state", "const")


def _mix(a: str, b: str, t: float) -> str:
    ca = [int(a[i:i + 2], 16) for i in (1, 3, 5)]
    cb = [int(b[i:i + 2], 16) for i in (1, 3, 5)]
    t = min(max(t, 0.0), 1.0)
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb))


def lighter(color: str, t: float = 0.55) -> str:
    """``color`` mixed with white (the inside of a scan's box or cluster)."""
    return _mix(color, "#ffffff", t)


def group_color(k: int) -> tuple[str, str]:
    """A distinct pastel per fused kernel (golden-ratio hues)."""
    h = (k * 0.618033988749895) % 1.0
    r, g, b = colorsys.hls_to_rgb(h, 0.84, 0.6)
    r2, g2, b2 = colorsys.hls_to_rgb(h, 0.35, 0.6)
    return (
        "#" + "".join(f"{round(c * 255):02x}" for c in (r, g, b)),
        "#" + "".join(f"{round(c * 255):02x}" for c in (r2, g2, b2)),
    )


def node_colors(stage: dict, mode: str = "phase") -> dict[int, tuple[str, str]]:
    """node id -> (fill, stroke) under a colouring."""
    if mode not in COLOR_MODES:
        raise ValueError(f"unknown colouring {mode!r}: one of {', '.join(COLOR_MODES)}")
    nodes = stage["nodes"]
    out: dict[int, tuple[str, str]] = {}
    if mode == "phase":
        for n in nodes:
            out[n["id"]] = PHASE_COLORS.get(n["phase"], OTHER)
    elif mode == "group":
        k = 0
        for n in nodes:
            if n.get("fused"):
                out[n["id"]] = group_color(k)
                k += 1
            else:
                out[n["id"]] = ("#f4f4f4", "#999999")
    else:
        values = {n["id"]: metric(n, mode) for n in nodes}
        top = max([v for v in values.values() if v] or [1])
        for nid, v in values.items():
            if v is None:
                out[nid] = ("#ffffff", "#bbbbbb")
                continue
            t = math.log1p(v) / math.log1p(top) if top > 0 else 0.0
            if mode == "flops":
                out[nid] = (_mix("#fff8e1", "#e4572e", t), _mix("#c9a227", "#8c1c13", t))
            else:
                out[nid] = (_mix("#f1f0fb", "#6a51a3", t), _mix("#9e9ac8", "#3f007d", t))
    return out


def metric(node: dict, mode: str) -> int | None:
    """The number a FLOPs or memory colouring shows for a node."""
    if mode == "flops":
        return node.get("flops")
    if mode == "memory":
        mem = node.get("mem")
        if mem is not None:
            return mem["bytes"]
        if node["op"] in SOURCE_OPS:
            return 0
        return sum(b or 0 for b in node.get("bytes", []))
    return None


def legend(stage: dict, mode: str) -> list[tuple[str, str, str]]:
    """(label, fill, stroke) rows describing a colouring."""
    if mode == "phase":
        present = {n["phase"] for n in stage["nodes"]}
        return [(p, *PHASE_COLORS[p]) for p in PHASE_COLORS if p in present]
    if mode == "group":
        return [("fused kernel (one colour each)", *group_color(0)), ("not fused", "#f4f4f4", "#999999")]
    unit = "FLOPs" if mode == "flops" else "bytes planned"
    values = [metric(n, mode) or 0 for n in stage["nodes"]]
    top = max(values or [0])
    if mode == "flops":
        lo, hi = ("#fff8e1", "#c9a227"), ("#e4572e", "#8c1c13")
    else:
        lo, hi = ("#f1f0fb", "#9e9ac8"), ("#6a51a3", "#3f007d")
    return [(f"0 {unit}", *lo), (f"{human(top)} {unit} (log scale)", *hi)]


def human(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:g}"


def edge_width(nbytes: int | None, top: int) -> float:
    """Stroke width from 0.8 to 2.5 by the log of the bytes an edge carries (thicker
    edges hide the labels and nodes they pass)."""
    if not nbytes or top <= 1:
        return 0.8
    return round(0.8 + 1.7 * math.log1p(nbytes) / math.log1p(top), 2)


def text_width(text: str, size: float) -> float:
    """A conservative width estimate for sans-serif text (no font metrics at hand)."""
    wide = sum(1 for c in text if c in "mwMW@%")
    narrow = sum(1 for c in text if c in "il.,:;|![]() '·")
    return size * (0.6 * (len(text) - wide - narrow) + 0.9 * wide + 0.32 * narrow)


def shorten(text: str, limit: int = 44) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
