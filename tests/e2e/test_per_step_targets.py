"""Per-step targets (issue 11, item 6, the loss side): a model whose output has a time axis
([T, classes] per sample: embedding -> lstm(output: sequence) -> dense) trains with
cross_entropy against one int64 label per step, the ragged target's padding
(train.loss.ignore_index, default -100) counting in neither the loss nor the metrics; a
per-step mse target is averaged over the steps each sample has (the lengths input); a
per-sample target for per-step logits is still E302 at the loss line.

The data: an npz file of ragged token sequences (lengths 2 to 8, tokens 1..7) whose tag at
step t is the token at step t - 1 (0 at step 0): a recurrent layer must carry one step of
memory; chance is about 1 in 7. Whatever the file holds past a sample's length is padding.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from e2e_helpers import line_of, read_metrics

import graphdl
from graphdl.backends.reference import run_reference
from graphdl.data.ragged import step_mask
from graphdl.ir.graph import Value
from graphdl.layers.lower import classes_per_step, lower, step_lengths
from graphdl.runtime.params import init_params
from graphdl.spec import load_spec

VOCAB, STEPS = 8, 8
GARBAGE = 5  # what the file holds past each sample's length (a valid class: must not count)

SPEC = """graphdl: 1
name: {name}
seed: 0
data:
  source: {{type: npz, path: tags.npz, sequences: [tokens, tags]}}
  split: {{train: 0.8, val: 0.1, test: 0.1}}
model:
  inputs:
    tokens: {{shape: [T], dtype: int64}}
    lengths: {{shape: [], dtype: int64}}
  layers:
    - {{type: embedding, vocab: 8, dim: 8, padding_idx: 0, inputs: [tokens]}}
    - {{type: lstm, hidden: 16, output: sequence, lengths: lengths}}
    - {{type: dense, units: 8}}
train:
  target: tags
  epochs: {epochs}
  batch_size: 16
  loss: {{type: cross_entropy}}
  optimizer: {{type: adam, lr: 0.02}}
  metrics: [accuracy]
evaluate: {{split: test, metrics: [accuracy, top_2_accuracy, f1_macro]}}
"""


def _tagging_npz(directory: Path, n: int = 400, per_sample: bool = False) -> None:
    r = np.random.default_rng(0)
    lengths = r.integers(2, STEPS + 1, size=n)
    tokens = np.zeros((n, STEPS), np.int64)
    tags = np.full((n, STEPS), GARBAGE, np.int64)
    for i, steps in enumerate(lengths):
        tok = r.integers(1, VOCAB, size=steps)
        tokens[i, :steps] = tok
        tags[i, 0] = 0
        tags[i, 1:steps] = tok[:-1]
    if per_sample:
        tags = tags[:, 0].copy()
    np.savez(directory / "tags.npz", tokens=tokens, tags=tags, lengths=lengths)


def _spec(directory: Path, name: str = "tagging", epochs: int = 4, **edits) -> Path:
    text = SPEC.format(name=name, epochs=epochs)
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    path = directory / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _refused_at_loss(rc: int, err: str, code: str, spec: Path) -> None:
    """Exit 2, no traceback, the first error ``code`` on the spec's train.loss line."""
    assert rc == 2 and "Traceback" not in err, err
    first = err.splitlines()[0]
    where = f"{spec}:{line_of(spec, 'loss: {type: cross_entropy}')}:"
    assert first.startswith(where) and f"error[{code}]" in first, err


