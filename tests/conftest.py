"""Test-wide setup: generated kernels are cached under the repository's .graphdl_cache.

This runs at import time, before any test module imports graphdl and compiles a program,
so every compiled kernel of the test-suite lands in (and is reused from) one folder that
survives between runs (delete it to measure a cold run).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault(
    "GRAPHDL_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".graphdl_cache")
)
