"""The CPU kernel library: every registered kernel, helper and scalar function, jitted.

Generated modules import this module as ``K``; `load_library` fills it (once per process,
before the first program loads) and sets up what the kernels run with: Numba's cache
folder, OpenMP's spin time and BLAS's thread count. Importing this module changes nothing.

Kernels and helpers are plain functions registered beside their ops
(`graphdl.ops.registry.cpu_kernel` / `cpu_helper`); scalar functions come from elementwise
OpDefs and are exposed as ``s_<op>``, their float32 versions (`OpDef.scalar_f32`) as
``s32_<op>``. Each kernel is compiled against the jitted helpers, Numba's ``prange``
and the tiles it calls (`graphdl.ops.registry.VectorTile` / `OuterTile`, lowered to LLVM
vectors by `graphdl.backends.cpu.simd`) (`_bind_globals`). `njit` without a signature
compiles on first call, so loading the library costs no compilation, and `cache=True` keeps the machine code on disk.
"""

from __future__ import annotations

import os
import re
import sys
import types
from collections.abc import Callable

from graphdl.backends.common.cache import use_graphdl_numba_cache
from graphdl.backends.cpu import fpenv, linking
from graphdl.backends.cpu.simd import lower as lower_tile
from graphdl.ops.registry import (
    all_ops,
    cpu_kernels,
    is_cpu_helper,
    is_parallel_kernel,
    is_tile,
    prange,
)

# LLVM fast-math flags of every CPU kernel and helper: all but "nnan" / "ninf", so NaN and
# inf still propagate (and non-finite checks still see them)
FASTMATH = {"arcp", "contract", "afn", "reassoc", "nsz"}
# Numba's parallel options for kernels registered with parallel=True: only their explicit
# prange loops become parallel regions (no automatic parallelisation of array expressions)
PRANGE_ONLY = {
    "comprehension": False, "prange": True, "setitem": False, "reduction": False,
    "numpy": False, "stencil": False, "fusion": False, "inplace_binop": False,
}


def prange_only():
    """PRANGE_ONLY as the options object Numba keeps. Numba's `ParallelOptions` *pops* the
    keys of a dict it is given, at every compile: a dict shared by the kernels (or kept by
    one kernel for its next signature) is empty from the second compile on, and the kernels
    compiled after it got every automatic parallelisation. Measured: a layer norm gradient's
    ``np.zeros`` became a parallel fill, a parallel region entered at every call even where
    the rows run on one thread (92-123 us instead of 47-52 for 992 rows of 64, from
    waking the second thread); which kernels were hit depended on what compiled first."""
    from numba.core.cpu import ParallelOptions

    return ParallelOptions(dict(PRANGE_ONLY))

_loaded = False
_workers_flushed = False


def load_library() -> types.ModuleType:
    """Jit every registered kernel into this module (lazily compiled) and set up the
    process for running them; idempotent. Returns this module (``K``)."""
    global _loaded
    if not _loaded:
        _loaded = True
        use_graphdl_numba_cache()
        short_thread_spin()
        limit_blas_threads()
        linking.install()
        _install()
    return sys.modules[__name__]


def _install() -> None:
    from numba import njit

    g = globals()
    # one jitted version of each helper for every kernel that calls it, so a helper (conv's
    # `_geometry`, `_im2col`) compiles once per signature, not once per calling kernel
    helpers: dict = {}
    for name, fn in cpu_kernels().items():
        g[name] = linking.register(njit(
            cache=True, error_model="numpy", fastmath=FASTMATH,
            parallel=prange_only() if is_parallel_kernel(name) else False,
        )(_bind_globals(fn, helpers)), f"kernel:{name}")
    inlined: dict = {}
    for name, op in all_ops().items():
        if op.scalar is not None:
            g[f"s_{name}"] = njit(cache=True, inline="always", error_model="numpy")(op.scalar)
        if op.scalar_f32 is not None:
            # inlined into the loops with the helpers it calls, so the loops vectorise over it
            g[f"s32_{name}"] = njit(cache=True, inline="always", error_model="numpy")(
                _bind_globals(op.scalar_f32, inlined, inline=True))


