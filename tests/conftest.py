"""Test-wide setup: the kernel cache folder, and cross-checks that may not skip in CI.

Generated kernels are cached under the repository's .graphdl_cache: this runs at import
time, before any test module imports graphdl and compiles a program, so every compiled
kernel of the test-suite lands in (and is reused from) one folder that survives between
runs (delete it to measure a cold run).

The cross-checks against PyTorch and scikit-learn, and the TensorBoard test (tensorboardX),
`pytest.importorskip` them, so a plain checkout without the test extra still runs the rest.
In CI (``CI=true``, as CI services set it) the test extra is installed, and a test skipped
because one of them cannot be imported is reported as a failure: a check that silently
stopped running is a bug.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

os.environ.setdefault(
    "GRAPHDL_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".graphdl_cache")
)
# no second compile process beside a cold compile (graphdl.backends.cpu.prefetch): the
# suite's workers keep every core busy already
os.environ["GRAPHDL_COMPILE_HELPER"] = "0"

# the libraries the cross-checks compare against, and the TensorBoard writer (the test
# extra in pyproject.toml)
CROSS_CHECK_MODULES = ("torch", "sklearn", "tensorboardX")
_IMPORTORSKIP = re.compile(r"could not import '([\w.]+)'")


def _must_not_skip(reason: str) -> bool:
    """Whether a skip with this reason is a cross-check that must run: in CI, and skipped
    by `pytest.importorskip` of a cross-check library."""
    if os.environ.get("CI", "").lower() not in ("true", "1"):
        return False
    missing = _IMPORTORSKIP.search(reason)
    return bool(missing) and missing.group(1).split(".")[0] in CROSS_CHECK_MODULES


def _fail(report, reason: str) -> None:
    report.outcome = "failed"
    report.longrepr = (f"{reason}\nCI=true: this cross-check must run, not skip; the test "
                       "extra installs what it needs (pip install -e '.[test]')")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    skip = call.excinfo.value if call.excinfo is not None else None
    if report.skipped and isinstance(skip, pytest.skip.Exception) and _must_not_skip(str(skip)):
        _fail(report, str(skip))
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    # an importorskip at module level skips the whole module while it is collected
    report = yield
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if _must_not_skip(reason):
            _fail(report, reason)
    return report


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`-n auto --dist loadgroup`, the README's test command) a test
    module runs whole on one worker, so its module-scoped fixtures (compiled programs)
    are built once; the CUDA tests share one worker, because test_cuda_ptx.py compiles
    every kernel the other CUDA tests launched in that process."""
    here = Path(__file__).resolve().parent
    for item in items:
        path = Path(str(item.fspath)).resolve()
        group = "cuda" if (here / "cuda") in path.parents else str(path.relative_to(here))
        item.add_marker(pytest.mark.xdist_group(group))
