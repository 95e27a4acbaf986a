"""Sequence layers (graphdl/layers/sequence.py): embedding's input check, padding row and
initialisation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from graphdl.ir.graph import Graph
from graphdl.ir.types import TensorType
from graphdl.layers import LAYERS
from graphdl.layers.lower import LayerCtx
from graphdl.ops.registry import ShapeError
from graphdl.runtime.params import init_params


def _embedding(params: dict, dtype: str = "int64") -> Graph:
    g = Graph()
    ids = g.input("ids", TensorType(("N", 8), dtype))
    layer = SimpleNamespace(name="emb", type="embedding", params=params, trainable=True,
                            lr_mult=1.0, regularizer=None)
    ctx = LayerCtx(g, None, layer, LAYERS["embedding"], True, None, salt=1)
    g.outputs["y"] = LAYERS["embedding"].build(ctx, [ids])
    return g


def test_embedding_maps_ids_to_vectors_with_a_normal_table():
    g = _embedding({"vocab": 300, "dim": 50})
    assert g.type_of(g.outputs["y"]) == TensorType(("N", 8, 50), "float32")
    w = init_params(g, seed=0)["emb.weight"]
    assert w.shape == (300, 50)
    assert abs(w.mean()) < 0.05 and abs(w.std() - 1.0) < 0.05  # N(0, 1), as torch


def test_embedding_padding_row_starts_at_zero():
    g = _embedding({"vocab": 10, "dim": 4, "padding_idx": 3})
    w = init_params(g, seed=0)["emb.weight"]
    assert np.all(w[3] == 0) and np.all(w[np.arange(10) != 3] != 0)


@pytest.mark.parametrize("params,dtype,match", [
    ({"vocab": 10, "dim": 4}, "float32", "expects int64 token ids, got float32"),
    ({"vocab": 10, "dim": 4, "padding_idx": 10}, "int64", r"padding_idx 10 is outside \[0, 10\)"),
])
def test_embedding_rejects_bad_input(params, dtype, match):
    with pytest.raises(ShapeError, match=match):
        _embedding(params, dtype)
