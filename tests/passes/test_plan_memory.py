"""plan_memory (graphdl/passes/plan_memory.py): liveness, slot reuse, in-place, aliases."""

from __future__ import annotations

import numpy as np
import pytest
from pass_graphs import (
    T,
    assert_no_live_overlap,
    assert_plan_keeps_behaviour,
    compile_graph,
    feeds_for,
    init_params,
    init_state,
    mlp,
    spec_feeds,
    spec_passes,
    value_key,
)

from graphdl.backends.cpu.program import Program
from graphdl.backends.reference import run_reference
from graphdl.ir.graph import Graph, Value
from graphdl.passes.infer_shapes import infer_shapes
from graphdl.passes.pipeline import PassContext
from graphdl.passes.plan_memory import peak_bytes, slot_sizes


def _planned(g: Graph, training: bool) -> Graph:
    return PassContext().run(g, training=training)


def _inplace_graph():
    """softmax -> exp -> softmax: the exp can write over the dying first softmax."""
    g = Graph()
    x = g.input("x", T("N", 5))
    s = g.op("softmax", x)
    e = g.op("exp", s)
    r = g.op("reshape", g.op("softmax", e), shape=("N", 5, 1))
    g.outputs["y"] = g.op("sum", g.op("tanh", r), axes=2)
    return g


def _view_output_graph():
    g = Graph()
    x = g.input("x", T("N", 6))
    g.outputs["y"] = g.op("reshape", g.op("relu", x), shape=("N", 2, 3))
    return g


def _view_graph():
    """A softmax read through a view after an exp that is computed later: the view keeps
    the softmax's buffer alive."""
    g = Graph()
    x = g.input("x", T("N", 6))
    view = g.op("reshape", g.op("softmax", x), shape=("N", 2, 3))
    e = g.op("reshape", g.op("exp", g.op("mul_scalar", x, c=0.5)), shape=("N", 2, 3))
    g.outputs["y"] = g.op("sum", g.op("add", view, e), axes=2)
    return g


@pytest.fixture(scope="module")
def training_passes():
    g = mlp(dropout=0.1, l2=0.01)
    g.meta["optimizer"] = {"type": "adam", "lr": 1e-3}
    ctx = PassContext(keep_snapshots=True)
    ctx.run(g, training=True)
    return ctx


@pytest.fixture(scope="module")
def training(training_passes):
    return training_passes.snapshots["plan_memory"]


def _training_run(ctx: PassContext):
    """(graph before the passes, feeds, params, state) for the training MLP."""
    before = ctx.snapshots["autodiff"]
    return before, feeds_for(before, n=5), init_params(before), init_state(before)


def _share_slot(g: Graph, key: str, slot: int) -> Graph:
    """A copy of planned ``g`` whose value ``key`` is moved into ``slot`` (made big enough)."""
    bad = g.copy()
    plan = bad.meta["memory_plan"]
    plan["values"][key] = {"slot": slot}
    plan["slots"][slot]["shapes"].append(list(bad.type_of(Value(*map(int, key.split(":")))).shape))
    return bad


def test_no_two_live_values_share_a_buffer(training):
    assert_no_live_overlap(training)
    assert_no_live_overlap(_planned(mlp(logits_output=True), training=False))
    assert_no_live_overlap(_planned(_inplace_graph(), training=False))


def test_the_overlap_check_catches_a_bad_plan(training_passes, training):
    bad = training.copy()
    plan = bad.meta["memory_plan"]
    dtype = plan["slots"][0]["dtype"]
    for k, p in plan["values"].items():  # everything of slot 0's dtype in slot 0
        if "slot" in p and plan["slots"][p["slot"]]["dtype"] == dtype:
            plan["slots"][0]["shapes"] += plan["slots"][p["slot"]]["shapes"]
            plan["values"][k] = {"slot": 0}
    with pytest.raises(AssertionError, match="overwrites"):
        assert_no_live_overlap(bad)
    before, feeds, params, state = _training_run(training_passes)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_plan_keeps_behaviour(before, bad, feeds, params, state)


