"""hoist / hoist_grads (graphdl/passes/hoist.py): what leaves a scan's loop, and that the
numbers do not change."""

from __future__ import annotations

import numpy as np
from graph_builders import T

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ir import scan as S
from graphdl.ir.graph import Graph, Value
from graphdl.passes.autodiff import build_gradients
from graphdl.passes.hoist import hoist, hoist_grads
from graphdl.passes.infer_shapes import infer_shapes
from graphdl.passes.simplify import simplify

F, H = 3, 4


def rnn(dtype="float64"):
    """h' = tanh(x_t W^T + b + h U); ys = h' (the layers' shape of a recurrent cell)."""
    g = Graph()
    x = g.input("x", T("T", "N", F, dtype=dtype))
    h0 = g.input("h0", T("N", H, dtype=dtype))
    w, b, u = (g.param("W", T(H, F, dtype=dtype)), g.param("b", T(H, dtype=dtype)),
               g.param("U", T(H, H, dtype=dtype)))
    body, (h,), (xt,), (wb, bb, ub) = S.new_body(
        [T("N", H, dtype=dtype)], [T("N", F, dtype=dtype)],
        [T(H, F, dtype=dtype), T(H, dtype=dtype), T(H, H, dtype=dtype)])
    proj = body.op("add", body.op("matmul", xt, wb, transpose_b=True), bb)
    hn = body.op("tanh", body.op("add", proj, body.op("matmul", h, ub)))
    S.set_body_outputs(body, [hn], [hn])
    nid = S.add_scan(g, body, [h0], [x], [w, b, u])
    g.outputs["ys"] = Value(nid, 1)
    g.outputs["h"] = Value(nid, 0)
    return g


def _data(seed=0):
    r = np.random.default_rng(seed)
    feeds = {"x": r.standard_normal((5, 2, F)), "h0": 0.1 * r.standard_normal((2, H))}
    params = {"W": 0.5 * r.standard_normal((H, F)), "b": r.standard_normal(H),
              "U": 0.5 * r.standard_normal((H, H))}
    return feeds, params


def test_the_input_projection_runs_before_the_loop():
    g = infer_shapes(rnn())
    out = hoist(g)
    (nid,) = out.nodes_by_op("scan")
    body_ops = sorted(out.attrs(nid)["body"].node(n)["op"] for n in out.attrs(nid)["body"].nodes()
                      if out.attrs(nid)["body"].op_of(n) != "input")
    assert body_ops == ["add", "matmul", "tanh"]  # h U, + the hoisted projection, tanh
    outer_matmuls = [n for n in out.nodes_by_op("matmul")]
    assert [str(out.type_of(Value(n))) for n in outer_matmuls] == ["float64[T, N, 4]"]
    assert out.meta["hoisted"] == [{"layer": None, "phase": "forward",
                                    "where": "before the loop", "ops": ["matmul", "add"]}]
    feeds, params = _data()
    want = run_reference(g, feeds, params)[0]
    got = run_reference(out, feeds, params)[0]
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12)


def _train_graph():
    g = infer_shapes(rnn())
    g = hoist(g)
    loss = g.op("sum", g.op("square", g.outputs["ys"]))
    g.outputs["loss"] = loss
    grads = build_gradients(g, loss, [g.find("param", p) for p in ("W", "b", "U")])
    for pid, v in grads.items():
        g.outputs[f"grad_{g.node(pid)['name']}"] = v
    return simplify(g)


def test_weight_gradients_are_summed_after_the_backward_loop():
    g = _train_graph()
    out = hoist_grads(g)
    scans = out.nodes_by_op("scan")
    backward = [n for n in scans if out.node(n)["phase"] == "backward"]
    assert len(backward) == 1
    (b,) = backward
    assert out.attrs(b)["num_carry"] == 1  # only dh: the dU accumulator left the loop
    assert out.nodes_by_op("matmul_rows")
    moved = [h for h in out.meta["hoisted"] if h["where"] == "after the loop"]
    assert moved and moved[0]["ops"] == ["matmul_rows"]
    feeds, params = _data(1)
    want = run_reference(g, feeds, params)[0]
    got = run_reference(out, feeds, params)[0]
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, err_msg=k)
    prog = compile_graph(out, "cpu")
    prog.bind_params(params, {})
    compiled = prog(feeds)
    for k in want:
        np.testing.assert_allclose(compiled[k].reshape(want[k].shape), want[k], rtol=1e-10,
                                   err_msg=k)


def test_a_program_serves_every_sequence_length_without_recompiling():
    g = rnn("float32")
    prog = compile_graph(g, "cpu")
    prog.bind_params({k: v.astype(np.float32) for k, v in _data()[1].items()}, {})
    r = np.random.default_rng(3)
    for steps in (29, 290):
        prog({"x": r.standard_normal((steps, 2, F)).astype(np.float32),
              "h0": np.zeros((2, H), np.float32)})
    assert len(prog.step_fn.signatures) == 1
