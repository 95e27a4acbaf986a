"""Attention weights drawn as heatmaps: a self-contained offline HTML page, or a static SVG.

    write_attention("att.html", samples, title="transformer_reverse")

``samples`` holds one dict per sample drawn::

    {"name": "sample 0",
     "layers": [{"name": "encoder.0.multihead_attention",
                 "kind": "self" | "cross" | "causal" | "pool",
                 "weights": ndarray [heads, Tq, Tk] (each row sums to 1 over the keys),
                 "query_tokens": [str] * Tq, "key_tokens": [str] * Tk}, ...]}

For each sample the drawing is a grid: one row per layer, one heatmap per head and one for
the mean over the heads; query tokens label a heatmap's rows, key tokens its columns, and
the colour runs from white (weight 0) to dark blue (weight 1). The tokens are the real
ones only (padding already cut), so nothing is masked here; a causal layer's future keys
(exactly 0) are drawn grey so that "not allowed" reads apart from "allowed, not chosen".

The HTML page (inlined data, CSS and script; nothing fetched) lays each layer's heatmaps
out to the window, shows query, key and weight on hover, and switches sample, heads/mean
and colour scale. Its URL hash drives it for tests and screenshots:
``#sample=1&show=mean&scale=map&cell=16&hover=LAYER,HEAD,Q,K`` (HEAD an index or
``mean``). Once drawn, ``<body>`` carries ``data-rendered="1"``, ``data-label-px`` (the
smallest axis-label font size on screen, in CSS px) and ``data-hover``; ``<html>`` carries
``data-console-errors`` (errors and ``console.error`` calls seen by the page).

Tokens are user data: they reach the page as JSON escaped for a ``<script>`` element and
are written into the DOM as text; the SVG escapes them as XML.
"""

from __future__ import annotations

import math
from html import escape as html_escape
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import numpy as np

from graphdl.viz.html import json_for_script
from graphdl.viz.style import _mix, shorten, text_width

KINDS = {"self": "self-attention", "cross": "cross-attention", "causal": "causal self-attention",
         "pool": "attention pooling (one learned query)"}

# The colour scale, white (0) to dark blue (1): lightness falls evenly, so equal steps of
# weight read as equal steps of ink.
RAMP = ("#ffffff", "#dde9f5", "#b6cfe9", "#84afd8", "#5690c6", "#2f6fae", "#17508e", "#0a2f63")
MASKED = "#e4e4e4"  # a causal layer's future keys
NOT_A_NUMBER = "#f2a7a7"

# Geometry shared by the page's script and the SVG writer (both follow these numbers).
LABEL_PX = 12  # axis labels: never below this on screen at the default zoom
LABEL_CHARS = 14  # longer tokens are cut with an ellipsis (the tooltip has them whole)
MIN_CELL = 6
MAX_CELL = 30
SVG_MAP_PX = 300  # the SVG sizes cells so the longer axis of a heatmap is about this long
SVG_TOOLTIP_CELLS = 1024  # a larger map has no per-cell tooltips in the SVG
SVG_FAINT = 0.01  # drawn within 3 of white in each channel
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"


