"""`scan` on the CUDA backend: the generated host loop over its body's kernels, on device
buffers, against the reference interpreter (on the simulator when there is no GPU).

Tiny on purpose (T <= 3, N <= 2, H <= 3): under the simulator every launch of every step
runs as Python threads. The graphs are those of tests/ops/test_control.py (the same RNN
body, `graph_builders.rnn_scan`).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from cuda_helpers import T
from graph_builders import rnn_scan

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.errors import GraphdlError
from graphdl.ir import scan as S
from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.layers import LAYERS
from graphdl.layers.lower import LayerCtx
from graphdl.passes.autodiff import build_gradients
from graphdl.runtime.params import init_params

F, H = 2, 3


def _data(steps, n, dtype, seed=0):
    r = np.random.default_rng(seed)
    return {"x": r.standard_normal((steps, n, F)).astype(dtype),
            "h0": (0.1 * r.standard_normal((n, H))).astype(dtype),
            "W": (0.5 * r.standard_normal((F, H))).astype(dtype),
            "U": (0.5 * r.standard_normal((H, H))).astype(dtype)}


def _close(got: dict, want: dict, rtol: float, atol: float) -> None:
    assert set(got) == set(want)
    for k, value in want.items():
        w = np.asarray(value)
        np.testing.assert_allclose(got[k].reshape(w.shape), w, rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.parametrize("reverse", [False, True])
def test_forward_scan_with_lengths_equals_the_reference(reverse):
    """The masked RNN forward and reverse: the final carry (each sample's state at its own
    last step) and the stacked outputs; one program serves two (T, N) bindings."""
    g = Graph()
    x = g.input("x", T("T", "N", F))
    h0 = g.input("h0", T("N", H))
    w, u = g.param("W", T(F, H)), g.param("U", T(H, H))
    lengths = g.input("lengths", T("N", dtype="int64"))
    mask = g.op("seq_mask", lengths, x, dtype="float32")
    nid = rnn_scan(g, x, h0, w, u, reverse=reverse, mask=mask)
    g.outputs["h"] = Value(nid, 0)
    g.outputs["ys"] = Value(nid, 1)
    prog = compile_graph(g, "cuda", title="test_cuda_scan_forward")
    assert "for step_i in range(" in prog.source and "K.copy_flat_offset" in prog.source
    for steps, n, lens in ((3, 2, [3, 1]), (2, 1, [2])):
        d = _data(steps, n, "float32", seed=steps)
        feeds = {"x": d["x"], "h0": d["h0"], "lengths": np.array(lens, np.int64)}
        params = {"W": d["W"], "U": d["U"]}
        prog.bind_params(params, {})
        want = run_reference(g, feeds, params)[0]
        _close(prog(feeds), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reverse,truncate", [(False, 0), (True, 2)])
def test_backward_scan_equals_the_reference(reverse, truncate):
    """A loss on the per-step outputs and the final carry, differentiated by autodiff (the
    backward scan, truncated BPTT through truncate_mask with ``truncate``), in float64: the
    loss and the gradients of x, h0, W and U equal the reference interpreter's."""
    arrays = _data(3, 2, "float64", seed=5)
    arrays["R"] = np.random.default_rng(6).standard_normal((2, H))
    g = Graph()
    p = {k: g.param(k, T(*a.shape, dtype="float64")) for k, a in arrays.items()}
    mask = g.op("seq_mask", g.const(np.array([3, 2]), "int64"), p["x"], dtype="float64")
    nid = rnn_scan(g, p["x"], p["h0"], p["W"], p["U"], reverse=reverse, truncate=truncate,
                   mask=mask, dtype="float64")
    loss = g.op("add", g.op("sum", g.op("square", Value(nid, 1))),
                g.op("sum", g.op("mul", Value(nid, 0), p["R"])))
    g.outputs["loss"] = loss
    wrt = ["x", "h0", "W", "U"]
    grads = build_gradients(g, loss, [p[k].node for k in wrt])
    for k in wrt:
        g.outputs[f"grad_{k}"] = grads[p[k].node]
    want = run_reference(g, {}, arrays)[0]
    prog = compile_graph(g, "cuda", title="test_cuda_scan_backward")
    prog.bind_params(arrays, {})
    _close(prog({}), want, rtol=1e-10, atol=1e-12)