@pytest.mark.slow
def test_per_step_tagging_trains_from_graphdl_run(tmp_path, cli):
    _tagging_npz(tmp_path)
    spec = _spec(tmp_path)
    rc, _out, err = cli("validate", spec)
    assert rc == 0, err
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    assert rc == 0, err
    epochs = read_metrics(tmp_path / "run")
    assert epochs[-1]["val_accuracy"] > epochs[0]["val_accuracy"]
    test = json.loads((tmp_path / "run" / "results.json").read_text())["test"]
    assert test["accuracy"] > 0.8, test  # chance is about 1/7
    assert test["top_2_accuracy"] >= test["accuracy"] and 0 < test["f1_macro"] <= 1
    assert math.isfinite(test["loss"]) and test["loss"] < 1.0


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def test_padding_is_ignored_by_the_loss_and_the_metrics(tmp_path):
    _tagging_npz(tmp_path)
    spec = load_spec(_spec(tmp_path))
    model = graphdl.load(spec.path)
    train = model.data().train
    tags, lengths = train.fields["tags"], train.fields["lengths"]
    real = step_mask(lengths, tags.shape[1])
    assert (tags[~real] == -100).all() and (tags[real] >= 0).all()  # the garbage is padding

    # the eval graph run by the reference interpreter (no kernels to compile): the loss is
    # the mean over the labelled steps, whatever the padded steps' inputs and logits hold
    graph = lower(spec, "eval")
    params = init_params(graph, spec.seed)
    feeds = train.batch(np.arange(12), ["tokens", "lengths", "tags"])
    mask = step_mask(feeds["lengths"], feeds["tags"].shape[1])
    assert not mask.all()  # some steps of this batch are padding

    def loss_of(f):
        out, _, _ = run_reference(graph, f, params)
        return float(out["data_loss"]), out

    base, out = loss_of(feeds)
    logp = _log_softmax(out["model_output"].astype(np.float64))
    labels = feeds["tags"]
    want = -logp[mask, labels[mask]].mean()
    np.testing.assert_allclose(base, want, rtol=1e-5)
    other = dict(feeds, tokens=np.where(mask, feeds["tokens"], 7))  # padded steps: other ids
    assert loss_of(other)[0] == base
    # with a lengths-free LSTM padded steps reach the padded logits only: the same holds
    assert loss_of(dict(feeds, lengths=np.full_like(feeds["lengths"], labels.shape[1])))[0] == base
    # a labelled step's input does count
    first = dict(feeds, tokens=feeds["tokens"].copy())
    first["tokens"][0, 0] = 1 + first["tokens"][0, 0] % 7
    assert loss_of(first)[0] != base

    # the split's metrics: the labelled steps only (padded predictions are garbage)
    m = model.evaluate_dataset(train, metrics=["accuracy", "confusion_matrix"])
    assert sum(map(sum, m["confusion_matrix"])) == int(real.sum())


def test_per_sample_labels_for_per_step_logits_is_E302_at_the_loss(tmp_path, cli):
    # an npz may hold either, so lowering takes labels per step and the data decides
    _tagging_npz(tmp_path, per_sample=True)
    spec = _spec(tmp_path, "per_sample", epochs=1,
                 **{"sequences: [tokens, tags]": "sequences: [tokens]"})
    rc, _out, err = cli("validate", spec)
    _refused_at_loss(rc, err, "E302", spec)
    assert "seq_pool" in err and "one label per step" in err, err  # how to pool, or to tag
    spec = _spec(tmp_path, "per_sample_npz", epochs=1, **{
        "source: {type: npz, path: tags.npz, sequences: [tokens, tags]}":
        "source: {type: npz, path: tags.npz}",
        "tokens: {shape: [T], dtype: int64}": "tokens: {shape: [8], dtype: int64}"})
    rc, _out, err = cli("validate", spec)
    assert rc == 0, err  # lowering cannot tell what the file holds
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    _refused_at_loss(rc, err, "E302", spec)
    assert "got [8, 8]" in err and "output: last" in err, err


def test_per_step_target_of_other_steps_is_E305(tmp_path, cli):
    # copy task: src [5] is read, tgt_out [6] (the target + EOS) has a step more
    path = tmp_path / "copy.yaml"
    path.write_text(
        "graphdl: 1\nname: copy\nseed: 0\n"
        "data:\n  source: {type: synthetic, task: copy, vocab: 8, length: 5, samples: 64}\n"
        "model:\n  inputs:\n    src: {shape: [5], dtype: int64}\n"
        "  layers:\n    - {type: embedding, vocab: 8, dim: 4, inputs: [src]}\n"
        "    - {type: lstm, hidden: 8}\n    - {type: dense, units: 8}\n"
        "train:\n  target: tgt_out\n  epochs: 1\n  loss: {type: cross_entropy}\n",
        encoding="utf-8")
    rc, _out, err = cli("validate", path)
    assert rc == 0, err  # a synthetic token task gives labels per step
    rc, _out, err = cli("run", path, "--run-dir", tmp_path / "run", "--no-progress")
    _refused_at_loss(rc, err, "E305", path)
    assert "per step" in err and "int64[N, 6]" in err and "int64[N, 5]" in err, err


def test_which_targets_lowering_takes_per_step(tmp_path):
    _tagging_npz(tmp_path)
    spec = load_spec(_spec(tmp_path))
    graph = lower(spec, "train")
    tags = graph.type_of(Value(graph.find("input", "tags")))
    assert tags.shape == ("N", "T") and tags.dtype == "int64"
    out = graph.type_of(Value(*graph.meta["loss_output"]))
    assert out.shape == ("N", "T", 8) and classes_per_step(spec, out)
    assert step_lengths(spec, out) == "lengths"
    digits = load_spec(Path(__file__).resolve().parents[2] / "specs" / "gru_digit_rows.yaml")
    assert not classes_per_step(digits, out)  # a built-in gives one label per sample
    assert step_lengths(digits, out) is None  # and has no lengths input


# ------------------------------------------------------------------ per-step mse