def write_attention(path: str | Path, samples: list[dict], title: str = "") -> None:
    """Draw attention weights to ``path``: ``.html``/``.htm`` (interactive, offline) or
    ``.svg`` (static; all samples stacked). See the module docstring for ``samples``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".html", ".htm", ".svg"):
        raise ValueError(f"cannot tell the format of {str(path)!r}: use .html or .svg")
    checked = [_check_sample(s, k) for k, s in enumerate(samples)]
    if not checked:
        raise ValueError("no samples to draw")
    heading = title or "attention weights"
    if suffix == ".svg":
        text = render_attention_svg(checked, heading)
    else:
        text = render_attention_html(checked, heading)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _check_sample(sample: dict, k: int) -> dict:
    """The sample with float64 weights and str tokens; a ValueError naming the sample and
    layer when a shape disagrees."""
    name = str(sample.get("name", f"sample {k}"))
    layers = []
    for i, layer in enumerate(sample["layers"]):
        where = f"{name}, layer {i} ({layer.get('name', '?')})"
        w = np.asarray(layer["weights"], dtype=np.float64)
        if w.ndim != 3 or 0 in w.shape:
            raise ValueError(f"{where}: weights must be [heads, Tq, Tk], got shape {w.shape}")
        q = [str(t) for t in layer["query_tokens"]]
        kt = [str(t) for t in layer["key_tokens"]]
        if len(q) != w.shape[1] or len(kt) != w.shape[2]:
            raise ValueError(f"{where}: weights {list(w.shape)} need {w.shape[1]} query and "
                             f"{w.shape[2]} key tokens, got {len(q)} and {len(kt)}")
        kind = layer.get("kind", "self")
        if kind not in KINDS:
            raise ValueError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        layers.append({"name": str(layer.get("name", f"layer {i}")), "kind": kind, "weights": w,
                       "query_tokens": q, "key_tokens": kt})
    return {"name": name, "layers": layers}


def masked(kind: str, weights: np.ndarray) -> np.ndarray:
    """[Tq, Tk] bools: the future keys of a causal layer, where every head's weight is
    exactly 0 (query i, one of the last Tq positions, may see keys up to i + Tk - Tq)."""
    _, tq, tk = weights.shape
    if kind != "causal":
        return np.zeros((tq, tk), dtype=bool)
    future = np.arange(tk)[None, :] > np.arange(tq)[:, None] + (tk - tq)
    return future & np.all(weights == 0, axis=0)


def _flat(w: np.ndarray) -> list:
    """A [Tq, Tk] map as one row-major list, 4 decimals, null where not finite."""
    values = np.round(w, 4).ravel().astype(object)
    values[~np.isfinite(w.ravel())] = None
    return values.tolist()


def page_data(samples: list[dict], title: str) -> dict:
    """The JSON the page draws from."""
    out = []
    for s in samples:
        layers = []
        for layer in s["layers"]:
            w = layer["weights"]
            layers.append({
                "name": layer["name"], "kind": layer["kind"], "kind_text": KINDS[layer["kind"]],
                "query_tokens": layer["query_tokens"], "key_tokens": layer["key_tokens"],
                "heads": [_flat(h) for h in w], "mean": _flat(w.mean(axis=0)),
                "masked": [int(k) for k in np.flatnonzero(masked(layer["kind"], w))],
            })
        out.append({"name": s["name"], "layers": layers})
    style = {"ramp": list(RAMP), "masked": MASKED, "nan": NOT_A_NUMBER, "label_px": LABEL_PX,
             "label_chars": LABEL_CHARS, "min_cell": MIN_CELL, "max_cell": MAX_CELL}
    return {"format": "graphdl-attention/1", "title": title, "style": style, "samples": out}


# ---------------------------------------------------------------- SVG


def ramp_color(t: float) -> str:
    """The colour of weight ``t`` (clamped to [0, 1]) on the ramp."""
    t = min(max(t, 0.0), 1.0) * (len(RAMP) - 1)
    i = min(int(t), len(RAMP) - 2)
    return _mix(RAMP[i], RAMP[i + 1], t - i)


# the ramp in 256 shades, as the page's script draws it
SHADES = tuple(ramp_color(k / 255) for k in range(256))


def level_of(w: np.ndarray) -> np.ndarray:
    """The shade (0..255) of each weight; not-finite weights get 0 (drawn apart)."""
    return np.rint(np.clip(np.nan_to_num(w, nan=0.0), 0.0, 1.0) * 255).astype(np.int64)


def _q(s) -> str:
    return xml_escape(str(s), {'"': "&quot;"})


def label_stride(cell: float) -> int:
    """Label every k-th row (column) so that labels are at least LABEL_PX + 2 apart."""
    return max(1, math.ceil((LABEL_PX + 2) / cell))


def _map_svg(w: np.ndarray, mask: np.ndarray, layer: dict, head: str, caption: str, cell: float,
             left: float, top: float) -> tuple[list[str], float, float]:
    """One heatmap: row labels on the left, column labels above (turned upright when they
    do not fit across), the cells (with their values as tooltips up to SVG_TOOLTIP_CELLS
    cells). Returns (markup, width, height) with the heatmap's top-left corner at (left,
    top)."""
    tq, tk = w.shape
    stride = label_stride(cell)
    rows = [shorten(t, LABEL_CHARS) for t in layer["query_tokens"]]
    cols = [shorten(t, LABEL_CHARS) for t in layer["key_tokens"]]
    row_w = max(text_width(t, LABEL_PX) for t in rows) + 8
    col_w = max(text_width(t, LABEL_PX) for t in cols)
    upright = col_w > cell * stride - 4
    col_h = (col_w if upright else LABEL_PX) + 8
    title_h = LABEL_PX + 10
    x0, y0 = left + row_w, top + title_h + col_h
    out = [f'<g class="heatmap" data-layer="{_q(layer["name"])}" data-head="{head}">',
           (f'<text x="{x0:.1f}" y="{top + LABEL_PX + 2:.1f}" font-size="{LABEL_PX + 1}" '
            f'font-weight="bold">{_q(caption)}</text>')]
    out.append(f'<g class="rows" font-size="{LABEL_PX}" text-anchor="end">')
    for i in range(0, tq, stride):
        out.append(f'<text x="{x0 - 4:.1f}" y="{y0 + (i + 0.5) * cell + LABEL_PX * 0.35:.1f}">{_q(rows[i])}</text>')
    out.append("</g>")
    out.append(f'<g class="cols" font-size="{LABEL_PX}" text-anchor="{"start" if upright else "middle"}">')
    for j in range(0, tk, stride):
        x = x0 + (j + 0.5) * cell
        if upright:
            out.append(f'<text transform="translate({x + LABEL_PX * 0.35:.1f},{y0 - 4:.1f}) rotate(-90)">{_q(cols[j])}</text>')
        else:
            out.append(f'<text x="{x:.1f}" y="{y0 - 5:.1f}">{_q(cols[j])}</text>')
    out.append("</g>")
    gap = 1.0 if cell >= 14 else 0.0
    size = f'width="{cell - gap:g}" height="{cell - gap:g}"'
    colors = np.where(mask, MASKED, np.where(np.isfinite(w), np.array(SHADES)[level_of(w)], NOT_A_NUMBER))
    out.append(f'<rect x="{x0:g}" y="{y0:g}" width="{tk * cell:g}" height="{tq * cell:g}" fill="#ffffff"/>')
    if tq * tk <= SVG_TOOLTIP_CELLS:
        # each cell a rect with its value as a tooltip
        out.append('<g class="cells" stroke="none" data-tooltips="1">')
        for i in range(tq):
            for j in range(tk):
                v = float(w[i, j])
                value = ("masked (future key)" if mask[i, j] else f"{v:.4f}" if math.isfinite(v)
                         else "not a number")
                tip = f"query {i} {layer['query_tokens'][i]!r} → key {j} {layer['key_tokens'][j]!r}: {value}"
                out.append(f'<rect x="{x0 + j * cell:g}" y="{y0 + i * cell:g}" {size} '
                           f'fill="{colors[i, j]}"><title>{_q(tip)}</title></rect>')
    else:
        # a large map: one path per colour, and the cells below SVG_FAINT left to the white
        # ground (64 x 64 rects with tooltips would cost half a megabyte a map)
        out.append('<g class="cells" stroke="none" data-tooltips="0">')
        shown = mask | ~(w < SVG_FAINT)  # NaN compares False: shown
        side = cell - gap
        for color in np.unique(colors[shown]):
            rows, cols = np.nonzero(shown & (colors == color))
            d = "".join(f"M{x0 + j * cell:g} {y0 + i * cell:g}h{side:g}v{side:g}h{-side:g}z"
                        for i, j in zip(rows.tolist(), cols.tolist()))
            out.append(f'<path fill="{color}" d="{d}"/>')
    out.append("</g>")
    out.append(f'<rect x="{x0 - 0.5:.1f}" y="{y0 - 0.5:.1f}" width="{tk * cell - gap + 1:.1f}" '
               f'height="{tq * cell - gap + 1:.1f}" fill="none" stroke="#9a9a9a"/>')
    out.append("</g>")
    return out, row_w + tk * cell, title_h + col_h + tq * cell


def _legend_svg(x: float, y: float, causal: bool) -> list[str]:
    stops = "".join(f'<stop offset="{k / (len(RAMP) - 1):.3f}" stop-color="{c}"/>' for k, c in enumerate(RAMP))
    out = [f'<g class="legend" font-size="{LABEL_PX}" transform="translate({x:.1f},{y:.1f})">',
           f'<defs><linearGradient id="ramp">{stops}</linearGradient></defs>',
           '<text x="0" y="11">weight</text>',
           '<rect x="52" y="0" width="200" height="14" fill="url(#ramp)" stroke="#9a9a9a"/>']
    for k in range(5):
        tx = 52 + 50 * k
        out.append(f'<line x1="{tx}" y1="14" x2="{tx}" y2="18" stroke="#666666"/>')
        out.append(f'<text x="{tx}" y="31" text-anchor="middle">{k / 4:g}</text>')
    if causal:
        out.append(f'<rect x="276" y="0" width="14" height="14" fill="{MASKED}" stroke="#9a9a9a"/>'
                   '<text x="296" y="11">masked (future key)</text>')
    out.append("</g>")
    return out


def render_attention_svg(samples: list[dict], title: str) -> str:
    """All samples stacked: for each, one row per layer of heatmaps (each head, then the
    mean over heads)."""
    body: list[str] = []
    y = 84.0
    width = 480.0
    causal = False
    for k, s in enumerate(samples):
        if k:
            body.append(f'<line class="sample-rule" x1="10" y1="{y:.1f}" x2="100%" y2="{y:.1f}" stroke="#bbbbbb"/>')
            y += 12
        body.append(f'<text class="sample" x="10" y="{y + 16:.1f}" font-size="16" font-weight="bold">{_q(s["name"])}</text>')
        y += 30
        for layer in s["layers"]:
            w = layer["weights"]
            heads, tq, tk = w.shape
            cell = float(min(MAX_CELL, max(MIN_CELL, SVG_MAP_PX // max(tq, tk))))
            mask = masked(layer["kind"], w)
            causal = causal or bool(mask.any())
            caption = f"{layer['name']} · {KINDS[layer['kind']]} · {heads} heads · {tq} queries × {tk} keys"
            body.append(f'<text x="10" y="{y + 14:.1f}" font-size="13" fill="#333333">{_q(caption)}</text>')
            y += 24
            x, row_h = 10.0, 0.0
            maps = [(str(h), w[h]) for h in range(heads)] + [("mean", w.mean(axis=0))]
            mean_title = f"mean of {heads} heads"
            for head, m in maps:
                part, mw, mh = _map_svg(m, mask, layer, head, mean_title if head == "mean" else f"head {head}",
                                        cell, x, y)
                body += part
                x += mw + 26
                row_h = max(row_h, mh)
            width = max(width, x)
            y += row_h + 22
        y += 10
    head = [f'<text x="10" y="24" font-size="17" font-weight="bold">{_q(title)}</text>']
    head += _legend_svg(10, 38, causal)
    svg = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{y:.0f}" '
         f'viewBox="0 0 {width:.0f} {y:.0f}" font-family="{FONT}" fill="#222222">'),
        f'<rect x="0" y="0" width="{width:.0f}" height="{y:.0f}" fill="#ffffff"/>',
    ]
    return "\n".join(svg + head + body + ["</svg>", ""])


# ---------------------------------------------------------------- HTML


def render_attention_html(samples: list[dict], title: str) -> str:
    """The page: the samples as JSON (see :func:`page_data`), drawn by the inlined script."""
    data = page_data(samples, title)
    return _PAGE.format(title=html_escape(title), css=_CSS, catcher=_CATCH_ERRORS,
                        data=json_for_script(data), script=_SCRIPT)


_PAGE = """<!DOCTYPE html>
<html lang="en" data-console-errors="0">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="graphdl attention">
<title>{title}</title>
<script>
{catcher}
</script>
<style>
{css}
</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <label id="sample-pick">sample <select id="sample"></select></label>
  <span id="sample-name" class="stats"></span>
  <label>show <select id="show">
    <option value="both">each head + mean</option>
    <option value="heads">each head</option>
    <option value="mean">mean over heads</option>
  </select></label>
  <label>colour scale <select id="scale">
    <option value="unit">0 to 1</option>
    <option value="map">0 to each map's max</option>
  </select></label>
  <label>cells <select id="cell">
    <option value="auto">fit the window</option>
    <option value="8">8 px</option>
    <option value="12">12 px</option>
    <option value="16">16 px</option>
    <option value="24">24 px</option>
    <option value="32">32 px</option>
  </select></label>
  <span id="legend"></span>
