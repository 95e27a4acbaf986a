"""Fixtures for the end-to-end tests (helpers for specs live in e2e_helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# tests/conftest.py sets the same; keep the kernel cache inside the repository either way
os.environ.setdefault(
    "GRAPHDL_CACHE_DIR", str(Path(__file__).resolve().parents[2] / ".graphdl_cache")
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: takes seconds, not milliseconds (full training, cold compile)"
    )


@pytest.fixture
def cli(capsys):
    """cli(*argv) -> (exit code, stdout, stderr), running graphdl.cli.main in-process."""
    from graphdl.cli import main

    def run(*argv):
        capsys.readouterr()  # drop anything printed before
        rc = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One `graphdl run` of a 2-epoch digits MLP, shared by the tests that only read it:
    (spec path, run dir, exit code, stdout)."""
    import contextlib
    import io

    from e2e_helpers import spec_file

    from graphdl.cli import main

    d = tmp_path_factory.mktemp("trained")
    spec = spec_file(d, {"train.epochs": 2})
    run_dir = d / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["run", str(spec), "--run-dir", str(run_dir), "--no-progress"])
    return spec, run_dir, rc, out.getvalue()
