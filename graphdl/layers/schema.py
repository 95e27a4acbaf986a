"""The vocabulary of the spec language's key tables: typed keys with defaults and docs.

A table is built from these nodes (``Leaf`` and its helpers ``integer``, ``number``, ``enum``
..., ``Obj``, ``Union``, ``MapOf``, ``ListOf``, ``LayerRef``); each node knows its JSON Schema
(draft-07). The layer catalogue (``graphdl.layers``) declares every layer's keys with them,
and ``graphdl.spec.schema_gen`` assembles the whole spec schema from them. A default is
written once, on the key that has it: the spec front end fills it in, lowering reads it.

Importing this module imports nothing else from graphdl (the spec front end stays light).
"""

from __future__ import annotations

import copy

REF_PATTERN = r"^\$[A-Za-z_][A-Za-z0-9_]*$"
IDENT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Layer names are identifiers; dotted names (``encoder.0.dense_1``) are what block expansion
# produces, and are accepted so that a resolved spec loads again.
LAYER_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()

REF_SCHEMA = {
    "type": "string",
    "pattern": REF_PATTERN,
    "description": "a reference to a block parameter or to an entry of vars: ($name)",
}


# --------------------------------------------------------------------------------------
# table node types
# --------------------------------------------------------------------------------------


class Leaf:
    """A value with a plain JSON schema; accepts a ``$name`` reference when ``ref``."""

    def __init__(self, schema: dict, doc: str, default=MISSING, required=False, ref=True):
        self.schema = schema
        self.doc = doc
        self.default = default
        self.required = required
        self.ref = ref

    def to_schema(self) -> dict:
        s = dict(self.schema)
        if self.ref and s.get("type") == "array" and "items" in s:
            s["items"] = {"anyOf": [s["items"], REF_SCHEMA]}
        if self.ref:
            s = {"anyOf": [s, REF_SCHEMA]}
        out = {"description": self.doc, **s}
        if self.default is not MISSING:
            out["default"] = self.default
        return out


class Obj:
    """A mapping with a closed key set."""

    def __init__(self, doc: str, fields: dict, required=False, default=MISSING, title=None):
        self.doc = doc
        self.fields = fields
        self.required = required
        self.default = default
        self.title = title

    def to_schema(self) -> dict:
        out: dict = {"description": self.doc, "type": "object"}
        if self.title:
            out["title"] = self.title
        out["properties"] = {k: v.to_schema() for k, v in self.fields.items()}
        req = [k for k, v in self.fields.items() if v.required]
        if req:
            out["required"] = req
        out["additionalProperties"] = False
        if self.default is not MISSING:
            out["default"] = self.default
        return out


class Union:
    """A tagged union: a mapping whose ``tag`` key picks the variant (each one closed)."""

    def __init__(self, doc, tag, variants: dict, default_variant=None, required=False):
        self.doc = doc
        self.tag = tag
        self.variants = variants  # name -> (doc, fields)
        self.default_variant = default_variant
        self.required = required
        self.default = MISSING if default_variant is None else {tag: default_variant}

    def variant_schema(self, name: str) -> dict:
        vdoc, fields = self.variants[name]
        props = {self.tag: {"const": name, "description": f"{self.tag} '{name}': {vdoc}"}}
        props.update({k: v.to_schema() for k, v in fields.items()})
        req = [self.tag] + [k for k, v in fields.items() if v.required]
        return {
            "title": f"{self.tag}: {name}",
            "description": vdoc,
            "type": "object",
            "properties": props,
            "required": req,
            "additionalProperties": False,
        }

    def to_schema(self) -> dict:
        out = {
            "description": self.doc,
            "anyOf": [self.variant_schema(n) for n in self.variants],
        }
        if self.default is not MISSING:
            out["default"] = self.default
        return out


class MapOf:
    """A mapping from user-chosen names (matching ``key_pattern``) to values."""

    def __init__(self, doc, value, key_pattern=IDENT_PATTERN, required=False, min_props=0,
                 default=MISSING):
        self.doc = doc
        self.value = value
        self.key_pattern = key_pattern
        self.required = required
        self.min_props = min_props
        self.default = default

    def to_schema(self) -> dict:
        out = {
            "description": self.doc,
            "type": "object",
            "propertyNames": {"pattern": self.key_pattern},
            "additionalProperties": self.value.to_schema(),
        }
        if self.min_props:
            out["minProperties"] = self.min_props
        return out


