"""plan_memory (graphdl/passes/plan_memory.py): liveness, slot reuse, in-place, aliases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pass_graphs import T, compile_graph, feeds_for, init_params, init_state, mlp, value_key

from graphdl.ir.graph import Graph, Value
from graphdl.backends.reference import run_reference
from graphdl.passes.pipeline import PassContext
from graphdl.passes.plan_memory import peak_bytes, slot_sizes
from graphdl.runtime.program import Program

SOURCES = ("input", "param", "state", "const")


def _planned(g: Graph, training: bool) -> Graph:
    return PassContext().run(g, training=training)


def assert_no_live_overlap(g: Graph) -> None:
    """Walk the schedule: a buffer is never written while a value in it is still needed.

    Each computed value writes its buffer (a slot, or the buffer it is planned in place
    on) when its node runs, and must survive until its last reader, including the readers
    of views (aliases) of it. Another value may take the buffer only afterwards, or at its
    last reader when that reader writes it in place (an optimiser update on its parameter,
    or an elementwise loop on a dying input of its type: it reads each element first).
    """
    order = g.meta["schedule"]
    pos = {n: i for i, n in enumerate(order)}
    plan = g.meta["memory_plan"]["values"]
    end_all = len(order)
    roots = {value_key(v) for v in g.roots()}

    last_read: dict[str, int] = {}
    for n in order:
        for v in g.inputs_of(n):
            last_read[value_key(v)] = max(last_read.get(value_key(v), -1), pos[n])
    for k in roots:
        last_read[k] = end_all

    def buffer(key: str):
        p = plan.get(key)
        if p is None:
            return ("source", key)
        if "alias" in p:
            return buffer(p["alias"])
        if "inplace" in p:
            return buffer(p["inplace"])
        if "slot" in p:
            return ("slot", p["slot"])
        assert p == {"output": True}, p
        return ("output", key)

    # the value whose contents a key shows (a view shows its source's contents)
    def contents(key: str) -> str:
        p = plan.get(key, {})
        return contents(p["alias"]) if "alias" in p else key

    writers: dict[tuple, list[tuple[int, str]]] = {}
    end: dict[str, int] = {}
    for n in g.nodes():
        for i in range(g.num_outputs(n)):
            key = f"{n}:{i}"
            owner = contents(key)
            end[owner] = max(end.get(owner, -1), last_read.get(key, pos[n]))
            if "alias" in plan.get(key, {}):
                continue
            start = -1 if g.op_of(n) in SOURCES else pos[n]
            writers.setdefault(buffer(key), []).append((start, key))
    for buf, ws in writers.items():
        ws.sort()
        for (t1, k1), (t2, k2) in itertools.pairwise(ws):
            assert t1 != t2, f"{k1} and {k2} written into {buf} by one node"
            if t2 > end[k1]:
                continue
            node = int(k2.split(":")[0])
            readers = {contents(value_key(v)) for v in g.inputs_of(node)}
            elementwise = g.op_of(node) == "fused" and g.attrs(node)["kind"] == "elementwise"
            ok = t2 == end[k1] and k1 in readers and ("inplace" in plan[k2] or elementwise)
            assert ok, f"{k2} overwrites {buf} at {t2} while {k1} lives until {end[k1]}"


def _inplace_graph():
    """softmax -> exp -> softmax: the exp can write over the dying first softmax."""
    g = Graph()
    x = g.input("x", T("N", 5))
    s = g.op("softmax", x)
    e = g.op("exp", s)
    r = g.op("reshape", g.op("softmax", e), shape=("N", 5, 1))
    g.outputs["y"] = g.op("sum", g.op("tanh", r), axes=2)
    return g


@pytest.fixture(scope="module")
def training():
    g = mlp(dropout=0.1, l2=0.01)
    g.meta["optimizer"] = {"type": "adam", "lr": 1e-3}
    return _planned(g, training=True)


def test_no_two_live_values_share_a_buffer(training):
    assert_no_live_overlap(training)
    assert_no_live_overlap(_planned(mlp(logits_output=True), training=False))
    assert_no_live_overlap(_planned(_inplace_graph(), training=False))


def test_the_overlap_check_catches_a_bad_plan(training):
    bad = training.copy()
    plan = bad.meta["memory_plan"]["values"]
    slotted = [k for k, p in plan.items() if "slot" in p]
    for k in slotted:  # everything in one slot
        plan[k] = {"slot": 0}
    with pytest.raises(AssertionError, match="overwrites"):
        assert_no_live_overlap(bad)


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
    g = Graph()
    x = g.input("x", T("N", 6))
    g.outputs["y"] = g.op("reshape", g.op("relu", x), shape=("N", 2, 3))
    _, prog = compile_graph(g)
    prog.bind_params({}, {})
    x1 = np.arange(12, dtype=np.float32).reshape(2, 6)
    first = prog({"x": x1})["y"]
    prog({"x": -x1})
    np.testing.assert_array_equal(first, np.maximum(x1, 0).reshape(2, 2, 3))
