"""Every registered op is tested: each family's test module lists the ops it covers.

An op defined in graphdl/ops/<family>.py is covered by tests/ops/test_<family>.py, which
declares ``KERNEL_COVERED`` (kernel vs reference) and ``GRAD_COVERED`` (finite-difference
gradient check). Sources and `fused` are tested through the passes. A new op fails here
until it has tests.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from graphdl.ops.registry import all_ops

HERE = Path(__file__).parent
UNTESTED_HERE = {"input", "param", "state", "const", "fused"}


def _family(opdef) -> str:
    return opdef.reference.__module__.rsplit(".", 1)[-1]


def _test_module(family: str):
    name = f"test_{family}"
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").parent == HERE:
        return loaded
    path = HERE / f"{name}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"_coverage_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OPS = sorted((n, o) for n, o in all_ops().items() if n not in UNTESTED_HERE)


@pytest.mark.parametrize("name,opdef", OPS, ids=[n for n, _ in OPS])
def test_op_has_kernel_and_gradient_tests(name, opdef):
    family = _family(opdef)
    module = _test_module(family)
    assert module is not None, f"{name}: no tests/ops/test_{family}.py"
    assert name in module.KERNEL_COVERED, f"{name}: no kernel test in test_{family}.py"
    if opdef.grad is not None or opdef.body:  # a scan is differentiated by autodiff itself
        assert name in module.GRAD_COVERED, f"{name}: no gradient check in test_{family}.py"
    else:
        assert opdef.no_grad_reason, f"{name} has neither a grad rule nor a no_grad_reason"
        assert name not in module.GRAD_COVERED


def test_every_op_without_grad_says_why():
    for name, opdef in all_ops().items():
        if opdef.grad is None:
            assert isinstance(opdef.no_grad_reason, str) and opdef.no_grad_reason.strip(), name


def test_every_op_says_what_it_does():
    """`doc` is what the visualiser shows in a node's details."""
    missing = [name for name, opdef in all_ops().items() if not opdef.doc.strip()]
    assert not missing


def test_attribute_types_are_checked():
    """An attribute of the wrong type is a bug in whoever built the node: a TypeError at
    once, not a kernel compiled for a string."""
    from graphdl.ir.graph import Graph
    from graphdl.ir.types import TensorType

    g = Graph()
    x = g.input("x", TensorType(("N", 3), "float32"))
    g.op("leaky_relu", x, alpha=1)  # an int is a float
    with pytest.raises(TypeError, match="alpha"):
        g.op("leaky_relu", x, alpha="0.1")
    with pytest.raises(TypeError, match="keepdims"):
        g.op("sum", x, axes=(1,), keepdims="yes")
