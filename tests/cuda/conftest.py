"""The CUDA tests pick their device before numba.cuda is first imported.

- NUMBA_ENABLE_CUDASIM set in the environment: honoured (1: the simulator; 0: a real GPU,
  and the tests are skipped, saying why, when there is none).
- Not set: a real GPU when one is usable (checked in a subprocess, only where an NVIDIA
  driver is loaded, so this process can still choose the simulator), else the simulator,
  so a plain ``python -m pytest`` runs these tests everywhere.

The simulator only changes numba.cuda. The variable is set just while numba.cuda is
imported and removed again afterwards (when this file set it), so the rest of the session,
its subprocesses and graphdl's device selection (`resolve_device`: the simulator only when
the variable asks for it) behave as if it had never been set.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_REASON = ""


def _gpu_usable_in_subprocess() -> bool:
    if sys.platform.startswith("linux") and not (
        os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia")
    ):
        return False
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    try:
        out = subprocess.run(
            [sys.executable, "-c", "from numba import cuda; print(cuda.is_available())"],
            env=env, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.stdout.strip().endswith("True")


def _select() -> None:
    global _REASON
    requested = os.environ.get("NUMBA_ENABLE_CUDASIM")
    set_here = False
    if requested is None and "numba.cuda" not in sys.modules and not _gpu_usable_in_subprocess():
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        set_here = True
    try:
        from graphdl.backends.cuda import device
    except Exception as e:  # noqa: BLE001
        _REASON = f"numba.cuda cannot be imported: {type(e).__name__}: {e}"
        return
    finally:
        if set_here:
            del os.environ["NUMBA_ENABLE_CUDASIM"]
    if not device.is_available():
        if requested is None and "numba.cuda" in sys.modules and not device.SIMULATOR:
            _REASON = ("numba.cuda was imported (for a real GPU) before tests/cuda/conftest.py "
                       "could select the CUDA simulator, and there is no usable GPU: run with "
                       "NUMBA_ENABLE_CUDASIM=1")
        else:
            _REASON = (f"no usable CUDA GPU (NUMBA_ENABLE_CUDASIM={requested}): "
                       f"{device.unavailable_reason()}")


_select()

# Every (kernel, argument types) launched in this session, for test_cuda_ptx.py: under the
# simulator nothing is compiled for a GPU, so that test compiles them all with NVVM.
LAUNCHED: dict[tuple, list] = {}


def _describe(arg):
    if hasattr(arg, "copy_to_host") and hasattr(arg, "ndim"):
        c = bool(arg.flags["C_CONTIGUOUS"]) if hasattr(arg, "flags") else True
        return ["array", str(arg.dtype), int(arg.ndim), "C" if c else "A"]
    if isinstance(arg, bool):
        return ["scalar", "boolean"]
    if isinstance(arg, int):
        return ["scalar", "int64"]
    if isinstance(arg, float):
        return ["scalar", "float64"]
    if isinstance(arg, tuple):
        return ["tuple", len(arg)]
    return ["unknown", type(arg).__name__]


def _install_recorder() -> None:
    if _REASON:
        return
    from graphdl.backends.cuda import device

    if not device.SIMULATOR or getattr(device.configure, "_recording", False):
        return
    configure = device.configure

    def recording(kernel, grid, block):
        launch = configure(kernel, grid, block)
        fn = getattr(kernel, "py_func", None) or getattr(kernel, "fn", None)

        def call(*args):
            if fn is not None:
                key = (fn.__code__.co_filename, fn.__qualname__, tuple(map(str, map(_describe, args))))
                LAUNCHED.setdefault(key, [_describe(a) for a in args])
            return launch(*args)

        return call

    recording._recording = True
    device.configure = recording


_install_recorder()


def pytest_collection_modifyitems(config, items):
    if not _REASON:
        return
    skip = pytest.mark.skip(reason=_REASON)
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cuda_device():
    """The device the CUDA tests run on (module `graphdl.backends.cuda.device`)."""
    from graphdl.backends.cuda import device

    return device


@pytest.fixture(scope="session")
def launched_kernels():
    """{(file, qualname, arg descriptions): [arg descriptions]} of every launch so far."""
    return LAUNCHED
