"""The graph (graphdl/ir/graph.py): building, queries, rewriting, copy and the JSON form."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphdl.backends.cpu.program import Program
from graphdl.backends.reference import run_reference
from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.passes.pipeline import PassContext


def T(*shape, dtype="float32"):
    return TensorType(shape, dtype)


def _model() -> Graph:
    """A small model whose attrs hold tuples, ints, None and symbols."""
    g = Graph()
    g.provenance.layer, g.provenance.line = "block", 3
    x = g.input("x", T("N", 2, 3))
    labels = g.input("labels", T("N", dtype="int64"))
    w = g.param("w", T(6, 4), init="glorot")
    h = g.op("reshape", x, shape=("N", -1))
    z = g.op("mul_scalar", g.op("matmul", h, w), c=0.5, div=("N",))
    sq = g.op("mul", z, z)  # one value in two slots
    g.outputs["loss"] = g.op(
        "add",
        g.op("softmax_cross_entropy", z, labels),
        g.op("sum", sq, axes=(0, 1), keepdims=False),
    )
    g.outputs["mean"] = g.op("mean", x, axes=None, keepdims=True)
    g.meta["optimizer"] = {"type": "adam", "lr": 0.001}
    return g


def _feeds(n=3):
    r = np.random.default_rng(0)
    return {
        "x": r.standard_normal((n, 2, 3)).astype(np.float32),
        "labels": r.integers(0, 4, size=n).astype(np.int64),
    }


PARAMS = {"w": np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)}


def _round_trip(g: Graph) -> Graph:
    return Graph.from_json(json.loads(json.dumps(g.to_json())))


def _text(g: Graph) -> str:
    return json.dumps(g.to_json(), sort_keys=True)


def test_building_infers_types_and_records_provenance():
    g = _model()
    (mm,) = g.nodes_by_op("matmul")
    assert g.type_of(Value(mm)) == T("N", 4)
    assert g.node(mm)["layer"] == "block" and g.node(mm)["line"] == 3
    assert g.node(mm)["phase"] == "forward"
    assert g.attrs(mm) == {"transpose_a": False, "transpose_b": False}  # defaults filled
    (mul,) = g.nodes_by_op("mul")
    a, b = g.inputs_of(mul)
    assert a == b and (mul, 0) in g.consumers(a) and (mul, 1) in g.consumers(a)
    assert g.find("param", "w") in g and g.named("input").keys() == {"x", "labels"}
    assert g.describe(mm) == f"%{mm}:matmul (layer 'block', line 3)"


def test_building_rejects_bad_calls():
    g = Graph()
    x = g.input("x", T(3))
    with pytest.raises(TypeError, match="not a Value"):
        g.add_node("relu", [x.node])
    with pytest.raises(TypeError, match="unknown attribute 'bogus'"):
        g.op("relu", x, bogus=1)
    with pytest.raises(TypeError, match="missing attribute 'exponent'"):
        g.op("pow", x)
    with pytest.raises(TypeError, match="not in"):
        g.op("cast", x, dtype="float16")
    with pytest.raises(KeyError, match="unknown op 'nope'"):
        g.op("nope", x)
    with pytest.raises(ValueError, match="has no type yet"):
        g.type_of(Value(g.add_node("relu", [x])))


def test_json_round_trip_of_a_built_graph():
    g = _model()
    g2 = _round_trip(g)
    assert _text(g2) == _text(g)
    assert sorted(g2.nodes()) == sorted(g.nodes())
    (rs,) = g2.nodes_by_op("reshape")
    assert g2.attrs(rs)["shape"] == ("N", -1)  # tuples come back as tuples
    (s,) = g2.nodes_by_op("sum")
    assert g2.attrs(s)["axes"] == (0, 1)
    assert g2.outputs == g.outputs and g2.meta == g.meta
    assert g2.add_node("relu", [g2.outputs["mean"]]) == g._next_id  # ids continue
    o1 = run_reference(g, _feeds(), PARAMS)[0]
    o2 = run_reference(g2, _feeds(), PARAMS)[0]
    for k in o1:
        np.testing.assert_array_equal(o1[k], o2[k])
    assert json.loads(g.dumps())["format"] == "graphdl-graph/1"


def test_json_round_trip_of_a_planned_training_graph():
    g = _model()
    planned = PassContext().run(g, training=True)
    back = _round_trip(planned)
    assert _text(back) == _text(planned)
    assert back.updates == planned.updates and back.updates
    assert back.meta["schedule"] == planned.meta["schedule"]
    p1, p2 = Program(planned), Program(back)  # the backend directly: no passes on `back`
    assert p1.source == p2.source
    results = []
    for prog in (p1, p2):
        params = {k: v.copy() for k, v in PARAMS.items()}
        state = {
            name: np.zeros(prog.state_types[name].shape or (1,), np.float32)
            for name in prog.sig.state
        }
        prog.bind_params(params, state)
        out = prog({**_feeds(), "lr": 0.01})
        results.append((out, params))
    (o1, w1), (o2, w2) = results
    assert set(o1) == set(o2) == {"loss", "mean"}
    for k in o1:
        np.testing.assert_array_equal(o1[k], o2[k])
    np.testing.assert_array_equal(w1["w"], w2["w"])
    assert not np.array_equal(w1["w"], PARAMS["w"])


def test_copy_is_independent():
    g = _model()
    c = g.copy()
    (ms,) = c.nodes_by_op("mul_scalar")
    c.attrs(ms)["c"] = 9.0
    c.set_type(Value(ms), T("N", 5))
    c.outputs["extra"] = Value(ms)
    c.meta["optimizer"]["lr"] = 1.0
    c.remove_node(c.nodes_by_op("mean")[0])
    assert g.attrs(ms)["c"] == 0.5 and g.type_of(Value(ms)) == T("N", 4)
    assert "extra" not in g.outputs and g.meta["optimizer"]["lr"] == 0.001
    assert g.nodes_by_op("mean")


def test_replace_all_uses_moves_consumers_outputs_and_updates():
    g = Graph()
    p = g.param("p", T(3))
    a = g.op("exp", p)
    b = g.op("tanh", p)
    y = g.op("add", a, a)
    g.outputs["a"] = a
    g.updates[p.node] = a
    g.replace_all_uses(a, b)
    assert g.inputs_of(y.node) == [b, b]
    assert g.outputs["a"] == b and g.updates[p.node] == b
    assert g.consumers(a) == []
    g.set_inputs(y.node, [p, b])
    assert g.inputs_of(y.node) == [p, b]
