"""The CUDA kernel cache: generated source at a stable path named by a content hash.

As for the CPU (graphdl/backends/cpu/cache.py, whose notes apply): the source is written
to ``<cache>/cuda/gdl_<hash>.py`` and imported as ``graphdl_gen.gdl_<hash>``
registered in ``sys.modules``, so numba-cuda's on-disk cache of the generated kernels
(``cache=True``) is found again by a new process. The hash covers the code (the source
less its header docstring), the scalar
functions it calls (``K.s_<op>``), every file of the CUDA backend and of the CUDA kernel
modules (the launch constants and library kernels the source does not show), and the
graphdl, Numba, numba-cuda and NumPy versions.
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
from graphdl.version import __version__


@cache
def _toolchain_fingerprint() -> str:
    import numba

    from graphdl.backends.cuda import device

    here = Path(__file__).parent
    return toolchain_fingerprint(
        f"graphdl={__version__};numba={numba.__version__};numpy={np.__version__};"
        f"cuda={device.IMPLEMENTATION};sim={device.SIMULATOR}",
        sorted(here.glob("*.py")) + sorted((here / "kernels").glob("*.py")),
    )


def source_key(source: str) -> str:
    """The key of a generated CUDA module: of the functions it calls only the scalar
    functions (``K.s_<op>``) count; the library kernels are covered by the fingerprint.
    The header docstring does not (`code_of`)."""
    code = code_of(source)
    return content_key(_toolchain_fingerprint(), code, re.findall(r"\bK\.(s_\w+)", code))


def load_generated(source: str) -> tuple[types.ModuleType, Path, bool]:
    """Write (if new) and import a generated CUDA module; returns (module, path, was_cached)."""
    return import_generated(source, source_key(source), "cuda")
