"""model.init's load report and errors (graphdl.runtime.transfer.apply_init), on
hand-made parameters: no compiling."""

from __future__ import annotations

import numpy as np
import pytest

from graphdl.errors import GraphdlError
from graphdl.runtime.checkpoint import save_checkpoint
from graphdl.runtime.transfer import apply_init
from graphdl.spec import load_spec

SPEC = """\
graphdl: 1
name: transfer-report
data:
  source: {{type: builtin, name: digits}}
model:
  inputs:
    x: {{shape: [64], dtype: float32}}
  layers:
    - {{type: dense, name: body, units: 4, activation: relu}}
    - {{type: dense, name: head, units: {head}}}
  init: {{checkpoint: source.ckpt{extra}}}
train:
  target: y
  loss: {{type: cross_entropy}}
  optimizer: {{type: adam, lr: 1.0e-3}}
"""


def _params(head_units: int) -> dict[str, np.ndarray]:
    return {
        "body.kernel": np.zeros((64, 4), np.float32),
        "body.bias": np.zeros((4,), np.float32),
        "head.kernel": np.zeros((4, head_units), np.float32),
        "head.bias": np.zeros((head_units,), np.float32),
    }


def _setup(tmp_path, head_units: int, extra: str = ""):
    source = {f"param/{k}": v + 1.0 for k, v in _params(3).items()}
    save_checkpoint(tmp_path / "source.ckpt", source, {"spec": "source"})
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(head=head_units, extra=extra), encoding="utf-8")
    return load_spec(path), _params(head_units)


def test_shape_mismatch_is_E402_only(tmp_path):
    spec, params = _setup(tmp_path, head_units=2)
    with pytest.raises(GraphdlError) as e:
        apply_init(spec, params, {})
    codes = [d.code for d in e.value.diagnostics]
    # head.kernel and head.bias are in the checkpoint, with another shape: not also E404
    assert codes == ["E402", "E402"], e.value.format()
    assert all("head" in d.message for d in e.value.diagnostics)


def test_excluded_layer_is_new_not_also_ignored(tmp_path):
    spec, params = _setup(tmp_path, head_units=2, extra=", exclude: [head]")
    report = apply_init(spec, params, {})
    assert sorted(report.loaded) == ["body.bias", "body.kernel"]
    assert sorted(report.new) == ["head.bias", "head.kernel"]
    assert sorted(report.excluded) == ["head.bias", "head.kernel"]
    assert report.ignored == []
    text = report.format()
    assert "ignored    0  -" in text, text
    assert "2 excluded by model.init" in text, text
    assert np.all(params["body.kernel"] == 1.0) and np.all(params["head.kernel"] == 0.0)


def test_checkpoint_tensor_without_a_place_is_ignored(tmp_path):
    spec, params = _setup(tmp_path, head_units=3, extra=", strict: false")
    del params["head.kernel"], params["head.bias"]
    report = apply_init(spec, params, {})
    assert sorted(report.ignored) == ["head.bias", "head.kernel"]
    assert report.new == [] and report.excluded == []
