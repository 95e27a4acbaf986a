"""The residual layer: ``x + body(x)``, expanded by the spec front end (no lowering of its own).

The front end (``graphdl.spec.resolve``) turns it into its body's layers and an ``add``,
so lowering never sees it.
"""

from __future__ import annotations

from graphdl.layers.catalog import LayerDef, define
from graphdl.layers.schema import LayerRef, ListOf

RESIDUAL = define(LayerDef(
    "residual",
    "x + body(x): runs the layers on its input and adds the input back",
    {"layers": ListOf("the body: a sequential list of layers", LayerRef(), min_items=1,
                      required=True)},
))
