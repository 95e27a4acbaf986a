"""simplify (graphdl/passes/simplify.py): constant folding, identities, CSE, DCE, fixed point."""

from __future__ import annotations

import numpy as np
import pytest
from pass_graphs import T, assert_same_behaviour, feeds_for, init_params, init_state, training_graph

from graphdl.ir.graph import Graph, Value
from graphdl.passes.simplify import FOLD_LIMIT, cse, dce, fold_constants, identities, simplify


def _ops(g: Graph) -> list[str]:
    return sorted(g.op_of(n) for n in g.nodes())


def _x_graph(*shape):
    g = Graph()
    return g, g.input("x", T(*shape))


def _feeds(n=4, *shape):
    return {"x": np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)}


def test_folds_constants():
    g, x = _x_graph("N", 3)
    c = g.op("exp", g.op("add", g.const([1.0, 2.0, 3.0]), g.const([0.5, 0.5, 0.5])))
    g.outputs["y"] = g.op("mul", x, c)
    s = simplify(g)
    assert _ops(s) == ["const", "input", "mul"]
    (cid,) = s.nodes_by_op("const")
    np.testing.assert_allclose(s.attrs(cid)["value"], np.exp([1.5, 2.5, 3.5]), rtol=1e-6)
    assert s.type_of(Value(cid)) == T(3)
    assert_same_behaviour(g, s, _feeds(4, 3))


