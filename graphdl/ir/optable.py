"""The table of op definitions by name, which the graph builder and the verifier read.

The definitions themselves (`graphdl.ops.registry.OpDef`, one per op in the family files
of `graphdl/ops/`) register here when `graphdl.ops` is imported; the IR only needs what
every definition offers: ``check_attrs``, ``infer``, ``num_outputs``, ``inputs`` and
``variadic``. Keeping the table here lets the IR build typed graphs without importing the
op library, which sits above it.
"""

from __future__ import annotations

from typing import Any

OPS: dict[str, Any] = {}


def lookup(name: str) -> Any:
    """The definition of op ``name``; a KeyError that says how ops get registered."""
    try:
        return OPS[name]
    except KeyError:
        hint = "" if OPS else " (no op is registered: import graphdl.ops first)"
        raise KeyError(f"unknown op {name!r}{hint}") from None
