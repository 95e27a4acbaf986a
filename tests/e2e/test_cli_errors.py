"""A user's mistakes through the command line: exit code 2, no traceback, the error code and a
file:line location (the line of the spec or data that is wrong)."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from e2e_helpers import edit_spec, line_of, spec_file

from graphdl.runtime.checkpoint import load_checkpoint

SOURCE = "source: {type: builtin, name: digits}"


def assert_user_error(rc: int, err: str, code: str, file, line: int | None = None) -> None:
    assert rc == 2, err
    assert "Traceback" not in err, err
    assert f"error[{code}]" in err, err
    if line is None:
        assert re.search(rf"^{re.escape(str(file))}:\d+", err, re.MULTILINE), err
    else:
        assert re.search(
            rf"^{re.escape(str(file))}:{line}(:\d+)?: error\[{code}\]", err, re.MULTILINE
        ), err


def test_data_shape_mismatch_is_E503_at_the_input_line(tmp_path, cli):
    spec = edit_spec(
        tmp_path, [("x: {shape: [64]", "x: {shape: [63]"), ("epochs: 30", "epochs: 2")]
    )
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    assert_user_error(rc, err, "E503", spec, line_of(spec, "x: {shape: [63]"))
    assert "[63]" in err and "[64]" in err
    assert not (tmp_path / "run" / "last.ckpt").exists()


def test_labels_out_of_range_is_E509_at_the_last_layer(tmp_path, cli):
    spec = edit_spec(tmp_path, [("units: 10}", "units: 5}"), ("epochs: 30", "epochs: 2")])
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    assert_user_error(rc, err, "E509", spec, line_of(spec, "units: 5}"))
    assert "dense_3" in err


def test_missing_npz_file_is_E501_at_the_source_path(tmp_path, cli):
    spec = edit_spec(tmp_path, [(SOURCE, "source: {type: npz, path: no_such_file.npz}")])
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    assert_user_error(rc, err, "E501", spec, line_of(spec, "no_such_file.npz"))
    assert str(tmp_path / "no_such_file.npz") in err  # resolved against the spec's directory


def _digits_csv(path, n=120, nan_at=None):
    from graphdl.data.sources import _read_builtin

    raw = _read_builtin("digits.npz")
    x, y = raw["x"][:n].astype(np.float64), raw["y"][:n]
    header = ",".join([f"p{i}" for i in range(64)] + ["label"])
    rows = [",".join([f"{v:g}" for v in x[i]] + [str(int(y[i]))]) for i in range(n)]
    if nan_at is not None:
        r, c = nan_at
        cells = rows[r].split(",")
        cells[c] = "nan"
        rows[r] = ",".join(cells)
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_nan_in_csv_is_E504(tmp_path, cli):
    _digits_csv(tmp_path / "digits.csv", nan_at=(7, 3))
    spec = edit_spec(
        tmp_path,
        [
            (SOURCE, "source: {type: csv, path: digits.csv, target: label}"),
            ("target: y", "target: label"),
        ],
    )
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    assert_user_error(rc, err, "E504", spec, line_of(spec, "digits.csv"))
    assert "NaN" in err
    assert "csv line 9" in err  # header is line 1, sample 7 is line 9
    assert "'p3'" in err


def test_non_finite_loss_is_E601_and_last_ckpt_stays_good(tmp_path, cli):
    """Epoch 1 trains normally (lr 1e-3); the step schedule then multiplies the lr by 1e30,
    so epoch 2 blows up. last.ckpt (epoch 1) must still load, with finite weights."""
    spec = edit_spec(
        tmp_path,
        [
            ("epochs: 30", "epochs: 3"),
            (
                "optimizer: {type: adam, lr: 1.0e-3}",
                "optimizer: {type: adam, lr: 1.0e-3}\n  schedule: {type: step, step_size: 1, gamma: 1.0e+30}",
            ),
        ],
    )
    run_dir = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the reference interpreter overflows
        rc, _out, err = cli("run", spec, "--run-dir", run_dir, "--no-progress")
    assert_user_error(rc, err, "E601", spec)
    m = re.search(r"non-finite loss at step (\d+) \(epoch (\d+), batch (\d+)\)", err)
    assert m, err
    step, epoch, batch = map(int, m.groups())
    assert epoch == 2
    steps_per_epoch = 20  # ceil(1258 / 64)
    assert step == steps_per_epoch + batch
    # it names where the first non-finite value came from: an op in a layer, or a parameter
    assert re.search(r"came from (op '\w+' in layer 'dense_\d'|parameter '[\w.]+')", err), err
    layer = re.search(r"layer '(dense_\d)'", err)
    if layer:  # located at that layer's line in the spec
        lines = {"dense_1": "units: 128", "dense_2": "units: 64", "dense_3": "units: 10}"}
        assert f"{spec}:{line_of(spec, lines[layer.group(1)])}: error[E601]" in err
    tensors, meta = load_checkpoint(run_dir / "last.ckpt")
    assert meta["epoch"] == 1
    for k, v in tensors.items():
        if v.dtype.kind == "f":
            assert np.isfinite(v).all(), k
    assert not (run_dir / "results.json").exists()
    records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]


def test_unwritable_run_dir_is_E702(tmp_path, cli):
    (tmp_path / "file").write_text("not a directory")
    spec = spec_file(tmp_path)
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "file" / "run", "--no-progress")
    assert rc == 2 and "Traceback" not in err, err
    # located at the argument that named it, not at the spec's train: line
    assert err.startswith("--run-dir: error[E702]"), err
    assert str(tmp_path / "file" / "run") in err


def test_unwritable_checkpoint_dir_points_at_the_dir_line(tmp_path, cli):
    (tmp_path / "file").write_text("not a directory")
    spec = edit_spec(
        tmp_path,
        [
            (
                "checkpoint: {save: best",
                f"checkpoint: {{dir: {tmp_path / 'file' / 'run'}, save: best",
            ),
        ],
    )
    rc, _out, err = cli("run", spec, "--no-progress")
    assert_user_error(rc, err, "E702", spec, line_of(spec, "checkpoint: {dir:"))


def test_unknown_key_is_E101(tmp_path, cli):
    spec = edit_spec(tmp_path, [("batch_size: 64", "batch_size: 64\n  bacth_size: 32")])
    for command in ("run", "validate", "compile"):
        rc, _out, err = cli(command, spec)
        assert_user_error(rc, err, "E101", spec, line_of(spec, "bacth_size"))
        assert "nothing was run" in err


@pytest.mark.parametrize("command", ["validate", "run", "compile"])
def test_format_json_prints_the_errors(tmp_path, cli, command):
    spec = edit_spec(tmp_path, [("batch_size: 64", "batch_size: 64\n  bacth_size: 32")])
    rc, out, err = cli(command, spec, "--format", "json")
    assert rc == 2
    doc = json.loads(out)
    assert isinstance(doc, dict)
    assert doc["errors"][0]["code"] == "E101"
    assert doc["errors"][0]["line"] == line_of(spec, "bacth_size")
    assert doc["errors"][0]["file"] == str(spec)
    assert doc["errors"][0]["path"] == "train.bacth_size"
    assert "Traceback" not in err


def test_format_json_for_a_data_error(tmp_path, cli):
    spec = edit_spec(tmp_path, [("x: {shape: [64]", "x: {shape: [63]")])
    rc, out, _err = cli(
        "run", spec, "--run-dir", tmp_path / "run", "--format", "json", "--no-progress"
    )
    assert rc == 2
    doc = json.loads(out)
    assert doc["phase"] == "data"
    assert doc["errors"][0]["code"] == "E503"
    assert doc["errors"][0]["line"] == line_of(spec, "x: {shape: [63]")
