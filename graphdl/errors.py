"""User-facing diagnostics: located, coded errors that the CLI prints without a traceback.

Every mistake a user can make (a bad spec, bad data, a numerical failure) is raised as a
`GraphdlError` carrying one or more `Diagnostic`s. The CLI prints them compiler-style (or
as JSON with ``--format json``) and exits with code 2. Anything else is a bug in graphdl
and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Diagnostic:
    """One located message.

    ``code`` is stable (E0xx YAML, E1xx schema, E2xx references, E3xx shapes, E4xx weight
    loading, E5xx data, E6xx runtime/numerics, E7xx environment; a warning's code is
    Wxxx in the same ranges, and its ``severity`` "warning"). ``path`` is the YAML path
    (``model.layers[0].filtres``) when the problem is in a spec; ``line``/``col`` are 1-based.
    """

    code: str
    message: str
    file: str | None = None
    line: int | None = None
    col: int | None = None
    path: str | None = None
    help: str | None = None
    note: str | None = None
    span: int = 1  # how many characters to underline
    severity: str = "error"
    extra: dict = field(default_factory=dict)

    def location(self) -> str:
        parts = [self.file or "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.col is not None:
                parts.append(str(self.col))
        return ":".join(parts)

    def format(self, source_lines: list[str] | None = None) -> str:
        """Render like a compiler diagnostic, with the source line and a caret underline."""
        head = f"{self.location()}: {self.severity}[{self.code}]: {self.message}"
        lines = [head]
        if source_lines is None and self.file and self.line is not None:
            try:
                source_lines = Path(self.file).read_text(encoding="utf-8").splitlines()
            except OSError:
                source_lines = None
        if source_lines and self.line is not None and 1 <= self.line <= len(source_lines):
            text = source_lines[self.line - 1]
            gutter = " " * len(str(self.line))
            lines.append(f"{gutter} |")
            lines.append(f"{self.line} | {text}")
            if self.col is not None:
                lines.append(f"{gutter} | {' ' * (self.col - 1)}{'^' * max(1, self.span)}")
        if self.help:
            lines.append(f"  = help: {self.help}")
        if self.note:
            lines.append(f"  = note: {self.note}")
        if self.path:
            lines.append(f"  = at: {self.path}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["extra"]:
            d.pop("extra")
        return d


def format_path(path: Sequence[str | int]) -> str:
    """A YAML path as a `Diagnostic` shows it: ``("model", "layers", 0, "units")`` ->
    ``model.layers[0].units``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def diagnostic_at(code: str, message: str, file: str | None, pos: tuple[int, int, int],
                  path: Sequence[str | int], **kw) -> Diagnostic:
    """A `Diagnostic` at ``pos`` = (line, col, span) of ``file``, for the value at YAML path
    ``path`` (None when the path is empty)."""
    line, col, span = pos
    return Diagnostic(code=code, message=message, file=file, line=line, col=col, span=span,
                      path=format_path(path) or None, **kw)


class GraphdlError(Exception):
    """A user's mistake (or bad data / numerical failure), reported as diagnostics.

    The CLI catches this, prints every diagnostic and exits with code 2.
    """

    def __init__(self, diagnostics: Diagnostic | list[Diagnostic], phase: str = ""):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        self.phase = phase
        super().__init__(self.format())

    def format(self) -> str:
        return "\n\n".join(d.format() for d in self.diagnostics)

    def to_json(self) -> str:
        return json.dumps(
            {"phase": self.phase, "errors": [d.to_dict() for d in self.diagnostics]}, indent=2
        )


def warn(diagnostic: Diagnostic) -> None:
    """Report ``diagnostic`` as a warning: printed to stderr as the CLI prints an error
    (``file:line:col: warning[Wxxx]: ...`` with its source line and help); nothing stops."""
    diagnostic.severity = "warning"
    print(diagnostic.format() + "\n", file=sys.stderr)


def error(code: str, message: str, **kw) -> GraphdlError:
    """Shorthand: a GraphdlError holding one Diagnostic."""
    return GraphdlError(Diagnostic(code=code, message=message, **kw))
