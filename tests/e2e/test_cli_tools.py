"""`graphdl gradcheck | bench | predict | validate | schema` end to end."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from e2e_helpers import DIGITS_SPEC

import graphdl

PARAMS = [
    "dense_1.kernel",
    "dense_1.bias",
    "dense_2.kernel",
    "dense_2.bias",
    "dense_3.kernel",
    "dense_3.bias",
]


# ------------------------------------------------------------------ gradcheck


def _gradcheck_report(out: str) -> dict[str, float]:
    report = {}
    for line in out.splitlines():
        m = re.match(r"^(\S+)\s+max rel error ([0-9.e+-]+)$", line)
        if m:
            report[m.group(1)] = float(m.group(2))
    return report


def test_gradcheck_reports_every_parameter(cli):
    rc, out, err = cli("gradcheck", DIGITS_SPEC)
    assert rc in (0, 1), err
    report = _gradcheck_report(out)
    assert sorted(report) == sorted(PARAMS), out
    # the analytic gradients are right: every error is small (a wrong gradient gives ~1)
    assert max(report.values()) < 1e-2, report
    assert re.search(r"^(ok|FAILED): worst [0-9.e+-]+ \(float64", out, re.MULTILINE), out
    assert (rc == 0) == out.rstrip().splitlines()[-1].startswith("ok")


def test_gradcheck_mlp_digits_passes(cli):
    rc, out, _err = cli("gradcheck", DIGITS_SPEC)
    report = _gradcheck_report(out)
    assert sorted(report) == sorted(PARAMS), out
    assert all(v < 1e-4 for v in report.values()), report
    assert rc == 0


SEQUENCE_SPECS = ["gru_digit_rows", "lstm_adding", "rnn_adding", "bilstm_vowels", "lstm_airline",
                  "seq2seq_attention_reverse"]


@pytest.mark.parametrize("name", SEQUENCE_SPECS)
def test_gradcheck_passes_on_every_sequence_spec(cli, name):
    """Backpropagation through time, lengths, stacking and both directions, on the
    specs' own layers and data, against float64 finite differences."""
    spec = graphdl.__path__[0] + f"/../specs/{name}.yaml"
    rc, out, err = cli("gradcheck", spec)
    assert rc == 0, out + err
    report = _gradcheck_report(out)
    assert report and max(report.values()) < 1e-4, report


def test_gradcheck_format_json(cli):
    rc, out, _err = cli("gradcheck", DIGITS_SPEC, "--format", "json")
    doc = json.loads(out)
    assert sorted(doc["max_rel_error"]) == sorted(PARAMS)
    assert doc["ok"] == (rc == 0)


# ------------------------------------------------------------------ bench

BENCH_KEYS = {"train_steps_per_s", "eval_samples_per_s", "infer_batch1_ms", "peak_rss_mb",
              "train_flops_per_step", "train_gflops", "sgemm_gflops", "roofline_fraction"}


def test_bench_json_warm(cli):
    rc, out, err = cli("bench", DIGITS_SPEC, "--json", "--no-cold", "--seconds", "0.2")
    assert rc == 0, err
    lines = [l for l in out.splitlines() if l.strip()]
    assert len(lines) == 1, out
    doc = json.loads(lines[0])
    assert BENCH_KEYS <= set(doc)
    assert "compile_s_cold" not in doc and "compile_s_warm" not in doc
    for k in BENCH_KEYS:
        assert isinstance(doc[k], (int, float)) and doc[k] > 0, (k, doc)
    assert doc["batch_size"] == 64
    # the roofline: the step's FLOPs at its rate, over sgemm measured on the step's threads
    assert doc["train_flops_per_step"] > 5_000_000  # 64-128-64-10 at batch 64: ~5.8 MFLOP
    assert doc["train_gflops"] == pytest.approx(
        doc["train_flops_per_step"] * doc["train_steps_per_s"] / 1e9, rel=0.01, abs=0.01)
    assert doc["roofline_fraction"] == pytest.approx(
        doc["train_gflops"] / doc["sgemm_gflops"], rel=0.01, abs=1e-3)
    assert doc["sgemm_threads"] >= 1


@pytest.mark.slow
def test_bench_json_cold_compile(cli):
    """Cold compile runs two subprocesses with an empty cache (~10-15 s on 2 cores)."""
    t0 = time.perf_counter()
    rc, out, err = cli("bench", DIGITS_SPEC, "--json", "--seconds", "0.05")
    elapsed = time.perf_counter() - t0
    assert rc == 0, err
    doc = json.loads(out.strip())
    assert BENCH_KEYS <= set(doc)
    if elapsed > 30:
        pytest.skip(f"cold compile took {elapsed:.0f} s; not checking its numbers")
    assert doc["compile_s_cold"] > 0 and doc["compile_s_warm"] > 0
    assert doc["compile_s_warm"] < doc["compile_s_cold"]  # the warm one loads the disk cache


# ------------------------------------------------------------------ predict


def _raw_digits(n=None):
    from graphdl.data.sources import _read_builtin

    raw = _read_builtin("digits.npz")
    x, y = np.array(raw["x"], np.float32), np.array(raw["y"], np.int64)
    return (x, y) if n is None else (x[:n], y[:n])