</header>
<main id="grid"></main>
<div id="tip" role="tooltip"></div>
<script type="application/json" id="attention-data">{data}</script>
<script>
{script}
</script>
</body>
</html>
"""

# Runs first, in <head>: counts uncaught errors, rejected promises and console.error calls
# on <html data-console-errors> (a test reads it from the dumped DOM).
_CATCH_ERRORS = """\
(function () {
  var seen = [];
  function note(text) {
    seen.push(String(text));
    document.documentElement.setAttribute("data-console-errors", String(seen.length));
    document.documentElement.setAttribute("data-console-text", seen.join(" | ").slice(0, 2000));
  }
  window.addEventListener("error", function (ev) { note(ev.message || "error"); });
  window.addEventListener("unhandledrejection", function (ev) { note("unhandled rejection: " + ev.reason); });
  var original = console.error;
  console.error = function () {
    note(Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
})();"""

_CSS = """\
* { box-sizing: border-box; }
html, body { margin: 0; height: 100%; }
body {
  font: 13px/1.35 "DejaVu Sans", Helvetica, Arial, sans-serif; color: #222; background: #fafafa;
  display: flex; flex-direction: column;
}
header {
  flex: none; display: flex; flex-wrap: wrap; align-items: center;
  gap: 6px 16px; padding: 7px 12px; background: #fff; border-bottom: 1px solid #ddd;
}
header h1 { font-size: 16px; margin: 0; }
header label { font-size: 13px; }
header select { font: inherit; font-size: 13px; padding: 2px 4px; }
.stats { color: #555; font-size: 13px; }
#legend { display: flex; align-items: center; gap: 8px; font-size: 12px; }
#legend .bar { position: relative; width: 180px; height: 14px; border: 1px solid #9a9a9a; }
#legend .ticks { display: flex; justify-content: space-between; width: 180px; font-size: 12px; }
#legend .sw { display: inline-block; width: 14px; height: 14px; border: 1px solid #9a9a9a; vertical-align: -3px; margin-right: 4px; }
/* room below the last layer, so that any layer can be scrolled to the top */
#grid { flex: 1; min-height: 0; overflow: auto; padding: 8px 12px 30vh; }
#grid .note { color: #555; font-size: 13px; margin-top: 4px; }
.layer { margin: 6px 0 14px; }
.layer h2 { font-size: 14px; margin: 0 0 4px; font-weight: 600; }
.layer h2 .kind { font-weight: normal; color: #555; margin-left: 8px; }
.maps { display: flex; flex-wrap: wrap; gap: 10px 18px; align-items: flex-start; }
.map { background: #fff; border: 1px solid #e2e2e2; border-radius: 4px; padding: 4px 8px 8px 4px; }
.map h3 { font-size: 13px; margin: 0 0 2px; font-weight: 600; }
.map.mean h3 { color: #0a2f63; }
.plot { position: relative; }
.plot svg { display: block; overflow: visible; }
.plot svg text { fill: #222; }
.plot svg text.hl { fill: #b35c00; font-weight: bold; }
.plot canvas { position: absolute; cursor: crosshair; outline: 1px solid #9a9a9a; }
.plot .cursor { position: absolute; pointer-events: none; border: 2px solid #e6a700; display: none; }
#tip {
  position: fixed; z-index: 5; display: none; pointer-events: none; max-width: 420px;
  background: #fff; border: 1px solid #888; border-radius: 4px; padding: 5px 8px;
  font-size: 13px; box-shadow: 0 2px 8px rgba(0, 0, 0, 0.18); white-space: pre;
}
#tip b { font-weight: 600; }
"""

# The page's script. Cell size, label stride and cut tokens follow the numbers in
# `style` (LABEL_PX, LABEL_CHARS, MIN_CELL, MAX_CELL), as the SVG writer does in Python.
_SCRIPT = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("attention-data").textContent);
  var STYLE = DATA.style;
  var state = { sample: 0, show: "both", scale: "unit", cell: "auto", hover: null };
  var grid = document.getElementById("grid");
  var tip = document.getElementById("tip");
  var measure = document.createElement("canvas").getContext("2d");
  measure.font = STYLE.label_px + 'px "DejaVu Sans", Helvetica, Arial, sans-serif';

  function rgb(hex) {
    return [1, 3, 5].map(function (i) { return parseInt(hex.slice(i, i + 2), 16); });
  }

  // 256 colours along the ramp
  var LUT = (function () {
    var stops = STYLE.ramp.map(rgb);
    var out = [];
    for (var k = 0; k < 256; k++) {
      var t = k / 255 * (stops.length - 1);
      var i = Math.min(Math.floor(t), stops.length - 2);
      var f = t - i;
      var c = stops[i].map(function (a, n) { return Math.round(a + (stops[i + 1][n] - a) * f); });
      out.push("rgb(" + c.join(",") + ")");
    }
    return out;
  })();

  function esc(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }

  function cut(s) {
    return s.length <= STYLE.label_chars ? s : s.slice(0, STYLE.label_chars - 1) + "\u2026";
  }

  function textWidth(s) { return measure.measureText(s).width; }

  function mapsOf(layer) {
    var maps = [];
    if (state.show !== "mean") {
      layer.heads.forEach(function (w, h) { maps.push({ head: String(h), title: "head " + h, w: w }); });
    }
    if (state.show !== "heads") {
      maps.push({ head: "mean", title: "mean of " + layer.heads.length + " heads", w: layer.mean });
    }
    return maps;
  }

  function labelStride(cell) { return Math.max(1, Math.ceil((STYLE.label_px + 2) / cell)); }

  // the cell size: what the user chose, or the largest that fits the layer's maps across
  // the window (between min_cell and max_cell; below that the maps wrap)
  function cellSize(layer, maps, rowW) {
    if (state.cell !== "auto") return Number(state.cell);
    var tq = layer.query_tokens.length, tk = layer.key_tokens.length;
    var avail = grid.clientWidth - 24;
    var across = Math.floor((avail - maps.length * (rowW + 32)) / (maps.length * tk));
    var tall = Math.floor(560 / tq);
    return Math.max(STYLE.min_cell, Math.min(STYLE.max_cell, across, tall));
  }

  function drawMap(canvas, layer, map, cell) {
    var tq = layer.query_tokens.length, tk = layer.key_tokens.length;
    var ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(tk * cell * ratio);
    canvas.height = Math.round(tq * cell * ratio);
    canvas.style.width = tk * cell + "px";
    canvas.style.height = tq * cell + "px";
    var ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, tk * cell, tq * cell);
    var top = 1;
    if (state.scale === "map") {
      top = 0;
      map.w.forEach(function (v) { if (v !== null && v > top) top = v; });
      if (top <= 0) top = 1;
    }
    var masked = new Set(layer.masked);
    var gap = cell >= 14 ? 1 : 0;
    for (var i = 0; i < tq; i++) {
      for (var j = 0; j < tk; j++) {
        var k = i * tk + j, v = map.w[k];
        if (masked.has(k)) ctx.fillStyle = STYLE.masked;
        else if (v === null) ctx.fillStyle = STYLE.nan;
        else ctx.fillStyle = LUT[Math.max(0, Math.min(255, Math.round(v / top * 255)))];
        ctx.fillRect(j * cell, i * cell, cell - gap, cell - gap);
      }
    }
  }

  function axesSvg(layer, cell, rowW, colH, upright) {
    var tq = layer.query_tokens.length, tk = layer.key_tokens.length;
    var stride = labelStride(cell);
    var w = rowW + tk * cell + 2, h = colH + tq * cell + 2;
    var out = ['<svg class="axes" width="' + w + '" height="' + h + '" style="font-size:' + STYLE.label_px + 'px">'];
    for (var i = 0; i < tq; i += stride) {
      out.push('<text class="tick row" data-i="' + i + '" text-anchor="end" x="' + (rowW - 5) + '" y="' +
        (colH + (i + 0.5) * cell + STYLE.label_px * 0.35).toFixed(1) + '">' + esc(cut(layer.query_tokens[i])) + "</text>");
    }
    for (var j = 0; j < tk; j += stride) {
      var x = rowW + (j + 0.5) * cell;
      var label = esc(cut(layer.key_tokens[j]));
      if (upright) {
        out.push('<text class="tick col" data-j="' + j + '" transform="translate(' + (x + STYLE.label_px * 0.35).toFixed(1) +
          "," + (colH - 5) + ') rotate(-90)">' + label + "</text>");
      } else {
        out.push('<text class="tick col" data-j="' + j + '" text-anchor="middle" x="' + x.toFixed(1) + '" y="' +
          (colH - 6) + '">' + label + "</text>");
      }
    }
    out.push("</svg>");
    return out.join("");
  }

  function layerBlock(layer, li) {
    var maps = mapsOf(layer);
    var tq = layer.query_tokens.length, tk = layer.key_tokens.length;
    var rowW = Math.ceil(Math.max.apply(null, layer.query_tokens.map(function (t) { return textWidth(cut(t)); }))) + 10;
    var cell = cellSize(layer, maps, rowW);
    var stride = labelStride(cell);
    var colW = Math.ceil(Math.max.apply(null, layer.key_tokens.map(function (t) { return textWidth(cut(t)); })));
    var upright = colW > cell * stride - 4;
    var colH = (upright ? colW : STYLE.label_px) + 10;

    var el = document.createElement("section");
    el.className = "layer";
    el.innerHTML = "<h2>" + esc(layer.name) + '<span class="kind">' + esc(layer.kind_text) + " \u00b7 " +
      layer.heads.length + " heads \u00b7 " + tq + " queries \u00d7 " + tk + " keys</span></h2>" +
      '<div class="maps"></div>';
    var box = el.querySelector(".maps");
    maps.forEach(function (map) {
      var card = document.createElement("div");
      card.className = "map" + (map.head === "mean" ? " mean" : "");
      card.innerHTML = "<h3>" + esc(map.title) + '</h3><div class="plot">' + axesSvg(layer, cell, rowW, colH, upright) +
        '<canvas role="img"></canvas><div class="cursor"></div></div>';
      var canvas = card.querySelector("canvas");
      canvas.style.left = rowW + "px";
      canvas.style.top = colH + "px";
      canvas.setAttribute("data-layer", String(li));
      canvas.setAttribute("data-head", map.head);
      canvas.setAttribute("aria-label", layer.name + ", " + map.title + ": attention of " + tq + " queries over " + tk + " keys");
      drawMap(canvas, layer, map, cell);
      var cursor = card.querySelector(".cursor");
      canvas.addEventListener("mousemove", function (ev) { hover(ev, canvas, cursor, layer, map, cell, rowW, colH); });
      canvas.addEventListener("mouseleave", function () {
        tip.style.display = "none";
        cursor.style.display = "none";
        card.querySelectorAll("svg.axes text.hl").forEach(function (t) { t.classList.remove("hl"); });
      });
      box.appendChild(card);
    });
    el.setAttribute("data-cell", String(cell));
    return el;
  }

  function hover(ev, canvas, cursor, layer, map, cell, rowW, colH) {
    var r = canvas.getBoundingClientRect();
    var j = Math.floor((ev.clientX - r.left) / cell), i = Math.floor((ev.clientY - r.top) / cell);
    var tq = layer.query_tokens.length, tk = layer.key_tokens.length;
    if (i < 0 || j < 0 || i >= tq || j >= tk) return;
    var k = i * tk + j, v = map.w[k];
    var value = layer.masked.indexOf(k) >= 0 ? "masked (future key)" : v === null ? "not a number" : v.toFixed(4);
    tip.textContent = "";
    [[layer.name + " \u00b7 " + map.title, ""],
     ["query " + i + ": ", layer.query_tokens[i]],
     ["key " + j + ": ", layer.key_tokens[j]],
     ["weight: ", value]].forEach(function (line, n) {
      var b = document.createElement("b");
      b.textContent = line[0];
      tip.appendChild(b);
      tip.appendChild(document.createTextNode(line[1] + (n < 3 ? "\n" : "")));
    });
    document.querySelectorAll("svg.axes text.hl").forEach(function (t) { t.classList.remove("hl"); });
    var axes = canvas.parentNode.querySelector("svg.axes");
    var rowLabel = axes.querySelector('text.row[data-i="' + i + '"]');
    var colLabel = axes.querySelector('text.col[data-j="' + j + '"]');
    if (rowLabel) rowLabel.classList.add("hl");
    if (colLabel) colLabel.classList.add("hl");
    tip.setAttribute("data-query", String(i));
    tip.setAttribute("data-key", String(j));
    tip.style.display = "block";
    var x = ev.clientX + 14, y = ev.clientY + 16;
    var tw = tip.offsetWidth, th = tip.offsetHeight;
    if (x + tw > window.innerWidth - 4) x = ev.clientX - tw - 14;
    // at the bottom it moves up only as far as it must, so it never hides the map's labels
    if (y + th > window.innerHeight - 4) y = window.innerHeight - th - 4;
    tip.style.left = Math.max(4, x) + "px";
    tip.style.top = Math.max(4, y) + "px";
    cursor.style.display = "block";
    cursor.style.left = (rowW + j * cell - 1) + "px";
    cursor.style.top = (colH + i * cell - 1) + "px";
    cursor.style.width = (cell + 2) + "px";
    cursor.style.height = (cell + 2) + "px";
  }

  function legend() {
    var el = document.getElementById("legend");
    var stops = STYLE.ramp.map(function (c, k) { return c + " " + (100 * k / (STYLE.ramp.length - 1)).toFixed(1) + "%"; });
    var high = state.scale === "map" ? "map max" : "1";
    var html = '<span>weight</span><span><span class="bar" style="display:block;background:linear-gradient(to right,' +
      stops.join(",") + ')"></span><span class="ticks"><span>0</span><span>' + (state.scale === "map" ? "" : "0.5") +
      "</span><span>" + high + "</span></span></span>";
    var sample = DATA.samples[state.sample];
    if (sample.layers.some(function (l) { return l.masked.length > 0; })) {
      html += '<span><span class="sw" style="background:' + STYLE.masked + '"></span>masked (future key)</span>';
    }
    var nan = sample.layers.some(function (l) {
      return l.mean.indexOf(null) >= 0 || l.heads.some(function (w) { return w.indexOf(null) >= 0; });
    });
    if (nan) html += '<span><span class="sw" style="background:' + STYLE.nan + '"></span>not a number</span>';
    el.innerHTML = html;
  }

  // the smallest axis-label font size as drawn on screen, in CSS px
  function labelPx() {
    var least = Infinity;
    grid.querySelectorAll("svg.axes text.tick").forEach(function (t) {
      var m = t.getScreenCTM();
      var size = parseFloat(getComputedStyle(t).fontSize) * Math.sqrt(m.a * m.a + m.b * m.b);
      least = Math.min(least, size);
    });
    return least;
  }

  function render() {
    var sample = DATA.samples[state.sample];
    tip.style.display = "none";
    document.getElementById("sample-name").textContent = DATA.samples.length > 1 ? "" : sample.name;
    grid.textContent = "";
    sample.layers.forEach(function (layer, li) { grid.appendChild(layerBlock(layer, li)); });
    var note = document.createElement("p");
    note.className = "note";
    note.textContent = "Rows are queries, columns keys; each row sums to 1 over its keys. " +
      "Hover a cell for its query, key and weight.";
    grid.appendChild(note);
    legend();
    document.body.setAttribute("data-rendered", "1");
    document.body.setAttribute("data-sample", String(state.sample));
    document.body.setAttribute("data-label-px", labelPx().toFixed(2));
    document.body.setAttribute("data-maps", String(grid.querySelectorAll("canvas").length));
  }

  // hover=LAYER,HEAD,Q,K from the hash: a mouse move at that cell's centre, sent to
  // whatever element the browser finds there (so a covered heatmap fails)
  function hoverFromHash(spec) {
    var p = spec.split(",");
    var canvas = grid.querySelector('canvas[data-layer="' + p[0] + '"][data-head="' + p[1] + '"]');
    if (!canvas) { document.body.setAttribute("data-hover", "no such heatmap"); return; }
    var cell = Number(canvas.closest(".layer").getAttribute("data-cell"));
    var r = canvas.getBoundingClientRect(), view = grid.getBoundingClientRect();
    if (r.top < view.top || r.bottom > view.bottom) {
      grid.scrollTop += r.top - view.top - 60;
      r = canvas.getBoundingClientRect();
    }
    var x = r.left + (Number(p[3]) + 0.5) * cell, y = r.top + (Number(p[2]) + 0.5) * cell;
    var target = document.elementFromPoint(x, y);
    if (target !== canvas) { document.body.setAttribute("data-hover", "covered"); return; }
    target.dispatchEvent(new MouseEvent("mousemove", { clientX: x, clientY: y, bubbles: true }));
    document.body.setAttribute("data-hover", tip.style.display === "block" ? "shown" : "hidden");
  }

  function readHash() {
    var out = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var i = kv.indexOf("=");
      if (i > 0) out[decodeURIComponent(kv.slice(0, i))] = decodeURIComponent(kv.slice(i + 1));
    });
    return out;
  }

  function init() {
    document.getElementById("title").textContent = DATA.title;
    var pick = document.getElementById("sample");
    DATA.samples.forEach(function (s, k) {
      var o = document.createElement("option");
      o.value = String(k);
      o.textContent = s.name;
      pick.appendChild(o);
    });
    if (DATA.samples.length < 2) document.getElementById("sample-pick").style.display = "none";
    var hash = readHash();
    if (hash.sample !== undefined) state.sample = Math.max(0, Math.min(DATA.samples.length - 1, Number(hash.sample) || 0));
    ["show", "scale", "cell"].forEach(function (key) {
      var sel = document.getElementById(key);
      if (hash[key] !== undefined && sel.querySelector('option[value="' + CSS.escape(hash[key]) + '"]')) state[key] = hash[key];
      sel.value = state[key];
      sel.addEventListener("change", function () { state[key] = sel.value; render(); });
    });
    pick.value = String(state.sample);
    pick.addEventListener("change", function () { state.sample = Number(pick.value); render(); });
    var resizing = null;
    window.addEventListener("resize", function () {
      if (state.cell !== "auto") return;
      clearTimeout(resizing);
      resizing = setTimeout(render, 150);
    });
    render();
    if (hash.layer !== undefined && grid.children[Number(hash.layer)]) {
      grid.scrollTop = grid.children[Number(hash.layer)].offsetTop - grid.offsetTop - 4;
    }
    if (hash.hover) hoverFromHash(hash.hover);
  }

  init();
})();
"""
