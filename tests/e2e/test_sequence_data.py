"""Sequence data end to end (issue 11, item 6, first part): the synthetic adding problem's
[50, 2] sequences go through the data path (load, split, model.inputs check) into training
with a plain flatten + dense model, before any recurrent layer exists."""

from __future__ import annotations

import math

import graphdl


def test_flattened_dense_trains_on_the_adding_problem(tmp_path):
    doc = (
        "graphdl: 1\nname: adding\nseed: 0\n"
        "data:\n  source: {type: synthetic, task: adding, length: 50, samples: 256}\n"
        "model:\n  inputs:\n    x: {shape: [50, 2]}\n"
        "  layers:\n    - {type: flatten}\n    - {type: dense, units: 16, activation: relu}\n"
        "    - {type: dense, units: 1}\n"
        "train:\n  target: y\n  epochs: 1\n  batch_size: 32\n  loss: {type: mse}\n"
        "  optimizer: {type: adam, lr: 0.01}\n"
    )
    (tmp_path / "adding.yaml").write_text(doc, encoding="utf-8")
    model = graphdl.load(tmp_path / "adding.yaml")
    history = model.fit(tmp_path / "run", progress=False)
    assert math.isfinite(history[-1]["train_loss"])
    assert math.isfinite(model.evaluate("test")["loss"])
