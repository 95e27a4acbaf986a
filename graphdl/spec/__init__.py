"""The spec language front end: YAML -> located, validated, resolved :class:`Spec`.

Phases (each reports all of its errors, in file order, capped at 20, then stops):

1. ``yaml``: syntax (E001) and duplicate keys (E002), YAML 1.2 core-schema scalars;
2. ``schema``: JSON Schema draft-07 (E101-E106);
3. ``references``: ``$name`` substitution, block expansion, layer references (E201-E206,
   plus E1xx for values a substitution made invalid).

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
    return resolve_document(loaded, path_str)


def schema_text() -> str:
    """The JSON Schema (draft-07) of a spec, as text (what ``graphdl schema`` prints)."""
    from graphdl.spec.validate import schema_text as _schema_text

    return _schema_text()


def validate_file(path: str | Path) -> Spec:
    """Same as :func:`load_spec` (syntax, schema and references; no numba import)."""
    return load_spec(path)