def test_predict_writes_logits_and_classes(trained_run, tmp_path, cli):
    spec, run_dir, rc, _ = trained_run
    assert rc == 0
    x, y = _raw_digits()
    np.savez(tmp_path / "new.npz", x=x)
    out_path = tmp_path / "pred.npz"
    rc, out, err = cli(
        "predict",
        spec,
        "--weights",
        run_dir / "best.ckpt",
        "--input",
        tmp_path / "new.npz",
        "--output",
        out_path,
    )
    assert rc == 0, err
    assert f"({len(x)} rows)" in out
    with np.load(out_path) as pred:
        logits, classes = pred["logits"], pred["class"]
    assert logits.dtype == np.float32 and logits.shape == (len(x), 10)
    assert np.isfinite(logits).all()
    assert classes.shape == (len(x),)
    np.testing.assert_array_equal(classes, logits.argmax(axis=1))
    assert (classes == y).mean() > 0.6  # two epochs reach about 0.8
    # the same as the Python API with the same weights (raw inputs, preprocessing applied)
    model = graphdl.load(spec)
    model.load_weights(run_dir / "best.ckpt")
    np.testing.assert_array_equal(model.predict(x), logits)


def test_predict_prints_classes_without_output(trained_run, tmp_path, cli):
    spec, run_dir, _, _ = trained_run
    x, _ = _raw_digits(5)
    np.savez(tmp_path / "five.npz", x=x)
    rc, out, err = cli(
        "predict", spec, "--weights", run_dir / "last.ckpt", "--input", tmp_path / "five.npz",
        "--format", "json",
    )
    assert rc == 0, err
    classes = json.loads(out)["class"]
    assert len(classes) == 5 and all(0 <= c < 10 for c in classes)


def test_predict_csv_input(trained_run, tmp_path, cli):
    spec, run_dir, _, _ = trained_run
    x, _ = _raw_digits(4)
    header = ",".join(f"p{i}" for i in range(64))
    rows = [",".join(f"{v:g}" for v in row) for row in x]
    (tmp_path / "new.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    np.savez(tmp_path / "new.npz", x=x)
    rc, out_csv, err = cli(
        "predict", spec, "--weights", run_dir / "best.ckpt", "--input", tmp_path / "new.csv"
    )
    assert rc == 0, err
    rc, out_npz, err = cli(
        "predict", spec, "--weights", run_dir / "best.ckpt", "--input", tmp_path / "new.npz"
    )
    assert rc == 0, err
    assert out_csv == out_npz and len(out_csv.splitlines()) == 5  # header and 4 rows


def test_predict_missing_weights_is_an_error(trained_run, tmp_path, cli):
    spec, _, _, _ = trained_run
    x, _ = _raw_digits(3)
    np.savez(tmp_path / "new.npz", x=x)
    rc, _out, err = cli(
        "predict", spec, "--weights", tmp_path / "nope.ckpt", "--input", tmp_path / "new.npz"
    )
    assert rc == 2
    assert "error[E401]" in err and "Traceback" not in err


def test_predict_wrong_input_shape_is_E503(trained_run, tmp_path, cli):
    spec, run_dir, _, _ = trained_run
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 63), np.float32))
    rc, _out, err = cli(
        "predict", spec, "--weights", run_dir / "best.ckpt", "--input", tmp_path / "bad.npz"
    )
    assert rc == 2
    assert "error[E503]" in err and "Traceback" not in err


# ------------------------------------------------------------------ validate / schema


def test_validate_ok(cli):
    rc, out, err = cli("validate", DIGITS_SPEC)
    assert rc == 0, err
    assert "ok (4 layers, name 'digits-mlp')" in out
    rc, out, err = cli("validate", DIGITS_SPEC, "--format", "json")
    assert rc == 0
    assert json.loads(out) == {"ok": True, "name": "digits-mlp", "layers": 4}


def test_schema_is_valid_json_schema(cli):
    rc, out, err = cli("schema")
    assert rc == 0, err
    schema = json.loads(out)
    assert schema["type"] == "object"
    assert {"model", "train", "data"} <= set(schema["properties"])
    import jsonschema
    import yaml

    jsonschema.Draft7Validator.check_schema(schema)
    # the shipped spec is valid against it
    doc = yaml.safe_load(DIGITS_SPEC.read_text())
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(doc))
    assert not errors, [e.message for e in errors]


def test_no_command_prints_help(cli):
    rc, out, _err = cli()
    assert rc == 0
    for command in ("validate", "compile", "run", "predict", "gradcheck", "bench", "schema"):
        assert command in out


def test_profile_step_calls_counts_each_kernel_call():
    """tools/profile_step.py --calls: every jitted call of a step timed per callee, with the
    number of calls per step (the MLP's Adam: one multi-tensor call; its two hidden GEMMs
    of the backward pass: gemm_nt)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, str(root / "tools" / "profile_step.py"), str(root / "specs" / "bench_mlp.yaml"),
         "--calls", "--repeat", "3", "--seconds", "0.2"],
        capture_output=True, text=True, timeout=600, check=True).stdout
    assert "compiled step:" in out and "in the timed calls" in out
    rows = {line.split()[-1]: int(line.split()[-2]) for line in out.splitlines()
            if re.match(r"^\s*[0-9.]+%\s", line)}
    assert rows["adam_multi"] == 1
    assert rows["gemm_nt"] == 2
