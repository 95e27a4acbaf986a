"""schedule (graphdl/passes/schedule.py): a topological order with the update phase last.

The order is checked by running it: `run_planned` executes the nodes in the schedule's
order through the memory plan made for it, so an order that reads a buffer after it was
reused, or a parameter after it was updated in place, gives other numbers than the
reference interpreter.
"""

from __future__ import annotations

import networkx as nx
import pytest
from pass_graphs import (
    T,
    assert_no_live_overlap,
    assert_plan_keeps_behaviour,
    assert_same_behaviour,
    feeds_for,
    init_params,
    init_state,
    mlp,
)

from graphdl.backends.reference import PlanError
from graphdl.ir.graph import Graph, Value
from graphdl.passes.infer_shapes import infer_shapes
from graphdl.passes.pipeline import PassContext
from graphdl.passes.plan_memory import plan_memory
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


def _wide_graph() -> Graph:
    g = Graph()
    x = g.input("x", T("N", 4))
    branches = [g.op("exp", g.op("mul_scalar", x, c=float(i))) for i in range(1, 5)]
    acc = branches[0]
    for b in branches[1:]:
        acc = g.op("add", acc, b)
    g.outputs["y"] = acc
    return g


def test_schedule_of_a_wide_graph():
    g = _wide_graph()
    s = schedule(g)
    assert_valid_order(s, s.meta["schedule"])
    assert "schedule" not in g.meta  # the input graph is not modified


# ------------------------------------------------------------ running the schedule


def _run_inputs(g: Graph):
    return feeds_for(g, n=5), init_params(g), init_state(g)


def test_scheduled_training_step_runs_like_the_reference(scheduled_training_graph):
    g, ctx = scheduled_training_graph
    before = ctx.snapshots["autodiff"]
    assert_plan_keeps_behaviour(before, plan_memory(g), *_run_inputs(before))


def test_scheduled_wide_graph_runs_like_the_reference():
    g = infer_shapes(_wide_graph())
    # without fusion every branch is its own node, so the order decides the slot reuse
    planned = plan_memory(schedule(g))
    plan = planned.meta["memory_plan"]
    assert len(plan["slots"]) < sum(1 for p in plan["values"].values() if "slot" in p)
    assert_plan_keeps_behaviour(g, planned, feeds_for(g))


def test_a_consumer_before_its_producer_is_caught(scheduled_training_graph):
    g, _ = scheduled_training_graph
    planned = plan_memory(g)
    order = planned.meta["schedule"]
    (consumer,) = planned.nodes_by_op("softmax_cross_entropy")
    producer = planned.inputs_of(consumer)[0].node
    i, j = order.index(producer), order.index(consumer)
    order[i], order[j] = order[j], order[i]
    with pytest.raises(PlanError, match="before its input"):
        assert_plan_keeps_behaviour(g, planned, *_run_inputs(g))


def test_swaps_that_invalidate_the_plan_are_caught(scheduled_training_graph):
    """Swap two adjacent independent nodes, keeping the plan made for the old order: the
    order is still topological, and the planned run differs from the reference exactly
    when the swap lets a value be overwritten before its last read."""
    g, ctx = scheduled_training_graph
    planned = plan_memory(g)
    before = ctx.snapshots["autodiff"]
    inputs = _run_inputs(before)
    order = planned.meta["schedule"]
    caught = harmless = 0
    for i in range(len(order) - 1):
        a, b = order[i], order[i + 1]
        if any(v.node == a for v in planned.inputs_of(b)):
            continue
        swapped = planned.copy()
        swapped.meta["schedule"] = order[:i] + [b, a] + order[i + 2:]
        assert_valid_order(swapped, swapped.meta["schedule"])
        try:
            assert_no_live_overlap(swapped)
        except AssertionError:
            with pytest.raises(AssertionError, match="Not equal to tolerance"):
                assert_plan_keeps_behaviour(before, swapped, *inputs)
            caught += 1
        else:
            assert_plan_keeps_behaviour(before, swapped, *inputs)
            harmless += 1
    assert caught >= 1 and harmless >= 1


