"""Specs people write: small mistakes (and a few correct variations) in every section of
specs/mlp_digits.yaml, run through the CLI as a user would (`graphdl validate`, then
`graphdl run --epochs 1`). Each either trains to a finite result (exit 0) or is refused with
exit 2 and a located first error line (`file:line:col: error[Exxx]`, on the line the mistake
is on); none prints a traceback.

A case is a list of text edits of the digits spec (`edit_spec` keeps the layout, so the
reported line is the edited one) and its outcome: `OK` (or `Trains(warning=...)`, a warning
both commands print), or `Refused(code, needle, at)`, where `needle` is text on the line the
error must point to and `at` the command that refuses it.

A trained case checks results.json: complete, one epoch, a finite test loss of a sane size
(a loss of 1e37 is what reading past a buffer looks like) and metrics in [0, 1].
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import pytest
from e2e_helpers import edit_spec, line_of

DENSE_1 = "    - {type: dense, units: 128, activation: relu}"
DENSE_2 = "    - {type: dense, units: 64, activation: relu}"
LAYERS_KEY = "  layers:                                        # a plain list = a sequential model"
PREPROCESS_SCALE = (
    "  preprocess:                                    # deterministic, applied to every split\n"
    "    - {op: scale, factor: 0.0625}                # pixel range 0..16 -> 0..1\n"
)
INPUTS = (
    "  inputs:\n    x: {shape: [64], dtype: float32}             # name must match a data field\n"
)
MLP_BLOCK = (
    "seed: 42\n"
    "blocks:\n"
    "  mlp_block:\n"
    "    params: {units: 64}\n"
    "    layers:\n"
    "      - {type: dense, units: $units, activation: relu}\n"
    "      - {type: dropout, rate: 0.1}"
)


@dataclass(frozen=True)
class Refused:
    code: str
    needle: str  # text on the spec line the first error points to
    at: str = "validate"  # the first command that refuses the spec: validate or run


@dataclass(frozen=True)
class Trains:
    warning: str | None = None  # a warning code both commands must print, located like errors


OK = Trains()


def case(section: str, name: str, edits, outcome=OK):
    slow = () if isinstance(outcome, Refused) else pytest.mark.slow  # compiles when cold
    return pytest.param(edits, outcome, id=f"{section}-{name}", marks=slow)


CASES = [
    # ---------------------------------------------------------------- data
    case(
        "data",
        "source_name_typo",
        [("name: digits}", "name: digit}")],
        Refused("E103", "name: digit}"),
    ),
    case(
        "data",
        "npz_without_path",
        [("{type: builtin, name: digits}", "{type: npz}")],
        Refused("E102", "{type: npz}"),
    ),
    case(
        "data", "split_over_one", [("train: 0.7,", "train: 0.8,")], Refused("E105", "train: 0.8,")
    ),
    case(
        "data",
        "split_in_percent",
        [("train: 0.7, val: 0.15, test: 0.15", "train: 70, val: 15, test: 15")],
        Refused("E105", "train: 70"),
    ),
    case(
        "data",
        "stratify_yes",
        [("stratify: true", "stratify: yes")],
        Refused("E104", "stratify: yes"),
    ),
    case(
        "data",
        "filter_missing_class",
        [("  split:", "  filter: {classes: [1, 11]}\n  split:")],
        Refused("E508", "filter:", at="run"),
    ),
    case(
        "data", "filter_three_classes", [("  split:", "  filter: {classes: [0, 1, 2]}\n  split:")]
    ),
    case("data", "train_subsample", [("stratify: true}", "stratify: true, train_subsample: 0.5}")]),
    case(
        "data",
        "target_is_an_input",
        [("target: y", "target: x")],
        # the target names a model input: the loss reads that input, whose shape [64] is
        # not the labels' [] (refused as the spec is lowered, before any data is read)
        Refused("E304", "target: x"),
    ),
    # ---------------------------------------------------------------- preprocess
    case(
        "preprocess",
        "op_typo",
        [("{op: scale, factor", "{op: scaling, factor")],
        Refused("E103", "op: scaling"),
    ),
    case(
        "preprocess",
        "normalize_mode_typo",
        [("mode: zscore", "mode: z-score")],
        Refused("E103", "mode: z-score"),
    ),
    case(
        "preprocess",
        "factor_as_fraction",
        [("factor: 0.0625", "factor: 1/16")],
        Refused("E104", "factor: 1/16"),
    ),
    case(
        "preprocess",
        "not_a_list",
        [(PREPROCESS_SCALE, "  preprocess: {op: scale, factor: 0.0625}\n")],
        Refused("E001", "{op: normalize"),
    ),
    case(
        "preprocess",
        "pca_input_not_updated",
        [("stats: from_train}", "stats: from_train}\n    - {op: pca, components: 20}")],
        Refused("E503", "x: {shape: [64]", at="run"),
    ),
    case(
        "preprocess",
        "pca_input_updated",
        [
            ("stats: from_train}", "stats: from_train}\n    - {op: pca, components: 20}"),
            ("shape: [64]", "shape: [20]"),
        ],
    ),
    case(
        "preprocess",
        "resize_flat_data",
        [("{op: scale, factor: 0.0625}", "{op: resize, size: 28}")],
        Refused("E508", "op: resize", at="run"),
    ),
    # ---------------------------------------------------------------- augment
    case(
        "augment",
        "rotation_on_flat_data",
        [("model:", "  augment:\n    - {op: random_rotation, degrees: 10}\n\nmodel:")],
        Refused("E304", "op: random_rotation"),
    ),
    case(
        "augment",
        "negative_noise",
        [("model:", "  augment:\n    - {op: gaussian_noise, std: -0.1}\n\nmodel:")],
        Refused("E105", "std: -0.1"),
    ),
    case(
        "augment",
        "gaussian_noise",
        [("model:", "  augment:\n    - {op: gaussian_noise, std: 0.05}\n\nmodel:")],
    ),
    # ---------------------------------------------------------------- model
    case(
        "model",
        "input_name_not_a_field",
        [("x: {shape: [64]", "pixels: {shape: [64]")],
        Refused("E502", "pixels:", at="run"),
    ),
    case(
        "model",
        "input_shape_63",
        [("shape: [64]", "shape: [63]")],
        Refused("E503", "shape: [63]", at="run"),
    ),
    case(
        "model",
        "input_as_image",
        [("shape: [64]", "shape: [8, 8]")],
        # dense applies at every step of an [8, 8] input (a sequence of 8 rows), so the
        # mistake shows at the loss, which says how to pool the steps
        Refused("E302", "loss: {type: cross_entropy}"),
    ),
    case(
        "model",
        "dtype_float",
        [("dtype: float32", "dtype: float")],
        Refused("E103", "dtype: float}"),
    ),
    case("model", "no_inputs", [(INPUTS, "")], Refused("E102", "model:")),
    # ---------------------------------------------------------------- layers
    case("layers", "unit_for_units", [("units: 128", "unit: 128")], Refused("E102", "unit: 128")),
    case("layers", "units_zero", [("units: 128", "units: 0")], Refused("E105", "units: 0")),
    case("layers", "units_negative", [("units: 64", "units: -64")], Refused("E105", "units: -64")),
    case(
        "layers", "units_quoted", [("units: 128", "units: '128'")], Refused("E104", "units: '128'")
    ),
    case(
        "layers", "units_float", [("units: 128", "units: 128.5")], Refused("E104", "units: 128.5")
    ),
    case(
        "layers",
        "activation_Relu",
        [("activation: relu}\n    - {type: dropout", "activation: Relu}\n    - {type: dropout")],
        Refused("E103", "activation: Relu"),
    ),
    case(
        "layers",
        "type_Dense",
        [("type: dense, units: 64", "type: Dense, units: 64")],
        Refused("E103", "type: Dense"),
    ),
    case(
        "layers",
        "type_linear",
        [("type: dense, units: 64", "type: linear, units: 64")],
        Refused("E103", "type: linear"),
    ),
    case("layers", "dropout_1_5", [("rate: 0.2", "rate: 1.5")], Refused("E105", "rate: 1.5")),
    case("layers", "dropout_zero", [("rate: 0.2", "rate: 0")]),
    case(
        "layers",
        "conv_on_flat_input",
        [(DENSE_1, "    - {type: conv2d, filters: 4, kernel: 3}")],
        Refused("E301", "type: conv2d"),
    ),
    case("layers", "flatten_flat_input", [(DENSE_1, "    - {type: flatten}\n" + DENSE_1)]),
    case(
        "layers",
        "head_too_small",
        [("units: 10}", "units: 5}")],
        Refused("E509", "units: 5}", at="run"),
    ),
    case(
        "layers",
        "unknown_input",
        [(DENSE_2, DENSE_2[:-1] + ", inputs: [encoder]}")],
        Refused("E202", "inputs: [encoder]"),
    ),
    case(
        "layers",
        "duplicate_names",
        [
            (DENSE_1, "    - {type: dense, name: h, units: 128, activation: relu}"),
            (DENSE_2, "    - {type: dense, name: h, units: 64, activation: relu}"),
        ],
        Refused("E204", "name: h, units: 64"),
    ),
    case(
        "layers",
        "empty",
        [(LAYERS_KEY, "  layers: []\n  old_layers:")],
        Refused("E102", "layers: []"),
    ),
    # ---------------------------------------------------------------- vars / blocks / residual
    case(
        "vars",
        "used",
        [("seed: 42", "seed: 42\nvars: {hidden: 128}"), ("units: 128", "units: $hidden")],
    ),
    case(
        "vars",
        "typo",
        [("seed: 42", "seed: 42\nvars: {hidden: 128}"), ("units: 128", "units: $hiden")],
        Refused("E201", "$hiden"),
    ),
    case(
        "vars",
        "wrong_type",
        [("seed: 42", "seed: 42\nvars: {hidden: wide}"), ("units: 128", "units: $hidden")],
        Refused("E104", "units: $hidden"),
    ),
    case(
        "blocks",
        "repeated",
        [("seed: 42", MLP_BLOCK), (DENSE_2, "    - {type: mlp_block, units: 64, repeat: 2}")],
    ),
    case(
        "blocks",
        "type_typo",
        [("seed: 42", MLP_BLOCK), (DENSE_2, "    - {type: mlp_blok, units: 64}")],
        Refused("E103", "mlp_blok"),
    ),
    case(
        "blocks",
        "unknown_param",
        [("seed: 42", MLP_BLOCK), (DENSE_2, "    - {type: mlp_block, width: 64}")],
        Refused("E101", "width: 64"),
    ),
    case(
        "blocks",
        "repeat_zero",
        [("seed: 42", MLP_BLOCK), (DENSE_2, "    - {type: mlp_block, units: 64, repeat: 0}")],
        Refused("E105", "repeat: 0"),
    ),
    case(
        "residual",
        "width_changes",
        [(DENSE_2, DENSE_2 + "\n    - {type: residual, layers: [{type: dense, units: 32}]}")],
        Refused("E301", "type: residual"),
    ),
    case(
        "residual",
        "same_width",
        [
            (
                DENSE_2,
                DENSE_2 + "\n    - {type: residual, layers: [{type: dense, units: 64, "
                "activation: relu}]}",
            )
        ],
    ),
    case(
        "residual",
        "no_layers",
        [(DENSE_2, DENSE_2 + "\n    - {type: residual}")],
        Refused("E102", "type: residual"),
    ),
    # ---------------------------------------------------------------- train
    case(
        "train",
        "target_typo",
        [("target: y", "target: label")],
        Refused("E502", "target: label", at="run"),
    ),
    case("train", "epochs_zero", [("epochs: 30", "epochs: 0")], Refused("E105", "epochs: 0")),
    case(
        "train",
        "batch_size_zero",
        [("batch_size: 64", "batch_size: 0")],
        Refused("E105", "batch_size: 0"),
    ),
    case(
        "train",
        "batch_size_quoted",
        [("batch_size: 64", "batch_size: '64'")],
        Refused("E104", "batch_size: '64'"),
    ),
    case("train", "batch_larger_than_data", [("batch_size: 64", "batch_size: 100000")]),
    case(
        "train",
        "duplicate_key",
        [("batch_size: 64", "batch_size: 64\n  batch_size: 32")],
        Refused("E002", "batch_size: 32"),
    ),
    case("train", "l2_negative", [("l2: 1.0e-4", "l2: -1.0e-4")], Refused("E105", "l2: -1.0e-4")),
    case(
        "train",
        "clip_zero",
        [("  regularization", "  gradient_clip: {max_norm: 0}\n  regularization")],
        Refused("E105", "max_norm: 0"),
    ),
    case(
        "train",
        "freeze_unknown_layer",
        [("  regularization", "  freeze: [encoder]\n  regularization")],
        Refused("E207", "freeze: [encoder]"),
    ),
    case(
        "train",
        "device_gpu0",
        [("  regularization", "  device: gpu0\n  regularization")],
        Refused("E103", "device: gpu0"),
    ),
    # ---------------------------------------------------------------- loss
    case("loss", "left_out", [("  loss: {type: cross_entropy}\n", "")]),
    case(
        "loss",
        "keras_name",
        [("type: cross_entropy", "type: sparse_categorical_crossentropy")],
        Refused("E103", "sparse_categorical_crossentropy"),
    ),
    case(
        "loss",
        "mse_keeps_accuracy",
        [("type: cross_entropy", "type: mse")],
        Refused("E107", "metrics: [accuracy]"),
    ),
    case(
        "loss",
        "mse_on_class_labels",
        [
            ("type: cross_entropy", "type: mse"),
            ("metrics: [accuracy]", "metrics: []"),
            ("{save: best, monitor: val_loss}", "{save: last}"),
        ],
        Refused("E305", "loss: {type: mse}", at="run"),
    ),
    case(
        "loss",
        "bce_on_ten_units",
        [("type: cross_entropy", "type: bce_with_logits")],
        Refused("E305", "loss: {type: bce_with_logits}", at="run"),
    ),
    case(
        "loss",
        "bce_on_ten_classes",
        [
            ("type: cross_entropy", "type: bce_with_logits"),
            ("units: 10}", "units: 1}"),
            ("metrics: [accuracy]", "metrics: []"),
        ],
        Refused("E509", "loss: {type: bce_with_logits}", at="run"),
    ),
    case(
        "loss",
        "label_smoothing_one",
        [("type: cross_entropy}", "type: cross_entropy, label_smoothing: 1.0}")],
        Refused("E105", "label_smoothing: 1.0"),
    ),
    case(
        "loss",
        "label_smoothing",
        [("type: cross_entropy}", "type: cross_entropy, label_smoothing: 0.1}")],
    ),
    case(
        "loss",
        "softmax_head_warns",
        [("units: 10}", "units: 10, activation: softmax}")],
        Trains(warning="W301"),
    ),
    # ---------------------------------------------------------------- optimizer
    case(
        "optimizer",
        "learning_rate",
        [("lr: 1.0e-3", "learning_rate: 1.0e-3")],
        Refused("E101", "learning_rate:"),
    ),
    case(
        "optimizer", "lr_negative", [("lr: 1.0e-3", "lr: -1.0e-3")], Refused("E105", "lr: -1.0e-3")
    ),
    case("optimizer", "lr_typo", [("lr: 1.0e-3", "lr: 1e-3x")], Refused("E104", "lr: 1e-3x")),
    case("optimizer", "Adam", [("type: adam", "type: Adam")], Refused("E103", "type: Adam")),
    case(
        "optimizer",
        "sgd_momentum",
        [("{type: adam, lr: 1.0e-3}", "{type: sgd, lr: 0.05, momentum: 0.9}")],
        Refused("E101", "momentum: 0.9"),
    ),
    # ---------------------------------------------------------------- schedule
    case(
        "schedule",
        "cosine",
        [("  regularization", "  schedule: {type: cosine, min_lr: 1.0e-5}\n  regularization")],
    ),
    case(
        "schedule",
        "type_typo",
        [("  regularization", "  schedule: {type: cosin}\n  regularization")],
        Refused("E103", "type: cosin}"),
    ),
    case(
        "schedule",
        "step_without_step_size",
        [("  regularization", "  schedule: {type: step}\n  regularization")],
        Refused("E102", "schedule: {type: step}"),
    ),
    case(
        "schedule",
        "negative_gamma",
        [
            (
                "  regularization",
                "  schedule: {type: step, step_size: 2, gamma: -0.5}\n  regularization",
            )
        ],
        Refused("E105", "gamma: -0.5"),
    ),
    case(
        "schedule",
        "min_lr_above_lr",
        [("  regularization", "  schedule: {type: cosine, min_lr: 1.0}\n  regularization")],
        Refused("E105", "min_lr: 1.0"),
    ),
    # ---------------------------------------------------------------- metrics
    case(
        "metrics",
        "mae_for_classes",
        [("metrics: [accuracy]", "metrics: [accuracy, mae]")],
        Refused("E107", "metrics: [accuracy, mae]"),
    ),
    case(
        "metrics",
        "acc",
        [("metrics: [accuracy]", "metrics: [acc]")],
        Refused("E103", "metrics: [acc]"),
    ),
    case(
        "metrics",
        "not_a_list",
        [("metrics: [accuracy]", "metrics: accuracy")],
        Refused("E104", "metrics: accuracy"),
    ),
    case(
        "metrics",
        "several",
        [("metrics: [accuracy]", "metrics: [f1_macro, top_3_accuracy, confusion_matrix]")],
    ),
    case("metrics", "empty", [("metrics: [accuracy]", "metrics: []")]),
    # ---------------------------------------------------------------- checkpoint
    case(
        "checkpoint",
        "monitor_accuracy",
        [("{save: best, monitor: val_loss}", "{save: best, monitor: val_accuracy}")],
    ),
    case(
        "checkpoint",
        "monitor_mae",
        [("{save: best, monitor: val_loss}", "{save: best, monitor: val_mae}")],
        Refused("E107", "monitor: val_mae"),
    ),
    case(
        "checkpoint",
        "monitor_not_in_metrics",
        [("{save: best, monitor: val_loss}", "{save: best, monitor: val_f1_macro}")],
        Refused("E107", "monitor: val_f1_macro"),
    ),
    case(
        "checkpoint",
        "save_always",
        [("{save: best,", "{save: always,")],
        Refused("E103", "save: always"),
    ),
    # ---------------------------------------------------------------- early_stopping
    case(
        "early_stopping",
        "patience_negative",
        [("patience: 5", "patience: -1")],
        Refused("E105", "patience: -1"),
    ),
    case(
        "early_stopping",
        "monitor_val_acc",
        [("monitor: val_loss, patience", "monitor: val_acc, patience")],
        Refused("E103", "monitor: val_acc"),
    ),
    case(
        "early_stopping",
        "mode_maximize",
        [("patience: 5}", "patience: 5, mode: maximize}")],
        Refused("E103", "mode: maximize"),
    ),
    case(
        "early_stopping",
        "restore_best_weights",
        [("patience: 5}", "patience: 5, restore_best_weights: true}")],
    ),
    # ---------------------------------------------------------------- evaluate
    case(
        "evaluate",
        "split_validation",
        [("{split: test}", "{split: validation}")],
        Refused("E103", "split: validation"),
    ),
    case(
        "evaluate",
        "empty_val_split",
        [
            ("val: 0.15, test: 0.15", "val: 0, test: 0.3"),
            ("evaluate: {split: test}", "evaluate: {split: val}"),
        ],
        Refused("E105", "evaluate: {split: val}"),
    ),
    case(
        "evaluate",
        "regression_metric",
        [("{split: test}", "{split: test, metrics: [r2]}")],
        Refused("E107", "metrics: [r2]"),
    ),
    case(
        "evaluate", "metrics", [("{split: test}", "{split: test, metrics: [accuracy, f1_macro]}")]
    ),
    # ---------------------------------------------------------------- init
    case(
        "init",
        "missing_checkpoint",
        [(LAYERS_KEY, "  init: {checkpoint: nowhere.ckpt}\n" + LAYERS_KEY)],
        Refused("E401", "nowhere.ckpt", at="run"),
    ),
    case(
        "init",
        "strict_maybe",
        [(LAYERS_KEY, "  init: {checkpoint: nowhere.ckpt, strict: maybe}\n" + LAYERS_KEY)],
        Refused("E104", "strict: maybe"),
    ),
    # ---------------------------------------------------------------- top level and YAML
    case("top", "version_2", [("graphdl: 1 ", "graphdl: 2 ")], Refused("E103", "graphdl: 2")),
    case(
        "top",
        "optimiser_section",
        [("seed: 42", "seed: 42\noptimiser: {type: adam}")],
        Refused("E101", "optimiser:"),
    ),
    case("top", "seed_word", [("seed: 42", "seed: forty")], Refused("E104", "seed: forty")),
    case(
        "yaml",
        "unclosed_brace",
        [("{type: dropout, rate: 0.2}", "{type: dropout, rate: 0.2")],
        Refused("E001", DENSE_2.strip()),
    ),
    case(
        "yaml",
        "tab_indent",
        [("    - {type: dropout", "\t- {type: dropout")],
        Refused("E001", "\t- {type: dropout"),
    ),
]


def _first_error_line(err: str) -> str:
    return next((line for line in err.splitlines() if "error[" in line), "")


def _assert_warned(err: str, spec, outcome: Trains) -> None:
    if outcome.warning is None:
        assert "warning[" not in err, err
    else:
        assert re.search(
            rf"^{re.escape(str(spec))}:\d+:\d+: warning\[{outcome.warning}\]", err, re.MULTILINE
        ), err


def _assert_refused(rc: int, out: str, err: str, spec, outcome: Refused) -> None:
    assert rc == 2, f"exit {rc}\n{out}\n{err}"
    line = line_of(spec, outcome.needle)
    first = _first_error_line(err)
    assert re.match(rf"{re.escape(str(spec))}:{line}:\d+: error\[{outcome.code}\]", first), err


@pytest.mark.parametrize(("edits", "outcome"), CASES)
def test_spec_people_write(tmp_path, cli, edits, outcome):
    spec = edit_spec(tmp_path, edits)
    run_dir = tmp_path / "run"
    rc, out, err = cli("validate", spec)
    assert "Traceback" not in out + err, err
    if isinstance(outcome, Refused) and outcome.at == "validate":
        _assert_refused(rc, out, err, spec, outcome)
        return
    assert rc == 0, err
    if isinstance(outcome, Trains):
        _assert_warned(err, spec, outcome)

    rc, out, err = cli("run", spec, "--epochs", 1, "--run-dir", run_dir, "--no-progress")
    assert "Traceback" not in out + err, err
    if isinstance(outcome, Refused):
        _assert_refused(rc, out, err, spec, outcome)
        assert not (run_dir / "results.json").exists()
        return
    assert rc == 0, err
    _assert_warned(err, spec, outcome)
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert results["status"] == "complete"
    assert results["epochs_run"] == 1
    test = results["test"]
    assert math.isfinite(test["loss"]) and 0 <= test["loss"] < 10, test
    for name in ("accuracy", "f1_macro", "top_3_accuracy"):
        if name in test:
            assert 0.0 <= test[name] <= 1.0, test


def test_the_table_covers_every_section():
    sections = {p.id.split("-")[0] for p in CASES}
    assert len(CASES) >= 40
    assert sections >= {
        "data",
        "preprocess",
        "augment",
        "model",
        "layers",
        "vars",
        "blocks",
        "residual",
        "train",
        "loss",
        "optimizer",
        "schedule",
        "metrics",
        "checkpoint",
        "early_stopping",
        "evaluate",
        "init",
    }
