"""The CPU kernel cache key: generated source (written and imported by
`graphdl.backends.common.cache`) is named by a hash of the source plus everything the
compiled code depends on that the source does not show: the kernel library's and the
ops' source (Numba does not notice when a callee in another file changes), the graphdl,
Numba and NumPy versions.
"""

from __future__ import annotations

import hashlib
import re
import types
from functools import cache
from pathlib import Path

import numpy as np

from graphdl.backends.common.cache import function_source, import_generated
from graphdl.backends.cpu import library
from graphdl.ops.registry import is_parallel_kernel
from graphdl.version import __version__


@cache
def _toolchain_fingerprint() -> str:
    """Versions, the backend's own code (library and code generator) and the fast-math
    flags every kernel and helper is jitted with."""
    import numba

    h = hashlib.sha256()
    h.update(f"graphdl={__version__};numba={numba.__version__};numpy={np.__version__}".encode())
    here = Path(__file__).parent
    for path in (here / "library.py", here / "codegen.py", here.parent / "common" / "codegen.py"):
        h.update(path.read_bytes())
    h.update(repr(sorted(library.FASTMATH)).encode())
    return h.hexdigest()


def source_key(source: str) -> str:
    """Hash of the source and of every library function it calls: Numba's cache of the
    step function holds the callees' machine code, so a changed kernel must change the key
    (Numba itself only notices changes to the generated file)."""
    h = hashlib.sha256()
    h.update(_toolchain_fingerprint().encode())
    h.update(source.encode())
    for name in sorted(set(re.findall(r"\bK\.(\w+)", source))):
        h.update(name.encode())
        h.update(function_source(name).encode())
    return h.hexdigest()[:20]


def load_generated(source: str) -> tuple[types.ModuleType, Path, bool]:
    """Write (if new) and import a generated CPU module; returns (module, path, was_cached).
    A module that calls a parallel kernel gets Numba's thread pool started first (see
    `graphdl.backends.cpu.library.start_thread_pool`)."""
    if any(is_parallel_kernel(name) for name in set(re.findall(r"\bK\.(\w+)", source))):
        library.start_thread_pool()
    return import_generated(source, source_key(source), "cpu")


