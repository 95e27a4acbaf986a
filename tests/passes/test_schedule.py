"""schedule (graphdl/passes/schedule.py): a topological order with the update phase last."""

from __future__ import annotations

import pytest
from pass_graphs import T, assert_same_behaviour, feeds_for, init_params, init_state, mlp

from graphdl.ir.graph import Graph, Value
from graphdl.passes.pipeline import PassContext
from graphdl.passes.schedule import schedule


def assert_valid_order(g: Graph, order: list[int]) -> None:
    assert sorted(order) == sorted(g.nodes()), "every node exactly once"
    pos = {n: i for i, n in enumerate(order)}
    for n in g.nodes():
        for v in g.inputs_of(n):
            assert pos[v.node] < pos[n], f"{g.describe(n)} runs before its input {v}"


@pytest.fixture(scope="module")
def scheduled_training_graph():
    g = mlp(dropout=0.25)
    g.meta["optimizer"] = {"type": "momentum"}
    g.meta["gradient_clip"] = {"max_norm": 1.0}
    ctx = PassContext(keep_snapshots=True)
    return ctx.run(g, training=True, stop_after="schedule"), ctx


def test_schedule_is_a_topological_order(scheduled_training_graph):
    g, _ = scheduled_training_graph
    assert_valid_order(g, g.meta["schedule"])


def test_update_phase_runs_after_everything_else(scheduled_training_graph):
    g, _ = scheduled_training_graph
    order = g.meta["schedule"]
    phases = [g.node(n)["phase"] for n in order]
    assert "update" in phases and "backward" in phases
    first_update = phases.index("update")
    assert all(p == "update" for p in phases[first_update:])
    # every reader of a parameter that is not itself an update runs before the updates
    for pid in g.updates:
        for reader, _ in g.consumers(Value(pid)):
            if g.node(reader)["phase"] != "update":
                assert order.index(reader) < first_update


def test_schedule_changes_nothing_but_meta(scheduled_training_graph):
    g, ctx = scheduled_training_graph
    before = ctx.snapshots["fuse"]
    assert "schedule" not in before.meta
    after = g.to_json()
    after["meta"] = dict(after["meta"])
    del after["meta"]["schedule"]
    assert after == before.to_json()
    feeds, params, state = feeds_for(g), init_params(g), init_state(g)
    assert_same_behaviour(before, g, feeds, params, state)


def test_schedule_of_a_wide_graph():
    g = Graph()
    x = g.input("x", T("N", 4))
    branches = [g.op("exp", g.op("mul_scalar", x, c=float(i))) for i in range(1, 5)]
    acc = branches[0]
    for b in branches[1:]:
        acc = g.op("add", acc, b)
    g.outputs["y"] = acc
    s = schedule(g)
    assert_valid_order(s, s.meta["schedule"])
    assert "schedule" not in g.meta  # the input graph is not modified
