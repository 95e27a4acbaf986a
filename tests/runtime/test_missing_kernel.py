"""An op the CPU backend has no kernel for is a located compile-time error (E708), never a
NumPy fallback."""

from __future__ import annotations

import dataclasses

import pytest

from graphdl.backends.cpu.codegen import CpuCodegen
from graphdl.errors import GraphdlError
from graphdl.ir.graph import Graph
from graphdl.ir.types import TensorType
from graphdl.ops import registry
from graphdl.passes.pipeline import PassContext


def test_op_without_cpu_kernel_is_E708(monkeypatch):
    g = Graph()
    x = g.input("x", TensorType(("N", 1, 4, 4), "float32"))
    g.outputs["y"] = g.op("max_pool2d", x, kernel=(2, 2))
    planned = PassContext().run(g, training=False)
    registry.get_op("max_pool2d")  # registry loaded
    pool = registry._OPS["max_pool2d"]
    monkeypatch.setitem(registry._OPS, "max_pool2d", dataclasses.replace(pool, emit_cpu=None))
    with pytest.raises(GraphdlError) as err:
        CpuCodegen(planned, "missing").generate()
    (diag,) = err.value.diagnostics
    assert diag.code == "E708"
    assert "no CPU kernel for op max_pool2d" in diag.message
