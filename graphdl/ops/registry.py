"""The op registry: one `OpDef` per primitive op, kernels registered beside it.

An `OpDef` is the whole contract of an op (ARCHITECTURE.md, "The op contract"): signature,
pattern kind, `infer` (types from types), `grad` (gradient as graph construction),
`reference` (NumPy ground truth) and kernels. Elementwise ops give one scalar function
(`scalar`) from which the backends generate loops and fused loops. Other ops register
plain functions as CPU kernels with `@cpu_kernel` and an `emit_cpu` that writes the call
into the generated step function. Nothing here imports Numba: the backends jit what is registered.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property
from typing import Any

import numpy as np

from graphdl.ir.optable import OPS
from graphdl.ir.types import TensorType


class Pattern(IntEnum):
    """Fusion pattern kinds, in TVM's order: a lower kind fuses into a higher one."""

    ELEMWISE = 0
    BROADCAST = 1
    INJECTIVE = 2
    REDUCTION = 3
    OUT_FUSABLE = 4
    OPAQUE = 5


class ShapeError(Exception):
    """Raised by `infer`: the message names what is wrong; `help` says how to fix it."""

    def __init__(self, message: str, help: str | None = None):
        super().__init__(message)
        self.help = help


REQUIRED = object()


@dataclass
class Attr:
    """An op attribute: its Python type (``object``: any), default and allowed values."""

    kind: type | tuple = object
    default: Any = REQUIRED
    allowed: tuple | None = None

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has this attribute's type (an int is a float, a bool is not an
        int, NumPy scalars count as their Python types, None is fine where it is the default)."""
        if value is None:
            return self.default is None or self.kind is object
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        for kind in kinds:
            if kind is object:
                return True
            if kind is bool and isinstance(value, (bool, np.bool_)):
                return True
            if kind is int and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                return True
            if kind is float and isinstance(value, (int, float, np.integer, np.floating)) \
                    and not isinstance(value, bool):
                return True
            if kind not in (bool, int, float) and isinstance(value, kind):
                return True
        return False


@dataclass
class OpDef:
    name: str
    inputs: tuple[str, ...]
    infer: Callable[[dict, list[TensorType]], list[TensorType]]
    reference: Callable[..., Any]
    pattern: Pattern = Pattern.OPAQUE
    outputs: tuple[str, ...] = ("out",)
    attrs: dict[str, Attr] = field(default_factory=dict)
    grad: Callable | None = None
    no_grad_reason: str | None = None
    differentiable: tuple[int, ...] | None = None  # None: every float input
    variadic: bool = False  # the last input may repeat (concat)
    scalar: Callable | None = None  # elementwise: scalar function (inputs..., attrs...)
    scalar_attrs: tuple[str, ...] = ()  # attrs passed to `scalar` after the inputs
    # float32 members of CPU loops: the same function in float32 arithmetic (float32 accuracy,
    # no libm call, so loops over it vectorise); None: `scalar` serves every dtype
    scalar_f32: Callable | None = None
    emit_cpu: Callable | None = None  # non-elementwise: writes the kernel call (see backends/cpu)
    # optional: one kernel call for a run of this op's nodes scheduled one after another
    # with equal attributes and the same values in the input slots ``group_by`` (the
    # optimiser's learning rate and step: one multi-tensor update), every output in its
    # input's buffer: ``emit_cpu_group(ctx, attrs, [(ins, outs), ...]) -> lines``
    emit_cpu_group: Callable | None = None
    group_by: tuple[int, ...] = ()
    # optional: the head of a fused epilogue group finishing the epilogue itself, inside its
    # kernel: ``emit_cpu_epilogue(ctx, attrs, ins, outs, members) -> lines | None`` with the
    # group's members after the head (None: it cannot, the group's loop runs after it)
    emit_cpu_epilogue: Callable | None = None
    body: bool = False  # higher-order: attrs["body"] is a Graph run by the op (scan)
    view: bool = False  # output aliases input 0's buffer (reshape of a contiguous value)
    inplace_ok: tuple[int, ...] = ()  # input slots whose buffer the output may overwrite
    # floating-point operations of one execution (graphdl.ops.cost): ``cost(attrs, input
    # types, output type, bindings)``, else ``flops_per_element`` per output element
    cost: Callable | None = None
    flops_per_element: int = 1
    doc: str = ""

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    @cached_property
    def takes_bindings(self) -> bool:
        """Whether `reference` needs the symbol bindings (``bindings=`` keyword)."""
        return "bindings" in inspect.signature(self.reference).parameters

    def check_attrs(self, attrs: dict) -> dict:
        """Fill defaults and reject unknown or missing attributes (a bug, not a user error)."""
        out = {}
        for k in attrs:
            if k not in self.attrs:
                raise TypeError(f"op {self.name}: unknown attribute {k!r}")
        for k, a in self.attrs.items():
            if k in attrs:
                v = attrs[k]
                if not a.accepts(v):
                    raise TypeError(f"op {self.name}: attribute {k}={v!r} is not a {a.kind}")
                if a.allowed is not None and v not in a.allowed:
                    raise TypeError(f"op {self.name}: attribute {k}={v!r} not in {a.allowed}")
                out[k] = v
            elif a.default is REQUIRED:
                raise TypeError(f"op {self.name}: missing attribute {k!r}")
            else:
                out[k] = a.default
        return out


_OPS: dict[str, OpDef] = OPS  # the IR's table (graphdl/ir/optable.py), filled from here
_CPU_KERNELS: dict[str, Callable] = {}
_CPU_HELPERS: dict[str, Callable] = {}
_PARALLEL_KERNELS: set[str] = set()
# parallel kernels split the batch into at most this many blocks of samples, shared out
# among the threads (graphdl/ops/conv.py, "Threads"); a fixed number, not the thread count,
# so that results do not depend on the number of threads
PAR_BLOCKS = 16


def register(op: OpDef) -> OpDef:
    if op.name in _OPS:
        raise ValueError(f"op {op.name!r} registered twice")
    _OPS[op.name] = op
    return op


def get_op(name: str) -> OpDef:
    try:
        return _OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}") from None


def all_ops() -> dict[str, OpDef]:
    return dict(_OPS)


def cpu_kernel(fn: Callable | None = None, *, parallel: bool = False):
    """Register a plain function as a CPU kernel; the CPU backend jits it lazily.

    ``@cpu_kernel`` or ``@cpu_kernel(parallel=True)``: a parallel kernel is compiled with
    Numba's ``parallel=True`` and may use ``prange`` (graphdl/ops/conv.py, "Threads").
    """

    def register_kernel(f: Callable) -> Callable:
        if f.__name__ in _CPU_KERNELS and _CPU_KERNELS[f.__name__] is not f:
            raise ValueError(f"cpu kernel {f.__name__!r} registered twice")
        _CPU_KERNELS[f.__name__] = f
        if parallel:
            _PARALLEL_KERNELS.add(f.__name__)
        return f

    return register_kernel if fn is None else register_kernel(fn)


def cpu_helper(fn: Callable) -> Callable:
    """Register a plain function that CPU kernels (or other helpers) call by its global
    name. Numba resolves a kernel's globals when it compiles the kernel, so the CPU backend
    jits each helper and compiles kernels against the jitted helpers
    (`graphdl.backends.cpu.library`); in plain Python the helper runs as written."""
    if fn.__name__ in _CPU_HELPERS and _CPU_HELPERS[fn.__name__] is not fn:
        raise ValueError(f"cpu helper {fn.__name__!r} registered twice")
    _CPU_HELPERS[fn.__name__] = fn
    return fn


class VectorTile:
    """A register-blocked multiply-add loop a CPU kernel calls by its global name:

        out[ooff + j * ostride : + lanes] =
            sum over t < nt of A[abase + j * a_rstride + t] * B[bbase + boff[t] : + lanes]

    for j < rows (a scalar of A's row j times a vector of B). Flat arrays of one dtype,
    float32 or float64; boff int64. The CPU backend lowers it to LLVM vectors
    (`graphdl.backends.cpu.simd`); in plain Python it runs as written here."""

    def __init__(self, name: str, lanes: int, rows: int):
        self.__name__ = name
        self.config = (lanes, rows)

    def __call__(self, a, abase, a_rstride, b, bbase, boff, nt, out, ooff, ostride):
        lanes, rows = self.config
        for j in range(rows):
            acc = np.zeros(lanes, out.dtype)
            for t in range(nt):
                ib = bbase + boff[t]
                acc += a[abase + j * a_rstride + t] * b[ib:ib + lanes]
            out[ooff + j * ostride:ooff + j * ostride + lanes] = acc


class OuterTile:
    """A register-blocked outer product of vectors a CPU kernel calls by its global name:

        out[ooff + (i * brows + j) * lanes : + lanes] += sum over t < nt of
            A[abase + i * a_rstride + t * lanes : + lanes] * B[bbase + boff[j] + t * lanes : + lanes]

    for i < arows, j < brows (lane-wise products: the caller sums the lanes). float32
    arrays, flat; boff int64. Lowered like `VectorTile`."""

    def __init__(self, name: str, lanes: int, arows: int, brows: int):
        self.__name__ = name
        self.config = (lanes, arows, brows)

    def __call__(self, a, abase, a_rstride, b, bbase, boff, nt, out, ooff):
        lanes, arows, brows = self.config
        for i in range(arows):
            for j in range(brows):
                o = ooff + (i * brows + j) * lanes
                for t in range(nt):
                    ia = abase + i * a_rstride + t * lanes
                    ib = bbase + boff[j] + t * lanes
                    out[o:o + lanes] += a[ia:ia + lanes] * b[ib:ib + lanes]


class VectorCopy:
    """A copy of ``lanes`` contiguous elements a CPU kernel calls by its global name:

        dst[doff : doff + lanes] = src[soff : soff + lanes]

    float32 arrays, flat. One vector load and one store once lowered
    (`graphdl.backends.cpu.simd`): a loop over a short run (a head's 16 features in a
    transpose) is never vectorised by LLVM, whose vector loop takes 64 floats at a time,
    so it ran one element at a time."""

    def __init__(self, name: str, lanes: int):
        self.__name__ = name
        self.config = (lanes,)

    def __call__(self, src, soff, dst, doff):
        (lanes,) = self.config
        dst[doff:doff + lanes] = src[soff:soff + lanes]


class MaxPoolTile:
    """``lanes`` 2x2 / stride-2 max-pooling windows side by side, a CPU kernel calls by its
    global name. The windows' top row starts at ``x[xoff]``, their bottom row at
    ``x[xoff + w]`` (w: the image width); window j covers columns 2j and 2j + 1.

    - forward (``grad=False``): ``tile(x, xoff, w, out, ooff)`` writes each window's max to
      ``out[ooff + j]``;
    - gradient (``grad=True``): ``tile(x, xoff, w, gy, goff, gx, positive)`` routes
      ``gy[goff + j]`` to its window's argmax cell of gx (the cells of x, same offsets) and
      writes 0 to the other three. With ``positive`` the routed value is ``g if max > 0
      else g * 0``: the gradient of relu then max pooling, relu's gradient folded in.

    Strictly greater wins, so a tie keeps the first cell in the order (top-left, top-right,
    bottom-left, bottom-right); the first NaN wins. float32 or float64 arrays (one dtype),
    flat. It reads and writes 2 * lanes values of each row whatever the image's width: the
    caller orders its calls so that what lands past a row is written again
    (graphdl/ops/pool.py). Lowered to LLVM vectors and shuffles like `VectorTile`."""

    def __init__(self, name: str, lanes: int, grad: bool):
        self.__name__ = name
        self.config = (lanes, grad)

    def __call__(self, *args):
        lanes, grad = self.config
        if grad:
            x, xoff, w, gy, goff, gx, positive = args
        else:
            x, xoff, w, out, ooff = args
        routed = []
        for j in range(lanes):
            cells = [x[xoff + 2 * j], x[xoff + 2 * j + 1], x[xoff + w + 2 * j],
                     x[xoff + w + 2 * j + 1]]
            best, m = 0, cells[0]
            for cell in range(1, 4):
                v = cells[cell]
                if v > m or (v != v and m == m):  # noqa: PLR0124
                    best, m = cell, v
            if not grad:
                out[ooff + j] = m
                continue
            g = gy[goff + j]
            if positive and not m > 0:
                g = g * 0
            routed.append((best, g))
        # the top row's 2 * lanes values, then the bottom row's
        for row, at in ((0, xoff), (1, xoff + w)):
            for j, (best, g) in enumerate(routed):
                for side in range(2):
                    gx[at + 2 * j + side] = g if best == 2 * row + side else 0


_TILES: dict[str, VectorTile | OuterTile | VectorCopy | MaxPoolTile] = {}


def vector_tile(lanes: int, rows: int) -> VectorTile:
    """The `VectorTile` of one configuration (one object per configuration, named after
    it: bind it to that name in the kernel's module)."""
    name = f"tile_{lanes}x{rows}"
    return _TILES.setdefault(name, VectorTile(name, lanes, rows))


def outer_tile(lanes: int, arows: int, brows: int) -> OuterTile:
    """The `OuterTile` of one configuration (one object per configuration, named after it)."""
    name = f"outer_{lanes}x{arows}x{brows}"
    return _TILES.setdefault(name, OuterTile(name, lanes, arows, brows))


def vector_copy(lanes: int) -> VectorCopy:
    """The `VectorCopy` of ``lanes`` elements (one object per width, named after it)."""
    name = f"copy_{lanes}"
    return _TILES.setdefault(name, VectorCopy(name, lanes))


def max_pool_tile(lanes: int, grad: bool) -> MaxPoolTile:
    """The `MaxPoolTile` of ``lanes`` windows, forward or gradient (one object each)."""
    name = f"maxpool_{lanes}{'_grad' if grad else ''}"
    return _TILES.setdefault(name, MaxPoolTile(name, lanes, grad))


def is_tile(fn: object) -> bool:
    return isinstance(fn, (VectorTile, OuterTile, VectorCopy, MaxPoolTile))


def prange(*args: int) -> range:
    """A parallel range for kernels registered with ``parallel=True``: the CPU backend
    compiles it as Numba's ``prange`` (graphdl/ops/conv.py, "Threads"); in plain Python it
    is ``range``."""
    return range(*args)


def is_cpu_helper(fn: object) -> bool:
    return callable(fn) and _CPU_HELPERS.get(getattr(fn, "__name__", None)) is fn


def is_parallel_kernel(name: str) -> bool:
    return name in _PARALLEL_KERNELS


def cpu_kernels() -> dict[str, Callable]:
    return dict(_CPU_KERNELS)
