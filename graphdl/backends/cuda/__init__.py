"""The CUDA backend: numba.cuda kernels, their code generator and the device-resident program.

- `device`: the one module that imports CUDA (``cuda``, `is_available`, `device_name`);
- `registry`: CUDA emitters and kernels per op (kernels live in graphdl/backends/cuda/kernels/);
- `codegen`: planned graph -> generated module (kernels + ``setup``/``run`` driver);
- `cache`: generated source written by content hash under the cache directory;
- `program`: `CudaProgram`, the `Program` interface with buffers kept on the device.

Importing this package imports no CUDA; `resolve_device` decides a spec's device, and
`compile_target` what `graphdl compile --device cuda` compiles for.
"""

from __future__ import annotations

import os
import sys


def _no_driver_here() -> bool:
    """A quick look, without importing CUDA: Linux with no NVIDIA driver loaded."""
    return sys.platform.startswith("linux") and not (
        os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia"))


def simulator_requested() -> bool:
    """Whether NUMBA_ENABLE_CUDASIM asks for the CUDA simulator (now, in this process)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def cuda_usable(*, allow_simulator: bool = True) -> tuple[bool, str]:
    """(usable, why not): whether CUDA kernels can run here: a GPU, or the simulator when
    NUMBA_ENABLE_CUDASIM=1 asks for it and ``allow_simulator``."""
    sim = simulator_requested()
    if sim and not allow_simulator:
        return False, "NUMBA_ENABLE_CUDASIM is set: the CUDA simulator is for tests only"
    if not sim and _no_driver_here():
        return False, "no NVIDIA driver is loaded on this machine"
    try:
        from graphdl.backends.cuda import device
    except Exception as e:  # noqa: BLE001  (no numba.cuda at all, a broken binding)
        return False, f"numba.cuda cannot be imported ({type(e).__name__}: {e})"
    if device.SIMULATOR and not sim:
        return False, "numba.cuda was loaded as the CUDA simulator in this process"
    if device.is_available():
        return True, ""
    return False, device.unavailable_reason()


def resolve_device(requested: str | None, *, loc=None) -> tuple[str, str]:
    """The device a run uses for ``requested`` (auto | cpu | cuda; None means auto), and a
    one-line note saying what was chosen and why. Raises GraphdlError E701 when cuda is
    asked for and cannot be used (located at ``loc``, the spec's train.device, if given).

    auto takes a real GPU only, never the simulator; an explicit cuda runs on the
    simulator only while NUMBA_ENABLE_CUDASIM=1 asks for it (tests)."""
    from graphdl.errors import Diagnostic, GraphdlError

    requested = requested or "auto"
    if requested == "cpu":
        return "cpu", "device: cpu"
    ok, why = cuda_usable(allow_simulator=requested == "cuda")
    if ok:
        from graphdl.backends.cuda.device import device_name

        return "cuda", f"device: cuda ({device_name()})"
    if requested == "cuda":
        raise GraphdlError(Diagnostic(
            "E701", f"device 'cuda' is not available: {why}",
            file=getattr(loc, "file", None), line=getattr(loc, "line", None),
            col=getattr(loc, "col", None),
            help="use device: cpu (or auto), or install the CUDA extra on a machine with an "
                 "NVIDIA GPU: pip install 'graphdl[cuda]'"), phase="runtime")
    return "cpu", f"device: cpu (auto: no usable CUDA GPU: {why})"


def compile_target() -> tuple[bool, str]:
    """(simulated, note): what `graphdl compile --device cuda` compiles for.

    A usable GPU: the kernels are compiled by a warm-up call, as a run would. A machine
    with no NVIDIA driver (or NUMBA_ENABLE_CUDASIM=1) gets the CUDA simulator, chosen here
    before numba.cuda is first imported: the kernels are generated, checked (E708) and
    loaded, and every launch is configured, but nothing runs (the simulator would run them
    as Python) and nothing is compiled for a GPU. Raises GraphdlError E701 where a driver
    is loaded but no GPU can be used."""
    from graphdl.errors import Diagnostic, GraphdlError

    if "numba.cuda" not in sys.modules and (simulator_requested() or _no_driver_here()):
        import numba

        numba.config.ENABLE_CUDASIM = 1  # numba.cuda reads it when it is first imported
    try:
        from graphdl.backends.cuda import device
    except Exception as e:  # noqa: BLE001  (no numba.cuda at all, a broken binding)
        why = f"numba.cuda cannot be imported ({type(e).__name__}: {e})"
        device = None
    if device is not None and device.SIMULATOR:
        return True, ("device: cuda (CUDA simulator: no GPU here; kernels generated and launches "
                      "configured, nothing compiled for a GPU or run)")
    if device is not None:
        ok, why = cuda_usable(allow_simulator=False)
        if ok:
            return False, f"device: cuda ({device.device_name()})"
    raise GraphdlError(Diagnostic(
        "E701", f"cannot compile for device 'cuda': {why}",
        help="run on a machine with an NVIDIA GPU and graphdl[cuda], or on one without an "
             "NVIDIA driver (the CUDA simulator checks and generates the kernels)"),
        phase="runtime")
