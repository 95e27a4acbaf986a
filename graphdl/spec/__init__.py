"""The spec language front end: YAML -> located, validated, resolved :class:`Spec`.

Phases (each reports all of its errors, in file order, capped at 20, then stops):

1. ``yaml``: syntax (E001) and duplicate keys (E002), YAML 1.2 core-schema scalars;
2. ``schema``: JSON Schema draft-07 (E101-E106);
3. ``references``: ``$name`` substitution, block expansion, layer references (E201-E206,
   plus E1xx for values a substitution made invalid; E107 a metric or monitor that cannot
   exist for the loss, ``graphdl.spec.metrics``).

Importing this package must stay fast: no numba, no numpy.
"""

from __future__ import annotations

from pathlib import Path

from graphdl.errors import GraphdlError
from graphdl.spec.datatypes import InputSpec, LayerSpec, Location, ModelSpec, Spec
from graphdl.spec.loader import load_yaml, read_spec_text

__all__ = [
    "InputSpec",
    "LayerSpec",
    "Location",
    "ModelSpec",
    "Spec",
    "load_spec",
    "schema_text",
    "validate_file",
]


def load_spec(path: str | Path, text: str | None = None) -> Spec:
    """Load, validate and resolve the spec at ``path`` (or ``text``, reported as ``path``).

    Raises GraphdlError with phase "yaml", "schema" or "references".
    """
    # imported here so that `python -m graphdl.spec.schema_gen` does not import itself twice
    from graphdl.spec.resolve import resolve_document
    from graphdl.spec.validate import finish, validate_document

    path_str = str(path)
    if text is None:
        text = read_spec_text(path)
    loaded = load_yaml(path_str, text)
    diags = validate_document(loaded.data, loaded.positions, path_str)
    if diags:
        raise GraphdlError(finish(diags), phase="schema")
    spec = resolve_document(loaded, path_str)
    check_freeze(spec)
    return spec


def check_freeze(spec: Spec) -> None:
    """A freeze glob that matches no layer is an error (E207): it is almost always a typo."""
    import difflib
    import fnmatch

    from graphdl.errors import Diagnostic

    names = [layer.name for layer in spec.model.layers]
    diags = []
    for i, glob in enumerate(spec.train.get("freeze") or []):
        if fnmatch.filter(names, glob):
            continue
        loc = spec.loc("train", "freeze", i)
        close = difflib.get_close_matches(glob, names, n=1)
        diags.append(Diagnostic(
            "E207", f"freeze pattern '{glob}' matches no layer",
            file=loc.file, line=loc.line, col=loc.col, span=loc.span,
            path=f"train.freeze[{i}]",
            help=f"did you mean '{close[0]}'?" if close else "check the layer names with 'graphdl compile'",
            note="layers: " + ", ".join(names[:12]) + (", ..." if len(names) > 12 else ""),
        ))
    if diags:
        raise GraphdlError(diags, phase="references")


def schema_text() -> str:
    """The JSON Schema (draft-07) of a spec, as text (what ``graphdl schema`` prints)."""
    from graphdl.spec.validate import schema_text as _schema_text

    return _schema_text()


def validate_file(path: str | Path) -> Spec:
    """Same as :func:`load_spec` (syntax, schema and references; no numba import)."""
    return load_spec(path)
