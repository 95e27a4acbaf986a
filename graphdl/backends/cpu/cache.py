"""The CPU kernel cache key: generated source (written and imported by
`graphdl.backends.common.cache`) is named by a hash of the code (the source less its
header docstring) plus everything the compiled code depends on that the source does not
show: the kernel library's and the ops' source (Numba does not notice when a callee in
another file changes), the graphdl, Numba and NumPy versions.
"""

from __future__ import annotations

import re
import types
from functools import cache
from pathlib import Path

import numpy as np

from graphdl.backends.common.cache import (
    code_of,
    content_key,
    import_generated,
    toolchain_fingerprint,
)
from graphdl.backends.cpu import library, linking, prefetch
from graphdl.ops.registry import is_parallel_kernel
from graphdl.version import __version__


@cache
def _toolchain_fingerprint() -> str:
    """Versions, the backend's own code (library and code generator) and the fast-math
    flags every kernel and helper is jitted with."""
    import numba

    here = Path(__file__).parent
    return toolchain_fingerprint(
        f"graphdl={__version__};numba={numba.__version__};numpy={np.__version__}",
        [here / "library.py", here / "linking.py", here / "simd.py", here / "codegen.py",
         here / "fpenv.py",
         here.parent / "common" / "codegen.py"],
        repr(sorted(library.FASTMATH)),
    )


def source_key(source: str) -> str:
    """The key of a generated CPU module: every library function it calls (``K.<kernel>``,
    ``K.s_<op>``) counts, since Numba's cache of the step holds their machine code or (large
    kernels, `graphdl.backends.cpu.linking`) calls them by symbol. The
    header docstring does not (`code_of`)."""
    code = code_of(source)
    return content_key(_toolchain_fingerprint(), code, re.findall(r"\bK\.(\w+)", code))


def load_generated(source: str) -> tuple[types.ModuleType, Path, bool]:
    """Write (if new) and import a generated CPU module; returns (module, path, was_cached).
    A module that calls a parallel kernel gets Numba's thread pool started first (see
    `graphdl.backends.cpu.library.start_thread_pool`)."""
    if library.calls_parallel_kernel(source):
        library.start_thread_pool()
    from numba.core.dispatcher import Dispatcher

    module, path, was_cached = import_generated(source, source_key(source), "cpu")
    for name, fn in vars(module).items():  # its loops, chunks and scans (not the step)
        if isinstance(fn, Dispatcher) and name != "step":
            linking.register(fn, f"gen:{module.__name__}.{name}")
    return module, path, was_cached


# What a first compile of a generated CPU module costs in one process, roughly, for the
# "compiling…" line of `graphdl run` when nothing is cached: a plain library kernel ~0.6 s,
# a parallel one ~2.5 s (Numba's parfor lowering; the row-split GEMMs, with small bodies,
# ~1 s), and the module's own functions ~0.04 s a line beyond the first 150. Fitted to
# fresh-cache compiles of the MLP, LeNet and transformer train programs on a 2-core
# machine with large kernels called by symbol (5.6, 18-19, ~115 s; this model: 5.1, 20.9,
# 121 s). With the compile helper (`graphdl.backends.cpu.prefetch`) LeNet's took 12.9 s:
# the estimate is scaled by HELPER_SPEEDUP when the helper runs, then by the caller by
# what this machine took before.
_PLAIN_KERNEL_S, _PARALLEL_KERNEL_S, _SMALL_PARALLEL_KERNEL_S = 0.6, 2.5, 1.0
HELPER_SPEEDUP = 0.7
_LINE_S, _FREE_LINES = 0.04, 150


def cold_compile_estimate(source: str) -> float:
    """Seconds a first compile of ``source`` takes with empty caches (a rough model)."""
    code = code_of(source)
    seconds = 0.0
    for name in set(re.findall(r"\bK\.(\w+)", code)):
        if name.startswith(("s_", "s32_")):  # scalar functions inlined into the loops
            continue
        if not is_parallel_kernel(name):
            seconds += _PLAIN_KERNEL_S
        elif name.startswith("gemm"):
            seconds += _SMALL_PARALLEL_KERNEL_S
        else:
            seconds += _PARALLEL_KERNEL_S
    seconds += _LINE_S * max(0, code.count("\n") - _FREE_LINES)
    return seconds * (HELPER_SPEEDUP if prefetch.wanted() else 1.0)