def test_an_update_hoisted_before_a_reader_of_its_parameter_is_caught():
    """Run w2's optimiser update as early as its inputs allow, before the backward matmul
    that reads w2: a valid topological order, but the update writes w2 in place, so the
    gradient of w1 is computed with the new w2. The reference interpreter cannot see it."""
    g = mlp()
    g.meta["optimizer"] = {"type": "momentum", "lr": 0.1}
    ctx = PassContext(keep_snapshots=True)
    planned = ctx.run(g, training=True)
    before = ctx.snapshots["autodiff"]
    inputs = _run_inputs(before)
    assert_plan_keeps_behaviour(before, planned, *inputs)
    w2 = planned.find("param", "w2")
    update = planned.updates[w2].node
    ancestors = nx.ancestors(planned.nx, update)
    order = planned.meta["schedule"]
    hoisted = planned.copy()
    hoisted.meta["schedule"] = (
        [n for n in order if n in ancestors] + [update]
        + [n for n in order if n not in ancestors and n != update]
    )
    new_order = hoisted.meta["schedule"]
    assert_valid_order(hoisted, new_order)
    readers_after = [n for n, _ in hoisted.consumers(Value(w2))
                     if new_order.index(n) > new_order.index(update)]
    assert readers_after, "some reader of w2 now runs after its update"
    assert_same_behaviour(before, hoisted, *inputs)  # the reference ignores the order
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_plan_keeps_behaviour(before, hoisted, *inputs)


def _bidirectional_graph(kind: str) -> Graph:
    """x [N, T, 3] -> a 2-layer bidirectional ``kind`` layer (hidden 4) -> y."""
    from types import SimpleNamespace

    from graphdl.ir.types import TensorType
    from graphdl.layers import LAYERS
    from graphdl.layers.lower import LayerCtx

    g = Graph()
    x = g.input("x", TensorType(("N", "T", 3), "float32"))
    layer = SimpleNamespace(name="rnn", type=kind, trainable=True, lr_mult=1.0,
                            regularizer=None, params={"hidden": 4, "bidirectional": True,
                                                      "num_layers": 2})
    ctx = LayerCtx(g, None, layer, LAYERS[kind], False, None, salt=1, values={"x": x})
    g.outputs["y"] = LAYERS[kind].build(ctx, [x])
    return g


def _params_and_feeds(planned: Graph):
    """Random parameters of ``planned`` and an x of 2 samples of 5 steps."""
    import numpy as np

    r = np.random.default_rng(0)
    params = {name: (0.3 * r.standard_normal(planned.type_of(Value(nid)).shape)).astype(np.float32)
              for name, nid in planned.named("param").items()}
    return params, {"x": r.standard_normal((2, 5, 3)).astype(np.float32)}


def test_independent_scans_are_paired_and_planned_as_running_together():
    """The two directions of a bidirectional layer run on two threads: the schedule puts
    them side by side, the plan keeps every buffer one of them reads or writes apart from
    the other's, and the planned interpreter (sequential) computes what the graph does."""
    import numpy as np

    from graphdl.backends.reference import run_planned, run_reference
    from graphdl.compiler import compile_graph
    from graphdl.passes.pipeline import PassContext

    g = _bidirectional_graph("gru")
    planned = PassContext().run(g, training=False)
    pairs = planned.meta["parallel"]
    assert len(pairs) == 2  # one pair per layer
    order = planned.meta["schedule"]
    for a, b in pairs:
        assert order.index(b) == order.index(a) + 1
    params, feeds = _params_and_feeds(planned)
    want = run_reference(g, feeds, params)[0]["y"]
    np.testing.assert_allclose(run_planned(planned, feeds, params)[0]["y"], want, rtol=1e-5,
                               atol=1e-6)
    prog = compile_graph(g, "cpu")
    assert "prange" in prog.source_path.read_text()
    prog.bind_params(params, {})
    np.testing.assert_allclose(prog(feeds)["y"], want, rtol=1e-5, atol=1e-6)


