"""The layer_norm layer (graphdl/layers/norm.py) against torch.nn.LayerNorm given the same
weights: outputs and the gradients of x, weight and bias, on [features] and [T, features]
values, with and without affine parameters; its parameters have torch's names, so a torch
module's state_dict loads into them as is. Then the layer in a spec: its E301 for images
and its parameters' initial values."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.errors import GraphdlError
from graphdl.ir.graph import Graph
from graphdl.ir.types import TensorType
from graphdl.layers import LAYERS
from graphdl.layers.lower import LayerCtx, lower
from graphdl.ops.registry import ShapeError
from graphdl.passes.autodiff import build_gradients
from graphdl.runtime.params import init_params
from graphdl.spec import load_spec

torch = pytest.importorskip("torch")

NAME = "ln"  # the layer's name: its params are ln.weight and ln.bias


def build(params: dict, shape: tuple, *, training: bool = True) -> Graph:
    """The layer on x (a param, so that it gets a gradient) with the output "y", and the
    gradients of sum(y * r) as "grad.<param>"."""
    g = Graph()
    x = g.param("x", TensorType(shape, "float32"))
    layer = SimpleNamespace(name=NAME, type="layer_norm", params=params, trainable=True,
                            lr_mult=1.0, regularizer=None)
    ctx = LayerCtx(g, None, layer, LAYERS["layer_norm"], training, None, salt=1)
    y = LAYERS["layer_norm"].build(ctx, [x])
    g.outputs["y"] = y
    r = g.input("r", g.type_of(y))
    loss = g.op("sum", g.op("mul", y, r))
    wrt = g.named("param")
    grads = build_gradients(g, loss, list(wrt.values()))
    for name, nid in wrt.items():
        g.outputs[f"grad.{name}"] = grads[nid]
    return g


def torch_module(features: int, params: dict, seed: int):
    """torch.nn.LayerNorm with weight and bias moved off their initial ones and zeros."""
    torch.manual_seed(seed)
    module = torch.nn.LayerNorm(features, eps=params.get("eps", 1e-5),
                                elementwise_affine=params.get("affine", True))
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return module


@pytest.mark.parametrize("params", [{}, {"affine": False}, {"eps": 1e-2}],
                         ids=["affine", "plain", "eps"])
@pytest.mark.parametrize("shape", [(4, 6), (3, 5, 6)], ids=["features", "sequence"])
def test_matches_torch_layer_norm(shape, params):
    module = torch_module(shape[-1], params, seed=len(shape))
    weights = {f"{NAME}.{k}": v.detach().numpy().copy() for k, v in module.state_dict().items()}
    g = build(params, shape)
    assert set(g.named("param")) == {"x"} | set(weights)  # torch's names, nothing else

    r = np.random.default_rng(0)
    x = (3.0 + 2.0 * r.standard_normal(shape)).astype(np.float32)
    weight = r.uniform(-1, 1, shape).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    y = module(xt)
    (y * torch.tensor(weight)).sum().backward()
    want = {"y": y.detach().numpy(), "grad.x": xt.grad.numpy()}
    want.update({f"grad.{NAME}.{k}": p.grad.numpy() for k, p in module.named_parameters()})

    feeds, all_params = {"r": weight}, {"x": x, **weights}
    prog = compile_graph(g, "cpu", title="layer_norm_layer_vs_torch")
    prog.bind_params({k: v.copy() for k, v in all_params.items()}, {})
    got = {"compiled": prog(feeds), "reference": run_reference(g, feeds, all_params)[0]}
    for how, outs in got.items():
        assert set(outs) == set(want)
        for k, v in want.items():
            np.testing.assert_allclose(outs[k], v, rtol=1e-5, atol=1e-5, err_msg=f"{how} {k}")


def test_symbolic_batch_and_steps_and_the_same_graph_in_evaluation():
    g = Graph()
    x = g.input("x", TensorType(("N", "T", 4), "float32"))
    graphs = []
    for training in (True, False):
        layer = SimpleNamespace(name=NAME, type="layer_norm", params={}, trainable=True,
                                lr_mult=1.0, regularizer=None)
        ctx = LayerCtx(g, None, layer, LAYERS["layer_norm"], training, None, salt=1)
        graphs.append(LAYERS["layer_norm"].build(ctx, [x]))
    assert g.type_of(graphs[0]) == g.type_of(graphs[1]) == TensorType(("N", "T", 4), "float32")
    g.outputs["y"] = graphs[0]
    prog = compile_graph(g, "cpu", title="layer_norm_layer_symbolic")
    module = torch_module(4, {}, seed=7)
    weights = {f"{NAME}.{k}": v.detach().numpy().copy() for k, v in module.state_dict().items()}
    prog.bind_params(weights, {})
    r = np.random.default_rng(1)
    for n, steps in ((2, 3), (5, 1)):
        xv = r.standard_normal((n, steps, 4)).astype(np.float32)
        want = module(torch.tensor(xv)).detach().numpy()
        np.testing.assert_allclose(prog({"x": xv})["y"], want, rtol=1e-5, atol=1e-5)


def test_rejects_images():
    g = Graph()
    x = g.input("x", TensorType(("N", 2, 3, 3), "float32"))
    layer = SimpleNamespace(name=NAME, type="layer_norm", params={}, trainable=True,
                            lr_mult=1.0, regularizer=None)
    ctx = LayerCtx(g, None, layer, LAYERS["layer_norm"], True, None, salt=1)
    with pytest.raises(ShapeError, match=r"expects \[features\] or a sequence .* got \[2, 3, 3\]"):
        LAYERS["layer_norm"].build(ctx, [x])


SPEC = """
graphdl: 1
name: ln
data:
  source: {{type: builtin, name: digits}}
model:
  inputs:
    x: {{shape: {shape}, dtype: float32}}
  layers:
{layers}
train:
  target: y
  epochs: 1
  batch_size: 4
  loss: {{type: cross_entropy}}
  optimizer: {{type: sgd, lr: 0.1}}
"""


def _spec(tmp_path, shape: str, layers: list[str]):
    text = SPEC.format(shape=shape, layers="\n".join(f"    - {x}" for x in layers))
    path = tmp_path / "spec.yaml"
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return load_spec(path)


def test_in_a_spec_weight_starts_at_one_and_bias_at_zero(tmp_path):
    spec = _spec(tmp_path, "[64]", ["{type: dense, units: 8}", "{type: layer_norm, name: ln}",
                                    "{type: dense, units: 10}"])
    g = lower(spec, "train")
    assert len(g.nodes_by_op("layer_norm")) == 1
    params = init_params(g, 0)
    np.testing.assert_array_equal(params["ln.weight"], np.ones(8, np.float32))
    np.testing.assert_array_equal(params["ln.bias"], np.zeros(8, np.float32))


def test_in_a_spec_an_image_is_a_located_shape_error(tmp_path):
    spec = _spec(tmp_path, "[1, 8, 8]", ["{type: layer_norm}", "{type: flatten}",
                                         "{type: dense, units: 10}"])
    with pytest.raises(GraphdlError) as e:
        lower(spec, "eval")
    d = e.value.diagnostics[0]
    assert d.code == "E301" and "layer_norm expects [features]" in d.message
    assert d.line == 9  # the layer's line in the spec
