"""`graphdl run` end to end: the run directory, checkpoints, results, --epochs/--resume and
the full-budget accuracy of the shipped digits spec."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from e2e_helpers import DIGITS_SPEC, read_metrics, spec_file

import graphdl
from graphdl.runtime.checkpoint import load_checkpoint
from graphdl.spec import load_spec

PARAMS = {
    "dense_1.kernel",
    "dense_1.bias",
    "dense_2.kernel",
    "dense_2.bias",
    "dense_3.kernel",
    "dense_3.bias",
}


def test_run_exits_0_and_prints_the_test_metrics(trained_run):
    _spec, run_dir, rc, out = trained_run
    assert rc == 0
    assert "test: loss" in out and "accuracy" in out
    assert str(run_dir) in out


def test_run_directory_layout(trained_run):
    _, run_dir, rc, _ = trained_run
    assert rc == 0
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "spec.resolved.yaml",
        "metrics.jsonl",
        "best.ckpt",
        "last.ckpt",
        "results.json",
    } <= names
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".write_test")], names


def test_metrics_jsonl_has_one_record_per_epoch(trained_run):
    _, run_dir, _, _ = trained_run
    records = read_metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        for key in ("train_loss", "val_loss", "val_accuracy", "train_accuracy", "lr"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), (key, r)
        assert 0.0 <= r["val_accuracy"] <= 1.0
        assert r["lr"] == pytest.approx(1e-3)
    # two epochs of adam on digits: the loss goes down
    assert records[1]["train_loss"] < records[0]["train_loss"]
    assert records[1]["val_loss"] < records[0]["val_loss"]


def test_results_json(trained_run):
    _, run_dir, _, _ = trained_run
    results = json.loads((run_dir / "results.json").read_text())
    test = results["test"]
    assert set(test) == {"accuracy", "loss"}
    assert 0.5 < test["accuracy"] <= 1.0  # 2 epochs reach about 0.8
    assert 0.0 < test["loss"] < math.log(10)
    assert results["epochs_run"] == 2
    assert results["weights"] == "best"
    # to the end of the first training step: wall seconds from the command's start, and
    # the CPU seconds of the process by then (the compile work, every thread)
    assert results["seconds_to_first_step"] > 0 and results["cpu_seconds_to_first_step"] > 0


def test_resolved_spec_loads_as_the_same_model(trained_run):
    spec_path, run_dir, _, _ = trained_run
    original = load_spec(spec_path)
    resolved = load_spec(run_dir / "spec.resolved.yaml")
    assert resolved.name == original.name
    assert [(l.name, l.type) for l in resolved.model.layers] == [
        (l.name, l.type) for l in original.model.layers
    ]
    assert resolved.train["epochs"] == 2
    assert resolved.seed == original.seed


def test_checkpoints_hold_finite_params_and_progress(trained_run):
    _, run_dir, _, _ = trained_run
    last, meta = load_checkpoint(run_dir / "last.ckpt")
    assert meta["epoch"] == 2
    assert len(meta["history"]) == 2
    assert {k.partition("/")[2] for k in last if k.startswith("param/")} == PARAMS
    assert "state/opt.step" in last
    for k, v in last.items():
        if v.dtype.kind == "f":
            assert np.isfinite(v).all(), k
    _best, best_meta = load_checkpoint(run_dir / "best.ckpt")
    assert best_meta["best_epoch"] == 2  # the val loss fell in both epochs
    assert meta["preprocess"]  # the normalisation statistics travel with the weights


def test_run_dir_from_spec_checkpoint_dir(tmp_path, cli):
    run_dir = tmp_path / "from_spec"
    spec = spec_file(tmp_path, {"train.epochs": 1, "train.checkpoint.dir": str(run_dir)})
    rc, _out, err = cli("run", spec, "--no-progress")
    assert rc == 0, err
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1]
    assert (run_dir / "results.json").exists()


def test_epochs_flag_overrides_the_spec(tmp_path, cli):
    spec = spec_file(tmp_path, {"train.epochs": 5})
    rc, _, err = cli("run", spec, "--run-dir", tmp_path / "run", "--epochs", 1, "--no-progress")
    assert rc == 0, err
    assert len(read_metrics(tmp_path / "run")) == 1
    assert json.loads((tmp_path / "run" / "results.json").read_text())["epochs_run"] == 1


def test_cli_resume_continues_bit_for_bit(tmp_path, cli):
    """2 epochs, then `--resume --epochs 4`, equals 4 epochs in one go (dropout included)."""
    spec = spec_file(tmp_path, {"train.epochs": 4})
    rc, _, err = cli("run", spec, "--run-dir", tmp_path / "whole", "--no-progress")
    assert rc == 0, err
    rc, _, err = cli("run", spec, "--run-dir", tmp_path / "split", "--epochs", 2, "--no-progress")
    assert rc == 0, err
    assert len(read_metrics(tmp_path / "split")) == 2
    rc, _, err = cli(
        "run", spec, "--run-dir", tmp_path / "split", "--epochs", 4, "--resume", "--no-progress"
    )
    assert rc == 0, err
    whole, _ = load_checkpoint(tmp_path / "whole" / "last.ckpt")
    split, _ = load_checkpoint(tmp_path / "split" / "last.ckpt")
    assert set(whole) == set(split)
    for k in whole:
        assert np.array_equal(whole[k], split[k]), k
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert strip(read_metrics(tmp_path / "split")) == strip(read_metrics(tmp_path / "whole"))
    a = json.loads((tmp_path / "whole" / "results.json").read_text())
    b = json.loads((tmp_path / "split" / "results.json").read_text())
    assert a["test"] == b["test"]


def test_rerun_with_save_last_does_not_report_a_stale_best_ckpt(tmp_path, cli):
    run_dir = tmp_path / "run"
    one = spec_file(tmp_path, {"train.epochs": 1}, name="one.yaml")
    rc, _, err = cli("run", one, "--run-dir", run_dir, "--no-progress")
    assert rc == 0, err
    stale = json.loads((run_dir / "results.json").read_text())["test"]
    three = spec_file(
        tmp_path, {"train.epochs": 3, "train.checkpoint.save": "last"}, name="three.yaml"
    )
    rc, _, err = cli("run", three, "--run-dir", run_dir, "--no-progress")
    assert rc == 0, err
    results = json.loads((run_dir / "results.json").read_text())
    assert results["weights"] == "last"
    assert results["test"] != stale
    model = graphdl.load(three)
    model.load_weights(run_dir / "last.ckpt")
    assert results["test"] == model.evaluate("test")


def test_resume_without_checkpoint_is_E703(tmp_path, cli):
    spec = spec_file(tmp_path)
    rc, _, err = cli("run", spec, "--run-dir", tmp_path / "empty", "--resume", "--no-progress")
    assert rc == 2
    assert "[E703]" in err and "Traceback" not in err


def test_device_cuda_is_E701_at_the_device_line(tmp_path, cli, monkeypatch):
    import graphdl.backends.cuda as gcuda

    # as on a machine without a GPU, also where the tests run on one
    monkeypatch.setattr(gcuda, "cuda_usable", lambda **kw: (False, "no GPU in this test"))
    spec = spec_file(tmp_path, {"train.device": "cuda"})
    rc, _, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    assert rc == 2
    assert "[E701]" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.slow
def test_full_budget_digits_mlp_reaches_96_percent(tmp_path, cli):
    """The shipped spec, unmodified (30 epochs, early stopping): >= 0.96 test accuracy."""
    run_dir = tmp_path / "full"
    rc, _out, err = cli("run", DIGITS_SPEC, "--run-dir", run_dir, "--no-progress")
    assert rc == 0, err
    results = json.loads((run_dir / "results.json").read_text())
    assert results["test"]["accuracy"] >= 0.96, results
    records = read_metrics(run_dir)
    assert 1 <= len(records) <= 30
    assert records[-1]["val_accuracy"] >= 0.9
