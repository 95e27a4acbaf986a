"""The Python API: graphdl.load -> Model (compile, fit, evaluate, predict, save, load_weights)
and the dtypes of the compiled programs' outputs."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

import graphdl
from graphdl.api import Model
from graphdl.backends.common.program import dummy_feeds
from graphdl.errors import GraphdlError
from graphdl.runtime.checkpoint import load_checkpoint, save_checkpoint

DIGITS_SPEC = Path(__file__).resolve().parents[2] / "specs" / "mlp_digits.yaml"


def _raw_digits():
    from graphdl.data.sources import _read_builtin

    raw = _read_builtin("digits.npz")
    return np.array(raw["x"], np.float32), np.array(raw["y"], np.int64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits MLP trained for 2 epochs through the API: (model, spec path, run dir, history)."""
    d = tmp_path_factory.mktemp("api")
    doc = copy.deepcopy(yaml.safe_load(DIGITS_SPEC.read_text()))
    doc["train"]["epochs"] = 2
    spec = d / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    model = graphdl.load(spec)
    history = model.fit(d / "run", progress=False)
    return model, spec, d / "run", history


def test_load_compiles_nothing():
    model = graphdl.load(DIGITS_SPEC)
    assert isinstance(model, Model)
    assert model.spec.name == "digits-mlp"
    assert model._compiled == {} and model.params == {} and model.splits is None
    assert model.default_run_dir() == Path("runs/digits-mlp")


def test_load_rejects_a_bad_spec(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DIGITS_SPEC.read_text().replace("batch_size: 64", "batch_size: 64\n  bogus: 1"))
    with pytest.raises(GraphdlError) as info:
        graphdl.load(bad)
    assert info.value.diagnostics[0].code == "E101"


def test_compile_returns_the_model_with_programs_and_params():
    model = graphdl.load(DIGITS_SPEC)
    assert model.compile(("train", "eval", "predict")) is model
    assert set(model._compiled) == {"train", "eval", "predict"}
    assert sorted(model.params) == [
        "dense_1.bias",
        "dense_1.kernel",
        "dense_2.bias",
        "dense_2.kernel",
        "dense_3.bias",
        "dense_3.kernel",
    ]
    assert model.params["dense_1.kernel"].shape == (64, 128)
    assert all(v.dtype == np.float32 for v in model.params.values())
    assert "opt.step" in model.state


def test_fit_returns_the_history(trained):
    model, _, run_dir, history = trained
    assert [r["epoch"] for r in history] == [1, 2]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= set(
        history[0]
    )
    assert model.last_run_dir == run_dir


