"""The pass pipeline (graphdl/passes/pipeline.py): order, hooks, and behaviour per pass.

Every pass is run on random inputs in the reference interpreter before and after: it must
not change what the graph computes.
"""

from __future__ import annotations

import numpy as np
import pytest
from pass_graphs import assert_same_behaviour, feeds_for, init_params, init_state, mlp

from graphdl.backends.reference import run_reference
from graphdl.ir.verify import VerifyError
from graphdl.passes import pipeline
from graphdl.passes.pipeline import PIPELINE, Pass, PassContext

NAMES = [p.name for p in PIPELINE]


@pytest.fixture(scope="module")
def snapshots():
    g = mlp(dropout=0.2, l2=0.001, logits_output=True)
    g.meta["optimizer"] = {"type": "adamw", "lr": 1e-3, "weight_decay": 0.05}
    g.meta["gradient_clip"] = {"max_norm": 0.5}
    ctx = PassContext(keep_snapshots=True)
    ctx.run(g, training=True)
    return ctx


def test_pipeline_order_and_records(snapshots):
    assert NAMES == ["infer_shapes", "hoist", "autodiff", "simplify", "hoist_grads", "fuse",
                     "schedule", "plan_memory"]
    assert [r.name for r in snapshots.records] == NAMES
    assert all(r.nodes > 0 and r.seconds >= 0 for r in snapshots.records)
    assert set(snapshots.snapshots) == {"lowered", *NAMES}
    ctx = PassContext()
    ctx.run(mlp(), training=False)
    assert [r.name for r in ctx.records] == [n for n in NAMES
                                             if n not in ("autodiff", "hoist_grads")]


def test_stop_after():
    ctx = PassContext()
    g = ctx.run(mlp(), training=False, stop_after="fuse")
    assert [r.name for r in ctx.records] == ["infer_shapes", "hoist", "simplify", "fuse"]
    assert "schedule" not in g.meta and g.nodes_by_op("fused")


KEEPING = [i for i in range(1, len(NAMES)) if NAMES[i] != "autodiff"]  # autodiff adds outputs


@pytest.mark.parametrize("i", KEEPING, ids=[NAMES[i] for i in KEEPING])
def test_pass_keeps_behaviour(snapshots, i):
    before, after = snapshots.snapshots[NAMES[i - 1]], snapshots.snapshots[NAMES[i]]
    feeds, params, state = feeds_for(before, n=5), init_params(before), init_state(before)
    assert_same_behaviour(before, after, feeds, params, state)


def test_infer_shapes_and_autodiff_keep_forward_behaviour(snapshots):
    lowered = snapshots.snapshots["lowered"]
    trained = snapshots.snapshots["autodiff"]
    feeds = feeds_for(trained, n=5)
    params = init_params(trained)
    fwd = {k: v for k, v in feeds.items() if k != "lr"}
    assert_same_behaviour(lowered, snapshots.snapshots["infer_shapes"], fwd, params)
    o1 = run_reference(lowered, fwd, params)[0]
    o2, updates, _ = run_reference(trained, feeds, params, init_state(trained))
    for k in o1:
        np.testing.assert_allclose(o2[k], o1[k], rtol=1e-6)
    assert "grad_norm" in o2 and set(updates) >= set(params)


def test_verify_hook_catches_a_broken_pass(monkeypatch):
    def breaks_types(g):
        g = g.copy()
        relu = g.nodes_by_op("relu")[0]
        g.node(relu)["types"] = [None]
        return g

    broken = [
        p if p.name != "simplify" else Pass("simplify", breaks_types, "broken") for p in PIPELINE
    ]
    monkeypatch.setattr(pipeline, "PIPELINE", broken)
    with pytest.raises(VerifyError, match="untyped output after simplify"):
        PassContext().run(mlp(), training=False)
    PassContext(verify=False).run(mlp(), training=False, stop_after="simplify")
