"""The CUDA kernel library: every registered CUDA kernel, and every elementwise op's scalar
function compiled as a CUDA device function (``s_<op>``).

Generated modules import this module as ``K``; `load_library` fills it (once per process,
before the first program loads). ``cuda.jit`` without a signature compiles on first launch
(per argument types), so loading the library compiles nothing.
"""

from __future__ import annotations

import sys
import types

from graphdl.backends.common.cache import use_graphdl_numba_cache
from graphdl.backends.cuda.device import device_function
from graphdl.backends.cuda.registry import CUDA_KERNELS, load_all
from graphdl.ops.registry import all_ops

_loaded = False


def load_library() -> types.ModuleType:
    """Register every CUDA kernel and scalar device function in this module; idempotent.
    Returns this module (``K``)."""
    global _loaded
    if not _loaded:
        _loaded = True
        use_graphdl_numba_cache()
        _install()
    return sys.modules[__name__]


def _install() -> None:
    g = globals()
    load_all()
    for name, kernel in CUDA_KERNELS.items():
        g[name] = kernel
    for name, op in all_ops().items():
        if op.scalar is not None:
            g[f"s_{name}"] = device_function(op.scalar)