def test_evaluate(trained):
    model, _, _, history = trained
    test = model.evaluate("test")
    assert set(test) == {"loss", "accuracy"}
    assert 0.5 < test["accuracy"] <= 1.0 and 0 < test["loss"] < math.log(10)
    assert model.evaluate() == test  # "test" is the default
    assert model.evaluate_dataset(model.data().test) == test
    # after fit the model holds the last epoch's weights: val matches the last record
    val = model.evaluate("val")
    assert val["loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-12)
    assert val["accuracy"] == pytest.approx(history[-1]["val_accuracy"], rel=1e-12)
    # smaller eval batches give the same metrics (up to float32 summation)
    small = model.evaluate_dataset(model.data().test, batch_size=7)
    assert small["accuracy"] == pytest.approx(test["accuracy"], abs=1e-9)
    assert small["loss"] == pytest.approx(test["loss"], rel=1e-5)


def test_evaluate_unknown_split_is_E507(trained):
    model = trained[0]
    with pytest.raises(GraphdlError) as info:
        model.evaluate("holdout")
    assert info.value.diagnostics[0].code == "E507"


def test_predict(trained):
    model = trained[0]
    x, y = _raw_digits()
    logits = model.predict(x[:300])
    assert logits.dtype == np.float32 and logits.shape == (300, 10)
    assert np.isfinite(logits).all()
    assert (logits.argmax(1) == y[:300]).mean() > 0.6
    np.testing.assert_array_equal(model.predict({"x": x[:300]}), logits)
    # batching does not change the numbers
    np.testing.assert_allclose(model.predict(x[:300], batch_size=7), logits, rtol=1e-5, atol=1e-6)
    one = model.predict(x[:1])
    assert one.shape == (1, 10) and one.dtype == np.float32


def test_predict_agrees_with_evaluate(trained):
    """The predict program's argmax on the (preprocessed) test split gives evaluate's accuracy."""
    model = trained[0]
    test = model.data().test
    out_name = model.spec.model.outputs[0]
    logits = model.compiled("predict").program({"x": np.ascontiguousarray(test.fields["x"])})[
        out_name
    ]
    accuracy = float((logits.argmax(1) == test.fields["y"]).mean())
    assert accuracy == pytest.approx(model.evaluate("test")["accuracy"], abs=1e-12)


def test_save_and_load_weights_round_trip(trained, tmp_path):
    model, spec, _, _ = trained
    x, _ = _raw_digits()
    path = tmp_path / "weights.ckpt"
    model.save(path)
    _tensors, meta = load_checkpoint(path)
    assert meta["spec"] == "digits-mlp" and meta["preprocess"]

    fresh = graphdl.load(spec)
    fresh.load_weights(path)
    after = fresh.predict(x[:200])
    assert fresh.splits is None  # the preprocessing statistics came from the checkpoint
    np.testing.assert_array_equal(after, model.predict(x[:200]))
    assert not np.array_equal(
        graphdl.load(spec).predict(x[:50]), after[:50]
    )  # initial weights differ
    for k in model.params:
        assert np.array_equal(fresh.params[k], model.params[k]), k
    assert fresh.evaluate("test") == model.evaluate("test")


def test_load_weights_from_the_run_directory(trained):
    model, spec, run_dir, _ = trained
    x, _ = _raw_digits()
    fresh = graphdl.load(spec)
    fresh.load_weights(run_dir / "last.ckpt")
    np.testing.assert_array_equal(fresh.predict(x[:64]), model.predict(x[:64]))


def test_load_weights_missing_parameter_is_E403(trained, tmp_path):
    model, spec, _, _ = trained
    partial = {f"param/{k}": v for k, v in model.params.items() if k != "dense_2.bias"}
    save_checkpoint(tmp_path / "partial.ckpt", partial, {})
    with pytest.raises(GraphdlError) as info:
        graphdl.load(spec).load_weights(tmp_path / "partial.ckpt")
    d = info.value.diagnostics[0]
    assert d.code == "E403" and "dense_2.bias" in d.message


def test_load_weights_wrong_shape_is_E402(trained, tmp_path):
    model, spec, _, _ = trained
    tensors = {f"param/{k}": v for k, v in model.params.items()}
    tensors["param/dense_3.kernel"] = np.zeros((64, 5), np.float32)
    save_checkpoint(tmp_path / "shape.ckpt", tensors, {})
    with pytest.raises(GraphdlError) as info:
        graphdl.load(spec).load_weights(tmp_path / "shape.ckpt")
    d = info.value.diagnostics[0]
    assert d.code == "E402" and "dense_3.kernel" in d.message


def test_load_weights_missing_file_is_E401(tmp_path):
    with pytest.raises(GraphdlError) as info:
        graphdl.load(DIGITS_SPEC).load_weights(tmp_path / "nope.ckpt")
    assert info.value.diagnostics[0].code == "E401"


# ------------------------------------------------------------------ output dtypes


@pytest.mark.parametrize("mode", ["train", "eval", "predict"])
def test_program_outputs_are_float32(mode):
    model = graphdl.load(DIGITS_SPEC)
    program = model.compiled(mode).program
    if mode == "predict":
        out = program({"x": np.ascontiguousarray(model.data().test.fields["x"][:16])})
        assert set(out) == set(model.spec.model.outputs)
    else:
        out = program(dummy_feeds(program, 16))  # zeros (lr 0 included): a well-defined loss
        # a train step with an l2 penalty returns the data loss alone (the penalty's value
        # is computed when an epoch reports it)
        assert {"data_loss", "correct", "count"} <= set(out)
        assert ("loss" in out) == (mode == "eval")
    for name, value in out.items():
        assert value.dtype == np.float32, (mode, name, value.dtype)
        assert np.isfinite(value).all(), (mode, name)


def test_real_batch_train_and_eval_outputs(tmp_path):
    """One train step and one eval call on real data: float32 scalars that make sense."""
    model = graphdl.load(DIGITS_SPEC).compile()
    data = model.data()
    feeds = {
        "x": np.ascontiguousarray(data.train.fields["x"][:32]),
        "y": np.ascontiguousarray(data.train.fields["y"][:32]),
    }
    ev = model.compiled("eval").program(feeds)
    assert ev["count"][0] == 32
    assert 0 <= ev["correct"][0] <= 32
    assert ev["data_loss"][0] == pytest.approx(math.log(10), rel=0.3)  # about uniform at init
    tr = model.compiled("train").program(
        {**feeds, "lr": np.float32(1e-3), "step_seed": np.int64(1)}
    )
    for k in ("data_loss", "correct", "count"):
        assert tr[k].dtype == np.float32 and tr[k].shape == (1,), k
    # the l2 penalty's value is not computed in the step (the trainer reports it per epoch)
    assert "loss" not in tr
    assert float(model.state["opt.step"][0]) == 1
