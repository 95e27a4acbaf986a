"""The loss's target against the model output (issue 10, items 1, 3 and 4): a target whose
shape or dtype does not fit the loss, labels beyond the output's classes and targets outside
[0, 1] for bce are located errors before training; an activation the loss applies itself is
a warning that does not stop the run."""

from __future__ import annotations

import re

import numpy as np
from e2e_helpers import edit_spec, line_of, spec_file

import graphdl

LOSS_LINE = "loss: {type: cross_entropy}"
LAST_DENSE = "- {type: dense, units: 10}                   # logits; softmax lives in the loss"


def assert_located(rc: int, err: str, code: str, file, line: int) -> None:
    assert rc == 2, err
    assert "Traceback" not in err, err
    assert re.search(rf"^{re.escape(str(file))}:{line}(:\d+)?: error\[{code}\]", err,
                     re.MULTILINE), err


def run(cli, spec, tmp_path):
    return cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")


# ------------------------------------------------------------------ item 1: target vs output


def test_mse_on_integer_class_labels_is_refused_at_the_loss_line(tmp_path, cli):
    spec = edit_spec(tmp_path, [(LOSS_LINE, "loss: {type: mse}"), ("epochs: 30", "epochs: 1"),
                                ("metrics: [accuracy]", "metrics: [mae]")])  # mse has no accuracy
    rc, _out, err = run(cli, spec, tmp_path)
    assert_located(rc, err, "E305", spec, line_of(spec, "loss: {type: mse}"))
    assert "float32[N, 10]" in err and "int64[N]" in err, err  # both shapes and dtypes
    assert "use cross_entropy for integer class labels" in err, err
    assert not (tmp_path / "run" / "last.ckpt").exists()


def test_bce_with_two_units_is_refused_at_the_loss_line(tmp_path, cli):
    spec = edit_spec(tmp_path, [
        (LOSS_LINE, "loss: {type: bce_with_logits}"),
        (LAST_DENSE, "- {type: dense, units: 2}"),
        ("split: {", "filter: {classes: [0, 1]}\n  split: {"),
        ("epochs: 30", "epochs: 1"),
    ])
    rc, _out, err = run(cli, spec, tmp_path)
    assert_located(rc, err, "E305", spec, line_of(spec, "loss: {type: bce_with_logits}"))
    assert "float32[N, 2]" in err and "int64[N]" in err, err
    assert "one output unit per binary target" in err, err


def test_bce_targets_outside_0_1_are_refused(tmp_path, cli):
    spec = edit_spec(tmp_path, [
        (LOSS_LINE, "loss: {type: bce_with_logits}"),
        (LAST_DENSE, "- {type: dense, units: 1}"),
        ("epochs: 30", "epochs: 1"),
    ])
    rc, _out, err = run(cli, spec, tmp_path)
    assert_located(rc, err, "E509", spec, line_of(spec, "loss: {type: bce_with_logits}"))
    assert "0 and 1" in err, err


def test_binary_bce_on_integer_labels_with_one_unit_trains(tmp_path):
    spec = spec_file(tmp_path, {
        "train.loss": {"type": "bce_with_logits"},
        "train.epochs": 2,
        "data.filter": {"classes": [0, 1]},
    }, edit=lambda d: d["model"]["layers"][-1].update(units=1))
    model = graphdl.load(spec)
    history = model.fit(tmp_path / "run", progress=False)
    assert np.isfinite(history[-1]["train_loss"])
    loss = model.evaluate("test")["loss"]
    assert 0 <= loss < 0.3, loss  # 0 vs 1 is easy; a negative or huge loss is a misread target


def test_mse_regression_on_a_csv_column_trains(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3))
    y = x @ np.array([0.5, -1.0, 2.0]) + 0.25
    rows = "\n".join(",".join(f"{v:.6f}" for v in (*xi, yi)) for xi, yi in zip(x, y))
    (tmp_path / "reg.csv").write_text("a,b,c,y\n" + rows + "\n", encoding="utf-8")
    doc = (
        "graphdl: 1\nname: reg\nseed: 0\n"
        "data:\n  source: {type: csv, path: reg.csv, target: y, feature_field: x}\n"
        "  split: {train: 0.8, val: 0.1, test: 0.1, stratify: false}\n"
        "model:\n  inputs:\n    x: {shape: [3], dtype: float32}\n"
        "  layers:\n    - {type: dense, units: 1}\n"
        "train:\n  target: y\n  epochs: 40\n  batch_size: 16\n  loss: {type: mse}\n"
        "  optimizer: {type: adam, lr: 0.05}\n"
        "evaluate: {split: test}\n"
    )
    (tmp_path / "reg.yaml").write_text(doc, encoding="utf-8")
    model = graphdl.load(tmp_path / "reg.yaml")
    model.fit(tmp_path / "run", progress=False)
    assert model.evaluate("test")["loss"] < 0.05  # a [N] target for a [N, 1] output


# ------------------------------------------------------------------ item 3: class count


def test_labels_beyond_a_softmax_output_are_refused(tmp_path, cli):
    spec = edit_spec(tmp_path, [
        (LAST_DENSE, "- {type: dense, units: 5}\n    - {type: activation, activation: softmax}"),
        ("epochs: 30", "epochs: 1"),
    ])
    rc, _out, err = run(cli, spec, tmp_path)
    assert_located(rc, err, "E509", spec, line_of(spec, "activation: softmax"))
    assert "5 classes" in err and "label 9" in err, err
    assert not (tmp_path / "run" / "last.ckpt").exists()


# ------------------------------------------------------------------ item 4: activation + loss


def test_softmax_before_cross_entropy_warns_and_runs(tmp_path, cli):
    spec = edit_spec(tmp_path, [
        (LAST_DENSE, "- {type: dense, units: 10, activation: softmax}"),
        ("epochs: 30", "epochs: 1"),
    ])
    rc, out, err = cli("validate", spec)
    assert rc == 0, err
    line = line_of(spec, "activation: softmax")
    assert re.search(rf"^{re.escape(str(spec))}:{line}(:\d+)?: warning\[W301\]", err,
                     re.MULTILINE), err
    assert "cross_entropy applies softmax itself" in err, err
    rc, out, err = run(cli, spec, tmp_path)
    assert rc == 0, err
    assert "warning[W301]" in err and "test:" in out


def test_sigmoid_before_bce_with_logits_warns(tmp_path, cli):
    spec = edit_spec(tmp_path, [
        (LOSS_LINE, "loss: {type: bce_with_logits}"),
        (LAST_DENSE, "- {type: dense, units: 1}\n    - {type: activation, activation: sigmoid}"),
    ])
    rc, _out, err = cli("validate", spec)
    assert rc == 0, err
    assert re.search(rf":{line_of(spec, 'activation: sigmoid')}(:\d+)?: warning\[W301\]", err), err
    assert "bce_with_logits applies sigmoid itself" in err, err


def test_logits_into_cross_entropy_do_not_warn(tmp_path, cli):
    rc, _out, err = cli("validate", edit_spec(tmp_path, []))
    assert rc == 0 and "warning" not in err, err
