"""The CUDA kernel library: every registered CUDA kernel, and every elementwise op's scalar
function compiled as a CUDA device function (``s_<op>``).

Generated modules import this module as ``K``. ``cuda.jit`` without a signature compiles
on first launch (per argument types), so importing this module compiles nothing.
"""

from __future__ import annotations

from graphdl.backends.cuda.device import device_function
from graphdl.backends.cuda.registry import CUDA_KERNELS, load_all
from graphdl.ops.registry import all_ops


def _install() -> None:
    g = globals()
    load_all()
    for name, kernel in CUDA_KERNELS.items():
        g[name] = kernel
    for name, op in all_ops().items():
        if op.scalar is not None:
            g[f"s_{name}"] = device_function(op.scalar)


_install()
