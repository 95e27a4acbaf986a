"""Vector tiles (graphdl.ops.registry.VectorTile): the LLVM-vector lowering of the CPU
backend (graphdl/backends/cpu/simd.py) computes what the plain-Python definition does."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from graphdl.backends.cpu.simd import lower_outer, lower_tile
from graphdl.ops.registry import outer_tile, vector_tile

CONFIGS = [(16, r, at, bt, acc) for r in (1, 2, 4, 8, 16)
           for at, bt, acc in ((False, True, False), (True, False, True))] + [
    (8, 3, True, True, True), (16, 5, False, False, False)]


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c) for c in CONFIGS])
def test_lowered_tile_matches_its_definition(config):
    lanes, rows, a_table, b_table, accumulate = config
    tile = vector_tile(lanes, rows, a_table=a_table, b_table=b_table, accumulate=accumulate)
    lowered = lower_tile(*tile.config)

    @njit
    def call(*args):
        lowered(*args)

    r = np.random.default_rng(rows)
    nt = 23
    a = r.standard_normal(400).astype(np.float32)
    b = r.standard_normal(600).astype(np.float32)
    aoff = r.integers(0, 300, nt).astype(np.int64)
    boff = r.integers(0, 500, nt).astype(np.int64)
    # A index abase + (aoff[t] | 3 t) + 5 j; B index bbase + (boff[t] | 7 t); out rows 40 apart
    args = (a, 7, aoff, 3, 5, b, 11, boff, 7, nt)
    out_py = r.standard_normal(1000).astype(np.float32)
    out_vec = out_py.copy()
    tile(*args, out_py, 9, 40)
    call(*args, out_vec, 9, 40)
    np.testing.assert_allclose(out_vec, out_py, rtol=1e-5, atol=1e-5)
    untouched = np.ones(1000, bool)
    for j in range(rows):
        untouched[9 + 40 * j:9 + 40 * j + lanes] = False
    assert np.array_equal(out_vec[untouched], out_py[untouched])  # nothing else is written


@pytest.mark.parametrize("config", [(16, 4, 4), (16, 2, 3), (8, 1, 1)])
def test_lowered_outer_tile_matches_its_definition(config):
    tile = outer_tile(*config)
    lowered = lower_outer(*tile.config)

    @njit
    def call(*args):
        lowered(*args)

    lanes, arows, brows = config
    r = np.random.default_rng(arows)
    nt = 9
    a = r.standard_normal(800).astype(np.float32)
    b = r.standard_normal(900).astype(np.float32)
    a_toff = r.integers(0, 500, nt).astype(np.int64)
    b_toff = r.integers(0, 500, nt).astype(np.int64)
    boff = r.integers(0, 300, brows).astype(np.int64)
    args = (a, 5, 60, a_toff, b, 3, boff, b_toff, nt)
    out_py = r.standard_normal(400).astype(np.float32)
    out_vec = out_py.copy()
    tile(*args, out_py, 7)
    call(*args, out_vec, 7)
    np.testing.assert_allclose(out_vec, out_py, rtol=1e-5, atol=1e-5)
    n = arows * brows * lanes
    assert np.array_equal(out_vec[:7], out_py[:7])
    assert np.array_equal(out_vec[7 + n:], out_py[7 + n:])  # nothing else is written
