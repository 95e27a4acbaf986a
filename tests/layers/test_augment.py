"""graphdl.layers.augment: data.augment steps as seeded random ops in a graph."""

from __future__ import annotations

import numpy as np
import pytest

from graphdl.backends.reference import run_reference
from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph
from graphdl.ir.types import TensorType
from graphdl.layers.augment import augment_inputs, build_augment, step_attrs
from graphdl.ops.image import applied_mask, flip_masks
from graphdl.ops.registry import ShapeError

STEPS = [
    {"op": "random_rotation", "degrees": 10, "p": 0.5},
    {"op": "random_flip", "horizontal": True, "vertical": None, "p": None},  # as resolve fills
    {"op": "gaussian_noise", "std": 0.05},
    {"op": "salt_pepper_noise", "amount": 0.02, "p": 0.3},
]


def _graph(shape, steps):
    g = Graph()
    x = g.input("image", TensorType(("N", *shape), "float32"))
    seed = g.input("seed", TensorType((), "int64"))
    g.outputs["y"] = build_augment(g, x, steps, seed)
    return g


@pytest.fixture(scope="module")
def program():
    g = _graph((1, 12, 12), STEPS)
    prog = compile_graph(g, title="test_augment")
    prog.bind_params({}, {})
    return g, prog


def test_steps_become_ops_with_salt_and_defaults(program):
    g, _ = program
    ops = [g.node(n) for n in g.topo_order() if g.node(n)["op"] not in ("input",)]
    assert [n["op"] for n in ops] == [s["op"] for s in STEPS]
    assert [n["attrs"]["salt"] for n in ops] == [0, 1, 2, 3]
    assert ops[0]["attrs"] == {"degrees": 10.0, "fill": 0.0, "p": 0.5, "salt": 0}
    assert ops[1]["attrs"] == {"horizontal": True, "vertical": False, "p": 0.5, "salt": 1}
    assert ops[2]["attrs"]["p"] == 1.0


def test_augmented_batches_are_reproducible(program):
    g, prog = program
    x = np.random.default_rng(0).random((40, 1, 12, 12)).astype(np.float32)
    a = prog({"image": x, "seed": np.int64(3)})["y"]
    b = prog({"image": x, "seed": np.int64(3)})["y"]
    c = prog({"image": x, "seed": np.int64(4)})["y"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    ref, _, _ = run_reference(g, {"image": x, "seed": np.int64(3)})
    np.testing.assert_allclose(a, ref["y"], atol=1e-5)
    # what each step decided for this seed, as the NumPy helpers draw it
    rotated = applied_mask(3, 0, 40, 0.5)
    assert 5 < rotated.sum() < 35
    assert flip_masks(3, 1, 40, 0.5)[0].any()


def test_p_zero_steps_are_the_identity():
    steps = [{"op": "random_rotation", "degrees": 30, "p": 0.0},
             {"op": "gaussian_noise", "std": 1.0, "p": 0.0}]
    g = _graph((2, 5, 5), steps)
    x = np.random.default_rng(1).random((6, 2, 5, 5)).astype(np.float32)
    ref, _, _ = run_reference(g, {"image": x, "seed": np.int64(9)})
    np.testing.assert_array_equal(ref["y"], x)


def test_feature_vectors_take_only_gaussian_noise():
    g = _graph((64,), [{"op": "gaussian_noise", "std": 0.1}])
    assert g.type_of(g.outputs["y"]) == TensorType(("N", 64), "float32")
    with pytest.raises(ShapeError) as info:
        _graph((64,), [{"op": "gaussian_noise", "std": 0.1},
                       {"op": "random_flip", "horizontal": True}])
    assert "random_flip augments images [C, H, W], but this input is [64]" in str(info.value)
    assert "as_images" in info.value.help


def test_no_steps_returns_the_input():
    g = Graph()
    x = g.input("image", TensorType(("N", 1, 4, 4), "float32"))
    seed = g.input("seed", TensorType((), "int64"))
    assert build_augment(g, x, [], seed) == x


def test_step_attrs_errors():
    with pytest.raises(ValueError, match="unknown augment op"):
        step_attrs({"op": "random_zoom"})
    with pytest.raises(ValueError, match="needs 'degrees'"):
        step_attrs({"op": "random_rotation"})


def test_augment_inputs():
    from types import SimpleNamespace as NS

    def spec(**inputs):
        return NS(model=NS(inputs={k: NS(shape=s, dtype=d) for k, (s, d) in inputs.items()}))

    assert augment_inputs(spec(image=((1, 8, 8), "float32"), meta=((4,), "float32"),
                               ids=((5,), "int64"))) == ["image"]
    assert augment_inputs(spec(x=((64,), "float32"), ids=((5,), "int64"))) == ["x"]
