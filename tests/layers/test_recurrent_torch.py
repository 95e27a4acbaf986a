"""The recurrent layers rnn, lstm and gru (graphdl/layers/sequence.py, a `scan` per layer and
direction) against torch.nn.RNN/LSTM/GRU given the same weights: outputs, and gradients of
every weight and of the input through the scan's reverse scan (graphdl/passes/
scan_autodiff.py), on the reference interpreter and on the compiled CPU program.

Each layer is lowered standalone, as tests/layers/test_catalog.py does; its parameters have
torch's names, shapes and gate order, so a torch module's state_dict loads into them as is.
Shapes are tiny (N <= 3, T <= 5, F <= 3, hidden <= 4): what is checked is the arithmetic,
and every distinct graph is one compile (cached on disk)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph
from graphdl.ir.types import TensorType
from graphdl.layers import LAYERS
from graphdl.layers.lower import LayerCtx
from graphdl.passes.autodiff import build_gradients

torch = pytest.importorskip("torch")

F = 3  # input features
NAME = "rec"  # the layer's name: its params are rec.weight_ih_l0 and so on
TOL = {"float32": {"rtol": 1e-5, "atol": 1e-5}, "float64": {"rtol": 1e-10, "atol": 1e-12}}
MODULES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


class _Ctx64(LayerCtx):
    """LayerCtx whose parameters are float64 (LayerCtx.param makes float32 ones), so that a
    float64 sequence meets float64 weights."""

    def param(self, suffix, shape, init, **_):
        return self.g.param(f"{self.layer.name}.{suffix}", TensorType(tuple(shape), "float64"),
                            init=init, trainable=True)


# ------------------------------------------------------------------ graphdl side

def build(kind: str, params: dict, *, n, steps, x_param: bool = False, lengths: bool = False,
          grads: bool = True, dtype: str = "float32") -> Graph:
    """The layer on x [n, steps, F] (``n``/``steps`` ints or symbols; with ``lengths``, its
    `lengths` key names an int64 model input [n]) with the output "y" and, with ``grads``,
    loss = sum(y * r) and "grad.<param>" for every param (x included when ``x_param``: x is
    then a param, as only a source node has a gradient)."""
    g = Graph()
    xt = TensorType((n, steps, F), dtype)
    x = g.param("x", xt) if x_param else g.input("x", xt)
    values = {"x": x}
    if lengths:
        values["lengths"] = g.input("lengths", TensorType((n,), "int64"))
        params = {**params, "lengths": "lengths"}  # the key names the model input
    spec = SimpleNamespace(model=SimpleNamespace(inputs=dict.fromkeys(values)))
    layer = SimpleNamespace(name=NAME, type=kind, params=params, trainable=True, lr_mult=1.0,
                            regularizer=None)
    ctx_cls = _Ctx64 if dtype == "float64" else LayerCtx
    ctx = ctx_cls(g, spec, layer, LAYERS[kind], grads, None, salt=1, values=values)
    y = LAYERS[kind].build(ctx, [x])
    g.outputs["y"] = y
    if grads:
        r = g.input("r", g.type_of(y))
        loss = g.op("sum", g.op("mul", y, r))
        g.outputs["loss"] = loss
        wrt = g.named("param")
        grad = build_gradients(g, loss, list(wrt.values()))
        for name, nid in wrt.items():
            g.outputs[f"grad.{name}"] = grad[nid]
    return g


def run_both(g: Graph, feeds: dict, params: dict, prog=None) -> dict[str, dict]:
    """The graph's outputs from the reference interpreter and from the compiled program."""
    ref = run_reference(g, feeds, params)[0]
    if prog is None:
        prog = compile_graph(g, "cpu")
    prog.bind_params(params, {})
    return {"reference": ref, "compiled": prog(feeds)}


# ------------------------------------------------------------------ torch side

def torch_module(kind: str, params: dict, dtype: str = "float32", seed: int = 0):
    torch.manual_seed(seed)
    extra = {"nonlinearity": params.get("activation", "tanh")} if kind == "rnn" else {}
    module = getattr(torch.nn, MODULES[kind])(
        F, params["hidden"], num_layers=params.get("num_layers", 1),
        bidirectional=params.get("bidirectional", False), batch_first=True, **extra)
    return module.to(getattr(torch, dtype))


def graphdl_params(module) -> dict[str, np.ndarray]:
    """The module's weights under the layer's param names (the same names after `rec.`)."""
    return {f"{NAME}.{k}": v.detach().numpy().copy() for k, v in module.state_dict().items()}


