"""Parallel kernels get only their prange loops as parallel regions, however many compile.

Numba's `ParallelOptions` pops the keys of a dict it is given; with one shared dict, every
parallel kernel compiled after the first got all automatic parallelisations (an array
allocation became a parallel fill, a thread wake-up at every call).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphdl.backends.cpu import library


def _kernel(x, out):
    n = x.shape[0]
    acc = np.zeros((2, n))  # automatic parallelisation makes this a parfor of its own
    if n > 4:
        for i in prange(n):
            acc[0, i] = x[i] * 2.0
    else:
        for i in range(n):
            acc[0, i] = x[i] * 2.0
    for i in range(n):
        out[i] = acc[0, i] + acc[1, i]


def _parallel_regions(dispatcher, *args) -> int:
    dispatcher(*args)
    return dispatcher.inspect_llvm(dispatcher.signatures[0]).count("call void @numba_parallel_for")


def test_every_kernel_and_signature_keeps_prange_only():
    x32 = np.arange(8, dtype=np.float32)
    x64 = np.arange(8, dtype=np.float64)
    first = njit(parallel=library.prange_only())(_kernel)
    second = njit(parallel=library.prange_only())(_kernel)
    assert _parallel_regions(first, x32, np.empty(8, np.float32)) == 1
    assert _parallel_regions(second, x32, np.empty(8, np.float32)) == 1
    second(x64, np.empty(8))  # a second signature of the same kernel
    assert second.inspect_llvm(second.signatures[1]).count("call void @numba_parallel_for") == 1
    assert set(library.PRANGE_ONLY) == {
        "comprehension", "prange", "setitem", "reduction", "numpy", "stencil", "fusion",
        "inplace_binop"}


def test_what_a_shared_dict_did():
    """The failure the options object avoids, shown on Numba itself: the second kernel
    given the same dict parallelises the allocation too."""
    shared = dict(library.PRANGE_ONLY)
    x = np.arange(8, dtype=np.float32)
    first = njit(parallel=shared)(_kernel)
    second = njit(parallel=shared)(_kernel)
    assert _parallel_regions(first, x, np.empty(8, np.float32)) == 1
    assert _parallel_regions(second, x, np.empty(8, np.float32)) > 1


def test_library_kernels_use_the_options_object():
    K = library.load_library()
    for name in ("layer_norm_bwd", "gemm_rows_split", "attention_fwd"):
        opts = getattr(K, name).targetoptions["parallel"]
        assert not isinstance(opts, dict)
        assert opts.prange and not opts.numpy and not opts.fusion
