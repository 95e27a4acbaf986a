"""The reference interpreter (graphdl/ir/interpret.py): symbol binding, values, updates."""

from __future__ import annotations

import numpy as np
import pytest

from graphdl.ir.graph import Graph
from graphdl.backends.reference import bind_symbols, run_reference
from graphdl.ir.types import TensorType


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
