"""The host side both backends' programs share: the generated module, the inputs and their
symbolic dims, the arenas the memory plan carves values from, warm-up.

`CompiledProgram` is the base of `graphdl.backends.cpu.program.Program` (arrays in host
memory, one Numba-compiled ``step``) and `graphdl.backends.cuda.program.CudaProgram`
(buffers on the GPU); each says how its arenas are allocated and how a call runs.
"""

from __future__ import annotations

import contextlib
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphdl.errors import Diagnostic, GraphdlError
from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.passes.plan_memory import ALIGN, slot_sizes


@dataclass
class InputInfo:
    name: str
    shape: tuple
    dtype: np.dtype
    scalar: bool


def describe_inputs(graph: Graph, sig) -> tuple[list[InputInfo], list]:
    """What both backends' programs need from a planned graph and its step signature: the
    inputs in call order (their symbolic dims are bound from the feeds on every call, see
    `CompiledProgram._check_feeds`) and the constants as contiguous host arrays in
    `sig.consts` order."""
    inputs: list[InputInfo] = []
    for name in sig.inputs:
        t = graph.type_of(Value(graph.find("input", name)))
        inputs.append(InputInfo(name, t.shape, np.dtype(t.dtype), t.rank == 0))
    consts = []
    for nid in sig.consts:
        t = graph.type_of(Value(nid))
        arr = np.asarray(graph.attrs(nid)["value"], dtype=t.dtype).reshape(t.shape or (1,))
        consts.append(np.ascontiguousarray(arr))
    return inputs, consts


def named_types(graph: Graph) -> tuple[dict, dict]:
    """The types of the graph's parameters and of its state, by name."""
    return tuple(
        {name: graph.type_of(Value(nid)) for name, nid in graph.named(kind).items()}
        for kind in ("param", "state")
    )


def dummy_feeds(program: CompiledProgram, batch: int = 1) -> dict[str, np.ndarray]:
    """Zero feeds for every input of ``program``, symbolic dims bound to ``batch``."""
    feeds = {}
    for info in program.inputs:
        shape = tuple(batch if isinstance(d, str) else d for d in info.shape)
        feeds[info.name] = np.zeros(shape, info.dtype) if not info.scalar else info.dtype.type(0)
    return feeds


