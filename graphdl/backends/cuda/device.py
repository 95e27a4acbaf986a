"""The one module of graphdl that imports CUDA.

Everything else (the kernel library, the generated modules, the program, the tests) takes
``cuda`` and the launch constants from here, so moving to another CUDA binding (say
numba-cuda-mlir) is a change to this file. Works with NVIDIA's maintained ``numba-cuda``
package (the ``graphdl[cuda]`` extra) and with the CUDA target built into numba 0.68.

The CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) runs kernels on the CPU with one Python
thread per CUDA thread, so its cost grows with the threads of a block. The launch constants
below are therefore smaller under the simulator: the kernels are the same code (the
constants are compile-time constants of every kernel either way), only the tile and block
sizes shrink. Three patches of the simulator itself (applied only to the structure they
replace) make it thread-safe and cheaper without changing what a kernel computes: shared
arrays, array attributes, and a barrier in place of its polling block manager.
"""

from __future__ import annotations

import os
import sys
import types

import numba
import numpy as np

# numba's own config reads NUMBA_ENABLE_CUDASIM when numba is imported; a process that set
# the variable later (a test conftest) still gets the simulator for numba.cuda.
if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0") and not numba.config.ENABLE_CUDASIM:
    numba.config.ENABLE_CUDASIM = 1

# graphdl launches small grids on purpose (one block for a loss, tiny batches): numba-cuda's
# low-occupancy warning at every such launch configuration would only be noise.
if "NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS" not in os.environ:  # unless the user asked for them
    os.environ["NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS"] = "0"
    if hasattr(numba.config, "CUDA_LOW_OCCUPANCY_WARNINGS"):
        numba.config.CUDA_LOW_OCCUPANCY_WARNINGS = 0

from numba import cuda  # the only import of numba.cuda in graphdl

SIMULATOR: bool = "simulator" in (getattr(cuda.jit, "__module__", "") or "")
IMPLEMENTATION: str = getattr(cuda, "implementation", "unknown")  # "NVIDIA" (numba-cuda) or "Built-in"

# ---------------------------------------------------------------- launch constants
# Every constant here is a compile-time constant of the kernels that use it.
if SIMULATOR:
    EW_BLOCK = 1  # threads per block of grid-stride loops (elementwise, updates, copies)
    MAX_GRID = 2  # blocks of a grid-stride launch: two, so the stride is exercised
    RED_BLOCK = 4  # threads of a shared-memory reduction tree (a power of two)
    MM_T = 2  # matmul: threads per block side
    MM_R = 4  # matmul: outputs per thread side (register tile)
    MM_BK = 16  # matmul: depth of a shared-memory tile (fewer barriers: they are slow here)
    ROW_BLOCK = 2  # thread-per-row kernels (losses)
else:
    EW_BLOCK = 256
    MAX_GRID = 65535 * 8
    RED_BLOCK = 256
    MM_T = 16
    MM_R = 8
    MM_BK = 8
    ROW_BLOCK = 128
MM_BM = MM_T * MM_R  # matmul block tile: MM_BM x MM_BM outputs per block
MM_THREADS = MM_T * MM_T
# A register cap for the matmul kernel (it needs about 226 registers a thread uncapped,
# which allows one 256-thread block per SM); tools/gpu_check.py measures 0 (no cap) and 128.
MM_MAX_REGISTERS = int(os.environ.get("GRAPHDL_CUDA_MM_MAXREG", "0") or 0)


def is_available() -> bool:
    """Whether kernels can run: a usable GPU, or the simulator."""
    if SIMULATOR:
        return True
    try:
        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001  (a broken driver is "not available", not a crash)
        return False


def unavailable_reason() -> str:
    """Why `is_available()` is false, in one line (for error messages)."""
    if is_available():
        return ""
    try:
        cuda.get_current_device()
    except Exception as e:  # noqa: BLE001
        text = " ".join(str(e).split()).replace(": :", ":").rstrip(": ")
        return f"{type(e).__name__}: {text}"[:300]
    return "no CUDA-capable GPU was found by the driver"


def device_name() -> str:
    """The GPU's name ("NVIDIA H100 80GB HBM3"), or "CUDA simulator"."""
    if SIMULATOR:
        return "CUDA simulator"
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def compute_capability() -> tuple[int, int] | None:
    if SIMULATOR:
        return None
    return tuple(cuda.get_current_device().compute_capability)


def multiprocessors() -> int:
    if SIMULATOR:
        return 1
    return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)


def synchronize() -> None:
    cuda.synchronize()


def to_device(array):
    return cuda.to_device(array)


def device_array(shape, dtype):
    return cuda.device_array(shape, dtype)


def pinned_array(shape, dtype):
    """Page-locked host memory (faster copies); plain NumPy under the simulator."""
    return cuda.pinned_array(shape, dtype)


def event():
    """A timing event (the simulator's takes no arguments and times nothing useful)."""
    if SIMULATOR:
        return cuda.event()
    return cuda.event(timing=True)


