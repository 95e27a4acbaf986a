"""The kernel cache: generated source at a stable path named by a content hash.

Numba can only cache a function whose source is an importable file, and a new process
can only load that cache when the module is importable by the same name. So generated
source is written to ``<cache>/cpu/gdl_<hash>.py`` and imported as ``graphdl_gen.gdl_<hash>``
registered in ``sys.modules``. The hash covers the source itself plus everything the
compiled code depends on that the source does not show: the kernel library's and the ops'
source files (Numba does not notice when a callee in another file changes), the graphdl,
Numba and NumPy versions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import re
import sys
import types
from functools import cache
from pathlib import Path

import numpy as np

import graphdl

PACKAGE = "graphdl_gen"


def cache_dir() -> Path:
    """GRAPHDL_CACHE_DIR, else the user's cache folder (XDG_CACHE_HOME or ~/.cache)."""
    env = os.environ.get("GRAPHDL_CACHE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "graphdl"


@cache
def _toolchain_fingerprint() -> str:
    """Versions, the backend's own code (library and code generator) and the fast-math
    flags every kernel and helper is jitted with."""
    import numba

    from graphdl.ops.registry import FASTMATH

    h = hashlib.sha256()
    h.update(f"graphdl={graphdl.__version__};numba={numba.__version__};numpy={np.__version__}".encode())
    here = Path(__file__).parent
    for name in ("library.py", "codegen.py"):
        h.update((here / name).read_bytes())
    h.update(repr(sorted(FASTMATH)).encode())
    return h.hexdigest()


@cache
def _function_source(name: str) -> str:
    """Source of a library function as generated code names it: K.<kernel> or K.s_<op>."""
    from graphdl.ops.registry import all_ops, cpu_kernels

    kernels = cpu_kernels()
    if name in kernels:
        fn = kernels[name]
    elif name.startswith("s_") and name[2:] in all_ops():
        fn = all_ops()[name[2:]].scalar
    else:
        return f"<unknown {name}>"
    return _meaning(fn, set())


def _meaning(fn, seen: set) -> str:
    """A function's source, the module-level constants it reads and, recursively, the
    source of the jitted helpers it calls (`graphdl.ops.registry.cpu_helper`)."""
    seen.add(fn)
    try:
        text = inspect.getsource(fn)
    except OSError:
        text = fn.__qualname__
    parts = [text]
    for k in sorted(set(fn.__code__.co_names) & fn.__globals__.keys()):
        v = fn.__globals__[k]
        if isinstance(v, (int, float)):
            parts.append(f"{k}={v!r}")
        elif hasattr(v, "py_func") and v.py_func not in seen:  # a Numba dispatcher
            parts.append(_meaning(v.py_func, seen))
    return ";".join(parts)


def source_key(source: str) -> str:
    """Hash of the source and of every library function it calls: Numba's cache of the
    step function holds the callees' machine code, so a changed kernel must change the key
    (Numba itself only notices changes to the generated file)."""
    h = hashlib.sha256()
    h.update(_toolchain_fingerprint().encode())
    h.update(source.encode())
    for name in sorted(set(re.findall(r"\bK\.(\w+)", source))):
        h.update(name.encode())
        h.update(_function_source(name).encode())
    return h.hexdigest()[:20]


def load_generated(source: str) -> tuple[types.ModuleType, Path, bool]:
    """Write (if new) and import a generated CPU module; returns (module, path, was_cached).
    A module that calls a parallel kernel gets Numba's thread pool started first (see
    `graphdl.backends.cpu.library.start_thread_pool`)."""
    from graphdl.backends.cpu import library
    from graphdl.ops.registry import is_parallel_kernel

    if any(is_parallel_kernel(name) for name in set(re.findall(r"\bK\.(\w+)", source))):
        library.start_thread_pool()
    return import_generated(source, source_key(source), "cpu")


def import_generated(source: str, key: str, backend: str) -> tuple[types.ModuleType, Path, bool]:
    """Write ``source`` to ``<cache>/<backend>/gdl_<key>.py`` (atomically, if new) and import
    it as ``graphdl_gen.<backend>_<key>`` registered in sys.modules; shared by the backends."""
    directory = cache_dir() / backend
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"gdl_{key}.py"
    existed = path.exists()
    if not existed:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(source, encoding="utf-8")
        os.replace(tmp, path)
    modname = f"{PACKAGE}.gdl_{key}"
    if modname in sys.modules:
        return sys.modules[modname], path, True
    if PACKAGE not in sys.modules:
        pkg = types.ModuleType(PACKAGE)
        pkg.__path__ = []
        sys.modules[PACKAGE] = pkg
    if str(directory) not in sys.modules[PACKAGE].__path__:
        sys.modules[PACKAGE].__path__.append(str(directory))
    spec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    spec.loader.exec_module(module)
    return module, path, existed
