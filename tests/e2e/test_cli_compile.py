"""`graphdl compile`: the layer table, the pass summary, graph dumps and emitted source."""

from __future__ import annotations

import json
import re

import pytest
from e2e_helpers import DIGITS_SPEC, line_of

from graphdl.ir.graph import Graph

PASSES = ["infer_shapes", "hoist", "autodiff", "simplify", "hoist_grads", "fuse", "schedule",
          "plan_memory"]
LAYERS = {  # layer name -> a text unique to its line in mlp_digits.yaml
    "dense_1": "units: 128",
    "dropout_1": "type: dropout",
    "dense_2": "units: 64",
    "dense_3": "units: 10}",
}


@pytest.fixture(scope="module")
def compile_output():
    import contextlib
    import io

    from graphdl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["compile", str(DIGITS_SPEC)])
    return rc, out.getvalue(), err.getvalue()


def test_compile_exits_0(compile_output):
    rc, _out, err = compile_output
    assert rc == 0, err


def test_layer_table_names_every_layer_with_its_spec_line(compile_output):
    _, out, _ = compile_output
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(\d+)\s+(\w+)\s+(\w+)\s+(\S+)\s+(\S+)\s+([\d,]+)$", line)
        if m:
            rows[m.group(2)] = m.groups()
    assert set(rows) == set(LAYERS), out
    for name, needle in LAYERS.items():
        assert int(rows[name][0]) == line_of(DIGITS_SPEC, needle), (name, rows[name])
    assert rows["dense_1"][2] == "dense" and rows["dropout_1"][2] == "dropout"
    assert rows["dense_1"][4] == "[128]" and rows["dense_3"][4] == "[10]"
    # parameters: 64*128+128, 0, 128*64+64, 64*10+10
    assert [rows[n][5] for n in LAYERS] == ["8,320", "0", "8,256", "650"]
    assert "total parameters: 17,226" in out


def test_pass_summary(compile_output):
    _, out, _ = compile_output
    counts = {}
    for line in out.splitlines():
        m = re.match(r"^\s+(\w+)\s+(\d+) nodes", line)
        if m:
            counts[m.group(1)] = int(m.group(2))
    assert list(counts) == ["lowered", *PASSES], out
    assert counts["autodiff"] > counts["infer_shapes"]  # the backward graph was added
    assert counts["fuse"] < counts["hoist_grads"]  # fusion merged nodes
    fused = re.search(r"fused kernels:\s+(\d+) \(from (\d+) ops\)", out)
    assert fused and 0 < int(fused.group(1)) < int(fused.group(2)), out
    flops = re.search(r"FLOPs per step:\s+([\d,]+) \(batch 64\)", out)
    # at least the forward matmuls: 2 * 64 * (64*128 + 128*64 + 64*10), backward is more
    assert flops and int(flops.group(1).replace(",", "")) > 2 * 64 * (64 * 128 + 128 * 64 + 64 * 10)
    peak = re.search(r"planned peak memory:\s+([\d,]+) bytes", out)
    assert peak and int(peak.group(1).replace(",", "")) > 0
    assert re.search(r"^kernel compile:.*\d+\.\d+ s", out, re.MULTILINE), out


def test_compile_format_json(cli):
    rc, out, err = cli("compile", DIGITS_SPEC, "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)
    assert [p["name"] for p in doc["passes"]] == PASSES
    assert doc["fused_kernels"] > 0 and doc["flops_per_step"] > 0 and doc["peak_bytes"] > 0
    assert doc["spec"] == "digits-mlp"


def test_dump_after_fuse_writes_a_loadable_graph(tmp_path, cli):
    d = tmp_path / "dumps"
    rc, out, err = cli("compile", DIGITS_SPEC, "--dump-after", "fuse", "--dump-dir", d)
    assert rc == 0, err
    files = list(d.glob("*.json"))
    assert [f.name for f in files] == ["digits-mlp.train.fuse.json"]
    assert f"wrote {files[0]}" in out
    g = Graph.from_json(json.loads(files[0].read_text()))
    fuse_nodes = int(re.search(r"^\s+fuse\s+(\d+) nodes", out, re.MULTILINE).group(1))
    assert len(g) == fuse_nodes
    assert g.nodes_by_op("fused")
    assert "data_loss" in g.outputs  # the train step returns the data loss (penalties apart)
    assert len(g.named("param")) == 6


def test_dump_after_unknown_pass_is_E704(tmp_path, cli):
    rc, _out, err = cli("compile", DIGITS_SPEC, "--dump-after", "fusion", "--dump-dir", tmp_path)
    assert rc == 2
    assert "error[E704]" in err and "Traceback" not in err


def test_emit_source_writes_njit_python(tmp_path, cli):
    d = tmp_path / "src"
    rc, _out, err = cli("compile", DIGITS_SPEC, "--mode", "predict", "--emit-source", d)
    assert rc == 0, err
    path = d / "digits-mlp.predict.py"
    assert path.is_file()
    source = path.read_text()
    assert "@njit" in source
    assert "def step(" in source
    compile(source, str(path), "exec")  # valid Python