def _slot_of(plan: dict, key: str):
    entry = plan[key]
    while "inplace" in entry or "alias" in entry:
        key = entry.get("inplace") or entry.get("alias")
        entry = plan.get(key, {"source": key})
    return entry.get("slot")


def test_paired_scans_take_their_prologues_to_their_threads():
    """A bidirectional LSTM: each direction's input projection (GEMM + bias) runs on the
    direction's thread, in the same parallel region as the loop (one region per layer);
    no buffer a thread writes is read or written by the other thread, and the program
    computes what the graph does."""
    import numpy as np

    from graphdl.backends.reference import run_reference
    from graphdl.compiler import compile_graph

    g = _bidirectional_graph("lstm")
    planned = PassContext().run(g, training=False)
    prologues = {s: nodes for s, nodes in planned.meta["prologues"]}
    pairs = planned.meta["parallel"]
    assert len(pairs) == 2 and all(s in prologues for pair in pairs for s in pair)
    order = planned.meta["schedule"]
    plan = planned.meta["memory_plan"]["values"]
    for a, b in pairs:
        group = prologues[a] + prologues[b] + [a, b]
        assert order[order.index(a) - len(group) + 2:order.index(b) + 1] == group
        assert any(planned.op_of(n) == "fused" for n in prologues[a])  # GEMM + bias
        touched = {}
        for s in (a, b):
            reads, writes = set(), set()
            for n in prologues[s] + [s]:
                assert n in nx.ancestors(planned.nx, s) | {s}
                reads |= {_slot_of(plan, f"{v.node}:{v.index}") for v in planned.inputs_of(n)
                          if f"{v.node}:{v.index}" in plan}
                writes |= {_slot_of(plan, f"{n}:{i}") for i in range(planned.num_outputs(n))}
            touched[s] = (reads - {None}, writes - {None})
        (ra, wa), (rb, wb) = touched[a], touched[b]
        assert not wa & (rb | wb) and not wb & ra
    prog = compile_graph(g, "cpu")
    source = prog.source_path.read_text()
    step = source[source.index("def step("):]
    assert step.count("par_") == 2 and "gemm_rows_split" not in step.split("par_1")[0]
    params, feeds = _params_and_feeds(planned)
    prog.bind_params(params, {})
    np.testing.assert_allclose(prog(feeds)["y"], run_reference(g, feeds, params)[0]["y"],
                               rtol=1e-5, atol=1e-6)


def test_independent_row_split_gemms_run_side_by_side():
    """Two GEMMs over every row of [N, T, F] with no path between them run as one parallel
    region, each whole on a thread (from SPLIT_ROWS rows on; below, one after the other
    on the calling thread), and give what NumPy gives either way."""
    import numpy as np

    from graphdl.compiler import compile_graph
    from graphdl.ir.types import TensorType

    g = Graph()
    x = g.input("x", TensorType(("N", "T", 8), "float32"))
    w1 = g.param("w1", TensorType((8, 16), "float32"))
    w2 = g.param("w2", TensorType((16, 8), "float32"))
    g.outputs["y1"] = g.op("matmul", x, w1)
    g.outputs["y2"] = g.op("matmul", x, w2, transpose_b=True)
    planned = PassContext().run(g, training=False)
    (pair,) = planned.meta["parallel_gemms"]
    order = planned.meta["schedule"]
    assert order.index(pair[1]) == order.index(pair[0]) + 1
    prog = compile_graph(g, "cpu")
    source = prog.source_path.read_text()
    assert "gemm_rows_split" not in source and "prange(2)" in source
    r = np.random.default_rng(0)
    params = {"w1": r.standard_normal((8, 16)).astype(np.float32),
              "w2": r.standard_normal((16, 8)).astype(np.float32)}
    prog.bind_params(params, {})
    for n, t in ((2, 3), (40, 8)):  # 6 rows: serial; 320: on two threads
        xs = r.standard_normal((n, t, 8)).astype(np.float32)
        got = prog({"x": xs})
        np.testing.assert_allclose(got["y1"], xs @ params["w1"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["y2"], xs @ params["w2"].T, rtol=1e-5, atol=1e-5)