def jit(fn=None, **kw):
    """``cuda.jit`` with graphdl's defaults: kernels are cached on disk where the binding can.
    GPU-only options (``max_registers``) are dropped under the simulator."""
    if SIMULATOR:
        kw.pop("max_registers", None)
    elif kw.get("max_registers"):
        kw["cache"] = False  # the disk cache's key does not include the register cap
    else:
        kw.pop("max_registers", None)
    kw.setdefault("cache", not SIMULATOR)
    if fn is None:
        return lambda f: cuda.jit(f, **kw)
    return cuda.jit(fn, **kw)


def device_function(fn, *, wraps: bool = False):
    """A device function (callable from kernels only; NVVM inlines the small ones).

    Under the simulator it is the plain Python function: the simulator's wrapper swaps
    module globals at every call, which made a fused loop ten times slower. So a device
    function must not use ``cuda.*`` itself (none does: they are scalar math).

    ``wraps``: ``fn`` relies on integer arithmetic wrapping modulo 2**64 (a hash). The
    simulator computes it on NumPy scalars, which wrap the same but warn, so there it runs
    with NumPy's overflow warnings off."""
    if SIMULATOR:
        if not wraps:
            return fn

        def quiet(*args):
            with np.errstate(over="ignore"):
                return fn(*args)

        return quiet
    return cuda.jit(fn, device=True)


def block_function(fn):
    """A device function that synchronises its block (it calls ``cuda.syncthreads``), such
    as a shared-memory tree: every thread of the block calls it, as every thread reaches a
    barrier.

    Under the simulator a plain function sees ``numba.cuda`` itself, not the running kernel's
    simulated module (the simulator swaps that in for the kernel's module only), and the
    simulator's own device wrapper swaps module globals unguarded while other threads run.
    So there it is a copy of ``fn`` (with its module's globals as they are now) whose
    ``cuda`` is the launch in progress."""
    if SIMULATOR:
        return types.FunctionType(fn.__code__, {**fn.__globals__, "cuda": _RunningLaunch()},
                                  fn.__name__, fn.__defaults__, fn.__closure__)
    return cuda.jit(fn, device=True)


def _source_has(fn, *markers: str) -> bool:
    """Whether the source of ``fn`` (a simulator function a patch below replaces) contains
    every marker: a patch applies only to the structure it was written against."""
    import inspect

    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        return False
    return all(m in text for m in markers)


def _patch_simulator_shared_arrays() -> None:
    """Make the simulator's ``cuda.shared.array`` thread-safe (and cheaper).

    The simulator gives the threads of a block one shared array per (file, line) with an
    unlocked check-then-insert, so two threads can each create their own "shared" array
    and a block's tree reduction then reads the wrong one (seen as a rare wrong loss in
    the tests). This replacement does the same lookup under a lock, keyed by the caller's
    frame instead of a full ``traceback.extract_stack``. Applied only when the installed
    simulator has the structure it replaces; otherwise the simulator is left as it is."""
    import threading

    try:
        from numba.cuda.simulator import kernelapi
    except ImportError:
        return
    cls = getattr(kernelapi, "FakeCUDAShared", None)
    if cls is None or getattr(cls, "_graphdl_locked", False):
        return
    original = cls.array
    if not _source_has(original, "_allocations", "extract_stack"):
        return
    lock = threading.Lock()

    def array(self, shape, dtype, *args, **kwargs):
        if (isinstance(shape, int) and shape == 0) or args or kwargs:
            return original(self, shape, dtype, *args, **kwargs)
        if not isinstance(dtype, np.dtype):
            try:
                dtype = np.dtype(dtype)
            except TypeError:
                dtype = np.dtype(str(dtype))
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                res = np.empty(shape, dtype)
                self._allocations[caller] = res
        return res

    cls.array = array
    cls._graphdl_locked = True


def _patch_simulator_array_attributes() -> None:
    """Make an array attribute (``a.dtype``, ``a.shape``) cheap in a simulated kernel.

    The simulator's in-kernel array looks every attribute up in ``dir()`` of the NumPy array
    it wraps, about 20 us a time; ``b.dtype.type(0)`` in a device function called per
    element made that half of a LeNet step. The replacement answers NumPy's own attributes
    (``dir(np.ndarray)``: what ``dir()`` of a plain array lists) from the array directly and
    leaves every other name to the simulator, so the values are the same. Applied only
    when the installed simulator has the structure it replaces."""
    try:
        from numba.cuda.simulator.cudadrv import devicearray
    except ImportError:
        return
    cls = getattr(devicearray, "FakeWithinKernelCUDAArray", None)
    fake = getattr(devicearray, "FakeCUDAArray", None)
    if cls is None or fake is None or getattr(cls, "_graphdl_fast_attrs", False):
        return
    original = cls.__getattr__
    if not _source_has(original, "dir(self._item._ary)"):
        return
    numpy_attrs = frozenset(dir(np.ndarray))

    def __getattr__(self, name):
        if name in numpy_attrs:
            value = getattr(self.__dict__["_item"]._ary, name)
            return cls(value) if isinstance(value, fake) else value
        return original(self, name)

    cls.__getattr__ = __getattr__
    cls._graphdl_fast_attrs = True


