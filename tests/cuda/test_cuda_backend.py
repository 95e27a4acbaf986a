"""The CUDA backend's plumbing: device selection, the kernel cache, the generated source,
the one module that imports CUDA."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from cuda_helpers import T, build_single

from graphdl.errors import GraphdlError

ROOT = Path(__file__).resolve().parents[2]


def test_cuda_is_imported_in_exactly_one_module():
    pattern = re.compile(
        r"^\s*(from numba import cuda\b|import numba\.cuda\b|from numba\.cuda\b)", re.MULTILINE)
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "graphdl").rglob("*.py")
            if pattern.search(p.read_text(encoding="utf-8"))]
    assert hits == ["graphdl/backends/cuda/device.py"], hits


def test_resolve_device(monkeypatch, cuda_device):
    from graphdl.backends.cuda import resolve_device

    assert resolve_device("cpu") == ("cpu", "device: cpu")
    if cuda_device.SIMULATOR:
        # auto never picks the simulator; an explicit cuda does only while asked to
        monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
        device, note = resolve_device("auto")
        assert device == "cpu" and note.startswith("device: cpu (auto: no usable CUDA GPU")
        with pytest.raises(GraphdlError) as e:
            resolve_device("cuda")
        assert e.value.diagnostics[0].code == "E701"
        monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
        assert resolve_device("cuda") == ("cuda", "device: cuda (CUDA simulator)")
        assert resolve_device("auto")[0] == "cpu"
    else:
        device, note = resolve_device("auto")
        assert device == "cuda" and cuda_device.device_name() in note


def test_generated_source_is_cached_by_content(tmp_path, monkeypatch):
    from graphdl.backends.cpu.cache import cache_dir
    from graphdl.backends.cuda.program import CudaProgram

    g = build_single("exp", [T("N", 3)], {})
    first = CudaProgram(g, title="cache test")
    second = CudaProgram(g, title="cache test")
    assert first.source_path == second.source_path and second.was_cached
    assert first.source_path.parent == cache_dir() / "cuda"
    assert first.source_path.read_text() == first.source
    other = CudaProgram(g, title="another title")  # the title is in the docstring
    assert other.source_path != first.source_path


def test_generated_source_is_readable():
    from graphdl.backends.cuda.program import CudaProgram

    prog = CudaProgram(build_single("softmax", [T("N", 10)], {"axis": -1}), title="readable")
    src = prog.source
    assert "def setup(" in src and "def run():" in src
    assert "# %1 softmax" in src and "K.softmax_arb" in src
    compile(src, "generated", "exec")


def test_warmup_compiles_without_touching_bound_weights():
    from graphdl.backends.cuda.program import CudaProgram
    from graphdl.ir.graph import Graph
    from graphdl.passes.pipeline import PassContext

    g = Graph()
    w = g.param("w", T(3, 2))
    x = g.input("x", T("N", 3))
    g.outputs["y"] = g.op("matmul", x, w)
    prog = CudaProgram(PassContext().run(g, training=False), title="warmup")
    wv = np.arange(6, dtype=np.float32).reshape(3, 2)
    prog.bind_params({"w": wv}, {})
    seconds = prog.warmup()
    assert seconds >= 0 and prog.cold_seconds is not None
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(prog({"x": x})["y"], x @ wv)
