"""Program: a compiled graph on the CPU, with named inputs and outputs and its buffers.

It owns the generated `step` function (one Numba-compiled call runs the whole graph), the
arenas the memory plan carves intermediate values from (allocated once for the largest
batch seen) and the argument list. Parameters and state are passed by reference: the
generated code updates them in place, so the caller's arrays always hold the current
weights.
"""

from __future__ import annotations

import numpy as np

from graphdl.backends.common.program import CompiledProgram
from graphdl.backends.cpu import fpenv
from graphdl.backends.cpu.cache import load_generated
from graphdl.backends.cpu.codegen import CpuCodegen
from graphdl.backends.cpu.library import load_library
from graphdl.ir.graph import Graph


class Program(CompiledProgram):
    """A compiled graph. Call it with feeds; params/state are bound with `bind_params`."""

    # deliberate parallel of graphdl/backends/cuda/program.py: each backend names its parts
    device = "cpu"
    codegen = CpuCodegen
    load_library = staticmethod(load_library)
    load_generated = staticmethod(load_generated)

    def __init__(self, graph: Graph, title: str = "program"):
        super().__init__(graph, title)
        self.step_fn = self.module.step
        self.consts = self._host_consts
        self._params_state: list[np.ndarray] = []
        self._bound_tail: list | None = None
        self._offsets_array = np.zeros(0, np.int64)
        self._scalar_bufs = {i.name: np.zeros(1, i.dtype) for i in self.inputs if i.scalar}

    # ------------------------------------------------------------ binding
    def bind_params(self, params: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
        """Bind the parameter and state arrays (by reference; updated in place)."""
        self._params_state = self._checked_params(params, state)
        self._bound_tail = None

    def _save_binding(self):
        return self._params_state

    def _restore_binding(self, saved) -> None:
        self._params_state = saved
        self._bound_tail = None

    def _allocate_arena(self, size: int, dtype: np.dtype) -> np.ndarray:
        return np.zeros(size, dtype)

    def _ensure_arenas(self, bindings: dict[str, int]) -> bool:
        grown = super()._ensure_arenas(bindings)
        if grown:
            self._offsets_array = np.asarray(self._offsets, np.int64)
            self._bound_tail = None
        return grown

    # ------------------------------------------------------------ calling
    def __call__(self, feeds: dict) -> dict[str, np.ndarray]:
        args = self.step_args(feeds)
        try:
            result = self.step_fn(*args)
        except BaseException:
            fpenv.clear_flush()  # the step set FTZ / DAZ and could not put them back
            raise
        return dict(zip(self.sig.outputs, result))

    def greedy(self, feeds: dict, first: np.ndarray, steps: int, eos: int | None) -> np.ndarray:
        """Greedy decoding with a decode_step program's compiled loop (`CpuCodegen._greedy`):
        int64 tokens [N, steps]; ``feeds`` as for a call (the caches, the decode input and
        the position are refilled in place, token by token)."""
        args = self.step_args(feeds)
        tokens = np.zeros((len(first), steps), np.int64)
        try:
            self.module.greedy(*args, np.ascontiguousarray(first, np.int64), steps,
                               -1 if eos is None else int(eos), tokens)
        except BaseException:
            fpenv.clear_flush()
            raise
        return tokens

    def step_args(self, feeds: dict) -> list:
        """The compiled step's arguments for ``feeds`` (checked, arenas grown to fit):
        the inputs, then parameters and state, constants, arenas and arena offsets."""
        bindings = self._check_feeds(feeds)  # before any kernel: shapes, dtypes, symbols
        args = []
        for info in self.inputs:
            x = feeds[info.name]
            if info.scalar:
                buf = self._scalar_bufs[info.name]
                buf[0] = x
                args.append(buf)
            else:
                args.append(x)
        self._ensure_arenas(bindings)
        if self._bound_tail is None:
            self._bound_tail = (self._params_state + self.consts + self._arenas
                                + [self._offsets_array])
        return args + self._bound_tail