class ListOf:
    def __init__(self, doc, item, min_items=0, required=False, default=MISSING):
        self.doc = doc
        self.item = item
        self.min_items = min_items
        self.required = required
        self.default = default

    def to_schema(self) -> dict:
        out = {"description": self.doc, "type": "array", "items": self.item.to_schema()}
        if self.min_items:
            out["minItems"] = self.min_items
        if self.default is not MISSING:
            out["default"] = self.default
        return out


class LayerRef:
    """A layer (the tagged union of layer types, defined once under definitions/layer)."""

    doc = "a layer"
    required = False
    default = MISSING

    def to_schema(self) -> dict:
        return {"$ref": "#/definitions/layer"}


# --------------------------------------------------------------------------------------
# leaf helpers
# --------------------------------------------------------------------------------------


def integer(doc, minimum=None, **kw) -> Leaf:
    s: dict = {"type": "integer"}
    if minimum is not None:
        s["minimum"] = minimum
    return Leaf(s, doc, **kw)


def number(doc, minimum=None, maximum=None, exclusive_minimum=None, exclusive_maximum=None,
           **kw) -> Leaf:
    s: dict = {"type": "number"}
    for k, v in (("minimum", minimum), ("maximum", maximum),
                 ("exclusiveMinimum", exclusive_minimum), ("exclusiveMaximum", exclusive_maximum)):
        if v is not None:
            s[k] = v
    return Leaf(s, doc, **kw)


def boolean(doc, **kw) -> Leaf:
    return Leaf({"type": "boolean"}, doc, **kw)


def string(doc, pattern=None, **kw) -> Leaf:
    s: dict = {"type": "string"}
    if pattern:
        s["pattern"] = pattern
    return Leaf(s, doc, **kw)


def enum(doc, values, **kw) -> Leaf:
    return Leaf({"type": "string", "enum": list(values)}, doc, **kw)


def string_list(doc, item_pattern=None, enum_values=None, min_items=1, **kw) -> Leaf:
    item: dict = {"type": "string"}
    if item_pattern:
        item["pattern"] = item_pattern
    if enum_values:
        item["enum"] = list(enum_values)
    s: dict = {"type": "array", "items": item}
    if min_items:
        s["minItems"] = min_items
    return Leaf(s, doc, **kw)


def fraction(doc, default) -> Leaf:
    return number(doc, minimum=0, maximum=1, default=default)


def int_or_pair(doc, minimum=1, **kw) -> Leaf:
    """An int (both axes) or a pair [height, width] of ints >= ``minimum``."""
    return Leaf(
        {"oneOf": [
            {"type": "integer", "minimum": minimum},
            {"type": "array", "items": {"type": "integer", "minimum": minimum},
             "minItems": 2, "maxItems": 2},
        ]},
        doc,
        **kw,
    )


# --------------------------------------------------------------------------------------
# defaults
# --------------------------------------------------------------------------------------


def _as_float(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def fill(node, value):
    """``value`` with the defaults of table ``node`` filled in (absent keys without a
    default become None; numbers as floats). The spec front end fills a whole spec with it;
    code that takes one section (an optimizer mapping) fills it from the same table."""
    if isinstance(node, Leaf):
        t = node.schema.get("type")
        if t == "number":
            return _as_float(value)
        if t == "array" and node.schema.get("items", {}).get("type") == "number" and isinstance(
                value, list):
            return [_as_float(v) for v in value]
        return copy.deepcopy(value)
    if isinstance(node, Obj):
        if value is None:  # a section left out (or null) stays off: early_stopping, init
            return None
        return _fill_fields(node.fields, value if isinstance(value, dict) else {})
    if isinstance(node, Union):
        if not isinstance(value, dict) or value.get(node.tag) not in node.variants:
            return copy.deepcopy(value)
        tag = value[node.tag]
        return {node.tag: tag, **_fill_fields(node.variants[tag][1], value)}
    if isinstance(node, ListOf):
        if not isinstance(value, list):
            return copy.deepcopy(value)
        return [fill(node.item, v) for v in value]
    return copy.deepcopy(value)


def _fill_fields(fields: dict, value: dict) -> dict:
    out = {}
    for k, f in fields.items():
        if k in value:
            out[k] = fill(f, value[k])
        elif f.default is not MISSING:
            out[k] = fill(f, copy.deepcopy(f.default))
        else:
            out[k] = None
    return out
