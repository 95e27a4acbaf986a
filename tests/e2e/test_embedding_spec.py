"""A spec with token ids: int64 input [8] -> embedding -> flatten -> dense 2, trained from an
npz and checked against finite differences with `graphdl gradcheck`.

No padding_idx here: its row's gradient is zero by definition (as PyTorch), which finite
differences do not see (tests/ops/test_nn.py checks padding_idx against torch instead)."""

from __future__ import annotations

import json

import numpy as np

SPEC = """\
graphdl: 1
name: embedding-tiny
seed: 3
data:
  source: {type: npz, path: tokens.npz}
  split: {train: 0.8, val: 0.1, test: 0.1, shuffle: true}
model:
  inputs:
    ids: {shape: [8], dtype: int64}
  layers:
    - {type: embedding, vocab: 16, dim: 4}
    - {type: flatten}
    - {type: dense, units: 2}
train:
  target: y
  epochs: 12
  batch_size: 32
  loss: {type: cross_entropy}
  optimizer: {type: adam, lr: 0.05}
  metrics: [accuracy]
evaluate: {split: test}
"""


def _write(tmp_path):
    r = np.random.default_rng(0)
    ids = r.integers(1, 16, size=(400, 8)).astype(np.int64)
    ids[:, 6:] = 0  # padding at the end of every sequence (an ordinary id here)
    y = (ids[:, 0] < 8).astype(np.int64)  # the class is in the first token
    np.savez(tmp_path / "tokens.npz", ids=ids, y=y)
    spec = tmp_path / "embedding.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    return spec


def test_embedding_spec_trains_and_passes_gradcheck(tmp_path, cli):
    spec = _write(tmp_path)
    rc, out, err = cli("gradcheck", spec)
    assert rc == 0, out + err
    assert "embedding" in out  # the table's gradient was checked
    run = tmp_path / "run"
    rc, out, err = cli("run", spec, "--run-dir", run, "--no-progress")
    assert rc == 0, err
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["accuracy"] > 0.9, results
