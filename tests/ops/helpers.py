"""Shared helpers for the op tests: compile one op, compare with its reference, gradcheck.

Compiling a program costs Numba about a second per new kernel (cached on disk under
.graphdl_cache across runs, see tests/conftest.py), so `compile_single` also memoises in
process: tests that use the same (op, input types, attrs) share one Program. Give the
batch dim the symbol ``N`` where possible so one program serves every batch size.
"""

from __future__ import annotations

import numpy as np
from graph_builders import T, freeze

from graphdl.backends.cpu.program import Program
from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.ops.registry import get_op
from graphdl.passes.autodiff import build_gradients

FLOATS = ("float32", "float64")

_PROGRAMS: dict[tuple, tuple[Program, Graph]] = {}



def infer(op: str, types: list[TensorType], **attrs) -> list[TensorType]:
    """The op's inferred output types (attributes checked and defaults filled)."""
    opdef = get_op(op)
    return list(opdef.infer(opdef.check_attrs(attrs), list(types)))


def bindings_for(types: list[TensorType], arrays: list[np.ndarray]) -> dict[str, int]:
    """Values of the symbolic dims, read off the arrays fed for ``types``."""
    out: dict[str, int] = {}
    for t, a in zip(types, arrays):
        for d, s in zip(t.shape, np.shape(a)):
            if isinstance(d, str):
                assert out.setdefault(d, s) == s, f"dim {d} bound to {out[d]} and {s}"
    return out


def reference(op: str, inputs: list[np.ndarray], attrs: dict | None = None, bindings=None) -> tuple:
    """The op's NumPy reference, always as a tuple of arrays."""
    opdef = get_op(op)
    attrs = opdef.check_attrs(dict(attrs or {}))
    if get_op(op).takes_bindings:
        out = opdef.reference(attrs, *inputs, bindings=bindings or {})
    else:
        out = opdef.reference(attrs, *inputs)
    if not isinstance(out, tuple):
        out = (out,)
    return tuple(np.asarray(o) for o in out)



def compile_single(op: str, input_types: list[TensorType], attrs: dict | None = None):
    """Build ``out{i} = op(x0, x1, ...)``, run the inference pipeline and compile it.

    Returns ``(program, graph)``: the graph is the one built (typed, before the passes);
    ``program.graph`` is the planned one. The program has its (empty) params bound.
    """
    attrs = dict(attrs or {})
    key = (op, tuple(input_types), freeze(attrs))
    if key in _PROGRAMS:
        return _PROGRAMS[key]
    g = Graph()
    xs = [g.input(f"x{i}", t) for i, t in enumerate(input_types)]
    nid = g.apply(op, xs, attrs)
    for i in range(g.num_outputs(nid)):
        g.outputs[f"out{i}"] = Value(nid, i)
    prog = compile_graph(g, title=f"test_{op}")
    prog.bind_params({}, {})
    _PROGRAMS[key] = (prog, g)
    return prog, g


def run_compiled(prog: Program, inputs: list) -> list[np.ndarray]:
    """Call a `compile_single` program; outputs in order (rank 0 comes back as shape (1,))."""
    res = prog({f"x{i}": x for i, x in enumerate(inputs)})
    return [res[f"out{i}"] for i in range(len(res))]


def check_kernel(
    op: str,
    input_types: list[TensorType],
    inputs: list,
    attrs: dict | None = None,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> list[np.ndarray]:
    """Compiled outputs == reference outputs, with the declared dtypes and shapes."""
    prog, g = compile_single(op, input_types, attrs)
    got = run_compiled(prog, inputs)
    bindings = bindings_for(input_types, inputs)
    ref_inputs = [np.asarray(x) for x in inputs]
    want = reference(op, ref_inputs, attrs, bindings)
    (nid,) = {v.node for v in g.outputs.values()}
    assert len(got) == len(want) == g.num_outputs(nid)
    for i, (a, b) in enumerate(zip(got, want)):
        t = g.type_of(Value(nid, i))
        assert a.dtype == np.dtype(t.dtype), f"out{i}: kernel dtype {a.dtype}, declared {t}"
        assert b.dtype == np.dtype(t.dtype), f"out{i}: reference dtype {b.dtype}, declared {t}"
        shape = t.bind(bindings)
        assert a.shape == (shape or (1,)), f"out{i}: kernel shape {a.shape}, declared {shape}"
        assert b.shape == shape, f"out{i}: reference shape {b.shape}, declared {shape}"
        a = a.reshape(shape)
        if t.dtype in FLOATS:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{op} out{i}")
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"{op} out{i}")
    return got


# ----------------------------------------------------------------------- gradients


