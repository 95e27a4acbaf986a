"""Tiles (graphdl.ops.registry.VectorTile / OuterTile / VectorCopy): the LLVM-vector lowering of the CPU
backend (graphdl/backends/cpu/simd.py) computes what the plain-Python definition does, and
writes nothing else."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from graphdl.backends.cpu.simd import lower
from graphdl.ops.registry import max_pool_tile, outer_tile, vector_copy, vector_tile


def _lowered_equals_definition(tile, inputs: tuple, ooff: int, written: list[slice]):
    lowered = lower(tile)

    @njit
    def call(*args):
        lowered(*args)

    out_py = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    out_vec = out_py.copy()
    tile(*inputs, out_py, *ooff)
    call(*inputs, out_vec, *ooff)
    np.testing.assert_allclose(out_vec, out_py, rtol=1e-5, atol=1e-5)
    untouched = np.ones(out_py.size, bool)
    for s in written:
        untouched[s] = False
    assert np.array_equal(out_vec[untouched], out_py[untouched])  # nothing else is written


@pytest.mark.parametrize("lanes, rows", [(16, 4), (16, 8), (16, 16), (8, 3)])
def test_lowered_vector_tile_matches_its_definition(lanes, rows):
    r = np.random.default_rng(rows)
    nt = 23
    a = r.standard_normal(400).astype(np.float32)
    b = r.standard_normal(600).astype(np.float32)
    boff = r.integers(0, 500, nt).astype(np.int64)
    # A row j at 7 + 5 j; B at 11 + boff[t]; out rows 40 apart from 9
    written = [slice(9 + 40 * j, 9 + 40 * j + lanes) for j in range(rows)]
    _lowered_equals_definition(vector_tile(lanes, rows), (a, 7, 5, b, 11, boff, nt), (9, 40),
                               written)


@pytest.mark.parametrize("lanes, arows, brows", [(16, 4, 4), (16, 2, 3), (8, 1, 1)])
def test_lowered_outer_tile_matches_its_definition(lanes, arows, brows):
    r = np.random.default_rng(arows)
    nt = 9
    a = r.standard_normal(800).astype(np.float32)
    b = r.standard_normal(900).astype(np.float32)
    boff = r.integers(0, 300, brows).astype(np.int64)
    written = [slice(7, 7 + arows * brows * lanes)]
    _lowered_equals_definition(outer_tile(lanes, arows, brows), (a, 5, 60, b, 3, boff, nt),
                               (7,), written)


@pytest.mark.parametrize("lanes", [16, 8])
def test_lowered_vector_copy_matches_its_definition(lanes):
    src = np.random.default_rng(lanes).standard_normal(300).astype(np.float32)
    _lowered_equals_definition(vector_copy(lanes), (src, 37), (101,), [slice(101, 101 + lanes)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("grad, positive", [(False, False), (True, False), (True, True)])
def test_lowered_max_pool_tile_matches_its_definition(dtype, grad, positive):
    """16 windows of a row pair 28 wide (the tile reads and writes past the row: its
    definition does the same), with ties, NaN and negative windows."""
    tile = max_pool_tile(16, grad)
    lowered = lower(tile)

    @njit
    def call(*args):
        lowered(*args)

    r = np.random.default_rng(int(grad) + 2 * int(positive))
    x = np.round(r.standard_normal(120) * 2).astype(dtype) / 2
    x[7] = np.nan
    x[40:44] = -2.0
    x[40 + 28:44 + 28] = -2.0
    gy = r.standard_normal(40).astype(dtype)
    gy[4] = np.inf
    if grad:
        want, got = np.full(120, 9, dtype), np.full(120, 9, dtype)
        tile(x, 3, 28, gy, 5, want, positive)
        call(x, 3, 28, gy, 5, got, positive)
    else:
        want, got = np.full(40, 9, dtype), np.full(40, 9, dtype)
        tile(x, 3, 28, want, 5)
        call(x, 3, 28, got, 5)
    np.testing.assert_array_equal(got, want)
