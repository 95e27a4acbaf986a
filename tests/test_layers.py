"""The package layers (ARCHITECTURE.md, "Package layers") and imports without side effects."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    """`lint-imports` checks the contracts in pyproject.toml, imports inside functions
    included: no subpackage of graphdl reaches a layer above it, directly or in a cycle."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    out = subprocess.run([exe, "--no-cache"], check=False, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_a_function_level_import_upwards_breaks_the_contract(tmp_path):
    """The contract counts an import hidden inside a function: a copy of the package with
    one such import in graphdl/ir fails it."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "graphdl", copy / "graphdl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    with open(copy / "graphdl" / "ir" / "types.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _probe():\n    from graphdl.compiler import compile_graph  # noqa: F401\n")
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    env = {"PYTHONPATH": str(copy), "PATH": str(Path(sys.executable).parent)}
    out = subprocess.run([exe, "--no-cache"], check=False, cwd=copy, capture_output=True, text=True, env=env)
    assert out.returncode != 0
    assert "graphdl.ir.types -> graphdl.compiler" in out.stdout


def test_importing_graphdl_has_no_side_effects():
    """Importing any module (CUDA kernel modules aside: they import CUDA) registers
    definitions and nothing else: no environment variable changes, Numba is not imported
    (the backends set up Numba's cache, threads and BLAS when a kernel library is loaded)."""
    code = (
        "import importlib, os, pkgutil, sys\n"
        "import graphdl\n"
        "before = dict(os.environ)\n"
        "names = [m.name for m in pkgutil.walk_packages(graphdl.__path__, 'graphdl.')\n"
        "         if '.cuda.' not in m.name]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "assert len(names) > 50, names\n"
        "assert dict(os.environ) == before, set(os.environ) ^ set(before)\n"
        "assert 'numba' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
