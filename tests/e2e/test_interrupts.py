"""Ctrl-C in `graphdl run`: while the data loads, while kernels compile (also when Numba
swallows it and fails on its half-built function) and while training, it ends the command
with exit code 130 and one line, no traceback, and results.json says the run was
interrupted (the previous run's results never look current)."""

from __future__ import annotations

import json
import signal

import pytest
from e2e_helpers import spec_file

import graphdl.compiler
import graphdl.data
from graphdl.runtime.trainer import Trainer


def _results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture
def stale_run(tmp_path):
    """A run directory holding a previous run's results.json."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({"test": {"loss": 0.1}, "epochs_run": 30}))
    return run_dir


def _interrupted(rc, err, run_dir, stage: str, message: str) -> dict:
    assert rc == 130, err
    assert err.strip().splitlines() == [message], err
    results = _results(run_dir)
    assert results["status"] == "interrupted" and results["stage"] == stage, results
    assert "test" not in results
    return results


def test_ctrl_c_while_compiling(tmp_path, cli, monkeypatch, stale_run):
    def compile_spec(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(graphdl.compiler, "compile_spec", compile_spec)
    spec = spec_file(tmp_path, {"train.epochs": 5})
    rc, _out, err = cli("run", spec, "--run-dir", stale_run, "--epochs", 1, "--no-progress")
    results = _interrupted(rc, err, stale_run, "compiling",
                           f"interrupted while compiling, before training (run directory {stale_run})")
    assert results["epochs_run"] == 0
    assert results["overrides"] == {"train.epochs": 1}


def test_ctrl_c_that_numba_swallows_is_still_an_interrupt(tmp_path, cli, monkeypatch, stale_run):
    """Numba compiles through ctypes callbacks: a KeyboardInterrupt raised in one is dropped
    and Numba fails next with RuntimeError ("no compiled object yet")."""

    def compile_spec(*args, **kwargs):
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass  # what a ctypes callback does with it
        raise RuntimeError("no compiled object yet for <Library 'step'>")

    monkeypatch.setattr(graphdl.compiler, "compile_spec", compile_spec)
    rc, _out, err = cli("run", spec_file(tmp_path), "--run-dir", stale_run, "--no-progress")
    _interrupted(rc, err, stale_run, "compiling",
                 f"interrupted while compiling, before training (run directory {stale_run})")
    assert "RuntimeError" not in err and "Traceback" not in err


def test_ctrl_c_while_loading_the_data(tmp_path, cli, monkeypatch, stale_run):
    def load_data(spec):
        raise KeyboardInterrupt

    monkeypatch.setattr(graphdl.data, "load_data", load_data)
    rc, _out, err = cli("run", spec_file(tmp_path), "--run-dir", stale_run, "--no-progress")
    _interrupted(rc, err, stale_run, "loading the data",
                 f"interrupted while loading the data, before training (run directory {stale_run})")


def test_ctrl_c_while_training_then_resume(tmp_path, cli, monkeypatch, stale_run):
    bar = Trainer._bar

    def ctrl_c_in_epoch_2(self, epoch, total):
        if epoch == 1:
            raise KeyboardInterrupt
        return bar(self, epoch, total)

    monkeypatch.setattr(Trainer, "_bar", ctrl_c_in_epoch_2)
    spec = spec_file(tmp_path, {"train.epochs": 3})
    rc, _out, err = cli("run", spec, "--run-dir", stale_run, "--no-progress")
    results = _interrupted(
        rc, err, stale_run, "training",
        f"interrupted in epoch 2 of 3: {stale_run / 'last.ckpt'} holds epoch 1 (continue with --resume)")
    assert results["epochs_run"] == 1
    monkeypatch.setattr(Trainer, "_bar", bar)
    rc, _out, err = cli("run", spec, "--run-dir", stale_run, "--resume", "--no-progress")
    assert rc == 0, err
    results = _results(stale_run)
    assert results["status"] == "complete" and results["epochs_run"] == 3
    assert results["overrides"] == {}


def test_results_record_the_epochs_override(tmp_path, cli):
    spec = spec_file(tmp_path, {"train.epochs": 5})
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--epochs", 1, "--no-progress")
    assert rc == 0, err
    results = _results(tmp_path / "run")
    assert results["status"] == "complete"
    assert results["overrides"] == {"train.epochs": 1} and results["epochs_run"] == 1
