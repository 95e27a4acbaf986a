"""Metrics (graphdl/runtime/metrics.py, graphdl/spec/metrics.py): exactly the metrics a
spec asks for are reported, each cross-checked against scikit-learn; train_loss is the
data loss, as val_loss is, with the L1/L2 penalty apart (train_penalty)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn import metrics as skm

import graphdl
from graphdl.cli import main
from graphdl.runtime.metrics import split_metrics

DIGITS_SPEC = Path(__file__).resolve().parents[2] / "specs" / "mlp_digits.yaml"
BASE = yaml.safe_load(DIGITS_SPEC.read_text(encoding="utf-8"))
RNG = np.random.default_rng(0)


def write_spec(directory: Path, train: dict | None = None, *, loss: str = "cross_entropy",
               evaluate: dict | None = None) -> Path:
    """mlp_digits.yaml for 1 epoch with ``train`` keys replaced; bce_with_logits keeps
    digits 0 and 1 and mse regresses on the label, both with one output unit."""
    doc = copy.deepcopy(BASE)
    doc["train"].update({"epochs": 1, "loss": {"type": loss}, "early_stopping": None})
    del doc["train"]["early_stopping"]
    doc["train"].update(train or {})
    if loss != "cross_entropy":
        doc["model"]["layers"][-1]["units"] = 1
    if loss == "bce_with_logits":
        doc["data"]["filter"] = {"classes": [0, 1]}
    if evaluate is not None:
        doc["evaluate"] = evaluate
    path = Path(directory) / "spec.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def outputs_of(model, split) -> np.ndarray:
    """The predict program's outputs on an already preprocessed split (Model.predict
    would preprocess again)."""
    program = model.compiled("predict").program
    out = program({"x": np.ascontiguousarray(split.fields["x"])})
    return out[model.spec.model.outputs[0]][:, 0]


def history_keys(history) -> set[str]:
    return set(history[0]) - {"epoch", "lr", "seconds"}


# ------------------------------------------------------------------ against scikit-learn


def test_multiclass_metrics_match_sklearn():
    classes = 6
    scores = RNG.normal(size=(300, classes))
    labels = RNG.integers(0, classes - 1, size=300)  # class 5 never a label
    pred = scores.argmax(1)
    names = ["accuracy", "top_3_accuracy", "precision_macro", "recall_macro", "f1_macro",
             "precision_per_class", "recall_per_class", "f1_per_class", "confusion_matrix"]
    m = split_metrics("cross_entropy", names, scores, labels)
    assert list(m) == names
    every = list(range(classes))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred), abs=1e-12)
    assert m["top_3_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(labels, scores, k=3, labels=every), abs=1e-12)
    for kind, fn in (("precision", skm.precision_score), ("recall", skm.recall_score),
                     ("f1", skm.f1_score)):
        assert m[f"{kind}_macro"] == pytest.approx(
            fn(labels, pred, average="macro", zero_division=0), abs=1e-12)
        np.testing.assert_allclose(
            m[f"{kind}_per_class"], fn(labels, pred, average=None, labels=every, zero_division=0),
            atol=1e-12)
    np.testing.assert_array_equal(m["confusion_matrix"],
                                  skm.confusion_matrix(labels, pred, labels=every))


def test_ignored_labels_count_in_no_metric():
    scores = RNG.normal(size=(50, 4))
    labels = RNG.integers(0, 4, size=50)
    labels[::5] = -1
    keep = labels != -1
    m = split_metrics("cross_entropy", ["accuracy", "confusion_matrix"], scores, labels, -1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels[keep], scores[keep].argmax(1)))
    assert np.sum(m["confusion_matrix"]) == keep.sum()


def test_binary_metrics_match_sklearn():
    logits = np.round(RNG.normal(size=400), 1)  # ties, which AUC counts one half
    truth = (RNG.random(400) < 1 / (1 + np.exp(-2 * logits))).astype(np.float32)
    pred = (logits > 0).astype(int)
    names = ["accuracy", "precision", "recall", "f1", "auc", "f1_macro", "confusion_matrix"]
    m = split_metrics("bce_with_logits", names, logits[:, None], truth)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(truth, pred), abs=1e-12)
    assert m["precision"] == pytest.approx(skm.precision_score(truth, pred), abs=1e-12)
    assert m["recall"] == pytest.approx(skm.recall_score(truth, pred), abs=1e-12)
    assert m["f1"] == pytest.approx(skm.f1_score(truth, pred), abs=1e-12)
    assert m["f1_macro"] == pytest.approx(skm.f1_score(truth, pred, average="macro"), abs=1e-12)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(truth, logits), abs=1e-12)
    np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(truth, pred))
    # one class only: AUC is undefined; no positive predicted: precision 0, as sklearn
    m = split_metrics("bce_with_logits", ["auc", "precision"], -np.ones(5), np.zeros(5))
    assert m == {"auc": None, "precision": 0.0}


def test_regression_metrics_match_sklearn():
    true = RNG.normal(size=(200, 3))
    pred = true + RNG.normal(scale=0.5, size=(200, 3))
    m = split_metrics("mse", ["mae", "rmse", "r2"], pred, true)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(true, pred), abs=1e-12)
    assert m["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(true, pred)), abs=1e-12)
    assert m["r2"] == pytest.approx(skm.r2_score(true, pred), abs=1e-12)
    # one unit: [N, 1] outputs against [N] targets; a constant target as sklearn has it
    m = split_metrics("mse", ["r2"], np.full((4, 1), 2.0), np.full(4, 2.0))
    assert m["r2"] == skm.r2_score(np.full(4, 2.0), np.full(4, 2.0)) == 1.0


# ------------------------------------------------------------------ what a run reports


def test_empty_metrics_report_the_loss_only(tmp_path):
    model = graphdl.load(write_spec(tmp_path, {"metrics": []}))
    history = model.fit(tmp_path / "run", progress=False)
    assert history_keys(history) == {"train_loss", "train_penalty", "val_loss"}
    assert set(model.evaluate("test")) == {"loss"}


def test_bce_model_reports_accuracy_and_the_binary_metrics(tmp_path):
    names = ["accuracy", "precision", "recall", "f1", "auc", "confusion_matrix"]
    model = graphdl.load(write_spec(tmp_path, {"metrics": names,
                                               "checkpoint": {"monitor": "val_auc"}},
                                    loss="bce_with_logits"))
    history = model.fit(tmp_path / "run", progress=False)
    assert history_keys(history) == {"train_loss", "train_penalty", "train_accuracy",
                                     *(f"val_{n}" for n in ["loss", *names])}
    assert 0.5 < history[0]["train_accuracy"] <= 1
    assert (tmp_path / "run" / "best.ckpt").exists()
    test = model.data().test
    logits = outputs_of(model, test)
    truth = test.fields["y"]
    got = model.evaluate("test")
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(truth, logits > 0), abs=1e-12)
    assert got["auc"] == pytest.approx(skm.roc_auc_score(truth, logits), abs=1e-9)
    assert got["f1"] == pytest.approx(skm.f1_score(truth, logits > 0), abs=1e-12)
    np.testing.assert_array_equal(got["confusion_matrix"], skm.confusion_matrix(truth, logits > 0))


def test_mse_model_monitors_r2_and_stops_early_on_mae(tmp_path):
    model = graphdl.load(write_spec(
        tmp_path, {"epochs": 4, "metrics": ["mae", "rmse", "r2"], "optimizer": {"type": "sgd", "lr": 1e-9},
                   "checkpoint": {"monitor": "val_r2"},
                   "early_stopping": {"monitor": "val_mae", "patience": 0, "min_delta": 1.0}},
        loss="mse", evaluate={"split": "test", "metrics": ["r2"]}))
    history = model.fit(tmp_path / "run", progress=False)
    assert len(history) == 2  # no change of 1.0 in val_mae after epoch 1: stopped at once
    assert history_keys(history) == {"train_loss", "train_penalty",
                                     "val_loss", "val_mae", "val_rmse", "val_r2"}
    assert history[0]["val_rmse"] == pytest.approx(math.sqrt(history[0]["val_loss"]), rel=1e-5)
    assert (tmp_path / "run" / "best.ckpt").exists()
    test = model.data().test
    values = outputs_of(model, test)
    got = model.evaluate("test")
    assert set(got) == {"loss", "r2"}
    assert got["r2"] == pytest.approx(
        skm.r2_score(test.fields["y"].astype(np.float64), values.astype(np.float64)), abs=1e-9)


def test_train_loss_is_the_data_loss_with_the_penalty_apart(tmp_path):
    """A large l2 makes the penalty dwarf the data loss: train_loss stays near val_loss
    (the same quantity) and train_penalty holds the rest."""
    model = graphdl.load(write_spec(tmp_path, {"regularization": {"l2": 0.5}}))
    (record,) = model.fit(tmp_path / "run", progress=False)
    assert record["train_penalty"] > 5
    assert record["train_loss"] < math.log(10) + 0.5
    assert abs(record["train_loss"] - record["val_loss"]) < 0.5
    # the penalty of the weights the epoch ended with: 0.5 * the sum of the squared kernels
    # (weights, not biases), computed when reported, not in every step
    kernels = [v for k, v in model.params.items() if k.endswith(".kernel")]
    expected = 0.5 * sum(float(np.sum(np.square(w.astype(np.float64)))) for w in kernels)
    assert record["train_penalty"] == pytest.approx(expected, rel=1e-5)
    assert "loss" not in model.compiled("train").program.sig.outputs
    plain = graphdl.load(write_spec(tmp_path, {"regularization": {"l2": 0.0}}))
    (record,) = plain.fit(tmp_path / "plain", progress=False)
    assert "train_penalty" not in record


def test_run_writes_the_confusion_matrix_to_results_json(tmp_path, capsys):
    names = ["accuracy", "top_3_accuracy", "f1_macro", "f1_per_class", "confusion_matrix"]
    spec = write_spec(tmp_path, {"metrics": ["accuracy", "f1_macro"],
                                 "early_stopping": {"monitor": "val_f1_macro", "patience": 3}},
                      evaluate={"split": "test", "metrics": names})
    assert main(["run", str(spec), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "f1_macro" in out and "confusion_matrix" not in out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    test = results["test"]
    assert set(test) == {"loss", *names}
    cm = np.asarray(test["confusion_matrix"])
    assert cm.shape == (10, 10) and len(test["f1_per_class"]) == 10
    assert np.trace(cm) / cm.sum() == pytest.approx(test["accuracy"], abs=1e-12)
    (record,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"val_accuracy", "val_f1_macro", "train_accuracy"} <= set(record)


def test_token_and_sequence_accuracy_leave_out_ignored_positions():
    rng = np.random.default_rng(5)
    n, steps, classes, pad = 50, 7, 6, 0
    labels = rng.integers(1, classes, size=(n, steps))
    lengths = rng.integers(2, steps + 1, size=n)
    labels[np.arange(steps)[None, :] >= lengths[:, None]] = pad
    logits = rng.standard_normal((n, steps, classes))
    # make most samples right at every labelled position, some wrong at one of them
    right = rng.random(n) < 0.6
    for i in range(n):
        for t in range(lengths[i]):
            if right[i] or t > 0:
                logits[i, t, labels[i, t]] = 10.0
    pred = logits.argmax(-1)
    keep = labels != pad
    token = (pred == labels)[keep].mean()
    exact = np.mean([np.all((pred[i] == labels[i])[keep[i]]) for i in range(n)])
    got = split_metrics("cross_entropy", ["sequence_accuracy", "token_accuracy", "f1_macro"],
                        logits, labels, ignore_index=pad)
    assert got["token_accuracy"] == pytest.approx(token)
    assert got["sequence_accuracy"] == pytest.approx(exact)
    assert 0 < exact < 1 and list(got) == ["sequence_accuracy", "token_accuracy", "f1_macro"]
    # one label per sample: both are the accuracy
    flat = split_metrics("cross_entropy", ["token_accuracy", "sequence_accuracy", "accuracy"],
                         logits[:, 0], labels[:, 0])
    assert flat["token_accuracy"] == flat["sequence_accuracy"] == flat["accuracy"]
