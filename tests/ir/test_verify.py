"""The verifier (graphdl/ir/verify.py) accepts well-formed graphs and rejects broken ones."""

from __future__ import annotations

import pytest

from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.ir.verify import VerifyError, verify


def _graph():
    g = Graph()
    x = g.input("x", TensorType(("N", 3)))
    p = g.param("p", TensorType((3,)))
    y = g.op("add", x, p)
    g.outputs["y"] = g.op("relu", y)
    new_p = g.op("mul_scalar", p, c=0.5)
    g.updates[p.node] = new_p
    return g, x, p, y, new_p


def _cycle(g, x, p, y, new_p):
    g.nx.add_edge(g.outputs["y"].node, y.node, out_index=0, in_slot=2)


def _too_many_inputs(g, x, p, y, new_p):
    g.nx.add_edge(x.node, g.outputs["y"].node, out_index=0, in_slot=1)


def _slot_gap(g, x, p, y, new_p):
    g.set_inputs(y.node, [x, p])
    (key,) = [k for k, d in g.nx.get_edge_data(p.node, y.node).items()]
    g.nx.edges[p.node, y.node, key]["in_slot"] = 5


def _untyped(g, x, p, y, new_p):
    g.set_type(y, None)


def _bad_phase(g, x, p, y, new_p):
    g.node(y.node)["phase"] = "sideways"


def _missing_output(g, x, p, y, new_p):
    g.set_inputs(g.outputs["y"].node, [Value(y.node, 1)])


def _dangling_output(g, x, p, y, new_p):
    g.outputs["z"] = Value(999)


def _update_of_input(g, x, p, y, new_p):
    g.updates[x.node] = new_p


def _update_changes_type(g, x, p, y, new_p):
    del g.updates[p.node]
    g.updates[p.node] = g.op("sum", p, keepdims=True)


BREAKS = {
    "cycle": (_cycle, "cycle"),
    "too many inputs": (_too_many_inputs, "has 2 inputs, relu takes 1"),
    "slot gap": (_slot_gap, r"input slots \[0, 5\]"),
    "untyped": (_untyped, "untyped output"),
    "bad phase": (_bad_phase, "phase 'sideways'"),
    "missing output index": (_missing_output, "reads a missing output"),
    "dangling output": (_dangling_output, "output/update z points at a missing value"),
    "update of an input": (_update_of_input, "is not a param/state node"),
    "update changes type": (_update_changes_type, "changes its type"),
}


def test_accepts_a_well_formed_graph():
    g, *_ = _graph()
    verify(g, after="test")


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_rejects_a_broken_graph(name):
    g, *vals = _graph()
    breaker, match = BREAKS[name]
    breaker(g, *vals)
    with pytest.raises(VerifyError, match=match) as ei:
        verify(g, after="my_pass")
    assert str(ei.value).endswith("after my_pass")
