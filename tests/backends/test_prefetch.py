"""The compile helper (graphdl/backends/cpu/prefetch.py): the calls it records are the ones
the step compiles (same dispatchers, same argument types), and its process compiles them
into the kernel cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from graphdl.api import load
from graphdl.backends.common.program import dummy_feeds
from graphdl.backends.cpu import prefetch

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "mlp_digits.yaml"


def test_the_test_suite_runs_no_helper():
    assert not prefetch.wanted()  # tests/conftest.py: the workers use every core already


def test_recorded_calls_are_the_signatures_the_step_compiles():
    program = load(SPEC).compiled("train").program  # compiled (or loaded) and warmed up
    program.bind_params(*program.scratch_params())
    calls = prefetch.record_calls(program.module, program.step_args(dummy_feeds(program, 1)))
    names = {getattr(d, "__name__", "") for d, _ in calls}
    assert {"softmax_ce_fwd", "softmax_ce_bwd", "adam_multi"} <= names
    kernels = [(d, sig) for d, sig in calls if d.py_func.__module__.startswith("graphdl.ops")]
    assert kernels
    checked = 0
    for dispatcher, sig in calls:
        # the step compiled exactly these types; a small callee of a step loaded from the
        # cache has none of its own (its code is inside the step's), a large one is loaded
        # with the step (graphdl.backends.cpu.linking)
        if dispatcher.signatures:
            assert sig in [tuple(s) for s in dispatcher.signatures], (dispatcher, sig)
            checked += 1
    assert checked >= 3


def test_the_helper_process_fills_the_kernel_cache(tmp_path, monkeypatch):
    program = load(SPEC).compiled("train", warmup=False).program
    monkeypatch.setenv("GRAPHDL_COMPILE_HELPER", "1")
    monkeypatch.setenv("GRAPHDL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    helper = prefetch.start(program)
    assert helper is not None
    assert helper.wait(timeout=600) == 0
    scratch = Path(helper.graphdl_scratch)
    assert scratch.is_file()
    prefetch.stop(helper)
    assert not scratch.exists()
    cached = {p.name.split(".")[1].split("-")[0] for p in tmp_path.rglob("*.nbi")}
    assert {"softmax_ce_fwd", "softmax_ce_bwd", "adam_multi"} <= cached, sorted(cached)


def test_graphdl_run_with_the_helper_trains_and_leaves_no_process(tmp_path):
    env = dict(os.environ, GRAPHDL_CACHE_DIR=str(tmp_path / "cache"),
               NUMBA_CACHE_DIR=str(tmp_path / "cache" / "numba"), GRAPHDL_COMPILE_HELPER="1")
    done = subprocess.run([sys.executable, "-m", "graphdl.cli", "run", str(SPEC), "--epochs", "1",
                           "--run-dir", str(tmp_path / "run"), "--no-progress"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "results.json").is_file()
    helpers = subprocess.run(["pgrep", "-f", f"prefetch {tmp_path}"], capture_output=True,
                             text=True, check=False)
    assert helpers.stdout.strip() == ""
