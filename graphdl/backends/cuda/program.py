"""CudaProgram: a compiled graph whose buffers live on the GPU.

The same interface as `graphdl.backends.cpu.program.Program` (``Program(graph, title)``,
``.inputs``, ``.sig``, ``.param_types``, ``.state_types``, `bind_params`, `warmup`,
``__call__(feeds) -> dict`` of NumPy arrays), with the data kept on the device for the
whole step: parameters, optimiser state, constants and every intermediate value are device
arrays; a step copies its batch in and its outputs (loss, metrics) out, nothing else.

Parameters and state: `bind_params` copies each host array to the device once. Programs
bound to the same host arrays (a model's train, eval and predict programs) share one device
copy of each (a mirror registry keyed by the host array), so the eval program sees the
weights the train program just updated. The host arrays are *not* updated by a step:
`sync_to_host` copies the device values into them (before a checkpoint, a snapshot, or
anything that reads them on the host), and `sync_to_device` copies host values to the
device (after the host arrays were assigned: a restored checkpoint, loaded weights).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from graphdl.backends.common.program import CompiledProgram, dummy_feeds
from graphdl.backends.cuda import device as D
from graphdl.backends.cuda.cache import load_generated
from graphdl.backends.cuda.codegen import CudaCodegen
from graphdl.backends.cuda.library import load_library
from graphdl.ir.graph import Graph

MAX_SETUPS = 8  # bindings (batch sizes) kept set up at once


# ---------------------------------------------------------------- host -> device mirrors

_MIRRORS: dict[int, tuple[weakref.ref, object]] = {}


def _forget(key: int) -> None:
    _MIRRORS.pop(key, None)


def mirror(host: np.ndarray):
    """The device copy of a host array (made on first use, shared by every program)."""
    key = id(host)
    entry = _MIRRORS.get(key)
    if entry is not None and entry[0]() is host:
        return entry[1]
    dev = D.to_device(host)
    _MIRRORS[key] = (weakref.ref(host, lambda _r, k=key: _forget(k)), dev)
    return dev


@dataclass
class _Setup:
    run: object
    packs: dict
    layout: list
    inputs: list  # device buffers of the inputs, in `sig.inputs` order
    scalar_cache: dict  # input name -> last value copied (scalars only)


class CudaProgram(CompiledProgram):
    """A compiled graph on the GPU. Call it with feeds; params/state are bound with
    `bind_params` (copied to the device) and read back with `sync_to_host`."""

    # deliberate parallel of graphdl/backends/cpu/program.py: each backend names its parts
    device = "cuda"
    codegen = CudaCodegen
    load_library = staticmethod(load_library)
    load_generated = staticmethod(load_generated)

    def __init__(self, graph: Graph, title: str = "program"):
        super().__init__(graph, title)
        self.consts = [D.to_device(c) for c in self._host_consts]
        self._host_bound: list[np.ndarray] | None = None
        self._dev_bound: list = []
        self._setups: dict[tuple, _Setup] = {}

    # ------------------------------------------------------------ binding
    def bind_params(self, params: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
        """Bind parameter and state arrays: their device copies (made now, or shared with
        another program bound to the same arrays) are what the steps read and update."""
        host = self._checked_params(params, state)
        self._host_bound = host
        self._dev_bound = [mirror(h) for h in host]
        self._setups.clear()

    def sync_to_host(self) -> None:
        """Copy the device values of the bound parameters and state into the host arrays."""
        for h, d in zip(self._host_bound or [], self._dev_bound):
            d.copy_to_host(h)

    def sync_to_device(self) -> None:
        """Copy the host arrays of the bound parameters and state to the device (after
        they were assigned on the host: a restored checkpoint, loaded weights)."""
        for h, d in zip(self._host_bound or [], self._dev_bound):
            d.copy_to_device(h)

    # ------------------------------------------------------------ buffers
    def _allocate_arena(self, size: int, dtype: np.dtype):
        return D.device_array(size, dtype)

    def _ensure_arenas(self, bindings: dict[str, int]) -> bool:
        grown = super()._ensure_arenas(bindings)
        if grown:
            self._setups.clear()  # their views point into the old arenas
        return grown

    def _setup(self, bindings: dict[str, int], feeds: dict) -> _Setup:
        self._ensure_arenas(bindings)
        if self._host_bound is None:
            raise RuntimeError("bind_params() first")
        inputs = []
        for info in self.inputs:
            if info.scalar:
                inputs.append(D.device_array(1, info.dtype))
            else:
                shape = tuple(np.shape(feeds[info.name]))
                inputs.append(D.device_array(shape, info.dtype))
        run, packs, layout = self.module.setup(
            *inputs, *self._dev_bound, *self.consts, *self._arenas, self._offsets)
        if len(self._setups) >= MAX_SETUPS:
            self._setups.pop(next(iter(self._setups)))
        entry = _Setup(run, packs, layout, inputs, {})
        self._setups[tuple(sorted(bindings.items()))] = entry
        return entry

    # ------------------------------------------------------------ calling
    def __call__(self, feeds: dict) -> dict[str, np.ndarray]:
        bindings = self._check_feeds(feeds)  # before any copy or kernel: shapes, dtypes, symbols
        entry = self._setups.get(tuple(sorted(bindings.items())))
        if entry is None:
            entry = self._setup(bindings, feeds)
        for info, dev in zip(self.inputs, entry.inputs):
            x = feeds[info.name]
            if info.scalar:
                value = info.dtype.type(np.asarray(x).reshape(()))
                if entry.scalar_cache.get(info.name) != value:
                    dev.copy_to_device(np.full(1, value, info.dtype))
                    entry.scalar_cache[info.name] = value
            else:
                dev.copy_to_device(x)
        entry.run()
        host = {dtype: pack.copy_to_host() for dtype, pack in entry.packs.items()}
        return {name: host[dtype][start:stop].reshape(shape)
                for name, dtype, start, stop, shape in entry.layout}

    # ------------------------------------------------------------ warm-up
    def configure(self, batch: int = 1) -> None:
        """Set up a binding at ``batch`` on scratch parameters, launching nothing: every
        buffer carved and every launch configured (what `graphdl compile --device cuda`
        does on the simulator, where a warm-up would run the kernels as Python). The bound
        parameters are kept."""
        with self.scratch_binding():
            feeds = dummy_feeds(self, batch)
            self._setup(self._check_feeds(feeds), feeds)

    def _save_binding(self):
        return self._host_bound, self._dev_bound

    def _restore_binding(self, saved) -> None:
        self._host_bound, self._dev_bound = saved
        self._setups.clear()

    def _synchronize(self) -> None:
        D.synchronize()
