"""infer_shapes (graphdl/passes/infer_shapes.py): a type for every value, located errors."""

from __future__ import annotations

import pytest
from pass_graphs import T, assert_same_behaviour, feeds_for, init_params, mlp

from graphdl.errors import GraphdlError
from graphdl.ir.graph import Graph, Value
from graphdl.passes.infer_shapes import infer_shapes


def _untyped_dense(hidden_in: int = 8):
    """x @ w + b -> relu, built with add_node: no types until infer_shapes."""
    g = Graph()
    x = g.input("x", T("N", 8))
    w, b = g.param("w", T(hidden_in, 3)), g.param("b", T(3))
    mm = g.add_node(
        "matmul", [x, w], {"transpose_a": False, "transpose_b": False}, layer="dense_9", line=12
    )
    add = g.add_node("add", [Value(mm), b], layer="dense_9", line=12)
    relu = g.add_node("relu", [Value(add)], layer="dense_9", line=12)
    g.outputs["y"] = Value(relu)
    return g, (mm, add, relu)


def test_types_every_value_symbolically():
    g, nodes = _untyped_dense()
    assert all(g.node(n)["types"] == [None] for n in nodes)
    s = infer_shapes(g)
    assert [s.node(n)["types"] for n in nodes] == [[T("N", 3)]] * 3
    assert all(g.node(n)["types"] == [None] for n in nodes)  # the input graph is untouched
    feeds, params = feeds_for(s, n=4), init_params(s)
    assert_same_behaviour(s, infer_shapes(s), feeds, params)


def test_retypes_a_typed_graph_identically():
    g = mlp(logits_output=True)
    s = infer_shapes(g)
    assert s.to_json() == g.to_json()
    assert s.type_of(s.outputs["logits"]) == T("N", 4) and s.type_of(s.outputs["loss"]) == T()


def test_shape_error_is_a_located_diagnostic():
    g, _ = _untyped_dense(hidden_in=7)
    g.meta["spec_path"] = "model.yaml"
    with pytest.raises(GraphdlError) as ei:
        infer_shapes(g)
    (d,) = ei.value.diagnostics
    assert ei.value.phase == "shapes"
    assert d.code == "E303" and d.line == 12 and d.file == "model.yaml"
    assert "matmul in layer 'dense_9'" in d.message
    assert "inner dims differ" in d.message and "(8 vs 7)" in d.message


def test_untyped_source_is_a_bug():
    g = Graph()
    x = Value(g.add_node("input", (), {}, name="x"))
    g.outputs["y"] = Value(g.add_node("relu", [x]))
    with pytest.raises(ValueError, match="has no type"):
        infer_shapes(g)