# ------------------------------------------------------------ executing the plan


def test_planned_training_step_matches_the_reference(training_passes, training):
    before, feeds, params, state = _training_run(training_passes)
    assert_plan_keeps_behaviour(before, training, feeds, params, state)


@pytest.mark.parametrize("build", [mlp, _inplace_graph, _view_output_graph, _view_graph])
def test_planned_inference_matches_the_reference(build):
    g = infer_shapes(build())
    planned = _planned(g, training=False)
    assert_no_live_overlap(planned)
    for n in (1, 4):
        assert_plan_keeps_behaviour(g, planned, feeds_for(g, n=n), init_params(g))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("spec", ["mlp_digits", "lenet_digits", "lenet_bn_digits"])
def test_planned_spec_graphs_match_the_reference(spec, mode):
    """A spec's program, compiled through every pass (no code generation), run through
    its schedule and memory plan: the same numbers as the graph before the passes."""
    ctx = spec_passes(spec, mode)
    before = ctx.snapshots["autodiff" if mode == "train" else "infer_shapes"]
    planned = ctx.snapshots["plan_memory"]
    assert_no_live_overlap(planned)
    feeds, params, state = spec_feeds(before), init_params(before), init_state(before)
    assert_plan_keeps_behaviour(before, planned, feeds, params, state)


def _live_pairs(g: Graph):
    """(written, clobbered) value keys: ``written`` is computed while ``clobbered`` (in
    another slot of the same dtype) is still to be read."""
    order = g.meta["schedule"]
    pos = {n: i for i, n in enumerate(order)}
    plan = g.meta["memory_plan"]
    last_read: dict[str, int] = {}
    for n in order:
        for v in g.inputs_of(n):
            last_read[value_key(v)] = max(last_read.get(value_key(v), -1), pos[n])
    slotted = {k: p["slot"] for k, p in plan["values"].items() if "slot" in p}
    for b, sb in slotted.items():
        for a, sa in slotted.items():
            b_node, a_node = int(b.split(":")[0]), int(a.split(":")[0])
            same_dtype = plan["slots"][sa]["dtype"] == plan["slots"][sb]["dtype"]
            if sa != sb and same_dtype and pos[a_node] < pos[b_node] < last_read.get(a, -1):
                yield b, a


def test_every_slot_shared_by_two_live_values_is_caught(training_passes, training):
    """Move any one value into the slot of another value still to be read: the planned
    run gives other numbers (the interpreter reads values back from their slots)."""
    before, feeds, params, state = _training_run(training_passes)
    pairs = list(_live_pairs(training))
    assert len(pairs) > 20
    for written, clobbered in pairs:
        slot = training.meta["memory_plan"]["values"][clobbered]["slot"]
        bad = _share_slot(training, written, slot)
        with pytest.raises(AssertionError, match="overwrites"):
            assert_no_live_overlap(bad)
        with pytest.raises(AssertionError, match="Not equal to tolerance"):
            assert_plan_keeps_behaviour(before, bad, feeds, params, state)


def test_an_op_that_is_not_elementwise_cannot_write_over_its_input():
    """The exp may take the dying softmax's slot (an elementwise loop reads each element
    before writing it); the second softmax may not take the dying exp's slot."""
    g = infer_shapes(_inplace_graph())
    planned = _planned(g, training=False)
    feeds = feeds_for(g, n=3)
    assert_plan_keeps_behaviour(g, planned, feeds)
    s2 = max(planned.nodes_by_op("softmax"))
    (exp_value,) = planned.inputs_of(s2)
    slot = planned.meta["memory_plan"]["values"][value_key(exp_value)]["slot"]
    bad = _share_slot(planned, f"{s2}:0", slot)
    with pytest.raises(AssertionError, match="overwrites"):
        assert_no_live_overlap(bad)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_plan_keeps_behaviour(g, bad, feeds)


