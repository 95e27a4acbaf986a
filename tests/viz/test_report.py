"""The run report (graphdl/viz/report.py): `graphdl run` writes report.html, `graphdl
report RUN_DIR` rebuilds it; the page is one offline file holding the learning curves, the
test results, the confusion matrix with the class names (or predicted vs true for a
regression) and the layer table, and draws its charts in headless chromium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from graphdl.cli import main

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "specs" / "mlp_digits.yaml"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.DOTALL)
    assert m, "no report data in the page"
    return json.loads(m.group(1))


def matrix_labels(html: str) -> list[str]:
    table = re.search(r"<table class='confusion' id='confusion'>(.*?)</table>", html, re.DOTALL)
    assert table, "no confusion matrix in the page"
    return re.findall(r"<th class='col' scope='col'>(.*?)</th>", table.group(1))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A 2-epoch run of specs/mlp_digits.yaml: (run dir, stdout)."""
    import contextlib
    import io

    run_dir = tmp_path_factory.mktemp("report") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["run", str(DIGITS), "--epochs", "2", "--no-progress", "--run-dir", str(run_dir)])
    assert rc == 0
    return run_dir, out.getvalue()


def test_run_writes_the_report(digits_run):
    run_dir, out = digits_run
    assert f"report: {run_dir / 'report.html'}" in out
    for name in ("report.html", "graph.html", "predictions.npz"):
        assert (run_dir / name).is_file(), name
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    data = page_data(html)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curves = data["curves"]
    assert curves["epochs"] == [1, 2]
    charts = {c["title"]: {s["label"]: s["values"] for s in c["series"]} for c in curves["charts"]}
    assert set(charts) == {"loss", "accuracy", "learning rate"}
    assert charts["loss"]["train_loss"] == [r["train_loss"] for r in records]
    assert charts["loss"]["val_loss"] == [r["val_loss"] for r in records]
    assert charts["accuracy"]["val_accuracy"] == [r["val_accuracy"] for r in records]
    assert charts["learning rate"]["lr"] == [r["lr"] for r in records]
    # the confusion matrix: digits name no classes, so the class indices label it
    assert matrix_labels(html) == [str(i) for i in range(10)]
    results = json.loads((run_dir / "results.json").read_text())
    assert f"{results['test']['accuracy']:.4f}" in html
    # the layer table: parameters and forward FLOPs per layer (64*128 + 128 weights)
    assert re.search(r"<td>dense_1</td><td>dense</td>.*?<td class='num'>8,320</td><td class='num'>16,640</td>", html)
    assert "<a href='graph.html' id='graph-link'>" in html


def test_report_refers_to_nothing_on_the_network(digits_run):
    run_dir, _ = digits_run
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"https?://", html)
    assert not re.search(r"""\bsrc\s*=""", html)
    assert not re.search(r"""<link\b""", html)
    assert "@import" not in html and "url(" not in html


def test_graphdl_report_rebuilds_it_with_the_class_names(digits_run, tmp_path, capsys):
    run_dir = tmp_path / "copy"
    shutil.copytree(digits_run[0], run_dir)
    (run_dir / "report.html").unlink()
    # class names as image folders give them, saved with the outputs
    with np.load(run_dir / "predictions.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["class_names"] = np.asarray(NAMES)
    np.savez(run_dir / "predictions.npz", **arrays)
    rc, out, err = run_cli(capsys, "report", run_dir)
    assert rc == 0, err
    assert out.strip() == f"wrote {run_dir / 'report.html'}"
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert matrix_labels(html) == NAMES
    assert "true zero, predicted" in html


def test_graphdl_report_computes_missing_predictions_from_the_checkpoint(digits_run, tmp_path, capsys):
    run_dir = tmp_path / "old"
    shutil.copytree(digits_run[0], run_dir)
    saved = np.load(run_dir / "predictions.npz")["output"]
    for name in ("predictions.npz", "graph.html", "report.html"):
        (run_dir / name).unlink()
    rc, _, err = run_cli(capsys, "report", run_dir)
    assert rc == 0, err
    np.testing.assert_allclose(np.load(run_dir / "predictions.npz")["output"], saved, rtol=1e-5, atol=1e-5)
    assert (run_dir / "graph.html").is_file()
    assert matrix_labels((run_dir / "report.html").read_text(encoding="utf-8")) == [str(i) for i in range(10)]


def test_bad_run_directory_is_exit_2_with_a_message(digits_run, tmp_path, capsys):
    rc, _, err = run_cli(capsys, "report", tmp_path / "nowhere")
    assert rc == 2
    assert "error[E710]" in err and "does not exist" in err and "Traceback" not in err
    half = tmp_path / "half"
    shutil.copytree(digits_run[0], half)
    (half / "results.json").unlink()
    rc, _, err = run_cli(capsys, "report", half)
    assert rc == 2
    assert "no results.json" in err and str(half) in err and "help:" in err
    assert "Traceback" not in err


def test_a_failing_report_does_not_fail_the_run(tmp_path, capsys, monkeypatch):
    from graphdl.viz import report

    def broken(*args, **kwargs):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(report, "write_report", broken)
    run_dir = tmp_path / "run"
    rc, out, err = run_cli(capsys, "run", DIGITS, "--epochs", "1", "--no-progress", "--run-dir", run_dir)
    assert rc == 0
    assert "test: loss" in out
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "the disk is full" in warnings[0], err
    assert json.loads((run_dir / "results.json").read_text())["status"] == "complete"
    assert not (run_dir / "report.html").exists()


def test_regression_shows_predicted_vs_true():
    from graphdl.viz.report import confusion, scatter

    rng = np.random.default_rng(0)
    true = rng.normal(size=(50, 1)).astype(np.float32)
    predictions = {"output": true[::-1] * 0.5, "target": true}
    sc = scatter("mse", predictions)
    assert len(sc["true"]) == len(sc["predicted"]) == 50
    assert sc["true"] == sorted(sc["true"])
    # each point keeps its pair: sorted by the true value, not each list on its own
    order = np.argsort(true.ravel(), kind="stable")
    np.testing.assert_allclose(sc["predicted"], (true[::-1] * 0.5).ravel()[order], rtol=1e-6)
    assert confusion("mse", predictions, {}, None) is None
    assert scatter("cross_entropy", predictions) is None


def test_confusion_matrix_counts_and_names():
    from graphdl.viz.report import confusion

    logits = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]
    target = np.asarray([0, 1, 1, 2])
    m = confusion("cross_entropy", {"output": logits, "target": target, "class_names": ["a", "b", "c"]},
                  {}, None)
    assert m == {"labels": ["a", "b", "c"], "matrix": [[1, 0, 0], [0, 1, 1], [0, 0, 1]]}
    # without saved outputs, results.json's confusion_matrix metric
    m = confusion("cross_entropy", None, {"confusion_matrix": [[2, 0], [1, 3]]}, None)
    assert m == {"labels": ["0", "1"], "matrix": [[2, 0], [1, 3]]}


