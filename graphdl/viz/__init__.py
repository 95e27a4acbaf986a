"""The graph visualiser: any stage of a compiled graph as HTML, SVG or DOT.

    from graphdl.viz import draw
    draw(graph, "graph.html")                      # interactive, self-contained, offline
    draw(graph, "graph.svg", color="flops")        # static, pure-Python layered layout
    draw(lowered, "diff.html", compare=optimized)  # two stages side by side

The format follows the file suffix: ``.html``/``.htm``, ``.svg``, ``.dot``/``.gv``, and
``.png``/``.pdf`` (DOT rendered by Graphviz, only when ``dot`` is installed).
"""

from __future__ import annotations

from pathlib import Path

from graphdl.viz.data import STAGES, compare_data, document, snapshot_name, stage_data
from graphdl.viz.layout import Layout, layered_layout

__all__ = [
    "STAGES",
    "Layout",
    "compare_data",
    "document",
    "draw",
    "layered_layout",
    "snapshot_name",
    "stage_data",
    "write",
]

FORMATS = {".html": "html", ".htm": "html", ".svg": "svg", ".dot": "dot", ".gv": "dot",
           ".png": "png", ".pdf": "pdf"}


def format_of(path: str | Path) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the format of {str(path)!r}: use one of "
                         + ", ".join(sorted(FORMATS)))
    return fmt


def write(stages: list[dict], path: str | Path, *, color: str = "phase", title: str = "",
          compare: bool = False, info: dict | None = None) -> Path:
    """Write already-built stages (see :func:`stage_data`) to ``path``."""
    from graphdl.viz.style import COLOR_MODES

    if color not in COLOR_MODES:
        raise ValueError(f"unknown colouring {color!r}: one of {', '.join(COLOR_MODES)}")
    path = Path(path)
    fmt = format_of(path)
    doc = document(stages, title=title, compare=compare, info=info)
    cmp = doc.get("compare")
    if fmt == "html":
        from graphdl.viz.html import render_html

        doc["info"].setdefault("color", color)
        text = render_html(doc)
    elif fmt == "svg":
        from graphdl.viz.svg import render_svg

        text = render_svg(stages, color=color, title=title, compare=cmp)
    else:
        from graphdl.viz.dot import render_dot

        text = render_dot(stages, color=color, title=title, compare=cmp)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("png", "pdf"):
        from graphdl.viz.dot import render_with_dot

        dot_path = path.with_suffix(".dot")
        dot_path.write_text(text, encoding="utf-8")
        if not render_with_dot(dot_path, path, fmt):
            raise RuntimeError(f"writing {path.name} needs Graphviz's 'dot', which is not "
                               f"installed; {dot_path.name} was written instead")
        return path
    path.write_text(text, encoding="utf-8")
    return path


def draw(graph, path: str | Path, *, compare=None, color: str = "phase", title: str | None = None,
         source: str | None = None, bindings: dict[str, int] | None = None,
         names: tuple[str, str] = ("graph", "other"), info: dict | None = None) -> Path:
    """Draw a :class:`graphdl.ir.graph.Graph` to ``path`` (format from the suffix).

    ``compare``: a second graph (a later stage of the same program) drawn beside the
    first, nodes only one of them has marked. ``color``: phase, group (fused kernel),
    flops or memory. ``source``: the generated program source, whose per-node code the
    HTML shows. ``bindings``: sizes of symbolic dims for byte and FLOP counts (default
    32 for any symbol).
    """
    stages = [stage_data(graph, name=names[0], title=title or names[0], source=source,
                         bindings=bindings)]
    if compare is not None:
        stages.append(stage_data(compare, name=names[1], title=names[1], source=source,
                                 bindings=bindings))
    heading = title or str(graph.meta.get("spec") or "graphdl graph")
    return write(stages, path, color=color, title=heading, compare=compare is not None, info=info)
