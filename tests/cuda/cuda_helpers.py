"""Helpers of the CUDA tests: compile one op into a CudaProgram and compare it with the op's
NumPy reference (as tests/ops/helpers.py does for the CPU backend).

Programs are memoised per (op, input types, attrs): give the batch dim the symbol ``N`` so
one program (one set of kernels) serves every batch size. Keep shapes tiny: under the
simulator every CUDA thread is a Python thread.
"""

from __future__ import annotations

import numpy as np
from graph_builders import T, freeze  # noqa: F401  (T is re-exported to the tests)

from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.ops.registry import get_op
from graphdl.passes.pipeline import PassContext

FLOATS = ("float32", "float64")
_PROGRAMS: dict = {}




def single_graph(op: str, input_types: list[TensorType], attrs: dict | None = None) -> Graph:
    """The graph ``out{i} = op(x0, x1, ...)``."""
    g = Graph()
    xs = [g.input(f"x{i}", t) for i, t in enumerate(input_types)]
    nid = g.apply(op, xs, dict(attrs or {}))
    for i in range(g.num_outputs(nid)):
        g.outputs[f"out{i}"] = Value(nid, i)
    return g


def build_single(op: str, input_types: list[TensorType], attrs: dict | None = None) -> Graph:
    """The planned graph of ``out{i} = op(x0, x1, ...)`` (inference pipeline), for tests of
    the backend itself."""
    return PassContext().run(single_graph(op, input_types, attrs), training=False)


def compile_single(op: str, input_types: list[TensorType], attrs: dict | None = None):
    key = (op, tuple(input_types), freeze(dict(attrs or {})))
    if key not in _PROGRAMS:
        prog = compile_graph(single_graph(op, input_types, attrs), "cuda", title=f"test_cuda_{op}")
        prog.bind_params({}, {})
        _PROGRAMS[key] = prog
    return _PROGRAMS[key]


def reference(op: str, inputs: list[np.ndarray], attrs: dict | None, bindings: dict) -> tuple:
    opdef = get_op(op)
    attrs = opdef.check_attrs(dict(attrs or {}))
    if get_op(op).takes_bindings:
        out = opdef.reference(attrs, *inputs, bindings=bindings)
    else:
        out = opdef.reference(attrs, *inputs)
    if not isinstance(out, tuple):
        out = (out,)
    return tuple(np.asarray(o) for o in out)


def bindings_for(types: list[TensorType], arrays: list) -> dict[str, int]:
    out: dict[str, int] = {}
    for t, a in zip(types, arrays):
        for d, s in zip(t.shape, np.shape(a)):
            if isinstance(d, str):
                assert out.setdefault(d, s) == s
    return out


def check_kernel(op: str, input_types: list[TensorType], inputs: list, attrs: dict | None = None,
                 *, rtol: float = 1e-5, atol: float = 1e-6) -> list[np.ndarray]:
    """The CUDA program's outputs == the reference's, with the declared dtypes and shapes."""
    prog = compile_single(op, input_types, attrs)
    res = prog({f"x{i}": x for i, x in enumerate(inputs)})
    got = [res[f"out{i}"] for i in range(len(res))]
    bindings = bindings_for(input_types, inputs)
    want = reference(op, [np.asarray(x) for x in inputs], attrs, bindings)
    g = prog.graph
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        t = g.type_of(g.outputs[f"out{i}"])
        assert a.dtype == np.dtype(t.dtype), f"{op} out{i}: dtype {a.dtype}, declared {t}"
        shape = t.bind(bindings)
        assert a.shape == (shape or (1,)), f"{op} out{i}: shape {a.shape}, declared {shape}"
        a = a.reshape(shape)
        if t.dtype in FLOATS:
            np.testing.assert_allclose(a, b.astype(a.dtype), rtol=rtol, atol=atol, err_msg=f"{op} out{i}")
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"{op} out{i}")
    return got


def randn(r: np.random.Generator, *shape, dtype: str = "float32", scale: float = 1.0) -> np.ndarray:
    return (r.standard_normal(shape) * scale).astype(dtype)
