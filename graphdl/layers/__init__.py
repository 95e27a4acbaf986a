"""Spec layers: the layer catalogue (one `LayerDef` per layer type: keys and lowering) and
`lower`, which turns a resolved spec into a forward graph.

Importing the package defines every layer type (core before conv, which builds on it; the
schema lists the types in this order); it imports no numpy or numba.
"""

from graphdl.layers import conv, core, norm, residual, sequence  # noqa: F401  (each defines layer types)
from graphdl.layers.catalog import COMMON_LAYER_KEYS, LAYERS, LayerDef

__all__ = ["COMMON_LAYER_KEYS", "LAYERS", "LayerDef"]