class CompiledProgram(ABC):
    """A compiled graph: its generated module, inputs, parameter/state types and arenas.

    Subclasses set ``codegen`` (a `GraphSource` class), ``load_library`` (loads the
    kernels the generated code calls) and ``load_generated`` (the backend's module cache),
    and implement the abstract methods below and ``__call__``.
    """

    codegen: type
    load_library: staticmethod
    load_generated: staticmethod

    def __init__(self, graph: Graph, title: str = "program"):
        type(self).load_library()
        self.graph = graph
        self.source, self.sig = self.codegen(graph, title).generate()
        t0 = time.perf_counter()
        self.module, self.source_path, self.was_cached = type(self).load_generated(self.source)
        self.load_seconds = time.perf_counter() - t0
        self.plan = graph.meta["memory_plan"]
        self.inputs, self._host_consts = describe_inputs(graph, self.sig)
        self.param_types, self.state_types = named_types(graph)
        self._array_inputs = [(i.name, i.shape, i.dtype) for i in self.inputs if not i.scalar]
        # (name, dtype, shape, strides) of each array input at the last call that passed
        self._last_feeds: list[tuple] = []
        self._last_bindings: dict[str, int] = {}
        self._capacity: dict[str, int] = {}
        self._arenas: list = []
        self._offsets: list[int] = []
        self.jit_seconds = 0.0
        self.cold_seconds: float | None = None

    # ------------------------------------------------------------ feeds
    def _check_feeds(self, feeds: dict) -> dict[str, int]:
        """The symbol bindings of ``feeds`` once every array input is checked against its
        type: a C-contiguous ndarray of its dtype and shape, each symbol bound to one size
        across inputs. A wrong feed is GraphdlError E510 naming the field; kernels then
        only ever index within the declared shapes.

        Per call this costs one shape, strides and dtype comparison per input while the
        feeds look like the last call's (all of them: a set that passed together is
        consistent), and the full check otherwise."""
        last = self._last_feeds
        if last:
            for name, dtype, shape, strides in last:
                x = feeds.get(name)
                # a dtype equal to the declared one need not be the same object (arrays
                # a compiled step returns): `is` first, `!=` only when that fails
                if (x.__class__ is not np.ndarray or x.shape != shape or x.strides != strides
                        or (x.dtype is not dtype and x.dtype != dtype)):
                    break
            else:
                return self._last_bindings
        bindings: dict[str, int] = {}
        seen = []
        for name, shape, dtype in self._array_inputs:
            x = feeds.get(name)
            _check_feed(name, x, shape, dtype, bindings)
            seen.append((name, dtype, x.shape, x.strides))
        self._last_feeds = seen
        self._last_bindings = bindings
        return bindings

    # ------------------------------------------------------------ buffers
    def _ensure_arenas(self, bindings: dict[str, int]) -> bool:
        """Arenas big enough for ``bindings`` (grown to the largest binding seen, never
        shrunk); True when they were reallocated."""
        if self._capacity and all(bindings.get(k, 0) <= v for k, v in self._capacity.items()):
            return False
        cap = {k: max(v, self._capacity.get(k, 0)) for k, v in bindings.items()}
        sizes = slot_sizes(self.plan, cap)
        offsets = [0] * max(len(sizes), 1)
        totals = {d: 0 for d in self.sig.arenas}
        for i, (slot, size) in enumerate(zip(self.plan["slots"], sizes)):
            offsets[i] = totals.get(slot["dtype"], 0)
            totals[slot["dtype"]] = offsets[i] + size
        self._arenas = [self._allocate_arena(max(totals[d], ALIGN), np.dtype(d))
                        for d in self.sig.arenas]
        self._offsets = offsets
        self._capacity = cap
        return True

    @abstractmethod
    def _allocate_arena(self, size: int, dtype: np.dtype):
        """A zeroed arena of ``size`` elements on the backend's device."""

    def arena_bytes(self) -> int:
        return sum(int(a.nbytes) for a in self._arenas)

    @abstractmethod
    def bind_params(self, params: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
        """Bind the parameter and state arrays the steps read and update."""

    def _checked_params(self, params: dict, state: dict) -> list[np.ndarray]:
        """The parameter and state arrays in the step's order, each checked against its type."""
        arrays = [check_array(params[n], self.param_types[n], n) for n in self.sig.params]
        return arrays + [check_array(state[n], self.state_types[n], n) for n in self.sig.state]

    # ------------------------------------------------------------ warm-up
    def warmup(self) -> float:
        """Compile every kernel (or load it from the disk cache) by one call on scratch
        parameters and zero inputs; seconds. The bound parameters are kept."""
        with self.scratch_binding():
            t0 = time.perf_counter()
            self(dummy_feeds(self, 1))
            self._synchronize()
            seconds = time.perf_counter() - t0
        self.jit_seconds = seconds
        self.cold_seconds = remember_cold_time(self.source_path, seconds, self.was_cached)
        return seconds

    def scratch_params(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Zero parameters and state of the bound types, for calls that only compile."""
        params = {n: np.zeros(t.shape or (1,), t.dtype) for n, t in self.param_types.items()}
        state = {n: np.zeros(t.shape or (1,), t.dtype) for n, t in self.state_types.items()}
        return params, state

    @contextlib.contextmanager
    def scratch_binding(self):
        """Scratch parameters bound for the block (calls that only compile or configure);
        the bound parameters afterwards."""
        saved = self._save_binding()
        self.bind_params(*self.scratch_params())
        try:
            yield
        finally:
            self._restore_binding(saved)

    @abstractmethod
    def _save_binding(self):
        """The current binding, for `scratch_binding` to restore."""

    @abstractmethod
    def _restore_binding(self, saved) -> None:
        """Bind again what `_save_binding` returned."""

    def _synchronize(self) -> None:
        """Wait for the device (nothing to wait for on the CPU)."""


def remember_cold_time(source_path: Path, seconds: float, was_cached: bool) -> float | None:
    """The compile time of the first (cold) compilation, kept beside the generated source
    so a warm run can report both."""
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


def _check_feed(name: str, x, shape: tuple, dtype: np.dtype, bindings: dict[str, int]) -> None:
    """E510 unless ``x`` is a C-contiguous ``dtype`` array of ``shape``; binds the symbols of
    ``shape`` in ``bindings`` (a symbol already bound must have the same size)."""
    if x is None:
        problem = "is missing"
    elif not isinstance(x, np.ndarray):
        problem = f"is a {type(x).__name__}, not a NumPy array"
    else:
        problem = ""
        if x.dtype != dtype or x.ndim != len(shape):
            problem = f"is {x.dtype}{list(x.shape)}"
        else:
            for axis, (d, n) in enumerate(zip(shape, x.shape)):
                if isinstance(d, str):
                    bound = bindings.setdefault(d, n)
                    if bound != n:
                        problem = (f"is {x.dtype}{list(x.shape)}: its axis {axis} ({d}) "
                                   f"is {n}, but another input bound {d} to {bound}")
                        break
                elif d != n:
                    problem = f"is {x.dtype}{list(x.shape)}"
                    break
            if not problem and not x.flags.c_contiguous:
                problem = (f"is {x.dtype}{list(x.shape)} but not C-contiguous "
                           "(np.ascontiguousarray makes a copy)")
    if problem:
        want = f"{dtype}[{', '.join(str(d) for d in shape)}]"
        raise GraphdlError(Diagnostic(
            "E510", f"the program's input '{name}' expects {want}; the array fed {problem}",
            help="feed each field with the shape and dtype the model declares (the spec's "
            "model.inputs and the loss's target)"), phase="data")


def check_array(arr: np.ndarray, t: TensorType, name: str) -> np.ndarray:
    """``arr`` if it is a C-contiguous array of type ``t`` (scalars as [1]); else ValueError."""
    shape = tuple(t.shape) or (1,)
    if arr.dtype != np.dtype(t.dtype) or arr.shape != shape or not arr.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous {t.dtype}{list(shape)} array, "
                         f"got {arr.dtype}{list(arr.shape)}")
    return arr