def test_swapped_carries_a_saved_carry_and_a_rank0_sequence():
    """Carries whose next values are each other (through a buffer of the loop's own), a
    per-step output that is a carry as it entered the step, and a sequence of scalars ([T]:
    each step's slice is rank 0)."""
    g = Graph()
    x = g.input("x", T("T", "N", H))
    s = g.input("s", T("T"))
    c0, c1 = g.input("a0", T("N", H)), g.input("b0", T("N", H))
    body, (a, b), (xt, st), _ = S.new_body([T("N", H)] * 2, [T("N", H), T()], [])
    S.set_body_outputs(body, [b, body.op("add", a, body.op("mul", xt, st))], [a])
    nid = S.add_scan(g, body, [c0, c1], [x, s], [], reverse=True)
    for i, name in enumerate(("a", "b", "saved")):
        g.outputs[name] = Value(nid, i)
    prog = compile_graph(g, "cuda", title="test_cuda_scan_swap")
    prog.bind_params({}, {})
    r = np.random.default_rng(8)
    feeds = {"x": r.standard_normal((3, 2, H)).astype(np.float32),
             "s": np.array([1.0, -2.0, 0.5], np.float32),
             "a0": r.standard_normal((2, H)).astype(np.float32),
             "b0": r.standard_normal((2, H)).astype(np.float32)}
    _close(prog(feeds), run_reference(g, feeds)[0], rtol=1e-6, atol=1e-6)


def _lstm_graph() -> Graph:
    """An lstm layer lowered on its own (as tests/layers/test_catalog.py does), with a
    lengths input, and the gradients of a loss on its sequence."""
    g = Graph()
    x = g.input("x", TensorType(("N", "T", F), "float32"))
    lengths = g.input("len", TensorType(("N",), "int64"))
    layer = SimpleNamespace(name="lstm", type="lstm", params={"hidden": H, "lengths": "len"},
                            trainable=True, lr_mult=1.0, regularizer=None)
    spec = SimpleNamespace(model=SimpleNamespace(inputs={"len": None}))
    ctx = LayerCtx(g, spec, layer, LAYERS["lstm"], True, None, salt=1, values={"len": lengths})
    y = LAYERS["lstm"].build(ctx, [x])
    loss = g.op("sum", g.op("square", y))
    g.outputs["y"] = y
    g.outputs["loss"] = loss
    params = sorted(g.named("param").items())
    grads = build_gradients(g, loss, [nid for _, nid in params])
    for name, nid in params:
        g.outputs[f"grad_{name}"] = grads[nid]
    return g


def test_lstm_layer_forward_and_backward_equal_the_reference():
    g = _lstm_graph()
    params = init_params(g, seed=0)
    r = np.random.default_rng(7)
    feeds = {"x": r.standard_normal((2, 3, F)).astype(np.float32),
             "len": np.array([3, 2], np.int64)}
    want = run_reference(g, feeds, params)[0]
    prog = compile_graph(g, "cuda", title="test_cuda_lstm")
    prog.bind_params(params, {})
    _close(prog(feeds), want, rtol=1e-4, atol=1e-5)


def test_a_body_op_without_cuda_kernel_is_a_compile_error():
    """The ops of a scan's body are checked as the outer graph's are (E708)."""
    g = Graph()
    x = g.input("x", T(2, 3, 3))
    body, (c,), (xt,), _ = S.new_body([T(3)], [T(3, 3)], [])
    singular = Value(body.apply("svd", [xt]), 1)  # [3]
    S.set_body_outputs(body, [body.op("add", c, singular)], [])
    nid = S.add_scan(g, body, [g.input("c0", T(3))], [x], [])
    g.outputs["c"] = Value(nid, 0)
    with pytest.raises(GraphdlError) as e:
        compile_graph(g, "cuda", title="test_cuda_scan_svd")
    d = e.value.diagnostics[0]
    assert d.code == "E708" and "no CUDA kernel for op svd" in d.message