def _bind_globals(fn: Callable, jitted: dict, inline: bool = False) -> Callable:
    """``fn`` with the helpers it calls replaced by their jitted versions (recursively; with
    ``inline``, versions Numba inlines into their callers) and `prange` by Numba's: the same
    code object, so Numba caches it under its own source."""
    import numba
    from numba import njit

    names = set(fn.__code__.co_names) & fn.__globals__.keys()
    rebound = {}
    for k in names:
        v = fn.__globals__[k]
        if v is prange:
            rebound[k] = numba.prange
        elif is_tile(v):
            rebound[k] = lower_tile(v)
        elif is_cpu_helper(v):
            if v not in jitted:
                options = {"inline": "always"} if inline else {"fastmath": FASTMATH}
                jitted[v] = njit(cache=True, error_model="numpy", **options)(
                    _bind_globals(v, jitted, inline))
                if not inline:
                    linking.register(jitted[v], f"helper:{v.__module__}.{v.__qualname__}")
            rebound[k] = jitted[v]
    if not rebound:
        return fn
    copy = types.FunctionType(fn.__code__, {**fn.__globals__, **rebound}, fn.__name__,
                              fn.__defaults__, fn.__closure__)
    copy.__qualname__, copy.__module__, copy.__doc__ = fn.__qualname__, fn.__module__, fn.__doc__
    copy.__kwdefaults__ = fn.__kwdefaults__
    return copy


def calls_parallel_kernel(source: str) -> bool:
    """Whether generated ``source`` calls a kernel registered parallel (``K.<name>``: one
    that opens a parallel region of its own)."""
    return any(is_parallel_kernel(name) for name in set(re.findall(r"\bK\.(\w+)", source)))


def short_thread_spin() -> None:
    """Let the OpenMP threads of Numba's parallel kernels spin only briefly before they
    sleep (GOMP_SPINCOUNT=1000, unless the user set it or OMP_WAIT_POLICY).

    libgomp's default spins 300,000 times at every barrier. On a quiet 2-core machine that
    is fastest (LeNet training 330-370 steps/s against 290 with short spins), but with
    another process busy on one core the spinning threads take turns on it with the real
    work and the step collapses (85-117 steps/s, worse than one thread's 180); with short
    spins it stays at 195-200 (`graphdl bench specs/bench_lenet.yaml` with a busy loop
    beside it). Must run before the first parallel kernel starts the thread pool.
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "1000")


def start_thread_pool() -> None:
    """Start Numba's thread pool before a generated step that calls a parallel kernel runs.

    Numba starts the pool when it compiles a parallel function or loads one from its cache,
    but not when it loads from the cache a function that merely calls one (numba/numba#8578;
    the fix, numba/numba#9950, is not released): a cached step would then enter a parallel
    region of a pool that was never started, and crash. `numba.get_num_threads` starts the
    pool (idempotent, cheap after the first time).
    """
    global _workers_flushed
    import numba

    numba.get_num_threads()
    if not _workers_flushed:  # the workers compute with subnormals flushed, as steps do
        _workers_flushed = True
        fpenv.flush_subnormals_on_workers()


def limit_blas_threads(threads: int = 1) -> None:
    """Run the BLAS that Numba calls (SciPy's OpenBLAS) on ``threads`` threads.

    graphdl's GEMMs are small (per sample, per layer): on 2 cores OpenBLAS's own threads
    only add synchronisation, and when another process holds a core they spin and make a
    LeNet step 6x slower (measured 32 ms vs 5.1 ms). NumPy's separate OpenBLAS is left
    alone.
    """
    import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS so it can be found)
    from threadpoolctl import ThreadpoolController

    for lib in ThreadpoolController().lib_controllers:
        if lib.internal_api == "openblas" and "scipy.libs" in lib.filepath:
            lib.set_num_threads(threads)
