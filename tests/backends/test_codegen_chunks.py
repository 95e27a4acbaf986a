"""The CPU step is a sequence of module-level chunk functions of bounded size
(`CpuCodegen._chunked`): Numba's compile time grows faster than linearly with a function's
size. Identical layers share one chunk function, whatever their arena offsets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from graphdl.backends.cpu.codegen import CpuCodegen
from graphdl.layers.lower import lower
from graphdl.passes.pipeline import PassContext
from graphdl.spec import load_spec

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.fixture(scope="module")
def transformer_source() -> str:
    g = PassContext().run(lower(load_spec(SPECS / "bench_transformer.yaml"), "train"),
                          training=True)
    return CpuCodegen(g, "transformer (train)").generate()[0]


def _functions(source: str) -> dict[str, list[str]]:
    parts = re.split(r"\n(?=@njit)", source[:source.index("def step(")])
    out = {}
    for p in parts:
        m = re.search(r"^def (chunk_\d+)\(", p, re.MULTILINE)
        if m:
            out[m.group(1)] = p[m.end():].split("\n")[1:]
    return out


def test_step_is_split_into_bounded_chunks(transformer_source):
    chunks = _functions(transformer_source)
    assert len(chunks) >= 10
    for name, body in chunks.items():
        statements = [s for s in body if s.startswith("    ") and not s.startswith("     ")
                      and not s.strip().startswith("#")]
        # at most CHUNK_STATEMENTS of the nodes' own, and the views it binds again
        assert len(statements) <= 2 * CpuCodegen.CHUNK_STATEMENTS, name
    step = transformer_source[transformer_source.index("def step("):]
    # the step itself runs no kernel: it binds views and calls the chunks
    assert not re.search(r"^    (K\.|loop_\d+\()", step, re.MULTILINE)
    # no arena offset is baked into a chunk
    assert "off[" not in "\n".join("\n".join(b) for b in chunks.values())


def test_identical_layers_share_one_chunk(transformer_source):
    step = transformer_source[transformer_source.index("def step("):]
    calls = re.findall(r"^    (chunk_\d+)\((.*)\)$", step, re.MULTILINE)
    by_layer: dict[str, set[str]] = {}
    for name, args in calls:
        for layer in ("encoder_0_", "encoder_1_", "decoder_0_", "decoder_1_"):
            if f" {layer}" in f" {args}" and "opt_m_" not in args:
                by_layer.setdefault(layer, set()).add(name)
    assert by_layer["encoder_0_"] & by_layer["encoder_1_"]
    assert by_layer["decoder_0_"] & by_layer["decoder_1_"]
    assert len({n for n, _ in calls}) < len(calls)
    compile(transformer_source, "generated", "exec")


def test_transpose_4d_kernel_matches_numpy():
    """Rank-4 transposes call `K.transpose_4d` (graphdl/ops/shape.py): inline
    ``np.transpose`` costs seconds of compile time per line."""
    from itertools import permutations

    import numpy as np

    from graphdl.backends.cpu.library import load_library

    K = load_library()
    x = np.arange(2 * 3 * 4 * 5 * 2, dtype=np.float32).reshape(2, 3, 4, 10)[..., ::2]
    for perm in permutations(range(4)):
        want = np.transpose(x, perm)
        out = np.empty(want.shape, np.float32)
        K.transpose_4d(x, out, *(np.int64(p) for p in perm))
        np.testing.assert_array_equal(out, want)


def test_chunked_step_keeps_readable_names(transformer_source):
    """The step keeps the node comments and passes the sources by their names (inside a
    chunk the names are canonical; a view of the arenas is bound again in each chunk that
    reads it), and a small step is left whole."""
    step = transformer_source[transformer_source.index("def step("):]
    assert not re.search(r"^    \w+ = arena_", step, re.MULTILINE)
    assert re.search(r"^    chunk_\d+\(.*\bencoder_0_multihead_attention_1_in_proj_weight\b",
                     step, re.MULTILINE)
    assert not re.search(r"\bv\d+\b", step)
    assert re.search(r"^    # %\d+ attention  \[forward\] layer=encoder\.0\.", step, re.MULTILINE)
    g = PassContext().run(lower(load_spec(SPECS / "mlp_digits.yaml"), "eval"), training=False)
    assert "chunk_" not in CpuCodegen(g, "mlp (eval)").generate()[0]


def test_chunked_program_matches_the_reference(monkeypatch):
    """With tiny chunks (every node its own chunk, views of the arenas bound again in each
    chunk that reads them) the program computes what the reference interpreter does."""
    import numpy as np

    from graphdl.backends.cpu.program import Program
    from graphdl.backends.reference import run_reference
    from graphdl.ir.graph import Graph
    from graphdl.ir.types import TensorType

    monkeypatch.setattr(CpuCodegen, "CHUNK_STATEMENTS", 2)
    monkeypatch.setattr(CpuCodegen, "CHUNK_MIN", 0)
    g = Graph()
    x = g.input("x", TensorType(("N", 3, 4, 5)))
    y = g.input("y", TensorType(("N", 4, 3, 5)))
    a = g.op("relu", x)
    t = g.op("transpose", a, perm=(0, 2, 1, 3))
    b = g.op("add", t, y)
    c = g.op("exp", g.op("mul", b, b))
    d = g.op("transpose", c, perm=(0, 2, 1, 3))
    g.outputs["out"] = g.op("add", g.op("mul", d, a), x)
    g.outputs["mid"] = g.op("sub", b, t)
    planned = PassContext().run(g, training=False)
    prog = Program(planned, title="chunked")
    assert "def chunk_" in prog.source
    r = np.random.default_rng(0)
    feeds = {"x": r.standard_normal((2, 3, 4, 5)).astype(np.float32),
             "y": r.standard_normal((2, 4, 3, 5)).astype(np.float32)}
    prog.bind_params({}, {})
    got = prog(feeds)
    want = run_reference(g, feeds)[0]
    for k in ("out", "mid"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