def torch_run(module, params: dict, x: np.ndarray, r: np.ndarray | None = None,
              lengths: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The torch layer's output as the graphdl layer gives it (``output`` sequence: [N, T,
    H * dirs]; last: the last layer's h_n, directions concatenated) and, given ``r``, the
    gradients of sum(output * r) by graphdl name."""
    xt = torch.tensor(x, requires_grad=True)
    module.zero_grad()
    steps = x.shape[1]
    if lengths is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
        out, h_n = module(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                        total_length=steps)
    else:
        out, h_n = module(xt)
    if isinstance(h_n, tuple):  # LSTM: (h_n, c_n)
        h_n = h_n[0]
    dirs = 2 if params.get("bidirectional") else 1
    if params.get("output", "sequence") == "last":
        out = torch.cat([h_n[d - dirs] for d in range(dirs)], dim=1)  # the last layer's
    result = {"y": out.detach().numpy()}
    if r is not None:
        (out * torch.tensor(r)).sum().backward()
        result.update({f"grad.{NAME}.{k}": p.grad.numpy()
                       for k, p in module.named_parameters()})
        result["grad.x"] = xt.grad.numpy()
    return result


def assert_match(got: dict, want: dict, dtype: str = "float32", where: str = "") -> None:
    for key, expected in want.items():
        assert got[key].shape == expected.shape, f"{where} {key}"
        np.testing.assert_allclose(got[key], expected, err_msg=f"{where} {key}", **TOL[dtype])


def data(rng, n: int, steps: int, width: int, dtype: str = "float32"):
    return (rng.standard_normal((n, steps, F)).astype(dtype),
            rng.standard_normal((n, steps, width)).astype(dtype),
            rng.standard_normal((n, width)).astype(dtype))


# ------------------------------------------------------------------ outputs and gradients

# (kind, layer keys, lengths). Cases alternate between x a param of fixed shape [3, 5, F]
# (so x has a gradient too) and x an input [N, T, F] with symbolic N and T.
CASES = [
    ("rnn", {"hidden": 4}, None),
    ("rnn", {"hidden": 4, "activation": "relu", "bidirectional": True, "output": "last"}, None),
    ("lstm", {"hidden": 3, "num_layers": 2}, None),
    ("lstm", {"hidden": 3, "num_layers": 2, "bidirectional": True, "output": "last"}, None),
    ("gru", {"hidden": 4, "bidirectional": True}, None),
    ("gru", {"hidden": 4, "num_layers": 2, "output": "last"}, None),
    # variable lengths: the longest is T (torch's padded output then has T steps too)
    ("rnn", {"hidden": 4, "bidirectional": True}, [2, 5, 1]),
    ("lstm", {"hidden": 3, "bidirectional": True, "output": "last"}, [3, 5, 1]),
    ("gru", {"hidden": 4, "num_layers": 2, "bidirectional": True}, [5, 1, 3]),
    ("rnn", {"hidden": 4, "activation": "relu", "num_layers": 2, "output": "last"},
     [4, 2, 5]),
]


def _case_id(case) -> str:
    kind, params, lengths = case
    parts = [kind, params.get("activation", ""),
             "bi" if params.get("bidirectional") else "",
             f"{params['num_layers']}layers" if params.get("num_layers") else "",
             params.get("output", "sequence"), "lengths" if lengths else ""]
    return "-".join(p for p in parts if p)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[_case_id(c) for c in CASES])
def test_outputs_and_gradients_equal_torch(index):
    kind, params, lengths = CASES[index]
    x_param = index % 2 == 0
    n, steps = 3, 5
    dims = (n, steps) if x_param else ("N", "T")
    g = build(kind, params, n=dims[0], steps=dims[1], x_param=x_param,
              lengths=lengths is not None)
    module = torch_module(kind, params, seed=index)
    weights = graphdl_params(module)
    dirs = 2 if params.get("bidirectional") else 1
    x, r_seq, r_last = data(np.random.default_rng(index), n, steps, params["hidden"] * dirs)
    r = r_last if params.get("output") == "last" else r_seq
    lens = None if lengths is None else np.array(lengths, np.int64)
    want = torch_run(module, params, x, r, lens)
    if not x_param:
        del want["grad.x"]
    feeds = {"r": r}
    feeds.update({"lengths": lens} if lens is not None else {})
    if x_param:
        weights["x"] = x
    else:
        feeds["x"] = x
    for backend, got in run_both(g, feeds, weights).items():
        assert set(got) == set(want) | {"loss"}, backend
        assert_match(got, want, where=backend)
        if lens is not None and params.get("output") != "last":
            past = np.arange(steps)[None, :] >= lens[:, None]  # [N, T]: past each length
            assert np.all(got["y"][past] == 0), backend
            if x_param:  # nor does anything reach the padding
                assert np.all(got["grad.x"][past] == 0), backend


def test_float64_outputs_and_gradients_equal_torch():
    """float64 end to end (params too): equal to torch's float64 LSTM to ~1e-10."""
    kind, params = "lstm", {"hidden": 3, "bidirectional": True}
    n, steps = 2, 4
    g = build(kind, params, n=n, steps=steps, x_param=True, lengths=True, dtype="float64")
    module = torch_module(kind, params, dtype="float64", seed=11)
    weights = graphdl_params(module)
    x, r, _ = data(np.random.default_rng(11), n, steps, 6, "float64")
    lens = np.array([4, 2], np.int64)
    want = torch_run(module, params, x, r, lens)
    weights["x"] = x
    for backend, got in run_both(g, {"r": r, "lengths": lens}, weights).items():
        assert got["y"].dtype == np.float64, backend
        assert_match(got, want, "float64", where=backend)


# ------------------------------------------------------------------ one program, any T

