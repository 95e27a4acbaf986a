"""Ragged sequence data end to end (issue 11, items 6 and 9): japanese_vowels trains with
max_len and with a recurrent layer reading the lengths input (batches padded to their own
longest sequence), airline windows train a forecaster, predict pads new sequences, and the
data mistakes are located errors through the command line (exit code 2, no traceback)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

import graphdl

HEAD = "graphdl: 1\nname: {name}\nseed: 1\n"


def _write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(HEAD.format(name=name) + body, encoding="utf-8")
    return path


def _line(path: Path, needle: str) -> int:
    (hit,) = [i for i, text in enumerate(path.read_text().splitlines(), 1) if needle in text]
    return hit


def _user_error(rc: int, err: str, code: str, file: Path, line: int) -> None:
    assert rc == 2 and "Traceback" not in err, err
    assert re.search(rf"^{re.escape(str(file))}:{line}:\d+: error\[{code}\]", err,
                     re.MULTILINE), err


def test_japanese_vowels_with_max_len_trains_through_the_cli(tmp_path, cli):
    spec = _write(tmp_path, "jv_flat", (
        "data:\n  source: {type: builtin, name: japanese_vowels, max_len: 29}\n"
        "  preprocess: [{op: normalize}]\n"
        "model:\n  inputs:\n    x: {shape: [29, 12]}\n    lengths: {shape: [], dtype: int64}\n"
        "  layers:\n    - {type: flatten, inputs: [x]}\n"
        "    - {type: dense, units: 32, activation: relu}\n    - {type: dense, units: 9}\n"
        "train: {target: y, epochs: 3, batch_size: 32, optimizer: {type: adam, lr: 0.003}}\n"))
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    assert rc == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test"]["accuracy"] > 0.8  # 370 test utterances of 9 speakers


def test_recurrent_layer_reads_batches_padded_to_their_own_longest(tmp_path, monkeypatch):
    spec = _write(tmp_path, "jv_gru", (
        "data:\n  source: {type: builtin, name: japanese_vowels}\n"
        "  preprocess: [{op: normalize}]\n"
        "model:\n  inputs:\n    x: {shape: [T, 12]}\n    lengths: {shape: [], dtype: int64}\n"
        "  layers:\n    - {type: gru, hidden: 16, output: last, lengths: lengths, inputs: [x]}\n"
        "    - {type: dense, units: 9}\n"
        "train: {target: y, epochs: 2, batch_size: 32, optimizer: {type: adam, lr: 0.01}}\n"))
    model = graphdl.load(spec)
    program = model.train_program()
    seen = []

    def spy(feeds):
        seen.append((feeds["x"].shape[1], int(feeds["lengths"].max())))
        return program(feeds)

    monkeypatch.setattr(model, "train_program", lambda: spy)
    history = model.fit(tmp_path / "run", progress=False)
    assert math.isfinite(history[-1]["train_loss"])
    assert len(seen) == 2 * math.ceil(243 / 32)
    assert all(t == longest for t, longest in seen)  # T = the batch's longest
    assert len({t for t, _ in seen}) > 1  # and it changes from batch to batch
    assert model.evaluate("test")["accuracy"] > 0.5
    # predict: raw utterances of the test split, padded per batch, preprocessed as in training
    raw = model.data().test  # already preprocessed: only shapes matter here
    out = model.predict({"x": raw.fields["x"][:40], "lengths": raw.fields["lengths"][:40]},
                        batch_size=16)
    assert out.shape == (40, 9) and np.isfinite(out).all()


def test_airline_window_trains_a_forecaster(tmp_path):
    spec = _write(tmp_path, "airline", (
        "data:\n  source: {type: builtin, name: airline, window: {input: 12, horizon: 1}}\n"
        "  preprocess: [{op: scale, factor: 0.002, fields: [x, y]}]\n"
        "model:\n  inputs:\n    x: {shape: [12, 1]}\n"
        "  layers:\n    - {type: flatten}\n    - {type: dense, units: 1}\n"
        "train: {target: y, epochs: 20, batch_size: 16, loss: {type: mse}, metrics: [mae],\n"
        "        optimizer: {type: adam, lr: 0.01}}\n"))
    model = graphdl.load(spec)
    history = model.fit(tmp_path / "run", progress=False)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    splits = model.data()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (106, 13, 13)
    assert math.isfinite(model.evaluate("test")["mae"])


# ------------------------------------------------------------------ located errors


def test_ragged_input_without_lengths_is_E502_at_the_input(tmp_path, cli):
    spec = _write(tmp_path, "nolen", (
        "data:\n  source: {type: builtin, name: japanese_vowels}\n"
        "model:\n  inputs:\n    x: {shape: [T, 12]}\n"
        "  layers:\n    - {type: flatten}\n    - {type: dense, units: 9}\n"
        "train: {target: y, epochs: 1}\n"))
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    _user_error(rc, err, "E502", spec, _line(spec, "x: {shape: [T, 12]}"))
    assert "lengths: {shape: [], dtype: int64}" in err


def test_sequence_longer_than_max_len_is_E503_at_max_len(tmp_path, cli):
    spec = _write(tmp_path, "long", (
        "data:\n  source:\n    type: builtin\n    name: japanese_vowels\n    max_len: 20\n"
        "model:\n  inputs:\n    x: {shape: [20, 12]}\n    lengths: {shape: [], dtype: int64}\n"
        "  layers:\n    - {type: flatten, inputs: [x]}\n    - {type: dense, units: 9}\n"
        "train: {target: y, epochs: 1}\n"))
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    _user_error(rc, err, "E503", spec, _line(spec, "max_len: 20"))
    assert "truncate: post" in err and "sample 1" in err


def test_malformed_ts_line_is_E505_in_the_file(tmp_path, cli):
    ts = tmp_path / "bad.ts"
    ts.write_text("@classLabel true a b\n@data\n1,2,3:a\n4,5,x:b\n", encoding="utf-8")
    spec = _write(tmp_path, "badts", (
        "data:\n  source: {type: ts, path: bad.ts}\n"
        "model:\n  inputs:\n    x: {shape: [T, 1]}\n    lengths: {shape: [], dtype: int64}\n"
        "  layers:\n    - {type: flatten, inputs: [x]}\n    - {type: dense, units: 2}\n"
        "train: {target: label, epochs: 1}\n"))
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    _user_error(rc, err, "E505", ts, 4)
    assert f"{ts}:4:5:" in err


def test_token_id_outside_the_embedding_is_E509_at_vocab(tmp_path, cli):
    src = np.array([[3, 4, 5, 0], [3, 60, 0, 0], [7, 0, 0, 0], [8, 9, 0, 0]])
    np.savez(tmp_path / "tok.npz", src=src, y=np.array([0, 1, 0, 1]),
             lengths=np.array([3, 2, 1, 2]))
    spec = _write(tmp_path, "vocab", (
        "data:\n  source: {type: npz, path: tok.npz, sequences: [src]}\n"
        "model:\n  inputs:\n    src: {shape: [T], dtype: int64}\n"
        "    lengths: {shape: [], dtype: int64}\n"
        "  layers:\n    - {type: embedding, vocab: 50, dim: 4, inputs: [src]}\n"
        "    - {type: flatten}\n    - {type: dense, units: 2}\n"
        "train: {target: y, epochs: 1}\n"))
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    _user_error(rc, err, "E509", spec, _line(spec, "vocab: 50"))
    assert "token id 60 in sample 1, step 1" in err


def test_T_after_the_first_dimension_is_E104(tmp_path, cli):
    spec = _write(tmp_path, "tpos", (
        "data:\n  source: {type: builtin, name: japanese_vowels}\n"
        "model:\n  inputs:\n    x: {shape: [12, T]}\n"
        "  layers:\n    - {type: flatten}\ntrain: {target: y}\n"))
    rc, _out, err = cli("validate", spec)
    _user_error(rc, err, "E104", spec, _line(spec, "x: {shape: [12, T]}"))
    assert "shape: [T, 12]" in err
