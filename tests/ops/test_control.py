"""Loop ops (graphdl/ops/control.py): `scan` (the reference interpreter, the CPU loop, the
BPTT gradient, JSON and the verifier), `seq_mask` and `truncate_mask`."""

from __future__ import annotations

import numpy as np
import pytest
from graph_builders import rnn_scan
from helpers import T, check_kernel, graph_gradcheck, rng

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ir import scan as S
from graphdl.ir.graph import Graph, Value
from graphdl.ir.verify import VerifyError, verify
from graphdl.ops.registry import ShapeError
from graphdl.passes.autodiff import build_gradients

KERNEL_COVERED = {"scan", "seq_mask", "truncate_mask"}
GRAD_COVERED = {"scan", "seq_mask", "truncate_mask"}

F, H = 3, 4


def numpy_rnn(x, h0, w, u, reverse=False, lengths=None):
    steps = x.shape[0]
    h = h0.copy()
    ys = np.zeros((steps,) + h0.shape, x.dtype)
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        hn = np.tanh(x[t] @ w + h @ u)
        m = np.ones((h0.shape[0], 1)) if lengths is None else (t < lengths)[:, None]
        ys[t] = 2 * hn * m
        h = np.where(m > 0, hn, h)
    return h, ys


def forward_graph(dtype="float32", reverse=False, masked=False):
    g = Graph()
    x = g.input("x", T("T", "N", F, dtype=dtype))
    h0 = g.input("h0", T("N", H, dtype=dtype))
    w, u = g.param("W", T(F, H, dtype=dtype)), g.param("U", T(H, H, dtype=dtype))
    mask = None
    if masked:
        lengths = g.input("lengths", T("N", dtype="int64"))
        mask = g.op("seq_mask", lengths, x, dtype=dtype)
    nid = rnn_scan(g, x, h0, w, u, reverse=reverse, mask=mask, dtype=dtype)
    g.outputs["h"] = Value(nid, 0)
    g.outputs["ys"] = Value(nid, 1)
    return g


def _data(steps=5, n=2, dtype="float32", seed=0):
    r = rng(seed)
    return (r.standard_normal((steps, n, F)).astype(dtype),
            (0.1 * r.standard_normal((n, H))).astype(dtype),
            (0.5 * r.standard_normal((F, H))).astype(dtype),
            (0.5 * r.standard_normal((H, H))).astype(dtype))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_scan_reference_and_cpu_loop_match_a_numpy_loop(reverse, masked):
    g = forward_graph(reverse=reverse, masked=masked)
    prog = compile_graph(g, "cpu")
    for steps, n in ((5, 2), (3, 4), (1, 1)):  # one program serves every T and N
        x, h0, w, u = _data(steps, n)
        lengths = np.array([max(1, steps - i) for i in range(n)], np.int64)
        feeds = {"x": x, "h0": h0, **({"lengths": lengths} if masked else {})}
        want_h, want_ys = numpy_rnn(x, h0, w, u, reverse, lengths if masked else None)
        ref = run_reference(g, feeds, {"W": w, "U": u})[0]
        np.testing.assert_allclose(ref["h"], want_h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ref["ys"], want_ys, rtol=1e-5, atol=1e-6)
        prog.bind_params({"W": w, "U": u}, {})
        got = prog(feeds)
        np.testing.assert_allclose(got["h"], want_h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["ys"], want_ys, rtol=1e-5, atol=1e-6)


def _carries_written_in_place_graph():
    """Two carries: s' = s + x_t (s read only by the loop that writes s') and
    h' = tanh(p) * p with p = h U (h read by the matmul, then h' written by the loop after
    it); the per-step output is h'."""
    g = Graph()
    x = g.input("x", T("T", "N", H))
    s0, h0 = g.input("s0", T("N", H)), g.input("h0", T("N", H))
    u = g.param("U", T(H, H))
    body, (s, h), (xt,), (ub,) = S.new_body([T("N", H), T("N", H)], [T("N", H)], [T(H, H)])
    p = body.op("matmul", h, ub)
    hn = body.op("mul", body.op("tanh", p), p)
    S.set_body_outputs(body, [body.op("add", s, xt), hn], [hn])
    nid = S.add_scan(g, body, [s0, h0], [x], [u])
    g.outputs["s"], g.outputs["h"], g.outputs["ys"] = (Value(nid, i) for i in range(3))
    return g


