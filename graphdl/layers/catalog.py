"""The layer catalogue: one `LayerDef` per spec layer type, its keys and its lowering together.

A layer type is defined once, in its family module (``core``, ``conv``, ``norm``,
``residual``), by the `layer` decorator on its lowering function::

    @layer("dropout", "randomly zeroes a fraction of the inputs during training", {
        "rate": number("fraction of inputs to drop", minimum=0, required=True),
    })
    def lower_dropout(ctx: LayerCtx, inputs: list[Value]) -> Value: ...

From `LAYERS` the spec front end generates the schema's layer variants and fills in
defaults, and `graphdl.layers.lower` dispatches to `LayerDef.build`. A builder reads a key
with ``ctx.arg(key)``, which falls back on the key's declared default: no builder writes a
default of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from graphdl.layers.schema import (
    LAYER_NAME_PATTERN,
    MISSING,
    Obj,
    boolean,
    integer,
    number,
    string,
    string_list,
)

if TYPE_CHECKING:
    from graphdl.ir.graph import Value
    from graphdl.layers.lower import LayerCtx

Build = Callable[["LayerCtx", "list[Value]"], "Value"]


@dataclass(frozen=True)
class LayerDef:
    """One spec layer type: its keys (beside the common ones) and how it lowers.

    ``fields`` maps each key to a table node of `graphdl.layers.schema` (type, range,
    default, description). ``build(ctx, inputs)`` adds the layer's ops to ``ctx.g`` and
    returns its output; ``None`` means the spec front end expands the layer into others
    before lowering (``residual``).
    """

    type: str
    doc: str
    fields: dict[str, Any] = field(default_factory=dict)
    build: Build | None = None

    def default(self, key: str) -> Any:
        """The declared default of ``key`` (`MISSING` when it has none)."""
        return self.fields[key].default

    def defaults(self) -> dict[str, Any]:
        """Every key that has a default, with it."""
        return {k: f.default for k, f in self.fields.items() if f.default is not MISSING}

    def required(self) -> list[str]:
        return [k for k, f in self.fields.items() if f.required]


# Every layer type, in the order the schema lists them (registration order).
LAYERS: dict[str, LayerDef] = {}


def define(definition: LayerDef) -> LayerDef:
    """Add a layer type to the catalogue (a type is defined once)."""
    if definition.type in LAYERS:
        raise ValueError(f"layer type {definition.type!r} is defined twice")
    LAYERS[definition.type] = definition
    return definition


def layer(type_name: str, doc: str, fields: dict | None = None) -> Callable[[Build], Build]:
    """Decorator: define layer type ``type_name`` with the decorated function as its lowering."""

    def register(build: Build) -> Build:
        define(LayerDef(type_name, doc, dict(fields or {}), build))
        return build

    return register


# Keys every layer may take (block uses too); the front end reads them, lowering gets them
# as LayerSpec attributes (trainable, lr_mult, regularizer).
COMMON_LAYER_KEYS: dict = {
    "name": string(
        "unique layer name (default: <type>_<index>); later layers refer to it in inputs:",
        pattern=LAYER_NAME_PATTERN, ref=False,
    ),
    "inputs": string_list(
        "names of the model inputs or earlier layers this layer reads (default: [prev], "
        "the previous layer)", ref=False,
    ),
    "repeat": integer(
        "block layers only: make N copies (name.0 ... name.N-1) with separate weights, "
        "chaining the first input", minimum=1,
    ),
    "trainable": boolean("false freezes this layer's weights", default=True),
    "lr_mult": number("learning-rate multiplier for this layer's weights", minimum=0,
                      default=1.0),
    "regularizer": Obj(
        "per-layer l1/l2 penalty, replacing train.regularization for this layer",
        {
            "l1": number("l1 penalty coefficient", minimum=0, default=0.0),
            "l2": number("l2 penalty coefficient", minimum=0, default=0.0),
        },
    ),
    "doc": string("free text describing the layer", ref=False),
}


def fmt_shape(t) -> str:
    """A value's shape as the spec writes it: without the batch dim."""
    return str(list(t.shape[1:]))


def pair(v) -> tuple[int, int]:
    """An int-or-pair key's value as (height, width)."""
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))
