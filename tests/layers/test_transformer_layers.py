"""The transformer layers (graphdl/layers/transformer.py): multihead_attention against
torch.nn.MultiheadAttention with the same weights (self- and cross-attention, causal,
key padding from an embedding's padding_idx), its gradients against torch's, and the
RNN attention layers (attention, additive_attention, attention pooling) and
positional_encoding against NumPy, compiled."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph
from graphdl.ir.types import TensorType
from graphdl.layers import LAYERS
from graphdl.layers.lower import LayerCtx, _pass_mask
from graphdl.ops.nn import sinusoidal_positions
from graphdl.passes.autodiff import build_gradients
from graphdl.runtime.params import init_params

E, HEADS, VOCAB = 8, 2, 7


def _layer(g, type_name, params, inputs, values, masks=None, name="att"):
    layer = SimpleNamespace(name=name, type=type_name, params=params, trainable=True,
                            lr_mult=1.0, regularizer=None)
    spec = SimpleNamespace(model=SimpleNamespace(inputs={k: None for k in values}))
    ctx = LayerCtx(g, spec, layer, LAYERS[type_name], False, None, salt=1, values=values,
                   masks=masks if masks is not None else {})
    out = LAYERS[type_name].build(ctx, inputs)
    if masks is not None:
        _pass_mask(g, masks, inputs, out)
    return out


def _run(g, feeds, params, grads_of=None):
    if grads_of is not None:
        seed = g.input("gy", g.type_of(g.outputs["y"]))
        loss = g.op("sum", g.op("mul", g.outputs["y"], seed))
        g.outputs["loss"] = loss
        grads = build_gradients(g, loss, [g.named("param")[n] for n in grads_of])
        for n in grads_of:
            g.outputs[f"d.{n}"] = grads[g.named("param")[n]]
    prog = compile_graph(g, "cpu")
    prog.bind_params(params, {})
    return {k: np.array(v) for k, v in prog(feeds).items()}


def _mha_graph(causal: bool, cross: bool):
    """ids_q [N, Tq] -> embedding (padding_idx 0) -> multihead_attention (self, or across
    to a second embedded sequence ids_k): the key padding comes from the embedding."""
    g = Graph()
    masks: dict = {}
    ids_q = g.input("ids_q", TensorType(("N", "T"), "int64"))
    values = {"ids_q": ids_q}
    q = _layer(g, "embedding", {"vocab": VOCAB, "dim": E, "padding_idx": 0}, [ids_q], values,
               masks, name="emb_q")
    inputs = [q]
    if cross:
        ids_k = g.input("ids_k", TensorType(("N", "S"), "int64"))
        values["ids_k"] = ids_k
        k = _layer(g, "embedding", {"vocab": VOCAB, "dim": E, "padding_idx": 0}, [ids_k],
                   values, masks, name="emb_k")
        inputs = [q, k, k]
    g.outputs["y"] = _layer(g, "multihead_attention",
                            {"heads": HEADS, "dim": E, "causal": causal}, inputs, values, masks)
    return g


def _torch_mha(params, causal, q, k, key_pad):
    mha = torch.nn.MultiheadAttention(E, HEADS, batch_first=True, dtype=torch.float64)
    state = {n.split(".", 1)[1]: torch.tensor(v, dtype=torch.float64)
             for n, v in params.items() if n.startswith("att.")}
    mha.load_state_dict(state)  # the same names and layout: loads as is
    tq, tk = q.shape[1], k.shape[1]
    attn_mask = None
    if causal:
        attn_mask = torch.ones(tq, tk, dtype=torch.bool).triu(1 + tk - tq)
    out, _ = mha(q, k, k, key_padding_mask=torch.tensor(key_pad), attn_mask=attn_mask,
                 need_weights=False)
    return mha, out


@pytest.mark.parametrize("causal, cross", [(False, False), (True, False), (False, True)],
                         ids=["self", "causal", "cross"])
def test_multihead_attention_equals_torch(causal, cross):
    r = np.random.default_rng(3)
    n, tq, tk = 3, 5, 6 if cross else 5
    ids_q = r.integers(1, VOCAB, size=(n, tq))
    ids_q[1, 3:] = 0  # padding
    ids_k = r.integers(1, VOCAB, size=(n, tk))
    ids_k[2, 2:] = 0
    g = _mha_graph(causal, cross)
    params = init_params(g, seed=1)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    names = [k for k in params if k.startswith("att.")]
    assert sorted(names) == ["att.in_proj_bias", "att.in_proj_weight", "att.out_proj.bias",
                             "att.out_proj.weight"]
    params["att.in_proj_bias"] = r.uniform(-0.5, 0.5, 3 * E).astype(np.float32)
    params["att.out_proj.bias"] = r.uniform(-0.5, 0.5, E).astype(np.float32)
    feeds = {"ids_q": ids_q, "gy": r.standard_normal((n, tq, E)).astype(np.float32)}
    if cross:
        feeds["ids_k"] = ids_k
    got = _run(g, feeds, params, grads_of=names)

    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    q = torch.tensor(p64["emb_q.weight"][ids_q], requires_grad=False)
    keys_ids = ids_k if cross else ids_q
    k = torch.tensor(p64["emb_k.weight" if cross else "emb_q.weight"][keys_ids])
    mha, out = _torch_mha(p64, causal, q, k, keys_ids == 0)
    (out * torch.tensor(feeds["gy"], dtype=torch.float64)).sum().backward()
    # rows whose every key is padding: torch gives NaN there, graphdl zeros (none here)
    np.testing.assert_allclose(got["y"], out.detach().numpy(), rtol=2e-5, atol=2e-6)
    for name, tp in mha.named_parameters():
        np.testing.assert_allclose(got[f"d.att.{name}"], tp.grad.numpy(), rtol=1e-4,
                                   atol=1e-5, err_msg=name)


def test_attention_layers_and_pooling_against_numpy():
    r = np.random.default_rng(4)
    n, tq, tk, d = 2, 3, 5, 4
    g = Graph()
    q = g.input("q", TensorType(("N", tq, d), "float32"))
    v = g.input("v", TensorType(("N", tk, d), "float32"))
    lengths = g.input("lengths", TensorType(("N",), "int64"))
    values = {"q": q, "v": v, "lengths": lengths}
    g.outputs["dot"] = _layer(g, "attention", {"scale": True, "lengths": "lengths"}, [q, v],
                              values, name="dot")
    g.outputs["add"] = _layer(g, "additive_attention", {"units": 6, "lengths": "lengths"},
                              [q, v], values, name="add")
    g.outputs["pool"] = _layer(g, "attention", {"units": 6, "lengths": "lengths"}, [v],
                               values, name="pool")
    params = init_params(g, seed=2)  # parameters are float32
    params["add.bias"] = r.uniform(-1, 1, 6).astype(np.float32)
    params["pool.bias"] = r.uniform(-1, 1, 6).astype(np.float32)
    feeds = {"q": r.standard_normal((n, tq, d)).astype(np.float32),
             "v": r.standard_normal((n, tk, d)).astype(np.float32), "lengths": np.array([5, 2])}
    got = _run(g, feeds, params)
    params = {k: val.astype(np.float64) for k, val in params.items()}

    def softmax(s, keep):
        s = np.where(keep, s, -np.inf)
        e = np.exp(s - s.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    keep = np.arange(tk)[None, :] < feeds["lengths"][:, None]  # [N, Tk]
    qq, vv = feeds["q"].astype(np.float64), feeds["v"].astype(np.float64)
    dot = softmax(qq @ vv.transpose(0, 2, 1) / np.sqrt(d), keep[:, None]) @ vv
    e = np.tanh((qq @ params["add.query_kernel"] + params["add.bias"])[:, :, None]
                + (vv @ params["add.key_kernel"])[:, None])
    add = softmax((e @ params["add.score"])[..., 0], keep[:, None]) @ vv
    w = softmax((np.tanh(vv @ params["pool.kernel"] + params["pool.bias"])
                 @ params["pool.query"])[..., 0], keep)
    pool = (vv * w[..., None]).sum(1)
    np.testing.assert_allclose(got["dot"], dot, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(got["add"], add, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(got["pool"], pool, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_positional_encoding_adds_the_row_of_each_position(kind):
    r = np.random.default_rng(5)
    g = Graph()
    x = g.input("x", TensorType(("N", "T", 6), "float32"))
    g.outputs["y"] = _layer(g, "positional_encoding", {"kind": kind, "max_len": 10}, [x],
                            {"x": x}, name="pos")
    params = init_params(g, seed=0)
    table = sinusoidal_positions(10, 6) if kind == "sinusoidal" else params["pos.weight"]
    for steps in (4, 9):  # one program, any length up to max_len
        xs = r.standard_normal((2, steps, 6)).astype(np.float32)
        got = _run(g.copy(), {"x": xs}, params)["y"]
        np.testing.assert_allclose(got, xs + table[None, :steps], rtol=1e-6)


def test_a_post_norm_encoder_layer_equals_torch_transformer_encoder_layer():
    """x -> LN(x + MHA(x)) -> LN(h + W2 relu(W1 h)) with key padding from lengths, as
    torch.nn.TransformerEncoderLayer (ReLU, dropout 0, post-norm) with the same weights."""
    r = np.random.default_rng(6)
    n, steps, ff = 3, 6, 16
    g = Graph()
    x = g.input("x", TensorType(("N", "T", E), "float32"))
    lengths = g.input("lengths", TensorType(("N",), "int64"))
    values = {"x": x, "lengths": lengths}
    a = _layer(g, "multihead_attention", {"heads": HEADS, "dim": E, "lengths": "lengths"},
               [x], values, name="att")
    h = _layer(g, "layer_norm", {}, [_layer(g, "add", {}, [x, a], values, name="res1")],
               values, name="ln1")
    f = _layer(g, "dense", {"units": ff, "activation": "relu"}, [h], values, name="ff1")
    f = _layer(g, "dense", {"units": E}, [f], values, name="ff2")
    g.outputs["y"] = _layer(g, "layer_norm", {}, [_layer(g, "add", {}, [h, f], values,
                                                          name="res2")], values, name="ln2")
    torch.manual_seed(0)
    ref = torch.nn.TransformerEncoderLayer(E, HEADS, dim_feedforward=ff, dropout=0.0,
                                           batch_first=True)
    with torch.no_grad():  # non-trivial norms
        for norm in (ref.norm1, ref.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in ref.state_dict().items()}
    params = {f"att.{k[len('self_attn.'):]}": v for k, v in sd.items() if k.startswith("self_attn.")}
    params.update({"ff1.kernel": sd["linear1.weight"].T.copy(), "ff1.bias": sd["linear1.bias"],
                   "ff2.kernel": sd["linear2.weight"].T.copy(), "ff2.bias": sd["linear2.bias"],
                   "ln1.weight": sd["norm1.weight"], "ln1.bias": sd["norm1.bias"],
                   "ln2.weight": sd["norm2.weight"], "ln2.bias": sd["norm2.bias"]})
    assert set(params) == set(init_params(g, seed=0))
    xs = r.standard_normal((n, steps, E)).astype(np.float32)
    lens = np.array([6, 3, 5])
    got = _run(g, {"x": xs, "lengths": lens}, params)["y"]
    pad = torch.tensor(np.arange(steps)[None, :] >= lens[:, None])
    ref.eval()
    want = ref(torch.tensor(xs), src_key_padding_mask=pad).detach().numpy()
    real = ~pad.numpy()  # torch's fast path may leave padded rows as it likes
    np.testing.assert_allclose(got[real], want[real], rtol=1e-4, atol=1e-5)
