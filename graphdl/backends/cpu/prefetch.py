"""A second process compiles a cold program's kernels from the other end.

Numba compiles on one thread, under one lock: a cold LeNet training program is ~18 s of
one core while the machine's other core idles. When a program's kernels are not in the
cache, `start` launches ``python -m graphdl.backends.cpu.prefetch`` with the generated
module and the step's arguments (zeros of the real shapes, in a scratch .npz). That process runs the step's
Python source once with every kernel and generated function replaced by a recorder, which
notes the argument types of each call (the types Numba infers inside the step: the same
arrays, views and scalars), then compiles the recorded calls *last first*, each into
Numba's disk cache. The main process compiles the step as usual, first kernel first;
each kernel it reaches is loaded from the cache if the helper got there first. They meet
in the middle; the main process then kills the helper (`stop`).

The helper never changes what runs: a kernel compiled by either process is the same
code, and a recorded type that does not match the step's only wastes the helper's time.
It is used only with two or more cores, and not when GRAPHDL_COMPILE_HELPER=0 (the test
suite sets it: its workers already keep every core busy).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

from graphdl.backends.cpu import fpenv


def wanted() -> bool:
    return os.environ.get("GRAPHDL_COMPILE_HELPER", "1") != "0" and (os.cpu_count() or 1) >= 2


def start(program) -> subprocess.Popen | None:
    """Launch the helper for ``program`` (a cold CPU `Program`), or None if not wanted."""
    if not wanted():
        return None
    from graphdl.backends.common.program import dummy_feeds

    fd, path = tempfile.mkstemp(suffix=".npz", prefix="graphdl-prefetch-")
    with program.scratch_binding(), os.fdopen(fd, "wb") as f:
        np.savez(f, *[np.asarray(a) for a in program.step_args(dummy_feeds(program, 1))])
    helper = subprocess.Popen(
        [sys.executable, "-m", "graphdl.backends.cpu.prefetch", str(program.source_path), path],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, GRAPHDL_COMPILE_HELPER="0"))
    helper.graphdl_scratch = path
    return helper


def stop(helper: subprocess.Popen | None) -> None:
    if helper is None:
        return
    if helper.poll() is None:
        helper.kill()
    helper.wait()
    Path(helper.graphdl_scratch).unlink(missing_ok=True)


def record_calls(module: types.ModuleType, args: list) -> list[tuple[object, tuple]]:
    """The (dispatcher, argument types) of every jitted call ``module.step`` makes, in
    order, found by running its Python source with each call recorded instead of run
    (NumPy code between the calls runs as written). A call whose result the step then
    uses ends the record (kernels write their outputs in place; few return anything)."""
    from numba import typeof
    from numba.core.dispatcher import Dispatcher

    calls: list = []

    def recorder(dispatcher):
        def record(*a):
            calls.append((dispatcher, tuple(typeof(x) for x in a)))
        return record

    lib = module.K
    fake_k = types.SimpleNamespace(**{
        name: recorder(v) if isinstance(v, Dispatcher) else v for name, v in vars(lib).items()})
    scope = {name: recorder(v) if isinstance(v, Dispatcher) else v
             for name, v in vars(module).items()}
    scope["K"] = fake_k
    scope.update(fpenv.python_standins(run=False))  # intrinsics: not jitted calls
    step = module.step.py_func
    fn = types.FunctionType(step.__code__, scope, step.__name__, step.__defaults__)
    with contextlib.suppress(Exception):  # a result the step used: what was recorded stands
        fn(*args)
    return calls


def main(argv: list[str]) -> int:
    from graphdl.backends.cpu.cache import load_generated
    from graphdl.backends.cpu.library import load_library

    source_path, args_path = argv
    load_library()
    module, _, _ = load_generated(Path(source_path).read_text(encoding="utf-8"))
    with np.load(args_path) as data:
        args = [data[f"arr_{i}"] for i in range(len(data.files))]
    seen = set()
    for dispatcher, sig in reversed(record_calls(module, args)):
        if (id(dispatcher), sig) not in seen:
            seen.add((id(dispatcher), sig))
            dispatcher.compile(sig)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
