"""The CPU backend: Numba code generation, the kernel library and the on-disk cache.

Numba's own cache (compiled machine code) goes under graphdl's cache directory too,
unless NUMBA_CACHE_DIR is set: one folder holds everything a run compiled. This must
happen before numba is first imported, which is why it lives here.
"""

import os

if "NUMBA_CACHE_DIR" not in os.environ:
    from graphdl.backends.cpu.cache import cache_dir

    os.environ["NUMBA_CACHE_DIR"] = str(cache_dir() / "numba")