def test_next_carries_are_written_into_the_carry_buffers():
    """A next carry whose old value nothing reads after it is written is computed straight
    into the carry's buffer: no copy at the end of each step, the same numbers."""
    g = _carries_written_in_place_graph()
    prog = compile_graph(g, "cpu")
    (loop,) = [src for src in prog.source.split("@njit") if "def scan_" in src]
    steps = loop[loop.index("for "):]
    assert steps.count("K.copy_flat(") == 1, loop  # the per-step output only
    r = rng(3)
    x = r.standard_normal((4, 2, H)).astype(np.float32)
    s0, h0 = (r.standard_normal((2, H)).astype(np.float32) for _ in range(2))
    u = (0.5 * r.standard_normal((H, H))).astype(np.float32)
    prog.bind_params({"U": u}, {})
    got = prog({"x": x, "s0": s0, "h0": h0})
    h, ys = h0, []
    for _ in range(4):
        p = h @ u
        h = np.tanh(p) * p
        ys.append(h)
    np.testing.assert_allclose(got["s"], s0 + x.sum(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["h"], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["ys"], np.stack(ys), rtol=1e-5, atol=1e-6)


def test_per_step_outputs_are_computed_into_their_slice():
    """A value of the body that is a per-step output is computed straight into ``out[t]``
    (the slice is bound at each step): only the carry as it entered the step (a body
    input, saved for BPTT) and the next carry (read from its slice) are copied."""
    g = Graph()
    x = g.input("x", T("T", "N", H))
    h0 = g.input("h0", T("N", H))
    u = g.param("U", T(H, H))
    body, (h,), (xt,), (ub,) = S.new_body([T("N", H)], [T("N", H)], [T(H, H)])
    a = body.op("tanh", body.op("add", body.op("matmul", h, ub), xt))
    b = body.op("mul", a, a)
    S.set_body_outputs(body, [a], [h, a, b])
    nid = S.add_scan(g, body, [h0], [x], [u])
    g.outputs["h"], g.outputs["hs_in"], g.outputs["as"], g.outputs["bs"] = (
        Value(nid, i) for i in range(4))
    prog = compile_graph(g, "cpu")
    (loop,) = [src for src in prog.source.split("@njit") if "def scan_" in src]
    steps = loop[loop.index("for "):]
    assert steps.count("K.copy_flat(") == 2, loop
    r = rng(4)
    xs = r.standard_normal((5, 3, H)).astype(np.float32)
    hh = r.standard_normal((3, H)).astype(np.float32)
    uu = (0.5 * r.standard_normal((H, H))).astype(np.float32)
    prog.bind_params({"U": uu}, {})
    got = prog({"x": xs, "h0": hh})
    want = run_reference(g, {"x": xs, "h0": hh}, {"U": uu})[0]
    for name in ("h", "hs_in", "as", "bs"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


def test_scan_types_its_outputs_and_refuses_mismatches():
    g = forward_graph()
    nid = g.outputs["h"].node
    assert [str(t) for t in g.node(nid)["types"]] == ["float32[N, 4]", "float32[T, N, 4]"]
    body = g.attrs(nid)["body"]
    assert not body.nodes_by_op("const")  # lifted out as an invariant
    assert len(g.inputs_of(nid)) == 5  # h0, x, W, U and the lifted 2.0
    bad = Graph()
    x = bad.input("x", T("T", "N", F))
    body, (h,), _, _ = S.new_body([T("N", H)], [T("N", F)], [])
    S.set_body_outputs(body, [body.op("reshape", h, shape=("N", 2, 2))], [])
    with pytest.raises(ShapeError, match="carry 0 enters as"):
        S.add_scan(bad, body, [bad.input("h0", T("N", H))], [x], [])
    with pytest.raises(ShapeError, match="same leading time axis"):
        body, (h,), _, _ = S.new_body([T("N", H)], [T("N", F), T("N", F)], [])
        S.set_body_outputs(body, [h], [])
        S.add_scan(bad, body, [bad.input("h", T("N", H))],
                   [x, bad.input("x2", T(7, "N", F))], [])


def test_scan_round_trips_through_json_and_the_verifier_checks_its_body():
    g = forward_graph()
    back = Graph.from_json(g.to_json())
    verify(back)
    x, h0, w, u = _data()
    a = run_reference(g, {"x": x, "h0": h0}, {"W": w, "U": u})[0]
    b = run_reference(back, {"x": x, "h0": h0}, {"W": w, "U": u})[0]
    np.testing.assert_array_equal(a["ys"], b["ys"])
    nid = g.outputs["h"].node
    broken = g.attrs(nid)["body"].copy()
    broken.outputs.pop("y0")
    g.node(nid)["attrs"] = {**g.attrs(nid), "body": broken}
    with pytest.raises(VerifyError, match="its body 1"):
        verify(g)


def _loss_graph(reverse=False, truncate=0, masked=False):
    def build(g, p):
        mask = None
        if masked:
            lengths = g.const(np.array([4, 2, 5]), "int64")
            mask = g.op("seq_mask", lengths, p["x"], dtype="float64")
        nid = rnn_scan(g, p["x"], p["h0"], p["W"], p["U"], reverse=reverse, truncate=truncate,
                       mask=mask, dtype="float64")
        squares = g.op("sum", g.op("square", Value(nid, 1)))
        return g.op("add", squares, g.op("sum", g.op("mul", Value(nid, 0), p["R"])))
    return build


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_scan_gradient_is_backprop_through_time(reverse, masked):
    """d loss / d (x, h0, W, U) of a loss on the per-step outputs and the final carry,
    against float64 finite differences of the reference interpreter."""
    x, h0, w, u = _data(5, 3, "float64")
    r = rng(7).standard_normal((3, H))
    graph_gradcheck(_loss_graph(reverse, masked=masked),
                    {"x": x, "h0": h0, "W": w, "U": u, "R": r}, rtol=1e-5, atol=1e-8)


def _grads(build, arrays, wrt, device=None):
    g = Graph()
    ps = {k: g.param(k, T(*a.shape, dtype="float64")) for k, a in arrays.items()}
    g.outputs["loss"] = build(g, ps)
    grads = build_gradients(g, g.outputs["loss"], [ps[k].node for k in wrt])
    for k in wrt:
        g.outputs[f"grad_{k}"] = grads[ps[k].node]
    if device is None:
        return run_reference(g, {}, arrays)[0]
    prog = compile_graph(g, device)
    prog.bind_params(arrays, {})
    return prog({})


def test_truncated_bptt_keeps_the_last_k_steps_of_the_carry_gradient():
    """truncate: T is full BPTT; truncate: 1 gives the carry gradient only into the last
    step, so the gradient of U is the last step's alone (h_(T-1) x δ_T) when the loss reads
    the final state only."""
    x, h0, w, u = _data(5, 3, "float64")
    r = rng(7).standard_normal((3, H))
    arrays = {"x": x, "h0": h0, "W": w, "U": u, "R": r}

    def final_only(truncate):
        def build(g, p):
            nid = rnn_scan(g, p["x"], p["h0"], p["W"], p["U"], truncate=truncate, dtype="float64")
            return g.op("sum", g.op("mul", Value(nid, 0), p["R"]))
        return build

    full = _grads(_loss_graph(), arrays, ["U", "W"])
    same = _grads(_loss_graph(truncate=5), arrays, ["U", "W"])
    np.testing.assert_allclose(same["grad_U"], full["grad_U"], rtol=1e-12)
    one = _grads(final_only(1), arrays, ["U", "W"])
    h_prev, _ = numpy_rnn(x[:-1], h0, w, u)
    h_last = np.tanh(x[-1] @ w + h_prev @ u)
    delta = r * (1 - h_last ** 2)
    np.testing.assert_allclose(one["grad_U"], h_prev.T @ delta, rtol=1e-10)
    np.testing.assert_allclose(one["grad_W"], x[-1].T @ delta, rtol=1e-10)


@pytest.mark.parametrize("truncate", [0, 2])
@pytest.mark.parametrize("reverse", [False, True])
def test_compiled_bptt_equals_the_reference(truncate, reverse):
    x, h0, w, u = _data(6, 3, "float64")
    arrays = {"x": x, "h0": h0, "W": w, "U": u, "R": rng(3).standard_normal((3, H))}
    build = _loss_graph(reverse, truncate, masked=True)
    want = _grads(build, arrays, ["x", "h0", "W", "U"])
    got = _grads(build, arrays, ["x", "h0", "W", "U"], device="cpu")
    for k in want:
        np.testing.assert_allclose(got[k].reshape(want[k].shape), want[k], rtol=1e-10,
                                   atol=1e-12, err_msg=k)


def test_seq_mask_kernel():
    lengths = np.array([3, 0, 5, 1], np.int64)
    like = np.zeros((5, 4, 2), np.float32)
    (out,) = check_kernel("seq_mask", [T("N", dtype="int64"), T("T", "N", 2)], [lengths, like])
    assert out[:, :, 0].sum(axis=0).tolist() == [3, 0, 5, 1]


@pytest.mark.parametrize("from_end", [True, False])
def test_truncate_mask_kernel(from_end):
    like = np.zeros((6, 2), np.float32)
    (out,) = check_kernel("truncate_mask", [T("T", 2)], [like], {"k": 2, "from_end": from_end})
    assert out.tolist() == ([0, 0, 0, 0, 1, 1] if from_end else [1, 1, 0, 0, 0, 0])


def test_masks_pass_no_gradient_to_their_inputs():
    """The masks are data: a loss through them differentiates to the masked values only."""
    def build(g, p):
        m = g.op("seq_mask", g.const(np.array([1, 2]), "int64"), p["x"], dtype="float64")
        k = g.op("truncate_mask", p["x"], k=1, dtype="float64")
        km = g.op("reshape", k, shape=(3, 1, 1))
        return g.op("sum", g.op("mul", g.op("mul", p["x"], m), km))
    x = rng(1).standard_normal((3, 2, 1))
    graph_gradcheck(build, {"x": x})


def test_truncate_mask_per_sample_kernel():
    mask = np.zeros((5, 3, 1), np.float32)
    for n, length in enumerate([5, 2, 0]):
        mask[:length, n, 0] = 1
    for from_end in (True, False):
        (out,) = check_kernel("truncate_mask", [T("T", "N", 1)], [mask],
                              {"k": 2, "from_end": from_end, "per_sample": True})
        if from_end:  # the last 2 real steps of each sample, and every padded step after
            assert out[:, :, 0].T.tolist() == [[0, 0, 0, 1, 1], [1, 1, 1, 1, 1], [1] * 5]


def test_truncated_bptt_with_lengths_counts_each_samples_own_steps():
    """A padded sample's gradient with truncate: k equals the gradient of the same sample
    alone, unpadded: padded steps do not use up the k steps."""
    from types import SimpleNamespace

    from graphdl.layers import LAYERS
    from graphdl.layers.lower import LayerCtx

    def grads(x, lengths, pick):
        g = Graph()
        xv = g.input("x", T(x.shape[0], "T", 2))
        lv = g.input("lengths", T(x.shape[0], dtype="int64"))
        layer = SimpleNamespace(name="rnn", type="rnn", trainable=True, lr_mult=1.0,
                                regularizer=None, params={"hidden": 3, "output": "last",
                                                          "truncate": 1, "lengths": "lengths"})
        spec = SimpleNamespace(model=SimpleNamespace(inputs={"x": None, "lengths": None}))
        ctx = LayerCtx(g, spec, layer, LAYERS["rnn"], True, None, salt=1,
                       values={"x": xv, "lengths": lv})
        h = LAYERS["rnn"].build(ctx, [xv])
        loss = g.op("sum", g.op("mul", h, g.const(pick)))
        wrt = sorted(g.named("param").values())
        got = build_gradients(g, loss, wrt)
        for nid, v in got.items():
            g.outputs[g.node(nid)["name"]] = v
        r = np.random.default_rng(4)
        params = {g.node(nid)["name"]: (0.5 * r.standard_normal(g.type_of(Value(nid)).shape))
                  .astype(np.float32) for nid in wrt}
        prog = compile_graph(g, "cpu")
        prog.bind_params(params, {})
        return prog({"x": x, "lengths": lengths})

    x = rng(5).standard_normal((2, 4, 2)).astype(np.float32)
    pick = np.zeros((2, 3), np.float32)
    pick[0] = 1.0  # the loss reads sample 0 only, whose length is 2
    padded = grads(x, np.array([2, 4], np.int64), pick)
    alone = grads(np.ascontiguousarray(x[:1, :2]), np.array([2], np.int64), pick[:1])
    assert np.abs(alone["rnn.weight_hh_l0"]).max() > 0
    for k in alone:
        np.testing.assert_allclose(padded[k], alone[k], rtol=1e-5, atol=1e-6, err_msg=k)