def test_report_in_chromium(chromium, digits_run):
    run_dir, _ = digits_run
    dom = chromium((run_dir / "report.html").as_uri())
    html = re.search(r"<html[^>]*>", dom).group(0)
    assert 'data-console-errors="0"' in html, html
    body = dict(re.findall(r'([\w-]+)="([^"]*)"', re.search(r"<body([^>]*)>", dom).group(1)))
    assert body.get("data-rendered") == "1", body
    assert body["data-charts"] == "3"
    for chart in body["data-drawn"].split():
        size, painted = chart.split(":")
        width, height = (int(v) for v in size.split("x"))
        assert width >= 260 and height >= 200, chart
        assert int(painted) > 500, chart  # axes, grid and lines were painted
    assert dom.count("<canvas") == 3


REGRESSION_SPEC = """\
graphdl: 1
name: tiny-regression
seed: 0
data:
  source: {type: npz, path: none.npz, fields: {x: a, y: b}}
model:
  inputs:
    x: {shape: [4]}
  layers:
    - {type: dense, units: 8, activation: tanh}
    - {type: dense, units: 1}
train: {target: y, epochs: 2, loss: {type: mse}, metrics: [rmse], optimizer: {type: adam, lr: 0.01}}
"""


@pytest.fixture(scope="module")
def regression_report(tmp_path_factory):
    """The report of a regression run directory written by hand (no training): two
    epochs of metrics, results and 40 predictions."""
    from graphdl.layers.lower import lower
    from graphdl.spec import load_spec
    from graphdl.viz.report import layer_rows, save_predictions, write_report

    run_dir = tmp_path_factory.mktemp("regression")
    (run_dir / "spec.resolved.yaml").write_text(REGRESSION_SPEC, encoding="utf-8")
    spec = load_spec(run_dir / "spec.resolved.yaml")
    records = [{"epoch": e, "lr": 0.01, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_rmse": 1.1 / e,
                "seconds": 0.01} for e in (1, 2)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "results.json").write_text(json.dumps({"status": "complete", "test": {"loss": 0.5, "rmse": 0.7},
                                                      "weights": "best", "epochs_run": 2}))
    true = np.linspace(-1, 1, 40, dtype=np.float32)[:, None]
    save_predictions(run_dir, "test", true * 0.9 + 0.05, true, None)
    rows = layer_rows(spec, lower(spec, "predict"), {"N": 1})
    return write_report(run_dir, spec, rows)


def test_regression_report_has_the_scatter(regression_report):
    html = regression_report.read_text(encoding="utf-8")
    data = page_data(html)
    assert len(data["scatter"]["true"]) == 40
    assert "id='scatter'" in html and "Predicted vs true" in html
    assert "id='confusion'" not in html
    assert [c["title"] for c in data["curves"]["charts"]] == ["loss", "rmse", "learning rate"]


def test_regression_report_in_chromium(chromium, regression_report):
    dom = chromium(regression_report.as_uri())
    assert re.search(r'<html[^>]*data-console-errors="0"', dom)
    body = dict(re.findall(r'([\w-]+)="([^"]*)"', re.search(r"<body([^>]*)>", dom).group(1)))
    assert body.get("data-rendered") == "1" and body["data-charts"] == "4", body
    for chart in body["data-drawn"].split():
        size, painted = chart.split(":")
        assert all(int(v) >= 200 for v in size.split("x")) and int(painted) > 500, chart
