"""Test helpers that both the CPU op tests (tests/ops) and the CUDA tests (tests/cuda) use.
(tests/ is on sys.path through its conftest.py.)"""

from __future__ import annotations

from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType

# the optimiser update ops, and how many state tensors each keeps per parameter
N_STATE = {"sgd_update": 0, "momentum_update": 1, "adam_update": 2, "rmsprop_update": 1,
           "adagrad_update": 1}
# the update ops that also read the 1-based step count
STEPPED = {"adam_update", "adagrad_update"}


def T(*shape, dtype: str = "float32") -> TensorType:
    """Shorthand: ``T("N", 3)`` is float32[N, 3]."""
    return TensorType(tuple(shape), dtype)


def freeze(x):
    """A hashable key for attrs (dicts, lists, tuples, scalars), type-exact."""
    if isinstance(x, dict):
        return tuple(sorted((k, freeze(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__,) + tuple(freeze(v) for v in x)
    return (type(x).__name__, x)


def update_graph(op: str, attrs: dict, shape: tuple[int, ...], reader_after: bool = False) -> Graph:
    """A training-step-like graph around one optimiser update op on a parameter ``w`` of
    ``shape`` (inputs ``grad`` and ``lr``; adam and adagrad also count their step as state). With
    ``reader_after`` a node after the update reads the parameter, so it cannot be updated
    in place."""
    g = Graph()
    g.provenance.phase = "update"
    p = g.param("w", T(*shape))
    grad = g.input("grad", T(*shape))
    lr = g.input("lr", T())
    states = [g.state(f"s{i}", T(*shape), init="zeros") for i in range(N_STATE[op])]
    ins = [p, grad, *states, lr]
    if op in STEPPED:
        step_state = g.state("step", T(), init="zeros")
        step = g.op("add_scalar", step_state, c=1.0)
        g.updates[step_state.node] = step
        ins.append(step)
    nid = g.apply(op, ins, attrs)
    for i, target in enumerate([p, *states]):
        g.updates[target.node] = Value(nid, i)
    if reader_after:
        g.outputs["w_norm"] = g.op("sum", g.op("square", p))
    return g
