"""One self-contained HTML page: the graph JSON, the vendored dagre layout library and the
viewer script are all inlined, so the file opens offline from disk (no server, no CDN).
"""

from __future__ import annotations

import json
import re
from html import escape
from importlib import resources

_SOURCE_MAP = re.compile(r"^//[#@] sourceMappingURL=.*$", re.MULTILINE)


def _read(package: str, name: str) -> str:
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def vendored_dagre() -> str:
    """dagre's minified build without its source-map reference (nothing to fetch)."""
    text = _read("graphdl.viz", "vendor/dagre.min.js")
    text = _SOURCE_MAP.sub("", text)
    if "</script" in text.lower():
        raise ValueError("the vendored dagre build cannot be inlined in a <script> element")
    return text


def json_for_script(data) -> str:
    """JSON that is safe inside <script>: no '<', '>' or '&' survive unescaped."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(doc: dict) -> str:
    title = escape(doc.get("title") or "graphdl graph")
    css = _read("graphdl.viz", "assets/viewer.css")
    js = _read("graphdl.viz", "assets/viewer.js")
    catcher = _read("graphdl.viz", "assets/catch_errors.js")
    return f"""<!DOCTYPE html>
<html lang="en" data-console-errors="0">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="graphdl viz">
<title>{title}</title>
<script>
{catcher}
</script>
<!-- Inlined below: dagre 3.1.3 (npm package @dagrejs/dagre, bundling @dagrejs/graphlib),
     MIT licence, Copyright (c) 2012-2014 Chris Pettitt. The licence text is in the script's
     header comment and in graphdl/viz/vendor/LICENSE of the graphdl package. -->
<style>
{css}
</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <span class="stats" id="stats"></span>
  <label>colour by <select id="color">
    <option value="phase">phase</option>
    <option value="group">fused group</option>
    <option value="flops">FLOPs</option>
    <option value="memory">planned memory</option>
  </select></label>
  <span id="legend"></span>
  <label title="parameters, optimiser state, constants and scalar inputs as nodes of their own instead of inside the nodes that read them"><input type="checkbox" id="sources"> weights as nodes</label>
  <button id="fit" type="button">fit</button>
  <button id="expandall" type="button">expand all</button>
  <button id="collapseall" type="button">collapse all</button>
  <span id="message" class="message"></span>
</header>
<div id="main">
  <div id="panels"></div>
  <aside id="side"><div id="details"></div><div id="tree"></div></aside>
</div>
<script type="application/json" id="graphdl-data">{json_for_script(doc)}</script>
<script>
{vendored_dagre()}
</script>
<script>
{js}
</script>
</body>
</html>
"""