def test_does_not_fold_large_constants():
    g, x = _x_graph("N", 3)
    big = g.const(np.ones((FOLD_LIMIT // 3 + 1, 3)))
    g.outputs["y"] = g.op("add", x, g.op("sum", g.op("add", big, big), axes=0))
    s = simplify(g)
    const_adds = [n for n in s.nodes_by_op("add") if s.inputs_of(n) == [big, big]]
    assert const_adds  # big + big is left to run time
    assert_same_behaviour(g, s, _feeds(2, 3))


IDENTITIES = {
    # name: builder of y from x ([N, 6] float32) that simplify reduces to x itself
    "x*1": lambda g, x: g.op("mul", x, g.const(np.ones(6))),
    "1*x": lambda g, x: g.op("mul", g.const(1.0), x),
    "x+0": lambda g, x: g.op("add", x, g.const(0.0)),
    "0+x": lambda g, x: g.op("add", g.const(np.zeros(6)), x),
    "x-0": lambda g, x: g.op("sub", x, g.const(0.0)),
    "x/1": lambda g, x: g.op("div", x, g.const(1.0)),
    "neg(neg x)": lambda g, x: g.op("neg", g.op("neg", x)),
    "mul_scalar 1": lambda g, x: g.op("mul_scalar", x, c=1.0),
    "add_scalar 0": lambda g, x: g.op("add_scalar", x, c=0.0),
    "reshape same": lambda g, x: g.op("reshape", x, shape=("N", 6)),
    "broadcast same": lambda g, x: g.op("broadcast_to", x, shape=("N", 6)),
    "reshape^2 back": lambda g, x: g.op(
        "reshape", g.op("reshape", x, shape=("N", 2, 3)), shape=("N", 6)
    ),
}


@pytest.mark.parametrize("name", sorted(IDENTITIES))
def test_identities_are_removed(name):
    g, x = _x_graph("N", 6)
    g.outputs["y"] = IDENTITIES[name](g, x)
    s = simplify(g)
    assert s.outputs["y"] == x
    assert _ops(s) == ["input"]
    assert_same_behaviour(g, s, _feeds(3, 6))


@pytest.mark.parametrize(
    "name,build",
    [
        ("x*1 broadcasting", lambda g, x: g.op("mul", x, g.const(np.ones((2, 1, 6))))),
        ("1/x", lambda g, x: g.op("div", g.const(1.0), x)),
        ("0-x", lambda g, x: g.op("sub", g.const(0.0), x)),
        ("x*2", lambda g, x: g.op("mul", x, g.const(2.0))),
        ("mul_scalar div", lambda g, x: g.op("mul_scalar", x, c=1.0, div=("N",))),
    ],
)
def test_non_identities_are_kept(name, build):
    g, x = _x_graph("N", 6)
    g.outputs["y"] = build(g, x)
    s = simplify(g)
    assert s.outputs["y"] != x
    assert_same_behaviour(g, s, _feeds(3, 6))


def test_chains_collapse():
    g, x = _x_graph("N", 6)
    r = g.op("reshape", g.op("reshape", x, shape=("N", 2, 3)), shape=("N", 3, 2))
    m = g.op("mul_scalar", g.op("mul_scalar", x, c=2.0), c=3.0, div=("N",))
    g.outputs["r"], g.outputs["m"] = r, m
    s = simplify(g)
    assert _ops(s) == ["input", "mul_scalar", "reshape"]
    (rid,) = s.nodes_by_op("reshape")
    assert s.inputs_of(rid) == [x]
    (mid,) = s.nodes_by_op("mul_scalar")
    assert s.inputs_of(mid) == [x] and s.attrs(mid)["c"] == 6.0
    assert tuple(s.attrs(mid)["div"]) == ("N",)
    assert_same_behaviour(g, s, _feeds(4, 6))


def test_cse_merges_duplicates():
    g, x = _x_graph("N", 4)
    a = g.op("exp", x)
    b = g.op("exp", x)
    s0 = g.op("sum", x, axes=0)
    s1 = g.op("sum", x, axes=1)
    c1, c2 = g.const([1.0, 2.0, 3.0, 4.0]), g.const([1.0, 2.0, 3.0, 4.0])
    y = g.op("add", g.op("mul", a, c1), g.op("mul", b, c2))
    g.outputs["y"], g.outputs["s0"], g.outputs["s1"] = y, s0, s1
    s = g.copy()
    assert cse(s)
    dce(s)
    assert len(s.nodes_by_op("exp")) == 1
    assert len(s.nodes_by_op("mul")) == 1  # equal consts merged first, then the muls
    assert len(s.nodes_by_op("const")) == 1
    assert len(s.nodes_by_op("sum")) == 2  # different attrs: not duplicates
    (add,) = s.nodes_by_op("add")
    m = s.inputs_of(add)
    assert m[0] == m[1]  # x * x style: one value in two slots
    assert_same_behaviour(g, s, _feeds(3, 4))
    assert_same_behaviour(g, simplify(g), _feeds(3, 4))


def test_dce_removes_dead_nodes_but_keeps_inputs():
    g, x = _x_graph("N", 4)
    unused = g.input("unused", T("N", 2))
    g.op("relu", g.op("exp", x))  # nobody reads it
    g.op("neg", unused)
    g.outputs["y"] = g.op("tanh", x)
    s = g.copy()
    assert dce(s)
    assert _ops(s) == ["input", "input", "tanh"]
    assert unused.node in s
    assert not dce(s)


def test_simplify_reaches_a_fixed_point_on_a_training_graph():
    tg = training_graph()
    s = simplify(tg)
    assert len(s) < len(tg)
    again = s.copy()
    assert not fold_constants(again)
    assert not identities(again)
    assert not cse(again)
    assert not dce(again)
    assert simplify(s).to_json() == s.to_json()
    feeds, params, state = feeds_for(tg), init_params(tg), init_state(tg)
    assert_same_behaviour(tg, s, feeds, params, state)


def test_simplify_does_not_modify_its_input():
    g, x = _x_graph("N", 6)
    g.outputs["y"] = g.op("mul", x, g.const(1.0))
    before = g.to_json()
    simplify(g)
    assert g.to_json() == before


def test_a_scan_stops_writing_the_outputs_nothing_reads():
    """The last layer of a stacked bidirectional GRU with output: last: its per-step
    sequences are read by nothing, so its loops stop stacking them."""
    from types import SimpleNamespace

    from graphdl.ir.types import TensorType
    from graphdl.layers import LAYERS
    from graphdl.layers.lower import LayerCtx
    from graphdl.passes.infer_shapes import infer_shapes

    g = Graph()
    x = g.input("x", TensorType(("N", "T", 3), "float32"))
    layer = SimpleNamespace(name="rnn", type="gru", trainable=True, lr_mult=1.0,
                            regularizer=None, params={"hidden": 4, "bidirectional": True,
                                                      "num_layers": 2, "output": "last"})
    ctx = LayerCtx(g, None, layer, LAYERS["gru"], False, None, salt=1, values={"x": x})
    g.outputs["y"] = LAYERS["gru"].build(ctx, [x])
    out = simplify(infer_shapes(g))
    scans = sorted(out.nodes_by_op("scan"))
    outputs = [out.num_outputs(n) for n in scans]
    assert outputs == [2, 2, 1, 1]  # layer 1 feeds layer 2 its sequence; layer 2 only h
    for n in scans[2:]:
        body = out.attrs(n)["body"]
        assert list(body.outputs) == ["c0"]


def _slice_grad_sum(g, x, pieces, size=8):
    total = None
    for start, stop in pieces:
        sg = g.op("slice_grad", g.op("slice", x, axis=1, start=start, stop=stop), axis=1,
                  start=start, size=size)
        total = sg if total is None else g.op("add", total, sg)
    return total


def test_a_sum_of_slice_gradients_that_tile_the_axis_is_a_concat():
    """The gradient of an LSTM's gate slices: zeros + copy per piece and a sum, now one
    concatenation of the pieces (in axis order, whatever order they were added in)."""
    g, x = _x_graph("N", 8)
    g.outputs["y"] = _slice_grad_sum(g, g.op("exp", x), [(5, 8), (0, 2), (2, 5)])
    s = simplify(g)
    assert "slice_grad" not in _ops(s) and "add" not in _ops(s)
    (cat,) = s.nodes_by_op("concat")
    starts = [s.attrs(v.node)["start"] for v in s.inputs_of(cat)]
    assert starts == [0, 2, 5]
    assert_same_behaviour(g, s, _feeds(3, 8))


@pytest.mark.parametrize("pieces", [[(0, 3), (4, 8)], [(0, 4), (3, 8)], [(0, 4), (0, 4), (4, 8)]])
def test_slice_gradients_that_do_not_tile_stay_a_sum(pieces):
    """A gap (zeros left), an overlap or a repeated piece (added twice) is not a concat."""
    g, x = _x_graph("N", 8)
    g.outputs["y"] = _slice_grad_sum(g, x, pieces)
    s = simplify(g)
    assert "concat" not in _ops(s) and "slice_grad" in _ops(s)
    assert_same_behaviour(g, s, _feeds(3, 8))


def _relu_pool_graph(other_reader: bool) -> Graph:
    """y = relu(x), p = max_pool(y), and the gradient of sum(p * r) wrt x written out as
    autodiff writes it: relu_grad(max_pool2d_grad(r, y), y)."""
    g = Graph()
    x = g.input("x", T("N", 2, 6, 8))
    r = g.input("r", T("N", 2, 3, 4))
    y = g.op("relu", x)
    attrs = {"kernel": (2, 2), "stride": None, "padding": (0, 0, 0, 0)}
    g.outputs["p"] = g.op("max_pool2d", y, **attrs)
    pooled = g.op("max_pool2d_grad", r, y, **attrs)
    g.outputs["gx"] = g.op("relu_grad", pooled, y)
    if other_reader:
        g.outputs["pooled"] = g.op("exp", pooled)
    return g


def test_relu_grad_of_a_max_pool_grad_folds_into_it():
    g = _relu_pool_graph(other_reader=False)
    s = simplify(g)
    assert "relu_grad" not in _ops(s)
    (pg,) = s.nodes_by_op("max_pool2d_grad")
    assert s.attrs(pg)["relu"] is True
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 2, 6, 8)).astype(np.float32),
             "r": np.random.default_rng(1).standard_normal((3, 2, 3, 4)).astype(np.float32)}
    feeds["x"][0, 0, :2, :2] = -1.0  # a window with no positive cell
    assert_same_behaviour(g, s, feeds)


def test_a_max_pool_grad_read_elsewhere_keeps_its_relu_grad():
    s = simplify(_relu_pool_graph(other_reader=True))
    assert "relu_grad" in _ops(s)
    assert all(not s.attrs(n)["relu"] for n in s.nodes_by_op("max_pool2d_grad"))