def test_a_view_keeps_its_base_buffer_alive():
    """A plan that ends the softmax's life at its last direct reader (the reshape), not at
    the view's reader, lets the exp overwrite what the view shows."""
    g = infer_shapes(_view_graph())
    planned = _planned(g, training=False)
    feeds = feeds_for(g, n=3)
    assert_plan_keeps_behaviour(g, planned, feeds)
    plan = planned.meta["memory_plan"]["values"]
    (softmax,) = planned.nodes_by_op("softmax")
    (view,) = [n for n in planned.nodes_by_op("reshape") if planned.inputs_of(n) == [Value(softmax)]]
    assert plan[f"{view}:0"] == {"alias": f"{softmax}:0"}
    (exp_group,) = [n for n in planned.nodes_by_op("fused")
                    if "exp" in [m["op"] for m in planned.attrs(n)["members"]]]
    (view_reader, _) = planned.consumers(Value(view))[0]
    order = planned.meta["schedule"]
    assert order.index(view) < order.index(exp_group) < order.index(view_reader)
    bad = _share_slot(planned, f"{exp_group}:0", plan[f"{softmax}:0"]["slot"])
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_plan_keeps_behaviour(g, bad, feeds)


def test_parameters_and_state_are_updated_in_place(training):
    plan = training.meta["memory_plan"]["values"]
    assert len(training.updates) == 4 * 3 + 1  # w, m, v per param; the step count
    for target, v in training.updates.items():
        assert plan[value_key(v)]["inplace"] == f"{target}:0"
        assert plan[value_key(v)]["param"] == training.node(target)["name"]


def test_elementwise_in_place_and_views():
    g = _planned(_inplace_graph(), training=False)
    plan = g.meta["memory_plan"]["values"]
    (s1, s2) = sorted(g.nodes_by_op("softmax"))
    (exp_value,) = g.inputs_of(s2)
    assert g.inputs_of(exp_value.node) == [Value(s1)]
    assert plan[value_key(exp_value)] == plan[f"{s1}:0"]  # the dying input's slot
    (reshape,) = g.nodes_by_op("reshape")
    assert plan[f"{reshape}:0"] == {"alias": f"{s2}:0"}
    _, prog = compile_graph(_inplace_graph())
    prog.bind_params({}, {})
    feeds = feeds_for(g, n=3)
    np.testing.assert_allclose(
        prog(feeds)["y"], run_reference(g, feeds)[0]["y"], rtol=1e-5, atol=1e-6
    )


def test_peak_bytes_is_below_the_sum_of_all_values(training):
    n = 64
    total = sum(
        training.type_of(Value(node, i)).nbytes({"N": n})
        for node in training.nodes()
        for i in range(training.num_outputs(node))
    )
    peak = peak_bytes(training, {"N": n})
    assert 0 < peak < total
    plan = training.meta["memory_plan"]
    n_slotted = sum(1 for p in plan["values"].values() if "slot" in p)
    assert len(plan["slots"]) < n_slotted  # slots are reused
    assert peak_bytes(training, {"N": 2 * n}) > peak  # slots are sized by the batch
    sizes = slot_sizes(plan, {"N": n})
    assert all(s % 16 == 0 and s > 0 for s in sizes)


def test_compiled_program_arenas_match_the_plan(training):
    prog = Program(training)
    params, state = init_params(training), init_state(training, runtime=True)
    prog.bind_params(params, state)
    prog(feeds_for(training, n=8))
    sizes = slot_sizes(training.meta["memory_plan"], {"N": 8})
    assert prog.arena_bytes() >= 4 * sum(sizes)
    assert state["opt.step"][0] == 1


def test_view_outputs_are_not_overwritten_by_the_next_call():
    _, prog = compile_graph(_view_output_graph())
    prog.bind_params({}, {})
    x1 = np.arange(12, dtype=np.float32).reshape(2, 6)
    first = prog({"x": x1})["y"]
    prog({"x": -x1})
    np.testing.assert_array_equal(first, np.maximum(x1, 0).reshape(2, 2, 3))
