"""A compiled CPU step flushes subnormals on every thread and gives the caller its float
mode back (graphdl/backends/cpu/fpenv.py)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from graphdl.backends.cpu import fpenv
from graphdl.backends.cpu.fpenv import flush_subnormals, read_fp, restore_fp
from graphdl.backends.cpu.library import load_library
from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph
from graphdl.ir.types import TensorType

TINY = np.float32(1e-38)  # normal; half of it is subnormal


@numba.njit
def _halve(x, flush):
    """x / 2 elementwise, with subnormals flushed when ``flush``; also the caller's control
    word before and after."""
    before = read_fp()
    word = flush_subnormals() if flush else before
    out = x * np.float32(0.5)
    if flush:
        restore_fp(word)
    return out, before, read_fp()


@numba.njit(parallel=True)
def _thread_words(n, words):
    for t in numba.prange(n):
        words[t] = read_fp()


def test_flush_and_restore_on_the_calling_thread():
    x = np.full(4, TINY)
    kept, before, _ = _halve(x, False)
    assert kept[0] != 0 and kept[0] < np.finfo(np.float32).tiny  # IEEE: a subnormal
    flushed, before2, after2 = _halve(x, True)
    np.testing.assert_array_equal(flushed, 0)
    assert before & fpenv.FTZ_DAZ == 0
    assert before2 == after2 == before  # the caller's word is back
    assert x[0] * np.float32(0.5) != 0  # and NumPy still underflows gradually


def test_workers_flush_for_good_and_the_caller_keeps_its_mode():
    n = numba.get_num_threads()
    words = fpenv.flush_subnormals_on_workers()
    assert len(words) == n and all(w & fpenv.FTZ_DAZ == fpenv.FTZ_DAZ for w in words)
    seen = np.zeros(n, np.int64)
    _thread_words(n, seen)
    if n > 1:  # the calling thread runs one share: its word is its own again
        assert sorted(int(w) & fpenv.FTZ_DAZ for w in seen) == [0] + [fpenv.FTZ_DAZ] * (n - 1)
    assert _halve(np.full(1, TINY), False)[0][0] != 0


def _scale_graph() -> Graph:
    g = Graph()
    x = g.input("x", TensorType(("N", 8), "float32"))
    g.outputs["y"] = g.op("mul_scalar", x, c=0.5)
    return g


def test_a_compiled_step_flushes_and_restores():
    load_library()
    prog = compile_graph(_scale_graph())
    assert "fp_word = flush_subnormals()" in prog.source
    x = np.full((3, 8), TINY)
    before = _halve(x[0], False)[1]
    y = prog({"x": x})["y"]
    np.testing.assert_array_equal(y, 0)  # IEEE would give 5e-39
    assert _halve(x[0], False)[1] == before
    normal = np.full((3, 8), np.float32(3.0))
    np.testing.assert_array_equal(prog({"x": normal})["y"], 1.5)


def test_a_step_that_raises_leaves_no_flush_behind(monkeypatch):
    load_library()
    prog = compile_graph(_scale_graph())

    @numba.njit
    def flush_then_fail(*args):
        flush_subnormals()
        raise ValueError("bad data")

    monkeypatch.setattr(prog, "step_fn", flush_then_fail)
    with pytest.raises(ValueError, match="bad data"):
        prog({"x": np.ones((2, 8), np.float32)})
    assert _halve(np.full(1, TINY), False)[1] & fpenv.FTZ_DAZ == 0
