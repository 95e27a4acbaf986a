"""Test helpers that both the CPU op tests (tests/ops) and the CUDA tests (tests/cuda) use.
(tests/ is on sys.path through its conftest.py.)"""

from __future__ import annotations

from graphdl.ir import scan as S
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


def rnn_scan(g: Graph, x: Value, h0: Value, w: Value, u: Value, *, reverse=False,
             truncate=0, mask: Value | None = None, dtype="float32") -> int:
    """A scan of the recurrence h' = tanh(x_t W + h U), outputs 2 h' per step (with a mask
    [T, N, 1]: the carry frozen and the output zero past a sample's length); returns the
    scan node. The body's types follow x, h0, W and U."""
    xt = g.type_of(x)
    n = xt.shape[1]
    slices = [T(*xt.shape[1:], dtype=dtype)] + ([T(n, 1, dtype=dtype)] if mask is not None else [])
    body, (h,), xs, (wb, ub) = S.new_body([g.type_of(h0)], slices, [g.type_of(w), g.type_of(u)])
    hn = body.op("tanh", body.op("add", body.op("matmul", xs[0], wb), body.op("matmul", h, ub)))
    y = body.op("mul", hn, body.const(2.0, dtype))
    if mask is not None:
        hn = body.op("add", h, body.op("mul", xs[1], body.op("sub", hn, h)))
        y = body.op("mul", xs[1], y)
    S.set_body_outputs(body, [hn], [y])
    seqs = [x] + ([mask] if mask is not None else [])
    return S.add_scan(g, body, [h0], seqs, [w, u], reverse=reverse, truncate=truncate)
