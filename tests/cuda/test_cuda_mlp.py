"""The digits MLP (specs/mlp_digits.yaml) on the CUDA backend: the same loss trajectory as
the CPU backend, step by step (adam, L2, dropout with the same seeds and masks), weights
that stay on the device between steps and come back with `sync_to_host`, and an eval
program that shares the train program's device weights.

A few steps of a small batch: under the simulator every matmul multiply-add is Python.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphdl.backends.cpu.program import Program
from graphdl.layers.lower import lower
from graphdl.passes.pipeline import PassContext
from graphdl.runtime.params import init_params, init_state
from graphdl.runtime.trainer import step_seed

SPEC = Path(__file__).resolve().parents[2] / "specs" / "mlp_digits.yaml"
BATCH = 8
STEPS = 3


@pytest.fixture(scope="module")
def mlp():
    from graphdl.backends.cuda.program import CudaProgram
    from graphdl.data import load_data
    from graphdl.spec import load_spec

    spec = load_spec(SPEC)
    graphs = {m: PassContext().run(lower(spec, m), training=(m == "train")) for m in ("train", "eval")}
    params = init_params(graphs["train"], spec.seed)
    state = init_state(graphs["train"])
    cpu_params = {k: v.copy() for k, v in params.items()}
    cpu_state = {k: v.copy() for k, v in state.items()}
    progs = {}
    for mode, g in graphs.items():
        progs[("cuda", mode)] = CudaProgram(g, title=f"mlp ({mode}, cuda)")
        progs[("cuda", mode)].bind_params(params, state)
        progs[("cpu", mode)] = Program(g, title=f"mlp ({mode})")
        progs[("cpu", mode)].bind_params(cpu_params, cpu_state)
    splits = load_data(spec)
    return spec, progs, (params, state), (cpu_params, cpu_state), splits


def _feeds(spec, splits, step):
    x = splits.train.fields["x"][step * BATCH : (step + 1) * BATCH]
    y = splits.train.fields["y"][step * BATCH : (step + 1) * BATCH]
    return {"x": np.ascontiguousarray(x), "y": np.ascontiguousarray(y),
            "lr": np.float32(1e-3), "step_seed": step_seed(spec.seed, step)}


def test_mlp_trains_with_the_cpu_loss_trajectory(mlp):
    spec, progs, (params, state), (cpu_params, cpu_state), splits = mlp
    before = {k: v.copy() for k, v in params.items()}
    losses = []
    for step in range(STEPS):
        feeds = _feeds(spec, splits, step)
        got = progs[("cuda", "train")](feeds)
        want = progs[("cpu", "train")](feeds)
        assert set(got) == set(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=f"step {step} {k}")
        losses.append(float(got["data_loss"][0]))
    assert len(set(losses)) == STEPS  # the weights moved between steps
    # the host arrays are stale until synced: the device holds the weights
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
    progs[("cuda", "train")].sync_to_host()
    for k in params:
        np.testing.assert_allclose(params[k], cpu_params[k], rtol=1e-4, atol=1e-6, err_msg=k)
        assert not np.array_equal(params[k], before[k]), k
    for k in state:
        np.testing.assert_allclose(state[k], cpu_state[k], rtol=1e-4, atol=1e-7, err_msg=k)


def test_eval_program_shares_the_device_weights(mlp):
    _, progs, _, _, splits = mlp
    x = np.ascontiguousarray(splits.val.fields["x"][:6])
    y = np.ascontiguousarray(splits.val.fields["y"][:6])
    got = progs[("cuda", "eval")]({"x": x, "y": y})
    want = progs[("cpu", "eval")]({"x": x, "y": y})
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_sync_to_device_after_host_assignment(mlp):
    _, progs, (params, state), (cpu_params, cpu_state), splits = mlp
    for store, cpu_store in ((params, cpu_params), (state, cpu_state)):
        for k in store:
            store[k][...] = 0.01
            cpu_store[k][...] = 0.01
    progs[("cuda", "eval")].sync_to_device()  # one program: the device copies are shared
    x = np.ascontiguousarray(splits.val.fields["x"][:4])
    y = np.ascontiguousarray(splits.val.fields["y"][:4])
    got = progs[("cuda", "eval")]({"x": x, "y": y})
    want = progs[("cpu", "eval")]({"x": x, "y": y})
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
