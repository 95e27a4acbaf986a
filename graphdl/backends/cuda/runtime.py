"""Launch helpers the generated CUDA modules call while they set up (``R.`` in the source).

They run once per binding of the symbolic dims (the program caches the result), never in
the per-step path: allocation, launch configurations and grid sizes.
"""

from __future__ import annotations

import numpy as np

from graphdl.backends.cuda import device as D


def alloc(n, dtype):
    """A device buffer of ``n`` elements (at least one)."""
    return D.device_array(max(int(n), 1), np.dtype(dtype))


def to_device(array):
    """A device copy of a small host table (made once a binding: select_channels' list)."""
    return D.to_device(array)


def config(kernel, grid, block):
    return D.configure(kernel, grid, block)


def grid_stride(n: int, block: int = D.EW_BLOCK) -> int:
    """Blocks for a grid-stride loop over ``n`` items."""
    return max(1, min((int(n) + block - 1) // block, D.MAX_GRID))


def config1d(kernel, n):
    """A grid-stride launch over ``n`` items, ``D.EW_BLOCK`` threads a block."""
    return D.configure(kernel, grid_stride(n), D.EW_BLOCK)


def _pow2_at_least(n: int, cap: int) -> int:
    p = 1
    while p < n and p < cap:
        p *= 2
    return p


def tree_block(nr: int, nb: int) -> tuple[int, int]:
    """Block shape (bx, by) of a reduction over the middle axis of (A, R, B), with
    bx * by == D.RED_BLOCK: y-threads share one output and meet in a shared-memory tree;
    x-threads take consecutive outputs (consecutive b, so loads coalesce when B > 1)."""
    bx = _pow2_at_least(nb, min(32, D.RED_BLOCK)) if nb > 1 else 1
    by = _pow2_at_least(nr, D.RED_BLOCK // bx)
    return D.RED_BLOCK // by, by


def config_tree(kernel, na: int, nr: int, nb: int):
    """Launch of a tree kernel over (A, R, B): one block per ``bx`` outputs, grid-strided."""
    bx, by = tree_block(int(nr), int(nb))
    groups = (int(na) * int(nb) + bx - 1) // bx
    return D.configure(kernel, max(1, min(groups, D.MAX_GRID)), (bx, by))


def config_block(kernel):
    """One block of ``D.RED_BLOCK`` threads (whole-array reductions such as the losses)."""
    return D.configure(kernel, 1, D.RED_BLOCK)


def config_rows(kernel, n):
    """One thread per row, ``D.ROW_BLOCK`` threads a block, grid-strided."""
    return D.configure(kernel, grid_stride(n, D.ROW_BLOCK), D.ROW_BLOCK)


def config_matmul(kernel, batch: int, m: int, n: int):
    """Tiled matmul: one block per MM_BM x MM_BM output tile, grid-strided over tiles."""
    tiles = int(batch) * ((int(m) + D.MM_BM - 1) // D.MM_BM) * ((int(n) + D.MM_BM - 1) // D.MM_BM)
    return D.configure(kernel, max(1, min(tiles, D.MAX_GRID)), (D.MM_T, D.MM_T))


def padded(shape, rank: int = 6) -> tuple[int, ...]:
    """A shape as a fixed-length tuple (leading ones), so one kernel serves every rank."""
    shape = tuple(int(d) for d in shape)
    return (1,) * (rank - len(shape)) + shape
