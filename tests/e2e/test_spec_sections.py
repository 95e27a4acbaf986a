"""Sections a spec may leave out or contradict, and the hints for names people bring from
other frameworks: each is either accepted for what it can do or refused before any work
with a located error (exit 2, no traceback)."""

from __future__ import annotations

import numpy as np
import pytest
from e2e_helpers import base_doc, edit_spec, line_of, spec_file, write_doc
from test_cli_errors import assert_user_error

import graphdl
from graphdl.errors import GraphdlError
from graphdl.spec import load_spec


def _no_train_spec(tmp_path):
    """mlp_digits.yaml without its train: and evaluate: sections (and so without
    stratified splits, which need the target)."""
    doc = base_doc()
    del doc["train"], doc["evaluate"]
    doc["data"]["split"]["stratify"] = False
    return write_doc(tmp_path / "spec.yaml", doc)


# ------------------------------------------------------------ a spec without train:


def test_spec_without_train_validates_and_compiles_for_predict(tmp_path, cli):
    spec = _no_train_spec(tmp_path)
    rc, out, err = cli("validate", spec)
    assert rc == 0, err
    assert "no train: section" in out
    rc, out, err = cli("compile", spec, "--mode", "predict")
    assert rc == 0, err
    assert "passes (predict graph)" in out


@pytest.mark.parametrize("argv", [
    ("run", "--no-progress"),
    ("compile",),
    ("compile", "--mode", "eval"),
])
def test_spec_without_train_refuses_training_and_evaluation(tmp_path, cli, argv):
    spec = _no_train_spec(tmp_path)
    rc, _out, err = cli(argv[0], spec, *argv[1:], *(("--run-dir", tmp_path / "run")
                                                   if argv[0] == "run" else ()))
    assert_user_error(rc, err, "E102", spec, 1)
    assert "train:" in err and "target" in err and "loss" in err
    assert "--mode predict" in err  # what the spec can still do
    assert not (tmp_path / "run").exists()


def test_spec_without_train_predicts_with_trained_weights(tmp_path, cli):
    """What a spec without train: is for: running trained weights on new data."""
    doc = base_doc()
    doc["train"]["epochs"] = 1
    trained = write_doc(tmp_path / "trained.yaml", doc)
    rc, _, err = cli("run", trained, "--run-dir", tmp_path / "run", "--no-progress")
    assert rc == 0, err
    rows = tmp_path / "rows.npz"
    np.savez(rows, x=np.random.default_rng(0).uniform(0, 16, (3, 64)).astype(np.float32))
    rc, out, err = cli("predict", _no_train_spec(tmp_path), "--weights",
                       tmp_path / "run" / "best.ckpt", "--input", rows)
    assert rc == 0, err
    assert out.splitlines()[0].split()[:2] == ["row", "output_0"]  # no loss: raw outputs
    assert len(out.splitlines()) == 4


def test_api_without_train_compiles_for_predict_and_refuses_fit(tmp_path):
    model = graphdl.load(_no_train_spec(tmp_path))
    out = model.compiled("predict").program({"x": np.zeros((3, 64), np.float32)})
    assert out[model.spec.model.outputs[0]].shape == (3, 10)
    for call in (lambda: model.fit(tmp_path / "run"), lambda: model.evaluate("test"),
                 lambda: model.compiled("train")):
        with pytest.raises(GraphdlError) as ei:
            call()
        assert ei.value.diagnostics[0].code == "E102"
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------ evaluating an empty split


def test_evaluate_on_a_zero_split_is_refused_before_training(tmp_path, cli):
    spec = edit_spec(tmp_path, [
        ("split: {train: 0.7, val: 0.15, test: 0.15,", "split: {train: 0.85, val: 0, test: 0.15,"),
        ("evaluate: {split: test}", "evaluate: {split: val}"),
    ])
    line = line_of(spec, "evaluate: {split: val}")
    rc, _out, err = cli("validate", spec)
    assert_user_error(rc, err, "E105", spec, line)
    assert "'val'" in err and "data.split.val is 0" in err
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    assert_user_error(rc, err, "E105", spec, line)
    assert not (tmp_path / "run").exists()  # nothing trained


def test_default_evaluate_split_left_empty_by_the_fractions(tmp_path, cli):
    """No evaluate: section means the test split; train 0.8 + val 0.2 leave it nothing."""
    spec = edit_spec(tmp_path, [
        ("split: {train: 0.7, val: 0.15, test: 0.15,", "split: {train: 0.8, val: 0.2,"),
        ("evaluate: {split: test}", ""),
    ])
    rc, _out, err = cli("validate", spec)
    assert_user_error(rc, err, "E105", spec, line_of(spec, "split: {train: 0.8, val: 0.2,"))
    assert "'test'" in err and "data.split.test is 0" in err


def test_a_split_left_empty_by_the_data_is_refused_before_training(tmp_path, monkeypatch):
    """A fraction above 0 that leaves no sample (two samples for three splits): found when
    the data is split, before the first epoch."""
    from graphdl.runtime import trainer

    np.savez(tmp_path / "tiny.npz", x=np.ones((2, 64), np.float32), y=np.array([0, 1]))

    def edit(doc):
        doc["data"] = {"source": {"type": "npz", "path": "tiny.npz"},
                       "split": {"train": 0.9, "val": 0.05, "test": 0.05, "shuffle": False}}

    spec = spec_file(tmp_path, edit=edit)
    monkeypatch.setattr(trainer.Trainer, "fit", lambda self: pytest.fail("trained"))
    with pytest.raises(GraphdlError) as ei:
        graphdl.load(spec).fit(tmp_path / "run")
    d = ei.value.diagnostics[0]
    assert d.code == "E507" and "'test' split is empty" in d.message, d.format()


# ------------------------------------------------------------ names from other frameworks


def _spec_error(tmp_path, old, new):
    with pytest.raises(GraphdlError) as ei:
        load_spec(edit_spec(tmp_path, [(old, new)]))
    (d,) = ei.value.diagnostics
    return d


def test_did_you_mean_ignores_case(tmp_path):
    d = _spec_error(tmp_path, "units: 128, activation: relu}", "units: 128, activation: Relu}")
    assert d.code == "E103" and d.help == "did you mean 'relu'?"
    d = _spec_error(tmp_path, "{type: dense, units: 10}", "{type: Dense, units: 10}")
    assert d.code == "E103" and d.help == "did you mean 'dense'?"


def test_learning_rate_hints_lr(tmp_path):
    d = _spec_error(tmp_path, "{type: adam, lr: 1.0e-3}", "{type: adam, learning_rate: 1.0e-3}")
    assert d.code == "E101" and d.help.startswith("did you mean 'lr'?")


@pytest.mark.parametrize("keras, ours", [
    ("categorical_crossentropy", "cross_entropy"),
    ("sparse_categorical_crossentropy", "cross_entropy"),
    ("SparseCategoricalCrossentropy", "cross_entropy"),
    ("binary_crossentropy", "bce_with_logits"),
    ("mean_squared_error", "mse"),
    ("MSE", "mse"),
])
def test_keras_loss_names_hint_graphdl_names(tmp_path, keras, ours):
    d = _spec_error(tmp_path, "loss: {type: cross_entropy}", f"loss: {{type: {keras}}}")
    assert d.code == "E103" and d.help.startswith(f"did you mean '{ours}'?"), d.format()
