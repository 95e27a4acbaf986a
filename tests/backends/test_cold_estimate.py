"""The first-compile estimate `graphdl run` prints before compiling ("~N s"): a model of
what the generated module calls, scaled by what this machine's cache remembers."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from graphdl.api import _cold_estimate
from graphdl.backends.cpu.cache import cold_compile_estimate
from graphdl.backends.cpu.codegen import CpuCodegen
from graphdl.layers.lower import lower
from graphdl.passes.pipeline import PassContext
from graphdl.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def _train_source(spec: str) -> str:
    g = lower(load_spec(ROOT / "specs" / spec), "train")
    g = PassContext().run(g, training=True)
    return CpuCodegen(g, "train").generate()[0]


def test_model_counts_kernels_and_lines():
    header = '"""doc"""\n'
    plain = header + "def step(a):\n    K.gemm_nt(a)\n    K.s_add(a)\n"
    parallel = header + "def step(a):\n    K.conv2d_fwd(a)\n    K.conv2d_fwd(a)\n"
    assert cold_compile_estimate(plain) == pytest.approx(0.6)  # s_add is inlined, free
    assert cold_compile_estimate(parallel) == pytest.approx(2.5)  # one kernel, called twice
    long = plain + "".join(f"    x{i} = {i}\n" for i in range(400))
    # about 404 lines: 0.04 s for each beyond the first 150
    assert cold_compile_estimate(long) == pytest.approx(0.6 + 0.04 * (404 - 150), abs=0.05)


def test_a_cnn_is_estimated_well_above_an_mlp():
    mlp = cold_compile_estimate(_train_source("bench_mlp.yaml"))
    lenet = cold_compile_estimate(_train_source("bench_lenet.yaml"))
    # measured from empty caches on 2 cores, one process: ~5 s and ~18 s
    assert 2.0 <= mlp <= 10.0
    assert 15.0 <= lenet <= 45.0


def test_estimate_scales_by_what_this_machine_took(tmp_path):
    source = '"""doc"""\ndef step(a):\n    K.gemm_nt(a)\n    K.conv2d_fwd(a)\n'  # model: 3.1 s
    program = SimpleNamespace(device="cpu", source=source, source_path=tmp_path / "new.py")
    assert _cold_estimate(program) == pytest.approx(3.1)  # nothing remembered
    for i in range(3):  # this machine took twice the model's time before
        (tmp_path / f"old{i}.py").write_text(source, encoding="utf-8")
        (tmp_path / f"old{i}.json").write_text(json.dumps({"cold_seconds": 6.2}), "utf-8")
    assert _cold_estimate(program) == pytest.approx(6.2)
    (tmp_path / "old0.json").write_text(json.dumps({"cold_seconds": 1000.0}), "utf-8")
    assert _cold_estimate(program) == pytest.approx(6.2)  # the median, not the mean
    for i in range(3):
        (tmp_path / f"old{i}.json").write_text(json.dumps({"cold_seconds": 1000.0}), "utf-8")
    assert _cold_estimate(program) == pytest.approx(4 * 3.1)  # at most 4x the model
    assert _cold_estimate(SimpleNamespace(device="cuda")) == 15.0