def _series_npz(directory: Path, binary: bool, n: int = 60) -> None:
    """x [N, T, 1] ragged, y [N, T] the running sum of x (binary: whether it is above 0);
    garbage past each length."""
    r = np.random.default_rng(1)
    lengths = r.integers(2, 7, size=n)
    x = r.uniform(-1, 1, size=(n, 6, 1)).astype(np.float32)
    y = np.cumsum(x[..., 0], axis=1).astype(np.float32)
    if binary:
        y = (y > 0).astype(np.float32)
    pad = ~step_mask(lengths, 6)
    x[pad] = 50.0
    y[pad] = -1e3
    np.savez(directory / "series.npz", x=x, y=y, lengths=lengths)


SERIES = """graphdl: 1
name: running_sum
seed: 0
data:
  source: {type: npz, path: series.npz, sequences: [x, y]}
  split: {train: 0.8, val: 0.1, test: 0.1}
model:
  inputs:
    x: {shape: [T, 1]}
    lengths: {shape: [], dtype: int64}
  layers:
    - {type: lstm, hidden: 8, output: sequence, lengths: lengths, inputs: [x]}
    - {type: dense, units: 1}
train:
  target: y
  epochs: 3
  batch_size: 8
  loss: {type: LOSS}
  optimizer: {type: adam, lr: 0.02}
  metrics: [METRIC]
evaluate: {split: test, metrics: [METRIC]}
"""


@pytest.mark.parametrize("loss", ["mse", "bce_with_logits"])
def test_per_step_mse_and_bce_average_over_the_real_steps(tmp_path, loss):
    _series_npz(tmp_path, binary=loss == "bce_with_logits")
    path = tmp_path / "series.yaml"
    metric = "mae" if loss == "mse" else "accuracy"
    path.write_text(SERIES.replace("LOSS", loss).replace("METRIC", metric), encoding="utf-8")
    spec = load_spec(path)
    model = graphdl.load(path)
    train = model.data().train
    graph = lower(spec, "eval")
    params = init_params(graph, spec.seed)
    feeds = train.batch(np.arange(10), ["x", "lengths", "y"])
    mask = step_mask(feeds["lengths"], feeds["y"].shape[1])
    assert not mask.all()
    out, _, _ = run_reference(graph, feeds, params)
    z = out["model_output"][..., 0].astype(np.float64)
    t = feeds["y"].astype(np.float64)
    per = (z - t) ** 2 if loss == "mse" else np.logaddexp(0, z) - z * t
    np.testing.assert_allclose(float(out["data_loss"]), per[mask].mean(), rtol=1e-5)
    garbage = dict(feeds, x=np.where(mask[..., None], feeds["x"], 9.0).astype(np.float32),
                   y=np.where(mask, feeds["y"], 0.5).astype(np.float32))
    again, _, _ = run_reference(graph, garbage, params)
    assert float(again["data_loss"]) == float(out["data_loss"])


@pytest.mark.slow
def test_per_step_mse_trains(tmp_path):
    _series_npz(tmp_path, binary=False)
    path = tmp_path / "series.yaml"
    path.write_text(SERIES.replace("LOSS", "mse").replace("METRIC", "mae"), encoding="utf-8")
    model = graphdl.load(path)
    history = model.fit(tmp_path / "run", progress=False)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # the test split's mae over the steps the sequences have (the garbage past them is 0)
    test = model.data().test
    real = step_mask(test.fields["lengths"], test.fields["y"].shape[1])
    predicted = model.predict({"x": test.fields["x"], "lengths": test.fields["lengths"]})
    mae = np.abs(predicted[..., 0][real] - test.fields["y"][real]).mean()
    np.testing.assert_allclose(model.evaluate("test")["mae"], mae, rtol=1e-5)


def test_split_metrics_count_the_labelled_steps_only():
    from graphdl.runtime.metrics import split_metrics

    r = np.random.default_rng(2)
    logits = r.standard_normal((4, 5, 3))
    labels = logits.argmax(axis=-1)
    labels[0, 0] = (labels[0, 0] + 1) % 3  # one wrong step
    labels[1:, 3:] = -100  # padding (the default ignore_index): its garbage never counts
    logits[1:, 3:] = np.nan
    names = ["accuracy", "top_2_accuracy", "confusion_matrix", "f1_macro"]
    m = split_metrics("cross_entropy", names, logits, labels)
    labelled = int((labels != -100).sum())
    assert sum(map(sum, m["confusion_matrix"])) == labelled
    assert m["accuracy"] == (labelled - 1) / labelled
    assert m["top_2_accuracy"] >= m["accuracy"]
    # the same numbers from the labelled positions as rows (one label per sample)
    keep = labels != -100
    assert split_metrics("cross_entropy", names, logits[keep], labels[keep]) == m
    ignored = split_metrics("cross_entropy", ["accuracy"], logits, np.where(keep, labels, 7), 7)
    assert ignored["accuracy"] == m["accuracy"]
