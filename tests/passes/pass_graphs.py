"""Small hand-built graphs for the pass tests, random feeds for them, and comparisons.

The passes are checked against the reference interpreter: a pass must not change what a
graph computes (its outputs and its updates). A scheduled and planned graph is run with
`run_planned`, which follows the schedule and the memory plan (shared slots, views,
in-place updates) as the generated code does, against `run_reference` on the graph
before the passes, which gives every value its own array.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from graphdl.backends.cpu.program import Program
from graphdl.backends.reference import run_planned, run_reference
from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.layers.lower import lower
from graphdl.passes.autodiff import autodiff
from graphdl.passes.infer_shapes import infer_shapes
from graphdl.passes.pipeline import PassContext
from graphdl.spec import load_spec

FEATURES, HIDDEN, CLASSES = 6, 5, 4
SPECS = Path(__file__).resolve().parents[2] / "specs"
SOURCES = ("input", "param", "state", "const")


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
    _assert_same_results((o1, u1), run_reference(after, feeds, params, state), rtol)
    return o1, u1


def _assert_same_results(want, got, rtol: float) -> None:
    """Two interpreter results (outputs, updates, ...) agree."""
    (o1, u1), (o2, u2) = want[:2], got[:2]
    assert set(o1) == set(o2) and set(u1) == set(u2)
    for k in o1:
        np.testing.assert_allclose(o2[k], o1[k], rtol=rtol, atol=1e-6, err_msg=f"output {k}")
    for k in u1:
        np.testing.assert_allclose(u2[k], u1[k], rtol=rtol, atol=1e-6, err_msg=f"update {k}")


def compile_graph(g: Graph, training: bool = False) -> tuple[Graph, Program]:
    planned = PassContext().run(g, training=training)
    return planned, Program(planned, title="pass test")


def value_key(v: Value) -> str:
    return f"{v.node}:{v.index}"


def assert_plan_keeps_behaviour(before: Graph, planned: Graph, feeds, params=None, state=None,
                                rtol=1e-5):
    """Running ``planned`` through its schedule and memory plan (`run_planned`) gives the
    outputs and updates `run_reference` gives for ``before``, the graph before the passes."""
    want = run_reference(before, feeds, params, state)
    _assert_same_results(want, run_planned(planned, feeds, params, state), rtol)


def spec_passes(name: str, mode: str) -> PassContext:
    """Run the pass pipeline (no code generation) on ``specs/<name>.yaml``'s ``mode`` graph;
    the context keeps every snapshot (``lowered`` and one per pass)."""
    ctx = PassContext(keep_snapshots=True)
    ctx.run(lower(load_spec(SPECS / f"{name}.yaml"), mode), training=(mode == "train"))
    return ctx


def spec_feeds(g: Graph, n: int = 4, seed: int = 1) -> dict[str, np.ndarray]:
    """`feeds_for`, with the labels of a cross-entropy loss drawn from its classes."""
    feeds = feeds_for(g, n=n, seed=seed)
    r = np.random.default_rng(seed)
    for name, nid in g.named("input").items():
        for consumer, slot in g.consumers(Value(nid)):
            if g.op_of(consumer) == "softmax_cross_entropy" and slot == 1:
                classes = g.type_of(g.inputs_of(consumer)[0]).shape[-1]
                feeds[name] = r.integers(0, classes, size=feeds[name].shape).astype(np.int64)
    return feeds


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
        assert p.get("output"), p  # a returned value (a returned view is a copy)
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
