"""Optimiser updates (graphdl/ops/optim.py): sgd, momentum (nesterov), adam / adamw, rmsprop,
adagrad (the last two also cross-checked against torch.optim on the same gradients).

The update ops sit in a graph as they do after autodiff: the parameter is a `param` node,
the optimiser state `state` nodes, and `g.updates` maps each to its new value. The compiled
program updates the bound arrays in place; several steps are compared with the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from graph_builders import N_STATE, STEPPED, update_graph
from helpers import T, infer, reference, rng

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ops.registry import ShapeError, get_op

KERNEL_COVERED = {"sgd_update", "momentum_update", "adam_update", "rmsprop_update",
                  "adagrad_update"}
GRAD_COVERED: set[str] = set()

SHAPE = (3, 5)
CASES = [
    ("sgd_update", {"weight_decay": 0.01, "lr_mult": 2.0}),
    ("momentum_update", {"momentum": 0.8}),
    ("momentum_update", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.05}),
    ("adam_update", {"beta1": 0.8, "beta2": 0.95}),
    ("adam_update", {"decoupled": True, "weight_decay": 0.1, "lr_mult": 0.5}),
    ("rmsprop_update", {}),
    ("rmsprop_update", {"alpha": 0.9, "eps": 1e-6, "weight_decay": 0.05, "lr_mult": 2.0}),
    ("adagrad_update", {}),
    ("adagrad_update", {"lr_decay": 0.1, "initial_accumulator_value": 0.5, "weight_decay": 0.02}),
]

_BUILT: dict = {}


def _build(op: str, attrs: dict, reader_after: bool = False):
    """A training-step-like graph around one update op; compiled once per configuration."""
    key = (op, tuple(sorted(attrs.items())), reader_after)
    if key in _BUILT:
        return _BUILT[key]
    g = update_graph(op, attrs, SHAPE, reader_after)
    prog = compile_graph(g, title=f"test_{op}")
    planned = prog.graph
    _BUILT[key] = (g, planned, prog)
    return _BUILT[key]


def _initial(op, r):
    w = r.standard_normal(SHAPE).astype(np.float32)
    state = {f"s{i}": np.zeros(SHAPE, np.float32) for i in range(N_STATE[op])}
    if op in STEPPED:
        state["step"] = np.zeros(1, np.float32)
    return w, state


def _reference_step(op, attrs, w, state, grad, lr):
    ins = [w, grad] + [state[f"s{i}"] for i in range(N_STATE[op])] + [np.float32(lr)]
    if op in STEPPED:
        state["step"] = state["step"] + 1
        ins.append(state["step"][0])
    outs = reference(op, ins, attrs)
    for i in range(N_STATE[op]):
        state[f"s{i}"] = outs[1 + i].astype(np.float32)
    return outs[0].astype(np.float32)


@pytest.mark.parametrize("op,attrs", CASES)
def test_update_kernel_in_place_several_steps(op, attrs):
    _, planned, prog = _build(op, attrs)
    plan = planned.meta["memory_plan"]["values"]
    for target, v in planned.updates.items():
        assert plan[f"{v.node}:{v.index}"]["inplace"] == f"{target}:0"
    r = rng(0)
    w, state = _initial(op, r)
    prog.bind_params({"w": w}, state)
    bound = {"w": w, **state}
    ref_w, ref_state = w.copy(), {k: s.copy() for k, s in state.items()}
    for step, lr in enumerate([0.1, 0.05, 0.02]):
        grad = r.standard_normal(SHAPE).astype(np.float32)
        out = prog({"grad": grad, "lr": lr})
        assert out == {}
        ref_w = _reference_step(op, attrs, ref_w, ref_state, grad, lr)
        # the bound arrays themselves hold the new values
        assert bound["w"] is w
        np.testing.assert_allclose(w, ref_w, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")
        for k in state:
            assert state[k] is bound[k] and state[k].dtype == np.float32
            np.testing.assert_allclose(state[k], ref_state[k], rtol=1e-5, atol=1e-6)
    if op in STEPPED:
        assert state["step"][0] == 3


@pytest.mark.parametrize("op,attrs", CASES[:1] + CASES[3:4] + CASES[6:7] + CASES[8:9])
def test_update_graph_in_reference_interpreter(op, attrs):
    g, _, _ = _build(op, attrs)
    r = rng(1)
    w, state = _initial(op, r)
    state = {k: (v.reshape(()) if k == "step" else v) for k, v in state.items()}
    grad = r.standard_normal(SHAPE).astype(np.float32)
    _, updates, _ = run_reference(g, {"grad": grad, "lr": np.float32(0.1)}, {"w": w}, state)
    ref_state = {k: v.copy() for k, v in state.items()}
    if op in STEPPED:
        ref_state["step"] = ref_state["step"].reshape(1)
    want = _reference_step(op, attrs, w.copy(), ref_state, grad, 0.1)
    np.testing.assert_allclose(updates["w"], want, rtol=1e-6)
    assert set(updates) == {"w", *state}


def test_update_copies_when_the_parameter_is_read_after_it():
    g, planned, prog = _build("sgd_update", {}, reader_after=True)
    (sgd,) = planned.nodes_by_op("sgd_update")
    assert "inplace" not in planned.meta["memory_plan"]["values"][f"{sgd}:0"]
    r = rng(2)
    w = r.standard_normal(SHAPE).astype(np.float32)
    grad = r.standard_normal(SHAPE).astype(np.float32)
    want_out, want_upd, _ = run_reference(g, {"grad": grad, "lr": np.float32(0.5)}, {"w": w})
    prog.bind_params({"w": w}, {})
    out = prog({"grad": grad, "lr": 0.5})
    np.testing.assert_allclose(out["w_norm"][0], want_out["w_norm"], rtol=1e-5)  # the old w
    np.testing.assert_allclose(w, want_upd["w"], rtol=1e-6)


def test_adam_reference_keeps_param_dtype():
    w = np.ones(SHAPE, np.float32)
    z = np.zeros(SHAPE, np.float32)
    outs = reference("adam_update", [w, w, z, z, np.float32(0.1), np.float32(1)], {})
    assert [o.dtype for o in outs] == [np.float32] * 3


def test_every_update_op_declares_no_grad():
    for op in KERNEL_COVERED:
        assert get_op(op).grad is None and get_op(op).no_grad_reason


def test_infer():
    p = T(3, 5)
    assert infer("sgd_update", [p, p, T()]) == [p]
    assert infer("momentum_update", [p, p, p, T()]) == [p, p]
    assert infer("adam_update", [p, p, p, p, T(), T()]) == [p, p, p]
    q = T("N", 4)
    assert infer("rmsprop_update", [q, q, q, T()]) == [q, q]
    assert infer("adagrad_update", [q, q, q, T(), T()]) == [q, q]


@pytest.mark.parametrize(
    "op,types,match",
    [
        (
            "momentum_update",
            [T(3, 5), T(3, 5), T(5, 3), T()],
            "state float32\\[5, 3\\] does not match",
        ),
        ("adam_update", [T(3), T(3), T(3), T(3, dtype="float64"), T(), T()], "does not match"),
        ("sgd_update", [T(3), T(3), T(1)], "learning rate / step must be scalars"),
        ("rmsprop_update", [T(3), T(3), T(4), T()], "does not match"),
        ("adagrad_update", [T(3), T(3), T(3), T(), T(2)], "must be scalars"),
    ],
)
def test_infer_rejects_bad_inputs(op, types, match):
    with pytest.raises(ShapeError, match=match):
        infer(op, types)


# ---------------------------------------------------------------- against torch.optim

TORCH_CASES = [
    ("rmsprop_update", {}, "RMSprop", {}),
    ("rmsprop_update", {"alpha": 0.9, "eps": 1e-6, "weight_decay": 0.05},
     "RMSprop", {"alpha": 0.9, "eps": 1e-6, "weight_decay": 0.05}),
    ("adagrad_update", {}, "Adagrad", {}),
    ("adagrad_update", {"lr_decay": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-8,
                        "weight_decay": 0.02},
     "Adagrad", {"lr_decay": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-8,
                 "weight_decay": 0.02}),
]


@pytest.mark.parametrize("op,attrs,torch_name,torch_kwargs", TORCH_CASES)
def test_update_matches_torch_optim(op, attrs, torch_name, torch_kwargs):
    """Eight steps on the same gradients (and a changing learning rate) as torch.optim."""
    torch = pytest.importorskip("torch")
    _, _, prog = _build(op, attrs)
    r = rng(3)
    w, state = _initial(op, r)
    tw = torch.nn.Parameter(torch.tensor(w.copy()))
    opt = getattr(torch.optim, torch_name)([tw], lr=0.1, **torch_kwargs)
    prog.bind_params({"w": w}, state)
    for step in range(8):
        lr = 0.1 * 0.8**step
        for group in opt.param_groups:
            group["lr"] = lr
        grad = r.standard_normal(SHAPE).astype(np.float32)
        prog({"grad": grad, "lr": lr})
        tw.grad = torch.tensor(grad)
        opt.step()
        np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=f"step {step}")
    torch_state = opt.state[tw]
    if op == "rmsprop_update":
        np.testing.assert_allclose(state["s0"], torch_state["square_avg"].numpy(), rtol=1e-5)
    else:
        acc = torch_state["sum"].numpy() - attrs.get("initial_accumulator_value", 0.0)
        np.testing.assert_allclose(state["s0"], acc, rtol=1e-5, atol=1e-6)


def test_adam_updates_of_one_step_are_one_multi_tensor_call_with_the_same_numbers():
    """Several adam_update nodes of one step (one lr, one step count) become one
    `adam_multi` call (PyTorch's foreach Adam) that gives, bit for bit, what one
    `adam_flat` call per parameter gives."""
    from graphdl.backends.cpu.library import load_library
    from graphdl.ir.graph import Graph, Value

    shapes = {"a": (3, 5), "b": (7,), "c": (2, 2, 3)}
    attrs = {"beta1": 0.8, "beta2": 0.95, "weight_decay": 0.01}
    g = Graph()
    g.provenance.phase = "update"
    lr = g.input("lr", T())
    step_state = g.state("step", T(), init="zeros")
    step = g.op("add_scalar", step_state, c=1.0)
    g.updates[step_state.node] = step
    for name, shape in shapes.items():
        p = g.param(name, T(*shape))
        m = g.state(f"m_{name}", T(*shape), init="zeros")
        v = g.state(f"v_{name}", T(*shape), init="zeros")
        nid = g.apply("adam_update", [p, g.input(f"g_{name}", T(*shape)), m, v, lr, step], attrs)
        for i, target in enumerate([p, m, v]):
            g.updates[target.node] = Value(nid, i)
    prog = compile_graph(g, title="test_adam_multi")
    assert prog.source.count("K.adam_multi(") == 1 and "K.adam_flat(" not in prog.source

    r = rng(3)
    params = {n: r.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    state = {"step": np.zeros(1, np.float32)}
    for n, s in shapes.items():
        state[f"m_{n}"] = np.zeros(s, np.float32)
        state[f"v_{n}"] = np.zeros(s, np.float32)
    expected = {k: v.copy() for k, v in {**params, **state}.items()}
    prog.bind_params(params, state)
    K = load_library()
    for t in range(3):
        grads = {f"g_{n}": r.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
        prog({"lr": np.float32(0.01), **grads})
        expected["step"] += 1
        for n in shapes:
            K.adam_flat(expected[n].ravel(), grads[f"g_{n}"].ravel(), expected[f"m_{n}"].ravel(),
                        expected[f"v_{n}"].ravel(), np.full(1, 0.01, np.float32),
                        expected["step"], 0.8, 0.95, 1e-8, 0.01, False, 1.0)
        for k, want in expected.items():
            got = params[k] if k in params else state[k]
            np.testing.assert_array_equal(got, want, err_msg=f"{k} after step {t + 1}")
