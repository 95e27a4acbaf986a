"""Each output format: SVG is XML, DOT parses back, HTML is self-contained; --compare."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from graphdl.viz import draw, format_of
from graphdl.viz.data import compare_data, expansion, inline_sources, stage_data
from graphdl.viz.source import node_sources

SVG_NS = "{http://www.w3.org/2000/svg}"
DIGITS = Path(__file__).resolve().parents[2] / "specs" / "mlp_digits.yaml"
TYPE_RE = re.compile(r"^(out \d+: )?(float32|float64|int64|bool)\[[^\]]*\]$")


def stage(digits, snap):
    return stage_data(digits.snapshots[snap], name=snap, source=digits.program.source,
                      bindings={"N": 64})


# ---------------------------------------------------------------- a minimal DOT reader


_TOKEN = re.compile(r'\s*(?:(->|--|[{}\[\];=,])|"((?:[^"\\]|\\.)*)"|([A-Za-z0-9_.#%-]+))', re.DOTALL)


def parse_dot(text: str) -> dict:
    """Nodes, edges and clusters of a DOT digraph (the subset graphdl writes); raises
    AssertionError on anything malformed, such as unbalanced braces or a dangling edge."""
    toks = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m and m.end() > pos, f"cannot read DOT at {text[pos:pos + 40]!r}"
        if m.group(1):
            toks.append(("p", m.group(1)))
        elif m.group(2) is not None:
            toks.append(("id", m.group(2).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")))
        elif m.group(3):
            toks.append(("id", m.group(3)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    i = 0

    def peek():
        return toks[i] if i < len(toks) else (None, None)

    def take(kind=None, value=None):
        nonlocal i
        t = toks[i]
        assert kind is None or t[0] == kind, (t, kind, i)
        assert value is None or t[1] == value, (t, value, i)
        i += 1
        return t[1]

    def attrs():
        out = {}
        if peek() == ("p", "["):
            take("p", "[")
            while peek() != ("p", "]"):
                k = take("id")
                take("p", "=")
                out[k] = take("id")
                if peek() == ("p", ","):
                    take("p", ",")
            take("p", "]")
        return out

    g = {"nodes": {}, "edges": [], "clusters": {}, "graph": {}}

    def body(cluster):
        take("p", "{")
        while peek() != ("p", "}"):
            t = peek()
            if t == ("id", "subgraph"):
                take()
                name = take("id")
                g["clusters"][name] = {"parent": cluster, "nodes": [], "attrs": {}}
                body(name)
            elif toks[i + 1] == ("p", "="):  # a graph attribute: rank=same
                k = take("id")
                take("p", "=")
                g["clusters"][cluster]["attrs"][k] = take("id") if cluster else None
            elif t[1] in ("graph", "node", "edge") and toks[i + 1] == ("p", "["):
                kind = take()
                a = attrs()
                if kind == "graph":
                    (g["clusters"][cluster]["attrs"] if cluster else g["graph"]).update(a)
            else:
                first = take("id")
                if peek() == ("p", "->"):
                    take()
                    second = take("id")
                    g["edges"].append((first, second, attrs()))
                else:
                    g["nodes"][first] = attrs()
                    if cluster:
                        g["clusters"][cluster]["nodes"].append(first)
            if peek() == ("p", ";"):
                take()
        take("p", "}")

    take("id", "digraph")
    if peek()[0] == "id":
        take("id")
    body(None)
    assert i == len(toks), "text after the closing brace"
    for a, b, _ in g["edges"]:
        assert a in g["nodes"] and b in g["nodes"], (a, b)
    return g


# ---------------------------------------------------------------- SVG


def test_svg_is_xml_with_every_node(tmp_path, digits):
    g = digits.snapshots["autodiff"]
    path = draw(g, tmp_path / "training.svg", title="digits training", bindings={"N": 64})
    root = ET.parse(path).getroot()
    assert root.tag == SVG_NS + "svg"
    assert float(root.get("width")) > 100 and float(root.get("height")) > 100
    nodes = root.findall(f".//{SVG_NS}g[@class='node']")
    # every node but the parameters, state, constants and scalar inputs, which are
    # written inside the nodes that read them, with their shapes
    inside = {n for n in g.nodes() if g.op_of(n) in ("param", "state", "const")
              or (g.op_of(n) == "input" and g.node(n)["types"][0].shape == ())}
    assert inside and sorted(int(n.get("data-id")) for n in nodes) == sorted(set(g.nodes()) - inside)
    texts = " ".join(t.text or "" for t in root.iter(SVG_NS + "text"))
    assert "matmul" in texts and "dense_1 · line 18" in texts and "float32[N, 128]" in texts
    weights = [t.text for t in root.iter(SVG_NS + "text") if t.get("class") == "weight"]
    assert "dense_1.kernel [64, 128]" in weights and "opt.m.dense_1.kernel [64, 128]" in weights
    # edge widths follow bytes: the widest edge carries a bigger value than the thinnest
    widths = [float(p.get("stroke-width")) for p in root.iter(SVG_NS + "path") if p.get("stroke-width")]
    assert max(widths) > min(widths) and max(widths) <= 2.5  # capped: no thick tangle


@pytest.mark.parametrize("color", ["phase", "group", "flops", "memory"])
def test_svg_colourings(tmp_path, digits, color):
    path = draw(digits.graph, tmp_path / f"{color}.svg", color=color, bindings={"N": 64})
    root = ET.parse(path).getroot()
    fills = {r.get("fill") for n in root.findall(f".//{SVG_NS}g[@class='node']") for r in n.iter(SVG_NS + "rect")}
    assert len(fills) >= 2  # the colouring distinguishes nodes


# ---------------------------------------------------------------- DOT


def test_dot_parses_back_with_fused_clusters(tmp_path, digits):
    g = digits.snapshots["fuse"]
    path = draw(g, tmp_path / "fused.dot", bindings={"N": 64})
    parsed = parse_dot(path.read_text(encoding="utf-8"))
    fused = g.nodes_by_op("fused")
    assert fused
    for nid in fused:
        cluster = parsed["clusters"][f"cluster_f{nid}"]
        members = g.attrs(nid)["members"]
        assert cluster["nodes"] == [f"n{nid}_{i}" for i in range(len(members))]
        assert [parsed["nodes"][n]["label"] for n in cluster["nodes"]] == [m["op"] for m in members]
    # parameters, state, constants and scalar inputs are written inside their readers
    inside = {n for n in g.nodes() if g.op_of(n) in ("param", "state", "const")
              or (g.op_of(n) == "input" and g.node(n)["types"][0].shape == ())}
    plain = [n for n in g.nodes() if g.op_of(n) != "fused" and n not in inside]
    assert all(f"n{n}" in parsed["nodes"] for n in plain)
    assert not any(f"n{n}" in parsed["nodes"] for n in inside)
    assert any("dense_1.kernel [64, 128]" in a["label"] for a in parsed["nodes"].values())
    # colours by phase, and every edge labelled with its dtype and shape
    assert parsed["nodes"]["n0"]["fillcolor"] == "#dce9f7"  # the forward input
    assert all(TYPE_RE.match(a["label"]) for _, _, a in parsed["edges"]), parsed["edges"][:3]
    # as many edges as value uses of drawn nodes (one per fused input use, one per member link)
    expected = 0
    for n in g.nodes():
        if g.op_of(n) == "fused":
            for m in g.attrs(n)["members"]:
                expected += sum(1 for r in m["inputs"] if r[0] == "member"
                                or g.inputs_of(n)[r[1]].node not in inside)
        else:
            expected += sum(1 for v in g.inputs_of(n) if v.node not in inside)
    assert len(parsed["edges"]) == expected


def test_dot_renders_with_graphviz_when_installed(tmp_path, digits):
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (optional: DOT output needs no Graphviz)")
    path = draw(digits.graph, tmp_path / "g.dot")
    out = tmp_path / "g.svg"
    subprocess.run(["dot", "-Tsvg", str(path), "-o", str(out)], check=True, timeout=60)
    ET.parse(out)


# ---------------------------------------------------------------- HTML


def inlined(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="graphdl-data">(.*?)</script>', html, re.DOTALL)
    assert m
    return json.loads(m.group(1))


def test_html_is_self_contained(tmp_path, digits):
    path = draw(digits.graph, tmp_path / "g.html", source=digits.program.source, bindings={"N": 64})
    html = path.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=|<link\b|@import|url\((?!#)", html)
    assert "sourceMappingURL" not in html
    assert "var dagre=" in html and "Chris Pettitt" in html  # vendored with its licence notice
    doc = inlined(html)
    assert doc["format"] == "graphdl-viz/1"
    (st,) = doc["stages"]
    assert sorted(n["id"] for n in st["nodes"]) == sorted(digits.graph.nodes())
    fused = [n for n in st["nodes"] if n["op"] == "fused"]
    assert fused and all("source" in n and f"# %{n['id']} fused" in n["source"] for n in fused)
    dense1 = [n for n in st["nodes"] if n["layer"] == "dense_1" and n["phase"] == "forward"]
    assert {n["line"] for n in dense1} == {18}
    assert any(g["id"] == "forward:dense_1" for g in st["groups"])


def test_html_escapes_script_breakers(tmp_path, digits):
    g = digits.graph.copy()
    g.meta["spec"] = "</script><script>alert(1)</script>"
    nid = g.nodes_by_op("param")[0]
    g.node(nid)["name"] = "w</script>&<!--"
    html = draw(g, tmp_path / "g.html").read_text(encoding="utf-8")
    assert html.count("</script>") == 4  # error counter, data, dagre, viewer
    assert any(n["name"] == "w</script>&<!--" for n in inlined(html)["stages"][0]["nodes"])


def test_format_by_suffix(tmp_path, digits):
    assert [format_of(p) for p in ("a.html", "a.HTM", "b.svg", "c.dot", "d.gv")] == \
        ["html", "html", "svg", "dot", "dot"]
    with pytest.raises(ValueError, match="cannot tell the format"):
        draw(digits.graph, tmp_path / "g.txt")
    with pytest.raises(ValueError, match="unknown colouring"):
        draw(digits.graph, tmp_path / "g.svg", color="rainbow")


# ---------------------------------------------------------------- kernel source


def test_node_sources_cover_fused_kernels(digits):
    src = node_sources(digits.program.source)
    g = digits.graph
    for nid in g.nodes_by_op("fused"):
        text = src[nid]
        assert text.startswith(f"# %{nid} fused")
        members = [m["op"] for m in g.attrs(nid)["members"]]
        loops = [ln for ln in text.splitlines() if ln.startswith("def loop_")]
        if any(op in ("relu", "add", "square", "mul") for op in members):
            assert loops, text
            assert "# fused: " in text
    assert node_sources(None) == {} and node_sources("") == {}


# ---------------------------------------------------------------- compare


def test_compare_marks_removed_and_added(digits):
    a, b = stage(digits, "autodiff"), stage(digits, "plan_memory")
    cmp = compare_data(a, b)
    ids_b = set()
    for n in b["nodes"]:
        ids_b |= expansion(n)
    expected_removed = sorted(n["id"] for n in a["nodes"] if n["id"] not in ids_b)
    assert cmp["removed"] == expected_removed and expected_removed  # simplify removed some
    assert cmp["added"] == []  # fusion only regroups: every fused node has members in a
    # a fused node corresponds to its members' original nodes, and back
    fused = next(n for n in b["nodes"] if n["op"] == "fused" and len(n["fused"]["members"]) >= 3)
    origs = [m["orig_id"] for m in fused["fused"]["members"]]
    assert set(cmp["ba"][str(fused["id"])]) == set(origs)
    for o in origs:
        assert cmp["ab"][str(o)] == [fused["id"]]

    lowered, training = stage(digits, "lowered"), stage(digits, "autodiff")
    cmp2 = compare_data(lowered, training)
    assert cmp2["removed"] == []
    added = {n["id"]: n for n in training["nodes"] if n["id"] in set(cmp2["added"])}
    assert len(added) == len(training["nodes"]) - len(lowered["nodes"])
    assert {n["phase"] for n in added.values()} >= {"backward", "update"}


def test_compare_in_every_format(tmp_path, digits):
    lowered, training = digits.snapshots["lowered"], digits.snapshots["autodiff"]
    html = draw(lowered, tmp_path / "c.html", compare=training, names=("lowered", "training"))
    doc = inlined(html.read_text(encoding="utf-8"))
    assert [s["name"] for s in doc["stages"]] == ["lowered", "training"]
    assert doc["compare"]["added"] and doc["compare"]["removed"] == []

    svg = draw(lowered, tmp_path / "c.svg", compare=training, names=("lowered", "training"))
    root = ET.parse(svg).getroot()
    added = root.findall(f".//{SVG_NS}g[@class='node added']")
    drawn_ids = {n["id"] for n in inline_sources(doc["stages"][1])["nodes"]}
    assert len(added) == len(set(doc["compare"]["added"]) & drawn_ids)
    assert len(root.findall(f".//{SVG_NS}g[@class='stage']")) == 2

    dot = draw(lowered, tmp_path / "c.dot", compare=training, names=("lowered", "training"))
    parsed = parse_dot(dot.read_text(encoding="utf-8"))
    assert {"cluster_a", "cluster_b"} <= set(parsed["clusters"])
    dashed = [k for k, a in parsed["nodes"].items() if "dashed" in a.get("style", "")]
    assert dashed and all(k.startswith("b_") for k in dashed)


# ---------------------------------------------------------------- the command


def test_cli_writes_each_format(tmp_path, viz_cli):
    for name, extra in [("opt.html", []), ("train.svg", ["--stage", "training"]),
                        ("fused.dot", ["--stage", "fused", "--color", "group"]),
                        ("cmp.html", ["--compare", "lowered", "optimized"]),
                        ("eval.svg", ["--mode", "eval", "--stage", "lowered", "--color", "flops"])]:
        out = tmp_path / name
        rc, stdout, err = viz_cli(DIGITS, "-o", out, *extra)
        assert rc == 0, err
        assert out.exists() and f"wrote {out}" in stdout
    doc = inlined((tmp_path / "opt.html").read_text(encoding="utf-8"))
    assert doc["stages"][0]["name"] == "plan_memory" and doc["info"]["batch"] == 64
    assert doc["stages"][0]["has_plan"]
    planned = [n for n in doc["stages"][0]["nodes"] if n["mem"] and n["mem"]["plan"]]
    assert any("arena slot" in p for n in planned for p in n["mem"]["plan"])
    cmp = inlined((tmp_path / "cmp.html").read_text(encoding="utf-8"))
    assert [s["name"] for s in cmp["stages"]] == ["lowered", "plan_memory"]
    assert cmp["compare"]["added"]  # the backward and update ops


def test_cli_errors(tmp_path, viz_cli):
    rc, _, err = viz_cli(DIGITS, "-o", tmp_path / "x.html", "--mode", "eval", "--stage", "training")
    assert rc == 2 and "E705" in err
    rc, _, err = viz_cli(DIGITS, "-o", tmp_path / "x.jpeg")
    assert rc == 2 and "E706" in err


def test_nodes_carry_their_op_description(digits):
    """A node's details say what its op does (OpDef.doc), for every op node."""
    nodes = stage(digits, "fuse")["nodes"]
    matmuls = [n for n in nodes if n["op"] == "matmul"] or [
        n for n in nodes if n["op"] == "fused" and n["fused"]["members"][0]["op"] == "matmul"]
    assert matmuls
    assert all(n["doc"] for n in nodes if n["op"] not in ("input", "param", "state", "const"))