def test_one_program_serves_every_sequence_length():
    """A symbolic T: one compiled program runs T = 3 and T = 5 (and another N) with the
    same generated step, each equal to torch."""
    kind, params = "gru", {"hidden": 3, "bidirectional": True}
    g = build(kind, params, n="N", steps="T")
    prog = compile_graph(g, "cpu")
    step_fn = prog.step_fn
    module = torch_module(kind, params, seed=21)
    weights = graphdl_params(module)
    prog.bind_params(weights, {})
    rng = np.random.default_rng(21)
    for n, steps in [(2, 3), (3, 5), (2, 3)]:
        x, r, _ = data(rng, n, steps, 6)
        want = torch_run(module, params, x, r)
        del want["grad.x"]
        got = prog({"x": x, "r": r})
        assert got["y"].shape == (n, steps, 6)
        assert_match(got, want, where=f"compiled, T={steps}")
        assert prog.step_fn is step_fn
    signatures = getattr(step_fn, "signatures", None)
    if signatures is not None:  # a Numba dispatcher: one specialisation for every T
        assert len(signatures) == 1


# ------------------------------------------------------------------ truncated BPTT

def _torch_cell(kind: str, x_t, state, w, activation: str):
    """One step of torch's RNN or LSTM cell, written out (LSTM gates i, f, g, o)."""
    w_ih, w_hh, b_ih, b_hh = w
    gi = x_t @ w_ih.T + b_ih
    gh = state[0] @ w_hh.T + b_hh
    if kind == "rnn":
        act = torch.tanh if activation == "tanh" else torch.relu
        return (act(gi + gh),)
    i, f, gg, o = (gi + gh).chunk(4, dim=1)
    c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(gg)
    return torch.sigmoid(o) * torch.tanh(c), c


def torch_truncated_last(kind: str, params: dict, module, x: np.ndarray, r: np.ndarray,
                         truncate: int) -> dict[str, np.ndarray]:
    """``output: last`` of a one-layer module with its cell run by hand, the state detached
    as it enters the ``truncate``-th step counted back from the direction's last step (so
    exactly the last ``truncate`` steps' recurrence carries gradient; 0: never detached),
    and the gradients of sum(output * r) by graphdl name."""
    xt = torch.tensor(x, requires_grad=True)
    module.zero_grad()
    n, steps, _ = x.shape
    hidden = params["hidden"]
    dirs = 2 if params.get("bidirectional") else 1
    finals = []
    for d in range(dirs):
        suffix = "_l0" + ("_reverse" if d else "")
        w = [getattr(module, f"{p}{suffix}") for p in ("weight_ih", "weight_hh", "bias_ih",
                                                       "bias_hh")]
        order = list(range(steps))[::-1] if d else list(range(steps))
        state = tuple(torch.zeros(n, hidden, dtype=xt.dtype)
                      for _ in range(2 if kind == "lstm" else 1))
        for i, t in enumerate(order):
            if truncate and i == steps - truncate:
                state = tuple(s.detach() for s in state)
            state = _torch_cell(kind, xt[:, t], state, w, params.get("activation", "tanh"))
        finals.append(state[0])
    out = torch.cat(finals, dim=1)
    (out * torch.tensor(r)).sum().backward()
    result = {"y": out.detach().numpy(), "grad.x": xt.grad.numpy()}
    result.update({f"grad.{NAME}.{k}": p.grad.numpy() for k, p in module.named_parameters()})
    return result


@pytest.mark.parametrize("kind, params", [
    ("rnn", {"hidden": 4, "output": "last", "truncate": 1}),
    ("lstm", {"hidden": 3, "bidirectional": True, "output": "last", "truncate": 2}),
], ids=["rnn-truncate1", "lstm-bi-truncate2"])
def test_truncated_bptt_equals_torch_with_the_state_detached(kind, params):
    """``truncate: k``, output last: the gradients are torch's with the state detached before
    the direction's last k steps (truncate 1: only the last step's recurrence contributes,
    the gradient w.r.t. weight_hh is dL/dpre_(T-1) h_(T-2)^T)."""
    n, steps = 2, 4
    g = build(kind, params, n=n, steps=steps, x_param=True)
    module = torch_module(kind, params, seed=31)
    weights = graphdl_params(module)
    dirs = 2 if params.get("bidirectional") else 1
    x, _, r = data(np.random.default_rng(31), n, steps, params["hidden"] * dirs)
    full = torch_run(module, params, x, r)
    # the hand-run cell is torch's module when nothing is detached
    assert_match(torch_truncated_last(kind, params, module, x, r, 0), full, where="torch")
    want = torch_truncated_last(kind, params, module, x, r, params["truncate"])
    # truncation changes the gradients (else this test would show nothing)
    assert not np.allclose(want["grad.rec.weight_hh_l0"], full["grad.rec.weight_hh_l0"])
    if dirs == 1:  # only the last k steps' inputs reach the final state's gradient
        assert np.all(want["grad.x"][:, : steps - params["truncate"]] == 0)
    weights["x"] = x
    for backend, got in run_both(g, {"r": r}, weights).items():
        assert_match(got, want, where=backend)
