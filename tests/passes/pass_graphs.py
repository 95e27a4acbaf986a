"""Small hand-built graphs for the pass tests, random feeds for them, and comparisons.

The passes are checked against the reference interpreter: a pass must not change what a
graph computes (its outputs and its updates).
"""

from __future__ import annotations

import numpy as np

from graphdl.ir.graph import Graph, Value
from graphdl.backends.reference import run_reference
from graphdl.ir.types import TensorType
from graphdl.passes.autodiff import autodiff
from graphdl.passes.infer_shapes import infer_shapes
from graphdl.passes.pipeline import PassContext
from graphdl.runtime.program import Program

FEATURES, HIDDEN, CLASSES = 6, 5, 4


def T(*shape, dtype: str = "float32") -> TensorType:
    return TensorType(tuple(shape), dtype)


def mlp(
    dtype: str = "float32",
    *,
    frozen: tuple[str, ...] = (),
    l2: float = 0.0,
    dropout: float = 0.0,
    logits_output: bool = False,
) -> Graph:
    """x -> dense(relu) -> dense -> softmax cross-entropy; outputs['loss'].

    ``frozen`` names params made ``trainable=False``; ``l2`` adds l2 * sum(w1**2) to the
    loss, so w1 feeds the loss along two paths; ``dropout`` drops the hidden layer.
    """
    g = Graph()
    x = g.input("x", T("N", FEATURES, dtype=dtype))
    labels = g.input("labels", T("N", dtype="int64"))

    def param(name, *shape):
        attrs = {"trainable": False} if name in frozen else {}
        return g.param(name, T(*shape, dtype=dtype), **attrs)

    w1, b1 = param("w1", FEATURES, HIDDEN), param("b1", HIDDEN)
    w2, b2 = param("w2", HIDDEN, CLASSES), param("b2", CLASSES)
    g.provenance.layer = "dense_1"
    h = g.op("relu", g.op("add", g.op("matmul", x, w1), b1))
    if dropout:
        seed = g.input("seed", T(dtype="int64"))
        h = g.op("dropout", h, seed, rate=dropout)
    g.provenance.layer = "dense_2"
    logits = g.op("add", g.op("matmul", h, w2), b2)
    g.provenance.layer = "loss"
    loss = g.op("softmax_cross_entropy", logits, labels)
    if l2:
        penalty = g.op("mul_scalar", g.op("sum", g.op("square", w1)), c=l2)
        loss = g.op("add", loss, penalty)
    g.outputs["loss"] = loss
    if logits_output:
        g.outputs["logits"] = logits
    g.provenance.layer = None
    return g


def training_graph(optimizer: dict | None = None, **kw) -> Graph:
    """The MLP after infer_shapes and autodiff (as the pipeline runs them)."""
    g = mlp(**kw)
    g.meta["optimizer"] = optimizer or {"type": "adam", "lr": 1e-3}
    return autodiff(infer_shapes(g))


def init_params(g: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    out = {}
    for name, nid in sorted(g.named("param").items()):
        t = g.type_of(Value(nid))
        out[name] = (r.standard_normal(t.shape) * 0.5).astype(t.dtype)
    return out


def init_state(g: Graph, runtime: bool = False) -> dict[str, np.ndarray]:
    """Zeros for every state node (rank 0 as shape (1,) when ``runtime``)."""
    out = {}
    for name, nid in sorted(g.named("state").items()):
        t = g.type_of(Value(nid))
        out[name] = np.zeros(t.shape or ((1,) if runtime else ()), t.dtype)
    return out


def feeds_for(g: Graph, n: int = 7, seed: int = 1, lr: float = 1e-2) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    feeds = {}
    for name, nid in sorted(g.named("input").items()):
        t = g.type_of(Value(nid))
        shape = t.bind({"N": n})
        if name == "lr":
            feeds[name] = np.asarray(lr, t.dtype)
        elif name == "labels":
            feeds[name] = r.integers(0, CLASSES, size=shape).astype(np.int64)
        elif t.dtype == "int64":
            feeds[name] = np.asarray(r.integers(0, 1000, size=shape), np.int64)
        else:
            feeds[name] = r.standard_normal(shape).astype(t.dtype)
    return feeds


def assert_same_behaviour(before: Graph, after: Graph, feeds, params=None, state=None, rtol=1e-5):
    """Both graphs compute the same outputs and updates in the reference interpreter."""
    o1, u1, _ = run_reference(before, feeds, params, state)
    o2, u2, _ = run_reference(after, feeds, params, state)
    assert set(o1) == set(o2) and set(u1) == set(u2)
    for k in o1:
        np.testing.assert_allclose(o2[k], o1[k], rtol=rtol, atol=1e-6, err_msg=f"output {k}")
    for k in u1:
        np.testing.assert_allclose(u2[k], u1[k], rtol=rtol, atol=1e-6, err_msg=f"update {k}")
    return o1, u1


def compile_graph(g: Graph, training: bool = False) -> tuple[Graph, Program]:
    planned = PassContext().run(g, training=training)
    return planned, Program(planned, title="pass test")


def value_key(v: Value) -> str:
    return f"{v.node}:{v.index}"
