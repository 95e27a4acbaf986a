"""Every default lives in one table: the code that reads a setting takes its default there."""

from __future__ import annotations

import pytest

from graphdl.layers.lower import lower
from graphdl.layers.schema import MISSING
from graphdl.spec import load_spec
from graphdl.spec.schema_gen import OPTIMIZER, SCHEDULE, TRAIN, optimizer_settings

SPEC = """\
graphdl: 1
data: {source: {type: builtin, name: digits}}
model:
  inputs: {x: {shape: [64]}}
  layers:
    - {type: dense, units: 10}
train:
  target: y
"""


def test_the_default_optimizer_is_the_schemas_and_lowering_passes_it_on(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC, encoding="utf-8")
    spec = load_spec(path)
    adam = OPTIMIZER.variants["adam"][1]
    assert OPTIMIZER.default == {"type": "adam"}
    assert spec.train["optimizer"] == {"type": "adam", **{k: f.default for k, f in adam.items()}}
    assert lower(spec, "train").meta["optimizer"] == spec.train["optimizer"]


@pytest.mark.parametrize("kind", list(OPTIMIZER.variants))
def test_optimizer_settings_fill_each_type_from_its_table(kind):
    fields = OPTIMIZER.variants[kind][1]
    settings = optimizer_settings({"type": kind})
    for key, field in fields.items():
        assert settings[key] == (None if field.default is MISSING else field.default), key


def test_autodiff_has_no_optimizer_of_its_own():
    from graphdl.ir.graph import Graph
    from graphdl.ir.types import TensorType
    from graphdl.passes.autodiff import autodiff

    g = Graph()
    w = g.param("w", TensorType((3,), "float32"))
    g.outputs["loss"] = g.op("sum", g.op("square", w))
    with pytest.raises(ValueError, match="needs the optimizer"):
        autodiff(g)
    g.meta["optimizer"] = {"type": "momentum"}  # the rest comes from the spec's table
    trained = autodiff(g)
    [update] = [n for n in trained.nodes_by_op("momentum_update")]
    momentum = OPTIMIZER.variants["momentum"][1]
    assert trained.attrs(update)["momentum"] == momentum["momentum"].default
    assert trained.attrs(update)["nesterov"] == momentum["nesterov"].default


def test_schedules_and_trainer_settings_come_from_the_tables():
    from graphdl.runtime.schedules import learning_rate

    gamma = SCHEDULE.variants["step"][1]["gamma"].default
    assert learning_rate(1.0, {"type": "step", "step_size": 1}, 1.0, 5) == pytest.approx(gamma)
    assert learning_rate(0.3, None, 2.0, 5) == 0.3  # no schedule: the default, constant
    assert SCHEDULE.default == {"type": "constant"}
    assert TRAIN.fields["batch_size"].default == 32 and TRAIN.fields["epochs"].default == 10