def gradcheck(
    op: str,
    inputs: list[np.ndarray],
    attrs: dict | None = None,
    *,
    wrt: list[int] | None = None,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    seed: int = 0,
) -> dict[int, np.ndarray]:
    """Check the op's `grad` rule against central finite differences, in float64.

    The differentiable inputs (``wrt``; by default the op's `differentiable` slots that hold
    float64 arrays) become `param` nodes, the rest graph inputs. The loss is
    ``sum(y * W)`` over the float outputs y with fixed random constants W (no sum for a
    rank-0 y, so a scalar op is not checked through sum's gradient); the gradient
    graph comes from `build_gradients` and is evaluated with the reference interpreter.
    Returns the analytic gradients by input slot.
    """
    opdef = get_op(op)
    attrs = opdef.check_attrs(dict(attrs or {}))
    inputs = [np.asarray(x) for x in inputs]
    if wrt is None:
        slots = opdef.differentiable or range(len(inputs))
        wrt = [i for i in slots if inputs[i].dtype == np.float64]
    assert wrt, f"{op}: nothing to differentiate"

    g = Graph()
    vals = []
    for i, x in enumerate(inputs):
        t = TensorType(x.shape, str(x.dtype))
        vals.append(g.param(f"x{i}", t) if i in wrt else g.input(f"x{i}", t))
    nid = g.apply(op, vals, attrs)
    r = np.random.default_rng(seed)
    weights: dict[int, np.ndarray] = {}
    loss = None
    for k in range(g.num_outputs(nid)):
        t = g.type_of(Value(nid, k))
        if t.dtype not in FLOATS:
            continue
        w = r.uniform(-1.0, 1.0, size=t.shape).astype(t.dtype)
        weights[k] = w
        term = g.op("mul", Value(nid, k), g.const(w, t.dtype))
        if t.rank:
            term = g.op("sum", term)
        loss = term if loss is None else g.op("add", loss, term)
    g.outputs["loss"] = loss
    grads = build_gradients(g, loss, [vals[i].node for i in wrt])
    for i in wrt:
        assert vals[i].node in grads, f"{op}: no gradient for input {i}"
        g.outputs[f"grad{i}"] = grads[vals[i].node]

    feeds = {f"x{i}": x for i, x in enumerate(inputs) if i not in wrt}
    params = {f"x{i}": x for i, x in enumerate(inputs) if i in wrt}
    outs, _, _ = run_reference(g, feeds, params)

    def f(xs):
        ys = reference(op, xs, attrs)
        return sum(float(np.sum(ys[k].astype(np.float64) * w)) for k, w in weights.items())

    tight = outs["loss"].dtype == np.float64
    np.testing.assert_allclose(outs["loss"], f(inputs), rtol=1e-10 if tight else 1e-5, atol=1e-12)
    result = {}
    for i in wrt:
        got = outs[f"grad{i}"]
        assert got.shape == inputs[i].shape, f"grad{i} shape {got.shape} != {inputs[i].shape}"
        assert got.dtype == inputs[i].dtype, f"grad{i} dtype {got.dtype} != {inputs[i].dtype}"
        num = np.zeros(inputs[i].shape)
        for idx in np.ndindex(*inputs[i].shape):
            xs = [x.copy() for x in inputs]
            xs[i][idx] += eps
            hi = f(xs)
            xs[i][idx] -= 2 * eps
            lo = f(xs)
            num[idx] = (hi - lo) / (2 * eps)
        np.testing.assert_allclose(got, num, rtol=rtol, atol=atol, err_msg=f"{op} grad{i}")
        result[i] = got
    return result


# ----------------------------------------------------------------------- data


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def randn(r: np.random.Generator, *shape, dtype="float32") -> np.ndarray:
    return r.standard_normal(shape).astype(dtype)


def away_from_zero(
    r: np.random.Generator, *shape, low=0.2, high=2.0, dtype="float64"
) -> np.ndarray:
    """Values with |x| in [low, high] and random sign: clear of kinks at 0."""
    mag = r.uniform(low, high, size=shape)
    sign = np.where(r.random(shape) < 0.5, -1.0, 1.0)
    return (mag * sign).astype(dtype)


def graph_gradcheck(build, arrays, *, eps=1e-6, rtol=1e-5, atol=1e-8):
    """Finite differences for a loss built from several ops: ``build(g, params)`` gets a dict
    of float64 param Values (one per array) and returns a scalar loss Value."""
    g = Graph()
    ps = {k: g.param(k, T(*a.shape, dtype="float64")) for k, a in arrays.items()}
    g.outputs["loss"] = build(g, ps)
    grads = build_gradients(g, g.outputs["loss"], [p.node for p in ps.values()])
    for k, p in ps.items():
        assert p.node in grads, f"no gradient for {k}"
        g.outputs[f"grad_{k}"] = grads[p.node]
    outs = run_reference(g, {}, arrays)[0]

    def f(xs):
        return float(run_reference(g, {}, xs)[0]["loss"])

    for k, a in arrays.items():
        num = np.zeros(a.shape)
        for idx in np.ndindex(*a.shape):
            xs = {n: v.copy() for n, v in arrays.items()}
            xs[k][idx] += eps
            hi = f(xs)
            xs[k][idx] -= 2 * eps
            num[idx] = (hi - f(xs)) / (2 * eps)
        np.testing.assert_allclose(outs[f"grad_{k}"], num, rtol=rtol, atol=atol, err_msg=k)
    return outs
