"""TensorType and static broadcasting (graphdl/ir/types.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphdl.ir.types import DTYPES, TensorType, broadcast_shapes


def test_tensor_type_basics():
    t = TensorType(["N", 3, 4], "float32")
    assert t.shape == ("N", 3, 4) and isinstance(t.shape, tuple)  # lists become tuples
    assert t.rank == 3 and not t.is_concrete() and t.symbols() == {"N"}
    assert t.bind({"N": 5}) == (5, 3, 4)
    assert t.numel({"N": 5}) == 60 and t.nbytes({"N": 5}) == 240
    assert TensorType((2, 3), "float64").nbytes() == 48
    assert TensorType((), "int64").numel() == 1 and TensorType(()).rank == 0
    assert TensorType((3,)).dtype == "float32"
    assert str(t) == "float32[N, 3, 4]" and str(TensorType((), "bool")) == "bool[]"
    assert t.with_dtype("int64") == TensorType(("N", 3, 4), "int64")
    assert t.with_shape(["N", 12]) == TensorType(("N", 12))


def test_tensor_type_is_a_frozen_value():
    a, b = TensorType(("N", 3)), TensorType(["N", 3])
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != TensorType(("N", 3), "float64") and a != TensorType(("M", 3))
    with pytest.raises(AttributeError):
        a.dtype = "float64"


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_type_json_round_trip(dtype):
    t = TensorType(("N", 2, "T"), dtype)
    assert t.to_json() == {"shape": ["N", 2, "T"], "dtype": dtype}
    assert TensorType.from_json(t.to_json()) == t


def test_tensor_type_rejects_unknown_dtype():
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        TensorType((3,), "float16")


@pytest.mark.parametrize(
    "a,b,out",
    [
        (("N", 3), (3,), ("N", 3)),
        (("N", 1, 4), (3, 1), ("N", 3, 4)),
        ((), ("N",), ("N",)),
        (("N",), (1,), ("N",)),
        (("N", 3), ("N", 1), ("N", 3)),
        ((1, 3), ("N", 1), ("N", 3)),
        (("N",), ("M",), None),  # a symbol only matches itself or 1
        (("N",), (3,), None),
        ((2, 3), (3, 2), None),
    ],
)
def test_broadcast_shapes_symbolic(a, b, out):
    assert broadcast_shapes(a, b) == out
    assert broadcast_shapes(b, a) == out


shapes = st.lists(st.integers(1, 3), max_size=4).map(tuple)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(a=shapes, b=shapes)
def test_broadcast_shapes_agrees_with_numpy(a, b):
    try:
        want = np.broadcast_shapes(a, b)
    except ValueError:
        want = None
    assert broadcast_shapes(a, b) == want
