"""Program: a compiled graph with named inputs and outputs and its buffers.

It owns the generated `step` function, the arenas the memory plan carves intermediate
values from (allocated once for the largest batch seen), and the argument list. Parameters
and state are passed by reference: the generated code updates them in place, so the
caller's arrays always hold the current weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from graphdl.backends.cpu.cache import load_generated
from graphdl.backends.cpu.codegen import CpuCodegen
from graphdl.ir.graph import Graph, Value
from graphdl.passes.plan_memory import ALIGN, slot_sizes


@dataclass
class InputInfo:
    name: str
    shape: tuple
    dtype: np.dtype
    scalar: bool


def describe_inputs(graph: Graph, sig) -> tuple[list[InputInfo], list[tuple[str, int, str]], list]:
    """What both backends' programs need from a planned graph and its step signature: the
    inputs in call order, where each symbolic dim is read from (input name, axis, symbol),
    and the constants as contiguous host arrays in `sig.consts` order."""
    inputs: list[InputInfo] = []
    symbol_sources: list[tuple[str, int, str]] = []
    for name in sig.inputs:
        t = graph.type_of(Value(graph.find("input", name)))
        inputs.append(InputInfo(name, t.shape, np.dtype(t.dtype), t.rank == 0))
        for axis, d in enumerate(t.shape):
            if isinstance(d, str) and all(s != d for _, _, s in symbol_sources):
                symbol_sources.append((name, axis, d))
    consts = []
    for nid in sig.consts:
        t = graph.type_of(Value(nid))
        arr = np.asarray(graph.attrs(nid)["value"], dtype=t.dtype).reshape(t.shape or (1,))
        consts.append(np.ascontiguousarray(arr))
    return inputs, symbol_sources, consts


def named_types(graph: Graph) -> tuple[dict, dict]:
    """The types of the graph's parameters and of its state, by name."""
    return tuple(
        {name: graph.type_of(Value(nid)) for name, nid in graph.named(kind).items()}
        for kind in ("param", "state")
    )


class Program:
    """A compiled graph. Call it with feeds; params/state are bound with `bind_params`."""

    def __init__(self, graph: Graph, title: str = "program"):
        self.graph = graph
        self.source, self.sig = CpuCodegen(graph, title).generate()
        t0 = time.perf_counter()
        self.module, self.source_path, self.was_cached = load_generated(self.source)
        self.load_seconds = time.perf_counter() - t0
        self.step_fn = self.module.step
        self.plan = graph.meta["memory_plan"]
        self.inputs, self._symbol_sources, self.consts = describe_inputs(graph, self.sig)
        self.param_types, self.state_types = named_types(graph)
        self._bound_tail: list | None = None
        self._capacity: dict[str, int] = {}
        self._arenas: list[np.ndarray] = []
        self._offsets = np.zeros(0, np.int64)
        self._scalar_bufs = {i.name: np.zeros(1, i.dtype) for i in self.inputs if i.scalar}

    # ------------------------------------------------------------ binding
    def bind_params(self, params: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
        """Bind the parameter and state arrays (by reference; updated in place)."""
        tail = []
        for name in self.sig.params:
            tail.append(_check_array(params[name], self.param_types[name], name))
        for name in self.sig.state:
            tail.append(_check_array(state[name], self.state_types[name], name))
        self._params_state = tail
        self._bound_tail = None

    def _ensure_arenas(self, bindings: dict[str, int]) -> None:
        if self._capacity and all(bindings.get(k, 0) <= v for k, v in self._capacity.items()):
            return
        cap = {k: max(v, self._capacity.get(k, 0)) for k, v in bindings.items()}
        sizes = slot_sizes(self.plan, cap)
        offsets = np.zeros(max(len(sizes), 1), np.int64)
        totals = {d: 0 for d in self.sig.arenas}
        for i, (slot, size) in enumerate(zip(self.plan["slots"], sizes)):
            offsets[i] = totals.get(slot["dtype"], 0)
            totals[slot["dtype"]] = offsets[i] + size
        self._arenas = [np.zeros(max(totals[d], ALIGN), d) for d in self.sig.arenas]
        self._offsets = offsets
        self._capacity = cap
        self._bound_tail = None

    def arena_bytes(self) -> int:
        return sum(a.nbytes for a in self._arenas)

    def warmup(self) -> float:
        """Compile (or load from the disk cache) by one call on scratch buffers; seconds."""
        from graphdl.compiler import dummy_feeds

        saved = getattr(self, "_params_state", None)
        scratch_p = {n: np.zeros(t.shape or (1,), t.dtype) for n, t in self.param_types.items()}
        scratch_s = {n: np.zeros(t.shape or (1,), t.dtype) for n, t in self.state_types.items()}
        self.bind_params(scratch_p, scratch_s)
        t0 = time.perf_counter()
        self(dummy_feeds(self, 1))
        seconds = time.perf_counter() - t0
        if saved is not None:
            self._params_state = saved
        self._bound_tail = None
        self.jit_seconds = seconds
        self.cold_seconds = _remember_cold_time(self.source_path, seconds, self.was_cached)
        return seconds

    # ------------------------------------------------------------ calling
    def __call__(self, feeds: dict) -> dict[str, np.ndarray]:
        args = []
        bindings = {}
        for info in self.inputs:
            x = feeds[info.name]
            if info.scalar:
                buf = self._scalar_bufs[info.name]
                buf[0] = x
                args.append(buf)
            else:
                args.append(x)
        for name, axis, sym in self._symbol_sources:
            bindings[sym] = feeds[name].shape[axis]
        self._ensure_arenas(bindings)
        if self._bound_tail is None:
            self._bound_tail = self._params_state + self.consts + self._arenas + [self._offsets]
        result = self.step_fn(*args, *self._bound_tail)
        return dict(zip(self.sig.outputs, result))


def _remember_cold_time(source_path, seconds: float, was_cached: bool) -> float | None:
    """The compile time of the first (cold) compilation, kept beside the generated source
    so a warm run can report both."""
    import json

    side = source_path.with_suffix(".json")
    if not was_cached or not side.exists():
        try:
            side.write_text(json.dumps({"cold_seconds": seconds}), encoding="utf-8")
        except OSError:
            pass
        return seconds
    try:
        return float(json.loads(side.read_text(encoding="utf-8"))["cold_seconds"])
    except (OSError, ValueError, KeyError):
        return None


def _check_array(arr: np.ndarray, t, name: str) -> np.ndarray:
    shape = tuple(t.shape) or (1,)
    if arr.dtype != np.dtype(t.dtype) or arr.shape != shape or not arr.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous {t.dtype}{list(shape)} array, "
                         f"got {arr.dtype}{list(arr.shape)}")
    return arr
