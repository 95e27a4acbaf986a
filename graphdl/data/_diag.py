"""Located diagnostics for the data layer (codes E501-E508)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from graphdl.errors import Diagnostic, GraphdlError, format_path

YamlPath = tuple[str | int, ...]


def _loc_fields(loc: Any) -> dict | None:
    if loc is None:
        return None
    line = getattr(loc, "line", None)
    if line is None and getattr(loc, "file", None) is None:
        return None
    return {
        "file": getattr(loc, "file", None),
        "line": line,
        "col": getattr(loc, "col", None),
        "span": getattr(loc, "span", None) or 1,
    }


def locate(spec: Any, *path: str | int, loc: Any = None) -> dict:
    """Diagnostic keyword arguments (file/line/col/span/path) for a YAML path of the spec.

    ``loc`` (e.g. an InputSpec's own ``.loc``) wins when given. Otherwise the spec is asked
    for the full path and then for ever shorter prefixes (a key filled in by defaults has no
    position of its own, so the nearest written parent is used). Falls back to the spec file.
    """
    fields = _loc_fields(loc)
    if fields is None or fields.get("line") is None:
        getter = getattr(spec, "loc", None)
        for n in range(len(path), 0, -1):
            if getter is None:
                break
            try:
                found = _loc_fields(getter(*path[:n]))
            except Exception:  # noqa: BLE001 - a position lookup must never mask the real error
                found = None
            if found is not None and found.get("line") is not None:
                fields = found
                break
            fields = fields or found
    if fields is None:
        fields = {"file": getattr(spec, "path", None), "line": None, "col": None, "span": 1}
    if fields.get("file") is None:
        fields["file"] = getattr(spec, "path", None)
    fields["path"] = format_path(path) if path else None
    return fields


def diag(code: str, message: str, spec: Any, *path: str | int, loc: Any = None, **kw) -> Diagnostic:
    return Diagnostic(code=code, message=message, **locate(spec, *path, loc=loc), **kw)


def fail(
    code: str, message: str, spec: Any, *path: str | int, loc: Any = None, **kw
) -> GraphdlError:
    """A GraphdlError with one located Diagnostic (raise the result)."""
    return GraphdlError(diag(code, message, spec, *path, loc=loc, **kw), phase="data")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` did you mean 'x'?`` (with a leading space) or the empty string."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" did you mean '{match[0]}'?" if match else ""


def name_list(names: Iterable[str], limit: int = 20) -> str:
    names = [str(n) for n in names]
    if not names:
        return "(none)"
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names) - limit} more)"
    return shown
