"""The CPU backend: Numba code generation, the kernel library and the on-disk cache.

Numba's own cache (compiled machine code) goes under graphdl's cache directory too,
unless NUMBA_CACHE_DIR is set: one folder holds everything a run compiled. This must
happen before Numba decides where a function caches (when it is jitted, and before numba
is first imported for the environment variable to count), which is why it lives here and
why `graphdl.ops.registry.cpu_helper` imports this package first.

The folder is named by a fingerprint of the files that hold the flags and constants every
kernel is compiled with (`library.py`: Numba's parallel options; `ops/registry.py`:
fast-math flags, PAR_BLOCKS). Numba invalidates a cached function only when its own source
file changes, so without the fingerprint a change of those would keep serving kernels
compiled with the old ones.
"""

import hashlib
import os
import sys
from pathlib import Path


def numba_cache_dir(base: Path, files: tuple[Path, ...]) -> Path:
    """``base/numba/<fingerprint of files>``."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return base / "numba" / h.hexdigest()[:12]


if "NUMBA_CACHE_DIR" not in os.environ:
    from graphdl.backends.cpu.cache import cache_dir

    _here = Path(__file__).resolve().parent
    os.environ["NUMBA_CACHE_DIR"] = str(
        numba_cache_dir(cache_dir(), (_here / "library.py", _here.parents[1] / "ops" / "registry.py"))
    )
    if "numba" in sys.modules:  # imported first by someone else: its config is already read
        sys.modules["numba"].config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
