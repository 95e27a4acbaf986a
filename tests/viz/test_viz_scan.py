"""A scan (a loop over time) in every format: the data export carries the forward scan
and its backward (BPTT) scan with their bodies, inputs and outputs named by role; SVG draws
each as a box holding its body, DOT as a cluster; the HTML page shows a scan as one node
that opens to its body (headless chromium)."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_browser import body_attrs, drawn, png_size, units
from test_formats import SVG_NS, inlined, parse_dot

from graphdl.viz import draw
from graphdl.viz.data import inline_sources, scan_nodes, stage_data
from graphdl.viz.svg import stage_layout


def scans(g):
    """(forward scan id, backward scan id) of a training graph."""
    ids = g.nodes_by_op("scan")
    fwd = [n for n in ids if g.node(n)["phase"] == "forward"]
    bwd = [n for n in ids if g.node(n)["phase"] == "backward"]
    assert len(fwd) == 1 and len(bwd) == 1, ids
    return fwd[0], bwd[0]


@pytest.mark.parametrize("snap", ["autodiff", "plan_memory"])
def test_data_has_forward_and_bptt_scans_with_bodies(gru, snap):
    g = gru.snapshots[snap]
    fid, bid = scans(g)
    st = stage_data(g, name=snap, bindings={"N": 32, "T": 8})
    text = json.dumps(st, allow_nan=False)  # plain JSON: no Graph object leaks out
    assert "graphdl.ir.graph.Graph object" not in text
    by_id = {n["id"]: n for n in st["nodes"]}
    fwd, bwd = by_id[fid]["scan"], by_id[bid]["scan"]
    assert [n["id"] for n in scan_nodes(st)] == [n["id"] for n in st["nodes"] if n.get("scan")]

    # direction, steps, and the pair each is part of
    assert (fwd["direction"], fwd["bptt"], fwd["steps"], fwd["pair"]) == ("forward", False, "T", bid)
    assert (bwd["direction"], bwd["bptt"], bwd["steps"], bwd["pair"]) == ("reverse", True, "T", fid)
    assert by_id[fid]["title"] == "scan ×T forward"
    assert by_id[bid]["title"] == "scan ×T reverse (BPTT)"

    # each opens to its own body: every body node, and the body's edges
    for nid, sc in ((fid, fwd), (bid, bwd)):
        body = g.attrs(nid)["body"]
        assert sorted(n["id"] for n in sc["body"]["nodes"]) == sorted(body.nodes())
        for n in sc["body"]["nodes"]:
            assert n["inputs"] == [[v.node, v.index] for v in body.inputs_of(n["id"])]
        assert len(sc["inputs"]) == len(g.inputs_of(nid))
        assert len(sc["outputs"]) == g.num_outputs(nid)
        assert by_id[nid]["attrs"]["body"].startswith(f"<body: {len(body)} nodes")

    # forward: carries, step slices and invariants, by position
    k, s = g.attrs(fid)["num_carry"], g.attrs(fid)["num_seq"]
    roles = [e["role"] for e in fwd["inputs"]]
    assert roles[:k] == [f"carry {i}" for i in range(k)]
    assert roles[k:k + s] == [f"step slice of seq {j}" for j in range(s)]
    assert roles[k + s:] == [f"invariant {i}" for i in range(len(roles) - k - s)]
    body_titles = {n["id"]: n["title"] for n in fwd["body"]["nodes"]}
    assert [body_titles[e["body"]] for e in fwd["inputs"]] == roles  # the body's inputs say so
    outs = [e["role"] for e in fwd["outputs"]]
    assert outs[0] == "next carry 0" and fwd["outputs"][0]["outer"] == "final carry 0"
    # output: last: the layer's sequence is read by nothing, and simplify drops it; the
    # values saved for BPTT stay
    assert "saved for BPTT 0" in outs
    assert all(o.startswith(("next carry", "per-step output", "saved for BPTT"))
               for o in outs), outs
    saved = [e for e in fwd["outputs"] if e["role"].startswith("saved for BPTT")]
    assert saved and all(e["outer"] == f"saved per-step values for scan %{bid}" for e in saved)

    # backward: gradient carries and the forward scan's saved per-step values
    broles = [e["role"] for e in bwd["inputs"]]
    assert broles[0] == "gradient carry 0"
    from_fwd = [e for e in bwd["inputs"] if e["source"][0] == fid]
    assert len(from_fwd) == len(saved)
    assert all(e["kind"] == "sequence" and e["detail"].startswith(f"saved by scan %{fid}")
               for e in from_fwd)
    assert bwd["outputs"][0]["role"] == "next gradient carry 0"
    assert bwd["outputs"][0]["outer"] == "∂loss/∂(initial carry 0)"

    # the cost: the body once per step
    per_step = sum(n["flops"] for n in fwd["body"]["nodes"])
    assert by_id[fid]["flops"] == 8 * per_step > 0


def test_svg_draws_each_scan_as_a_box_holding_its_body(gru, tmp_path):
    g = gru.snapshots["autodiff"]
    fid, bid = scans(g)
    path = draw(g, tmp_path / "gru.svg", bindings={"N": 32})
    root = ET.parse(path).getroot()
    # every node of the graph is drawn once, the scans among them
    nodes = root.findall(f".//{SVG_NS}g[@class='node']")
    drawn_ids = [n["id"] for n in inline_sources(stage_data(g))["nodes"]]  # weights inside
    assert sorted(int(n.get("data-id")) for n in nodes) == sorted(drawn_ids)
    kinds = {int(n.get("data-id")): (n.get("data-scan"), n.get("data-bptt")) for n in nodes}
    assert kinds[fid] == ("forward", "0") and kinds[bid] == ("reverse", "1")
    for nid in (fid, bid):
        body = g.attrs(nid)["body"]
        (group,) = root.findall(f".//{SVG_NS}g[@class='scan-body'][@data-scan-id='{nid}']")
        inner = group.findall(f".//{SVG_NS}g[@data-body-id]")
        assert sorted(int(n.get("data-body-id")) for n in inner) == sorted(body.nodes())
        ports = group.findall(f".//{SVG_NS}g[@class='scan-output']")
        assert len(ports) == g.num_outputs(nid)
        (caption,) = root.findall(f".//{SVG_NS}g[@class='caption'][@data-scan-id='{nid}']")
        words = " ".join(t.text for t in caption.iter(SVG_NS + "text"))
        assert f"%{nid}" in words and "runs T times" in words
        assert ("backward (BPTT) scan · reverse" in words) == (nid == bid)
    texts = " ".join(t.text or "" for t in root.iter(SVG_NS + "text"))
    assert "carry 0" in texts and "gradient carry 0" in texts and "saved value 0 [t]" in texts
    assert "→ next carry 0" in texts and "step slice of seq 0" in texts


def test_svg_body_layout_puts_inputs_on_top_and_outputs_at_the_bottom(gru):
    g = gru.snapshots["plan_memory"]
    st = stage_data(g, name="plan_memory")
    bodies: dict = {}
    lay, _ = stage_layout(st, bodies)
    for nid, body in bodies.items():
        blay = body["layout"]
        sc = next(n for n in st["nodes"] if n["id"] == nid)["scan"]
        ins = [("n", e["body"]) for e in sc["inputs"]]
        outs = [("o", e["index"]) for e in sc["outputs"]]
        assert {blay.layer[k] for k in ins} == {0}
        assert {blay.layer[k] for k in outs} == {max(blay.layer.values())}
        # the box holds the body
        w, h = lay.size[("n", nid)]
        assert w >= blay.width and h >= blay.height


def test_dot_draws_each_scan_as_a_cluster_of_its_body(gru, tmp_path):
    g = gru.snapshots["plan_memory"]
    fid, bid = scans(g)
    path = draw(g, tmp_path / "gru.dot", bindings={"N": 32})
    parsed = parse_dot(path.read_text(encoding="utf-8"))
    for nid in (fid, bid):
        body = g.attrs(nid)["body"]
        cluster = parsed["clusters"][f"cluster_s{nid}"]
        assert cluster["attrs"]["label"].startswith(f"%{nid} ")
        assert "runs T times" in cluster["attrs"]["label"]
        inside = set(cluster["nodes"])
        for info in parsed["clusters"].values():  # fused kernels of the body nest inside
            if info["parent"] == f"cluster_s{nid}":
                inside |= set(info["nodes"])
        for b in body.nodes():
            if body.op_of(b) == "fused":
                assert parsed["clusters"][f"cluster_s{nid}_f{b}"]["parent"] == f"cluster_s{nid}"
            else:
                assert f"s{nid}_n{b}" in inside
        assert {f"s{nid}_o{i}" for i in range(g.num_outputs(nid))} <= inside
        # the scan's inputs go to the body's input of their slot
        ids = body.meta["inputs"]
        into = {b for a, b, _ in parsed["edges"] if b.startswith(f"s{nid}_") and not a.startswith(f"s{nid}_")}
        outer = g.inputs_of(nid)  # the inputs of scalar or weight sources are inside the scan node
        inlined = {i for i, v in zip(ids, outer) if g.op_of(v.node) in ("param", "state", "const")
                   or (g.op_of(v.node) == "input" and g.node(v.node)["types"][v.index].shape == ())}
        assert into == {f"s{nid}_n{i}" for i in ids if i not in inlined}
    assert "backward (BPTT) scan · reverse" in parsed["clusters"][f"cluster_s{bid}"]["attrs"]["label"]
    # the forward scan's saved values run from its output ports to the backward body
    assert any(a.startswith(f"s{fid}_o") and b.startswith(f"s{bid}_n") for a, b, _ in parsed["edges"])
    if shutil.which("dot") is not None:  # Graphviz lays the nested clusters out
        subprocess.run(["dot", "-Tsvg", str(path), "-o", str(tmp_path / "gru_dot.svg")],
                       check=True, timeout=60)
        ET.parse(tmp_path / "gru_dot.svg")


def test_html_scan_opens_to_its_body(chromium, gru, gru_spec_path, tmp_path, viz_cli):
    g = gru.graph
    fid, bid = scans(g)
    out = tmp_path / "gru.html"
    rc, _, err = viz_cli(gru_spec_path, "-o", out)
    assert rc == 0, err
    doc = inlined(out.read_text(encoding="utf-8"))
    assert {n["id"] for n in doc["stages"][0]["nodes"] if n.get("scan")} == {fid, bid}

    # collapsed by default: each scan is one node, drawn as a stack, with a + box
    dom = chromium(out.as_uri())
    assert body_attrs(dom).get("data-rendered") == "1"
    svg = drawn(dom)
    us = units(svg)
    shut = {int(u["data-id"]): u for u in us if "scan" in u["class"].split()}
    assert shut[fid]["data-direction"] == "forward" and "data-bptt" not in shut[fid]
    assert shut[bid]["data-direction"] == "reverse" and shut[bid]["data-bptt"] == "1"
    assert not [u for u in us if u.get("data-scan")]
    assert f'data-toggle="s:{fid}"' in svg and 'class="stack"' in svg

    # opened from the URL: both bodies, inputs and outputs named by role
    url = out.as_uri() + f"#expand={fid},{bid}"
    dom = chromium(url)
    assert body_attrs(dom).get("data-rendered") == "1"
    svg = drawn(dom)
    us = units(svg)
    for nid in (fid, bid):
        body = g.attrs(nid)["body"]
        inner = [u for u in us if u.get("data-scan") == str(nid) and "body" in u["class"].split()]
        assert sorted(int(u["data-body-id"]) for u in inner) == sorted(body.nodes())
        ports = [u for u in us if u.get("data-scan") == str(nid) and "bout" in u["class"].split()]
        assert len(ports) == g.num_outputs(nid)
        assert any(u["data-key"] == f"s:{nid}" and "scanbox" in u["class"].split() for u in us)
    roles = {u.get("data-role") for u in us}
    assert {"carry 0", "gradient carry 0", "saved value 0 [t]", "next carry 0",
            "next gradient carry 0"} <= roles
    assert "backward (BPTT) scan · reverse, t = T−1 → 0" in svg
    assert "the body below runs T times" in svg
    shot = Path(chromium(url, screenshot=tmp_path / "scan.png"))
    assert png_size(shot) == (1600, 1000) and shot.stat().st_size > 20_000

    # a body node selected from the URL opens its scan and shows its details
    fused = next(b for b in g.attrs(bid)["body"].nodes() if g.attrs(bid)["body"].op_of(b) != "input")
    dom = chromium(out.as_uri() + f"#select=sb:{bid}:{fused}")
    details = dom.split('id="details"', 1)[1].split('id="tree"', 1)[0]
    assert "in the body of scan" in details and f"%{bid}" in details
    sel = [u for u in units(drawn(dom)) if "selected" in u["class"].split()]
    assert [u["data-key"] for u in sel] == [f"sb:{bid}:{fused}"]
