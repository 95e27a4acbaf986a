"""The reference interpreter (graphdl/backends/reference.py): symbol binding, values,
updates, and planned execution (`run_planned`) through the schedule and memory plan."""

from __future__ import annotations

import numpy as np
import pytest

from graphdl.backends.reference import PlanError, bind_symbols, run_planned, run_reference
from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.passes.pipeline import PassContext


def _graph():
    g = Graph()
    a = g.input("a", TensorType(("N", 3)))
    b = g.input("b", TensorType(("N", 1)))
    s = g.state("count", TensorType(()))
    g.outputs["y"] = g.op("mul_scalar", g.op("add", a, b), c=6.0, div=("N",))
    g.updates[s.node] = g.op("add_scalar", s, c=1.0)
    return g, a


def test_binds_symbols_and_runs():
    g, a = _graph()
    feeds = {"a": np.ones((4, 3), np.float32), "b": np.arange(4, dtype=np.float32)[:, None]}
    assert bind_symbols(g, feeds) == {"N": 4}
    outs, updates, values = run_reference(g, feeds, state={"count": np.float32(2)}, keep_all=True)
    np.testing.assert_allclose(outs["y"], (1 + np.arange(4)[:, None]) * np.ones(3) * 6 / 4)
    assert outs["y"].dtype == np.float32
    assert updates == {"count": 3.0}
    assert values[a] is not None and len(values) == len(g)
    assert run_reference(g, feeds, state={"count": np.float32(2)})[2] == {}


@pytest.mark.parametrize(
    "feeds,match",
    [
        ({"a": np.ones((4, 3)), "b": np.ones((5, 1))}, "dim N is 4 elsewhere, 5 here"),
        ({"a": np.ones((4, 2)), "b": np.ones((4, 1))}, "expected shape"),
        ({"a": np.ones(4), "b": np.ones((4, 1))}, "expected rank 2"),
    ],
)
def test_rejects_inconsistent_feeds(feeds, match):
    g, _ = _graph()
    with pytest.raises(ValueError, match=match):
        bind_symbols(g, feeds)


def _planned_graph():
    g, _ = _graph()
    x = g.find("input", "a")
    g.outputs["z"] = g.op("sum", g.op("exp", g.op("softmax", Value(x))), axes=1)
    return g, PassContext().run(g, training=False)


def _feeds(n: int = 4):
    r = np.random.default_rng(0)
    return {"a": r.standard_normal((n, 3)).astype(np.float32),
            "b": r.standard_normal((n, 1)).astype(np.float32)}


def test_planned_run_matches_and_leaves_the_callers_arrays_alone():
    g, planned = _planned_graph()
    assert any("slot" in p for p in planned.meta["memory_plan"]["values"].values())
    count = np.ones(1, np.float32)  # rank 0, kept as shape (1,) like the compiled program
    want_out, want_upd, _ = run_reference(g, _feeds(), state={"count": np.float32(1)})
    outs, updates, values = run_planned(planned, _feeds(), state={"count": count}, keep_all=True)
    for k in want_out:
        np.testing.assert_allclose(outs[k], want_out[k], rtol=1e-6)
    assert updates == want_upd == {"count": 2.0} and count[0] == 1.0
    assert len(values) == sum(1 for n in planned.nodes() if planned.op_of(n) not in
                              ("input", "param", "state", "const"))


def test_planned_run_needs_a_plan_that_fits():
    g, planned = _planned_graph()
    with pytest.raises(PlanError, match="no memory plan"):
        run_planned(g, _feeds(), state={"count": np.float32(1)})
    small = planned.copy()
    small.meta["memory_plan"]["slots"][0]["shapes"] = [[2, 3]]
    run_planned(small, _feeds(n=2), state={"count": np.float32(1)})
    with pytest.raises(PlanError, match="does not fit slot 0"):
        run_planned(small, _feeds(n=8), state={"count": np.float32(1)})
    wrong = planned.copy()
    wrong.meta["memory_plan"]["slots"][0]["dtype"] = "float64"
    with pytest.raises(PlanError, match="of dtype float64"):
        run_planned(wrong, _feeds(), state={"count": np.float32(1)})
