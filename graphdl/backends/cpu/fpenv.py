"""Subnormal floats flushed to zero while a compiled CPU program runs.

x86 cores take a microcode assist, ~100 cycles, for an arithmetic instruction that reads or
produces a subnormal (|x| < 1.2e-38 in float32). Training produces them as a matter of
course: the Adam moment of a weight whose gradient stays zero (a dead ReLU unit, a pixel
that is always background) decays by beta1 at every step and spends ~150 steps among the
subnormals before it underflows to zero. Measured: `adam_multi` over LeNet's 62k
parameters took 29 us with normal values and 890 us with gradients of 1e-21 (their squares
are subnormal); in LeNet's profiled training step the update took 0.31 ms, 0.07 with
subnormals flushed. TensorFlow flushes them in its kernels for the same reason; PyTorch
leaves it to the user (`torch.set_flush_denormal`).

So a generated step runs with MXCSR's FTZ (a result that would be subnormal is zero) and DAZ
(a subnormal input reads as zero) bits set on every thread that runs its kernels:

- the calling thread: the step starts with ``flush_subnormals()``, which sets them and
  returns the control word before, and puts that back with ``restore_fp`` before it returns
  (`graphdl.backends.cpu.codegen`), so NumPy and the user's code in the same process keep
  IEEE gradual underflow. Should the step raise, `Program.__call__` clears the two bits;
- Numba's worker threads, which run nothing but Numba's parallel regions:
  `flush_subnormals_on_workers` sets them for good when a program that calls a parallel
  kernel loads. A worker OpenMP starts later inherits the control word of the thread that
  starts it: the calling thread, inside a step.

Every thread computes in the same mode, so results stay independent of the thread count. A
value changes only where IEEE arithmetic would have produced a subnormal.

On other architectures the intrinsics compile to nothing.
"""

from __future__ import annotations

import platform
import types as pytypes
from functools import cache

# MXCSR's FTZ (flush to zero, bit 15) and DAZ (denormals are zero, bit 6)
FTZ_DAZ = 0x8040
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
# the intrinsics, built when first asked for (importing this module imports no Numba)
INTRINSICS = ("flush_subnormals", "restore_fp", "read_fp")


def __getattr__(name: str):
    if name in INTRINSICS:
        return _intrinsics()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def _intrinsics() -> dict:
    """flush_subnormals() -> the word before (int64), restore_fp(word), read_fp() -> the
    word, and clear_fp() -> the word before: Numba intrinsics on the calling thread's
    MXCSR (nothing on other architectures)."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    i32, i64 = ir.IntType(32), ir.IntType(64)

    def mxcsr(builder, name: str, slot) -> None:
        i8p = ir.IntType(8).as_pointer()
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p]), name)
        builder.call(fn, [builder.bitcast(slot, i8p)])

    def set_bits(builder, mask: int, clear: bool):
        """MXCSR with ``mask`` set (or cleared); the word before, as i64."""
        if not X86:
            return ir.Constant(i64, 0)
        slot = cgutils.alloca_once(builder, i32)
        mxcsr(builder, "llvm.x86.sse.stmxcsr", slot)
        old = builder.load(slot)
        new = (builder.and_(old, ir.Constant(i32, ~mask & 0xFFFFFFFF)) if clear
               else builder.or_(old, ir.Constant(i32, mask)))
        builder.store(new, slot)
        mxcsr(builder, "llvm.x86.sse.ldmxcsr", slot)
        return builder.zext(old, i64)

    def bits(mask: int, clear: bool):
        @intrinsic
        def change(typingctx):
            return types.int64(), lambda ctx, builder, sig, args: set_bits(builder, mask, clear)

        return change

    @intrinsic
    def restore_fp(typingctx, word):
        def codegen(context, builder, signature, args):
            if X86:
                slot = cgutils.alloca_once(builder, i32)
                builder.store(builder.trunc(args[0], i32), slot)
                mxcsr(builder, "llvm.x86.sse.ldmxcsr", slot)
            return context.get_dummy_value()

        return types.void(types.int64), codegen

    return {"flush_subnormals": bits(FTZ_DAZ, False), "restore_fp": restore_fp,
            "read_fp": bits(0, False), "clear_fp": bits(FTZ_DAZ, True)}


def _on_threads(n, words):
    """Flush on each of ``n`` threads (OpenMP's static schedule gives each one iteration)
    and record its control word; the calling thread, which runs one of them, gets its own
    word back."""
    old = flush_subnormals()  # noqa: F821  (the intrinsics: bound by `_jitted`)
    for t in prange(n):  # noqa: F821
        flush_subnormals()  # noqa: F821
        words[t] = read_fp()  # noqa: F821
    restore_fp(old)  # noqa: F821


def _clear_on_caller():
    return clear_fp()  # noqa: F821


def _flush_on_caller():
    return flush_subnormals()  # noqa: F821


def _restore_on_caller(word):
    restore_fp(word)  # noqa: F821


@cache
def _jitted():
    """`_on_threads` and the calling thread's clear, flush and restore, jitted on first use
    (after the library chose Numba's cache folder), against the intrinsics."""
    import numba

    from graphdl.backends.cpu.library import prange_only

    names = {**_intrinsics(), "prange": numba.prange}

    def bound(fn):
        return pytypes.FunctionType(fn.__code__, {**fn.__globals__, **names}, fn.__name__)

    return (numba.njit(cache=True, parallel=prange_only())(bound(_on_threads)),
            numba.njit(cache=True)(bound(_clear_on_caller)),
            numba.njit(cache=True)(bound(_flush_on_caller)),
            numba.njit(cache=True)(bound(_restore_on_caller)))


def python_standins(run: bool) -> dict:
    """What the step's two float-mode calls become where its source runs as Python (the
    compile helper's call recording, tools/profile_step.py): with ``run``, jitted functions
    that do the same on the calling thread; else nothing."""
    if run:
        return {"flush_subnormals": _jitted()[2], "restore_fp": _jitted()[3]}
    return {"flush_subnormals": lambda: 0, "restore_fp": lambda word: None}


def flush_subnormals_on_workers() -> list[int]:
    """Set FTZ and DAZ on every thread of Numba's pool, for good (see the module's text);
    returns the control word each thread ended with."""
    import numba
    import numpy as np

    n = numba.get_num_threads()
    words = np.zeros(n, np.int64)
    _jitted()[0](n, words)
    return [int(w) for w in words]


def clear_flush() -> None:
    """Clear FTZ and DAZ on the calling thread (after a step that raised)."""
    _jitted()[1]()
