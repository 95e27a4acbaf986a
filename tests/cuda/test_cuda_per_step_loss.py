"""Per-step cross-entropy on the CUDA backend (the simulator where there is no GPU): an
embedding -> lstm(output: sequence) -> dense model with one int64 label per step, the
ragged target's padding holding ignore_index (-100), evaluates and takes a training step
as the CPU backend does: the loss (the mean over the labelled steps), the accuracy count
and the updated weights. Shapes are tiny: under the simulator every thread is Python."""

from __future__ import annotations

import numpy as np
import pytest

SPEC = """graphdl: 1
name: cuda_tagging
seed: 0
data:
  source: {type: npz, path: tags.npz, sequences: [tokens, tags]}
  split: {train: 1.0, val: 0.0, test: 0.0, shuffle: false}
model:
  inputs:
    tokens: {shape: [T], dtype: int64}
    lengths: {shape: [], dtype: int64}
  layers:
    - {type: embedding, vocab: 6, dim: 4, padding_idx: 0, inputs: [tokens]}
    - {type: lstm, hidden: 5, output: sequence, lengths: lengths}
    - {type: dense, units: 6}
train:
  target: tags
  epochs: 1
  batch_size: 3
  loss: {type: cross_entropy, label_smoothing: 0.1}
  optimizer: {type: adam, lr: 0.05}
  metrics: [accuracy]
evaluate: {split: train}
"""


@pytest.fixture
def models(tmp_path, monkeypatch, cuda_device):
    from graphdl.api import Model
    from graphdl.spec import load_spec

    if cuda_device.SIMULATOR:
        monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")  # an explicit cuda may use it now
    lengths = np.array([2, 4, 1])
    tokens = np.array([[3, 1, 0, 0], [2, 5, 4, 1], [5, 0, 0, 0]], np.int64)
    tags = np.array([[0, 3, 9, 9], [0, 2, 5, 4], [0, 9, 9, 9]], np.int64)  # 9: garbage
    np.savez(tmp_path / "tags.npz", tokens=tokens, tags=tags, lengths=lengths)
    (tmp_path / "spec.yaml").write_text(SPEC, encoding="utf-8")
    spec = load_spec(tmp_path / "spec.yaml")
    return spec, Model(spec, device="cuda"), Model(spec, device="cpu")


def test_per_step_loss_count_and_step_equal_the_cpu(models):
    _spec, gpu, cpu = models
    feeds = cpu.data().train.batch(np.arange(3), ["tokens", "lengths", "tags"])
    assert (feeds["tags"] == -100).sum() == 5  # the garbage past each length is padding
    got = gpu.compiled("eval", warmup=False).program(feeds)
    want = cpu.compiled("eval").program(feeds)
    np.testing.assert_allclose(got["data_loss"], want["data_loss"], rtol=1e-5)
    assert got["count"][0] == want["count"][0] == 7  # the labelled steps
    assert got["correct"][0] == want["correct"][0]
    step = {**feeds, "lr": np.float32(0.05)}
    got = gpu.compiled("train", warmup=False).program(step)
    want = cpu.compiled("train").program(step)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    gpu.sync_to_host()
    for name, value in cpu.params.items():
        np.testing.assert_allclose(gpu.params[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
