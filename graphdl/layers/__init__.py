"""Spec layers: the layer catalogue (one `LayerDef` per layer type: keys and lowering) and
`lower`, which turns a resolved spec into a forward graph.

Importing the package defines every layer type (core before conv, which builds on it; the
schema lists the types in this order); it imports no numba.
"""

from graphdl.layers import (  # noqa: F401  (each defines layer types)
    conv,
    core,
    norm,
    residual,
    sequence,
    transformer,
)
from graphdl.layers.catalog import COMMON_LAYER_KEYS, LAYERS, LayerDef

__all__ = ["COMMON_LAYER_KEYS", "LAYERS", "LayerDef"]
