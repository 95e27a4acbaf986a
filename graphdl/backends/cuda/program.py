"""CudaProgram: a compiled graph whose buffers live on the GPU.

The same interface as `graphdl.runtime.program.Program` (``Program(graph, title)``,
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

import time
import weakref
from dataclasses import dataclass

import numpy as np

from graphdl.backends.cuda import device as D
from graphdl.backends.cuda.cache import load_generated
from graphdl.backends.cuda.codegen import CudaCodegen
from graphdl.ir.graph import Graph
from graphdl.passes.plan_memory import ALIGN, slot_sizes
from graphdl.runtime.program import (
    _check_array,
    _remember_cold_time,
    describe_inputs,
    named_types,
)

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


class CudaProgram:
    """A compiled graph on the GPU. Call it with feeds; params/state are bound with
    `bind_params` (copied to the device) and read back with `sync_to_host`."""

    device = "cuda"

    def __init__(self, graph: Graph, title: str = "program"):
        self.graph = graph
        self.source, self.sig = CudaCodegen(graph, title).generate()
        t0 = time.perf_counter()
        self.module, self.source_path, self.was_cached = load_generated(self.source)
        self.load_seconds = time.perf_counter() - t0
        self.plan = graph.meta["memory_plan"]
        self.inputs, self._symbol_sources, consts = describe_inputs(graph, self.sig)
        self.consts = [D.to_device(c) for c in consts]
        self.param_types, self.state_types = named_types(graph)
        self._host_bound: list[np.ndarray] | None = None
        self._dev_bound: list = []
        self._capacity: dict[str, int] = {}
        self._arenas: list = []
        self._offsets: list[int] = []
        self._setups: dict[tuple, _Setup] = {}
        self.jit_seconds = 0.0
        self.cold_seconds: float | None = None

    # ------------------------------------------------------------ binding
    def bind_params(self, params: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
        """Bind parameter and state arrays: their device copies (made now, or shared with
        another program bound to the same arrays) are what the steps read and update."""
        host = []
        for name in self.sig.params:
            host.append(_check_array(params[name], self.param_types[name], name))
        for name in self.sig.state:
            host.append(_check_array(state[name], self.state_types[name], name))
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
    def _ensure_arenas(self, bindings: dict[str, int]) -> None:
        if self._capacity and all(bindings.get(k, 0) <= v for k, v in self._capacity.items()):
            return
        cap = {k: max(v, self._capacity.get(k, 0)) for k, v in bindings.items()}
        sizes = slot_sizes(self.plan, cap)
        offsets = [0] * max(len(sizes), 1)
        totals = {d: 0 for d in self.sig.arenas}
        for i, (slot, size) in enumerate(zip(self.plan["slots"], sizes)):
            offsets[i] = totals.get(slot["dtype"], 0)
            totals[slot["dtype"]] = offsets[i] + size
        self._arenas = [D.device_array(max(totals[d], ALIGN), np.dtype(d)) for d in self.sig.arenas]
        self._offsets = offsets
        self._capacity = cap
        self._setups.clear()  # their views point into the old arenas

    def arena_bytes(self) -> int:
        return sum(int(a.nbytes) for a in self._arenas)

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
        bindings = {sym: int(np.shape(feeds[name])[axis]) for name, axis, sym in self._symbol_sources}
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
                dev.copy_to_device(np.ascontiguousarray(x, dtype=info.dtype))
        entry.run()
        host = {dtype: pack.copy_to_host() for dtype, pack in entry.packs.items()}
        return {name: host[dtype][start:stop].reshape(shape)
                for name, dtype, start, stop, shape in entry.layout}

    def warmup(self) -> float:
        """Compile every kernel (or load it from the disk cache) by one call on scratch
        buffers; seconds."""
        from graphdl.compiler import dummy_feeds

        saved = (self._host_bound, self._dev_bound)
        scratch_p = {n: np.zeros(t.shape or (1,), t.dtype) for n, t in self.param_types.items()}
        scratch_s = {n: np.zeros(t.shape or (1,), t.dtype) for n, t in self.state_types.items()}
        self.bind_params(scratch_p, scratch_s)
        t0 = time.perf_counter()
        self(dummy_feeds(self, 1))
        D.synchronize()
        seconds = time.perf_counter() - t0
        self._host_bound, self._dev_bound = saved
        self._setups.clear()
        self.jit_seconds = seconds
        self.cold_seconds = _remember_cold_time(self.source_path, seconds, self.was_cached)
        return seconds
