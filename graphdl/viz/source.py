"""Per-node excerpts of the generated kernel source.

The CPU code generator writes one module per program: loop kernels (``loop_0`` ...) whose
body starts with a ``# fused: op, op`` comment, then a step function in which every node's
code is preceded by a comment line ``# %<nid> <op> [phase] layer=... line=...``. For a node
we return its lines of the step function followed by the definitions of the module-level
kernels those lines call, so the viewer can show "what this fused group became".
"""

from __future__ import annotations

import re

_NODE_MARK = re.compile(r"^\s+# %(\d+)\b")
_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")


def _top_level_chunks(source: str) -> dict[str, list[str]]:
    """name -> lines (decorators included) of each module-level function."""
    chunks: dict[str, list[str]] = {}
    pending: list[str] = []
    current: list[str] | None = None
    for line in source.splitlines():
        if line.startswith("@"):
            pending.append(line)
            current = None
            continue
        if line.startswith("def "):
            name = line[4:].split("(", 1)[0].strip()
            current = pending + [line]
            pending = []
            chunks[name] = current
            continue
        if line and not line[0].isspace():
            current = None  # imports, assignments, a class: not a function body
            pending = []
            continue
        if current is not None:
            current.append(line)
    for lines in chunks.values():
        while lines and not lines[-1].strip():
            lines.pop()
    return chunks


def node_sources(source: str | None) -> dict[int, str]:
    """node id -> its step-function lines plus the kernels they call (empty if no source)."""
    if not source:
        return {}
    chunks = _top_level_chunks(source)
    blocks: dict[int, list[str]] = {}
    for lines in chunks.values():
        current: list[str] | None = None
        indent = 0
        for line in lines:
            m = _NODE_MARK.match(line)
            if m:
                current = blocks.setdefault(int(m.group(1)), [])
                indent = len(line) - len(line.lstrip())
                current.append(line.strip())
                continue
            if current is None:
                continue
            stripped = line.strip()
            if stripped.startswith("return ") or (stripped and len(line) - len(line.lstrip()) < indent):
                current = None
                continue
            if stripped:
                current.append(line[indent:].rstrip())
    out: dict[int, str] = {}
    for nid, lines in blocks.items():
        called = []
        for line in lines[1:]:
            for name in _CALL.findall(line):
                if name in chunks and name not in called:
                    called.append(name)
        text = "\n".join(lines)
        for name in called:
            text += "\n\n" + "\n".join(chunks[name])
        out[nid] = text
    return out
