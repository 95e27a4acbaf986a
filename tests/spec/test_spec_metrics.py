"""The metric table (graphdl/spec/metrics.py): a metric or monitor that cannot exist for the
loss is refused when the spec loads (E107 at its key), and one that can is accepted."""

from __future__ import annotations

import pytest
from spec_helpers import HEAD

from graphdl.cli import main
from graphdl.spec.metrics import METRICS, MONITORS, higher_is_better, metrics_for

# spec_helpers.HEAD (seven lines) plus one dense layer and a train: section
SPEC = HEAD + """\
    - {type: dense, units: UNITS}
train:
  target: y
  loss: {type: LOSS}
"""


def spec(loss: str, extra: str = "", units: int = 10) -> str:
    return SPEC.replace("LOSS", loss).replace("UNITS", str(units)) + extra


def only_e107(err):
    codes = [d.code for d in err.diagnostics]
    assert codes and set(codes) == {"E107"}, err.format()
    return err.diagnostics


def test_accuracy_of_a_regression_loss_is_refused_at_its_item(spec_error):
    err = spec_error(spec("mse", "  metrics: [mae, accuracy]\n", units=1), phase="references")
    (d,) = only_e107(err)
    assert (d.line, d.path) == (12, "train.metrics[1]")
    assert "metric 'accuracy' does not exist for the loss mse" in d.message
    assert "regression" in d.message
    assert "mae, rmse, r2" in d.help


@pytest.mark.parametrize("loss, metric", [
    ("cross_entropy", "auc"), ("cross_entropy", "mae"), ("cross_entropy", "f1"),
    ("bce_with_logits", "top_5_accuracy"), ("bce_with_logits", "r2"),
    ("mse", "f1_macro"), ("mse", "confusion_matrix"),
])
def test_every_metric_of_another_loss_is_refused(spec_error, loss, metric):
    (d,) = only_e107(spec_error(spec(loss, f"  metrics: [{metric}]\n")))
    assert d.path == "train.metrics[0]" and metric in d.message


def test_evaluate_metrics_are_checked_where_written(spec_error):
    err = spec_error(spec("bce_with_logits", "evaluate: {metrics: [auc, rmse]}\n", units=1))
    (d,) = only_e107(err)
    assert (d.line, d.path) == (12, "evaluate.metrics[1]")


@pytest.mark.parametrize("key", ["checkpoint", "early_stopping"])
def test_val_accuracy_monitor_of_an_mse_model_is_refused(spec_error, key):
    """It could never be reported: best.ckpt would never be written, early stopping never fire."""
    err = spec_error(spec("mse", f"  {key}: {{monitor: val_accuracy}}\n", units=1))
    (d,) = only_e107(err)
    assert (d.line, d.path) == (12, f"train.{key}.monitor")
    assert "accuracy does not exist for the loss mse" in d.message
    assert "val_mae" in d.help and "val_r2" in d.help


def test_monitor_of_a_metric_not_asked_for_is_refused(spec_error):
    err = spec_error(spec("cross_entropy", "  metrics: [accuracy]\n"
                          "  checkpoint: {monitor: val_f1_macro}\n"))
    (d,) = only_e107(err)
    assert d.path == "train.checkpoint.monitor"
    assert "'f1_macro' is not in train.metrics" in d.message
    assert d.help.startswith("add f1_macro to train.metrics")


def test_val_monitor_without_a_val_split_is_refused_unless_the_train_split_has_it(spec_error, load):
    no_val = "data:\n  source: {type: builtin, name: digits}\n  split: {train: 0.8, val: 0, test: 0.2}\n"
    text = spec("cross_entropy", "  metrics: [accuracy, f1_macro]\n"
                "  early_stopping: {monitor: val_f1_macro}\n")
    text = text.replace("data:\n  source: {type: builtin, name: digits}\n", no_val)
    (d,) = only_e107(spec_error(text))
    assert d.path == "train.early_stopping.monitor" and "data.split.val is 0" in d.message
    # val_accuracy falls back to train_accuracy, which the train graph computes
    load(text.replace("monitor: val_f1_macro", "monitor: val_accuracy"))


def test_metrics_of_each_loss_are_accepted(load):
    for loss, units in (("cross_entropy", 10), ("bce_with_logits", 1), ("mse", 1)):
        names = metrics_for(loss)
        monitor = next(f"val_{n}" for n in names if n not in ("loss", "accuracy")
                       and METRICS[n].scalar)
        s = load(spec(loss, f"  metrics: [{', '.join(names)}]\n"
                      f"  checkpoint: {{monitor: {monitor}}}\n"
                      f"  early_stopping: {{monitor: {monitor}}}\n", units=units))
        assert s.train["metrics"] == names and s.evaluate["metrics"] == names


def test_an_empty_list_asks_for_no_metric(load):
    s = load(spec("cross_entropy", "  metrics: []\n"))
    assert s.train["metrics"] == [] and s.evaluate["metrics"] == []


def test_unknown_metric_is_a_schema_error_with_a_suggestion(spec_error):
    err = spec_error(spec("cross_entropy", "  metrics: [f1_marco]\n"))
    (d,) = err.diagnostics
    assert d.code == "E103" and "f1_macro" in (d.help or "")


def test_monitor_modes():
    assert all(m.startswith(("val_", "train_")) for m in MONITORS)
    assert higher_is_better("val_f1_macro") and higher_is_better("val_auc")
    assert higher_is_better("train_accuracy") and higher_is_better("val_r2")
    assert not higher_is_better("val_loss") and not higher_is_better("val_rmse")
    assert not higher_is_better("val_mae")


def test_validate_exits_2_with_the_located_error(write_spec, capsys):
    path = write_spec(spec("mse", "  checkpoint: {monitor: val_accuracy}\n", units=1))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr()
    text = err.out + err.err
    assert "E107" in text and f"{path.name}:12:" in text and "Traceback" not in text
