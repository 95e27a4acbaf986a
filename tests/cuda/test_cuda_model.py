"""The Python API on the CUDA backend: `Model(spec, device="cuda")` compiles CudaPrograms,
keeps the weights on the device between steps, and moves them to and from the host where
the host reads or writes them (checkpoints, loaded weights).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SPEC = Path(__file__).resolve().parents[2] / "specs" / "mlp_digits.yaml"


@pytest.fixture
def models(monkeypatch, cuda_device):
    from graphdl.api import Model
    from graphdl.spec import load_spec

    if cuda_device.SIMULATOR:
        monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")  # an explicit cuda may use it now
    spec = load_spec(SPEC)
    return spec, Model(spec, device="cuda"), Model(spec, device="cpu")


def _batch(spec, n=4, offset=0):
    from graphdl.data import load_data

    tr = load_data(spec).train
    return {"x": np.ascontiguousarray(tr.fields["x"][offset : offset + n]),
            "y": np.ascontiguousarray(tr.fields["y"][offset : offset + n])}


def test_weights_live_on_the_device_and_come_back(models, tmp_path):
    from graphdl.backends.cuda.program import CudaProgram
    from graphdl.runtime.trainer import step_seed

    spec, gpu, cpu = models
    assert gpu.device == "cuda" and cpu.device == "cpu"
    train = gpu.train_program()
    assert isinstance(train, CudaProgram)
    before = {k: v.copy() for k, v in gpu.params.items()}
    for step in range(2):
        feeds = {**_batch(spec, offset=4 * step), "lr": np.float32(1e-3),
                 "step_seed": step_seed(spec.seed, step)}
        train(feeds)
    for k, v in gpu.params.items():  # a step does not touch the host arrays
        np.testing.assert_array_equal(v, before[k])
    gpu.save(tmp_path / "w.ckpt")  # saving copies the device weights back first
    assert any(not np.array_equal(gpu.params[k], before[k]) for k in before)
    # the checkpoint holds the trained weights: a CPU model loading it evaluates the same
    cpu.load_weights(tmp_path / "w.ckpt")
    feeds = _batch(spec, n=6, offset=40)
    got = gpu.compiled("eval").program(feeds)
    want = cpu.compiled("eval").program(feeds)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    # assigning tensors on the host reaches the device
    gpu.assign_tensors({f"param/{k}": v for k, v in before.items()})
    cpu.assign_tensors({f"param/{k}": v for k, v in before.items()})
    got = gpu.compiled("eval").program(feeds)
    want = cpu.compiled("eval").program(feeds)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
