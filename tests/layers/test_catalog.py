"""The layer catalogue: one LayerDef per layer type, from which both the schema and the
lowering dispatch come, so they cannot drift."""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import graphdl.layers as layers_pkg
from graphdl.ir.graph import Graph
from graphdl.ir.types import TensorType
from graphdl.layers import COMMON_LAYER_KEYS, LAYERS, conv, core, norm, sequence, transformer
from graphdl.layers.lower import LayerCtx
from graphdl.layers.schema import MISSING
from graphdl.spec import schema_text
from graphdl.spec.resolve import fill_layer_params

# One example per layer type that lowers: its input shapes (per sample) and required keys.
# A new layer type needs an entry here (test_every_lowered_type_has_an_example).
EXAMPLES = {
    "dense": ([(8,)], {"units": 3}),
    "activation": ([(8,)], {"activation": "relu"}),
    "dropout": ([(8,)], {"rate": 0.5}),
    "flatten": ([(2, 3, 3)], {}),
    "add": ([(8,), (8,)], {}),
    "concat": ([(8,), (4,)], {}),
    "conv2d": ([(2, 6, 6)], {"filters": 4, "kernel": 3}),
    "maxpool2d": ([(2, 6, 6)], {"kernel": 2}),
    "avgpool2d": ([(2, 6, 6)], {"kernel": 2}),
    "global_avgpool2d": ([(2, 6, 6)], {}),
    "batchnorm": ([(2, 6, 6)], {}),
    "layer_norm": ([(5, 3)], {}),
    "embedding": ([(5,)], {"vocab": 10, "dim": 3}),
    "rnn": ([(5, 3)], {"hidden": 4}),
    "lstm": ([(5, 3)], {"hidden": 4}),
    "gru": ([(5, 3)], {"hidden": 4}),
    "seq_pool": ([(5, 3)], {"mode": "mean"}),
    "positional_encoding": ([(5, 4)], {}),
    "multihead_attention": ([(5, 4)], {"heads": 2, "dim": 4}),
    "attention": ([(5, 4), (6, 4)], {}),
    "additive_attention": ([(5, 4), (6, 3)], {}),
}
INT64_INPUTS = {"embedding"}  # layer types whose example input is int64 (token ids)
# keys whose default depends on another key (alpha on the activation)
MORE_EXAMPLES = [
    ("dense", {"units": 3, "activation": "leaky_relu"}),
    ("conv2d", {"filters": 4, "kernel": 3, "activation": "elu"}),
    ("activation", {"activation": "leaky_relu"}),
    ("embedding", {"vocab": 10, "dim": 3, "padding_idx": 0}),
    ("rnn", {"hidden": 4, "activation": "relu", "output": "last"}),
    ("lstm", {"hidden": 4, "num_layers": 2, "bidirectional": True, "dropout": 0.5}),
    ("gru", {"hidden": 4, "bidirectional": True, "merge": "sum", "output": "last",
             "truncate": 2}),
    ("seq_pool", {"mode": "max"}),
    ("layer_norm", {"affine": False, "eps": 1e-3}),
    ("seq_pool", {"mode": "last"}),
    ("positional_encoding", {"max_len": 8, "kind": "learned", "dropout": 0.1, "scale": True}),
    ("multihead_attention", {"heads": 4, "dim": 4, "causal": True, "dropout": 0.2,
                             "bias": False}),
    ("attention", {"scale": True}),
    ("additive_attention", {"units": 5}),
]
FAMILIES = [core, conv, norm, sequence, transformer]


def lowered(type_name: str, params: dict, training: bool = True) -> dict:
    """The graph that the type's builder makes from ``params``, as JSON."""
    shapes, _ = EXAMPLES[type_name]
    g = Graph()
    dtype = "int64" if type_name in INT64_INPUTS else "float32"
    inputs = [g.input(f"x{i}", TensorType(("N", *s), dtype)) for i, s in enumerate(shapes)]
    seed = g.input("step_seed", TensorType((), "int64"))
    layer = SimpleNamespace(name="layer", type=type_name, params=params, trainable=True,
                            lr_mult=1.0, regularizer=None)
    ctx = LayerCtx(g, None, layer, LAYERS[type_name], training, seed, salt=1)
    g.outputs["y"] = LAYERS[type_name].build(ctx, inputs)
    return g.to_json()


def test_schema_layer_variants_are_the_catalogue():
    variants = json.loads(schema_text())["definitions"]["layer"]["anyOf"]
    titled = [v["title"].removesuffix(" layer") for v in variants if v["title"] != "block use"]
    assert titled == list(LAYERS)
    for v in variants[: len(LAYERS)]:
        definition = LAYERS[v["properties"]["type"]["const"]]
        assert v["description"] == definition.doc
        own = [k for k in v["properties"] if k != "type" and k not in COMMON_LAYER_KEYS]
        assert own == list(definition.fields)
        for key, field in definition.fields.items():
            assert v["properties"][key].get("default", MISSING) == field.default, key


def test_every_layer_type_lowers_or_is_expanded_by_the_front_end():
    assert {t for t, d in LAYERS.items() if d.build is None} == {"residual"}


def test_every_lowered_type_has_an_example():
    assert set(EXAMPLES) == {t for t, d in LAYERS.items() if d.build is not None}
    for t, (_, required) in EXAMPLES.items():
        assert sorted(required) == sorted(LAYERS[t].required()), t


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("type_name, required",
                         [(t, req) for t, (_, req) in EXAMPLES.items()] + MORE_EXAMPLES)
def test_lowering_takes_its_defaults_from_the_definition(type_name, required, training):
    """Required keys only (the builder falls back on the declared defaults) lowers exactly
    like the params the spec front end fills in: one default, read by both."""
    filled = fill_layer_params(type_name, required)
    defaults = {k: v for k, v in LAYERS[type_name].defaults().items() if k not in required}
    assert {k: filled[k] for k in defaults} == defaults
    assert lowered(type_name, dict(required), training) == lowered(type_name, filled, training)


def test_builders_read_keys_only_through_ctx_arg():
    """No builder reads layer.params itself (where it could write a default of its own)."""
    for module in FAMILIES:
        source = inspect.getsource(module)
        assert ".params" not in source, module.__name__


FORBIDDEN = ("spec", "passes", "backends", "compiler", "data", "runtime", "viz", "api", "cli")


def test_layers_import_nothing_above_them():
    """graphdl.layers sits below graphdl.spec: no import of a higher package, not even inside
    a function (import-linter will hold the same line for the whole tree)."""
    root = Path(layers_pkg.__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "graphdl" and len(parts) > 1 and parts[1] in FORBIDDEN:
                    bad.append(f"{path.name}:{node.lineno}: {name}")
    assert bad == []


@pytest.mark.parametrize("activation", [a for a in core.ACTIVATIONS if a != "linear"])
def test_every_activation_lowers_to_its_op(activation):
    """An activation the schema offers is an op of the same name (a new one needs both)."""
    graph = lowered("activation", {"activation": activation})
    ops = {n["op"] for n in graph["nodes"]}
    assert activation in ops
