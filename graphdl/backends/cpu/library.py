"""The CPU kernel library: every registered kernel and scalar function, jitted lazily.

Generated modules import this module as ``K``. Kernels are plain functions registered
beside their ops (`@cpu_kernel`); scalar functions come from elementwise OpDefs and are
exposed as ``s_<op>``. `njit` without a signature compiles on first call, so importing
this module costs no compilation, and `cache=True` keeps the machine code on disk.
"""

from __future__ import annotations

from numba import njit

from graphdl.ops.registry import all_ops, cpu_kernels

FASTMATH = {"arcp", "contract", "afn", "reassoc", "nsz"}


def _install() -> None:
    g = globals()
    for name, fn in cpu_kernels().items():
        g[name] = njit(cache=True, error_model="numpy", fastmath=FASTMATH)(fn)
    for name, op in all_ops().items():
        if op.scalar is not None:
            g[f"s_{name}"] = njit(cache=True, inline="always", error_model="numpy")(op.scalar)


_install()