def _patch_simulator_block_manager() -> None:
    """Run a simulated block without the simulator's polling loop.

    The simulator's block manager spins in the launching thread, checking whether every
    thread of the block waits at a barrier, so the launching thread takes the GIL from
    the block's threads: half of the time of a one-thread block, a fifth of a four-thread
    one. Here ``syncthreads`` is a barrier over the block's live threads (a thread that
    returns leaves it, as the simulator's manager counts only live threads): the last
    thread to arrive releases the others, and the launching thread sleeps until the block
    is done or a thread raised. The threads, their indices and the order-free
    interleaving are the simulator's own (``BlockThread``); a thread's exception aborts
    the block as there (threads at a barrier raise "abort flag set") and is re-raised.
    Applied only when the installed simulator has the structure it replaces."""
    import threading

    try:
        from numba.cuda.simulator import kernel
    except ImportError:
        return
    thread_cls = getattr(kernel, "BlockThread", None)
    manager_cls = getattr(kernel, "BlockManager", None)
    fake_kernel = getattr(kernel, "FakeCUDAKernel", None)
    if (thread_cls is None or manager_cls is None or fake_kernel is None
            or getattr(manager_cls, "_graphdl_barrier", False)):
        return
    if not (_source_has(fake_kernel.__call__,
                        "BlockManager(self.fn, grid_dim, block_dim, self._debug)")
            and _source_has(manager_cls.run,
                            "BlockThread(target, self, grid_point, block_point, self._debug)")):
        return

    class Barrier:
        """The block's barrier: its live threads, how many wait, the round, the abort."""

        def __init__(self, threads: int):
            self.cond = threading.Condition()
            self.live = threads
            self.waiting = 0
            self.round = 0
            self.failed = None  # the first thread that raised

        def release(self) -> None:  # with cond held: every live thread waits
            self.waiting = 0
            self.round += 1
            self.cond.notify_all()

    class Thread(thread_cls):
        barrier: Barrier

        def run(self):
            try:
                super().run()  # the simulator's: an exception is kept in self.exception
            finally:
                b = self.barrier
                with b.cond:
                    b.live -= 1
                    if self.exception is not None and b.failed is None:
                        b.failed = self
                    elif b.waiting and b.waiting == b.live:
                        b.release()
                    b.cond.notify_all()  # the launching thread counts live threads

        def syncthreads(self):
            b = self.barrier
            with b.cond:
                if b.failed is not None:
                    raise RuntimeError("abort flag set on syncthreads call")
                b.waiting += 1
                if b.waiting == b.live:
                    b.release()
                else:
                    round_ = b.round
                    while round_ == b.round and b.failed is None:
                        b.cond.wait()
                if b.failed is not None:
                    raise RuntimeError("abort flag set on syncthreads clear")

    class Manager(manager_cls):
        _graphdl_barrier = True

        def run(self, grid_point, *args):
            points = list(np.ndindex(*self._block_dim))
            barrier = Barrier(len(points))
            threads = []
            for block_point in points:
                def target():
                    self._f(*args)

                t = Thread(target, self, grid_point, block_point, self._debug)
                t.barrier = barrier
                threads.append(t)
            for t in threads:
                t.start()
            with barrier.cond:
                while barrier.live and barrier.failed is None:
                    barrier.cond.wait()
                failed = barrier.failed
            if failed is not None:
                raise failed.exception[0].with_traceback(failed.exception[1])

    kernel.BlockManager = Manager


if SIMULATOR:
    from numba.cuda.simulator import kernel as _simulated_kernel

    _patch_simulator_shared_arrays()
    _patch_simulator_array_attributes()
    _patch_simulator_block_manager()

    class _RunningLaunch:
        """``cuda`` in a block function under the simulator: the simulated module of the
        launch in progress (the simulator runs one launch at a time)."""

        def __getattr__(self, name):
            return getattr(_simulated_kernel._get_kernel_context(), name)

    # The simulator's own block manager (where _patch_simulator_block_manager does not
    # apply) polls its threads while they wait at a barrier; with Python's default 5 ms
    # switch interval every syncthreads() costs about 5 ms there. With either manager the
    # short interval interleaves a block's threads finely (what can show a missing
    # barrier). A launch runs with it, restored afterwards, so nothing else sees it.
    _SIM_SWITCH_INTERVAL = 1e-4

    def configure(kernel, grid, block):
        """A callable that launches ``kernel`` with this configuration. The simulator's
        ``kernel[grid, block]`` sets state on the kernel object itself, so it is configured
        at every call there; on a GPU the configured launcher is made once and reused."""

        def launch(*args):
            old = sys.getswitchinterval()
            sys.setswitchinterval(_SIM_SWITCH_INTERVAL)
            try:
                kernel[grid, block](*args)
            finally:
                sys.setswitchinterval(old)

        return launch

else:

    def configure(kernel, grid, block):
        return kernel[grid, block]
