"""The CPU kernel cache key: generated source (written and imported by
`graphdl.backends.common.cache`) is named by a hash of the code (the source less its
header docstring) plus everything the compiled code depends on that the source does not
show: the kernel library's and the ops' source (Numba does not notice when a callee in
another file changes), the graphdl, Numba and NumPy versions.
"""

from __future__ import annotations

import re
import types
from functools import cache
from pathlib import Path

import numpy as np

from graphdl.backends.common.cache import (
    code_of,
    content_key,
    import_generated,
    toolchain_fingerprint,
)
from graphdl.backends.cpu import library
from graphdl.ops.registry import is_parallel_kernel
from graphdl.version import __version__


@cache
def _toolchain_fingerprint() -> str:
    """Versions, the backend's own code (library and code generator) and the fast-math
    flags every kernel and helper is jitted with."""
    import numba

    here = Path(__file__).parent
    return toolchain_fingerprint(
        f"graphdl={__version__};numba={numba.__version__};numpy={np.__version__}",
        [here / "library.py", here / "codegen.py", here.parent / "common" / "codegen.py"],
        repr(sorted(library.FASTMATH)),
    )


def source_key(source: str) -> str:
    """The key of a generated CPU module: every library function it calls (``K.<kernel>``,
    ``K.s_<op>``) counts, since Numba's cache of the step holds their machine code. The
    header docstring does not (`code_of`)."""
    code = code_of(source)
    return content_key(_toolchain_fingerprint(), code, re.findall(r"\bK\.(\w+)", code))


def load_generated(source: str) -> tuple[types.ModuleType, Path, bool]:
    """Write (if new) and import a generated CPU module; returns (module, path, was_cached).
    A module that calls a parallel kernel gets Numba's thread pool started first (see
    `graphdl.backends.cpu.library.start_thread_pool`)."""
    if any(is_parallel_kernel(name) for name in set(re.findall(r"\bK\.(\w+)", source))):
        library.start_thread_pool()
    return import_generated(source, source_key(source), "cpu")
