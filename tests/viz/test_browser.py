"""End to end in a real headless browser (Debian's chromium): the page renders offline,
shows the expected nodes, opens a fused group, selects a node, syncs a comparison, takes a
screenshot; a 2,000-node training graph opens in under 2 s.

The page is driven through its URL hash (#expand=..., #select=...) and read back with
--dump-dom: after rendering, <body> carries data-rendered="1" and data-render-ms.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from graphdl.viz import draw

DIGITS = Path(__file__).resolve().parents[2] / "specs" / "mlp_digits.yaml"


def body_attrs(dom: str) -> dict:
    m = re.search(r"<body([^>]*)>", dom)
    assert m, dom[:500]
    return dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))


def drawn(dom: str, panel: int = 0) -> str:
    """The markup of a panel's rendered SVG (the DOM also holds the inlined JSON)."""
    m = re.search(rf'<svg id="svg-{panel}"[^>]*>(.*?)</svg>', dom, re.DOTALL)
    assert m, "no rendered graph in the page"
    return m.group(1)


def units(svg: str) -> list[dict]:
    return [dict(re.findall(r'([\w-]+)="([^"]*)"', m)) for m in re.findall(r'<g (class="unit[ "][^>]*)>', svg)]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def digits_page(tmp_path_factory, viz_cli_module):
    out = tmp_path_factory.mktemp("viz") / "digits.html"
    viz_cli_module(DIGITS, "-o", out)
    return out


@pytest.fixture(scope="module")
def viz_cli_module():
    import argparse

    from graphdl.viz.cli import add_parser

    def run(*argv):
        parser = argparse.ArgumentParser(prog="graphdl")
        add_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["viz", *[str(a) for a in argv]])
        assert args.func(args) == 0

    return run


def test_digits_page_renders(chromium, digits_page, digits, tmp_path):
    dom = chromium(digits_page.as_uri())
    attrs = body_attrs(dom)
    assert attrs.get("data-rendered") == "1"
    svg = drawn(dom)
    us = units(svg)
    ops = {u.get("data-op") for u in us}
    assert {"fused", "adam_update"} <= ops
    # parameters and optimiser state are written inside the nodes that read them
    assert not ops & {"param", "state", "const"}
    assert '<text class="tw" x="' in svg and ">dense_1.kernel [64, 128]<" in svg
    assert ">opt.m.dense_1.kernel [64, 128]<" in svg
    assert any(u.get("data-layer") == "dense_1" for u in us)
    assert ">dense_1 · line 18<" in svg  # the spec layer and its YAML line on the node
    assert "float32[N, 128]" in svg  # an edge label: dtype and shape

    # every group open and the sources as nodes: one unit per node, fused kernels closed
    dom = chromium(digits_page.as_uri() + "#expandall=1&sources=nodes")
    us = units(drawn(dom))
    assert {"matmul", "fused", "adam_update", "param", "state"} <= {u.get("data-op") for u in us}
    assert len(us) == len(digits.graph) and not any(u["class"].startswith("unit member") for u in us)

    shot = chromium(digits_page.as_uri(), screenshot=tmp_path / "digits.png")
    w, h = png_size(Path(shot))
    assert (w, h) == (1600, 1000) and Path(shot).stat().st_size > 20_000


def test_expand_fused_group_and_select(chromium, digits_page, digits, tmp_path):
    g = digits.graph
    fid = next(n for n in g.nodes_by_op("fused") if g.node(n)["layer"] == "dense_1"
               and len(g.attrs(n)["members"]) == 3)
    members = g.attrs(fid)["members"]
    url = digits_page.as_uri() + f"#expand={fid}&select={fid}"
    dom = chromium(url)
    assert body_attrs(dom).get("data-rendered") == "1"
    svg = drawn(dom)
    shown = [u for u in units(svg) if u.get("data-member-of") == str(fid)]
    assert [u["data-op"] for u in shown] == [m["op"] for m in members] == ["matmul", "add", "relu"]
    assert [int(u["data-orig"]) for u in shown] == [m["orig_id"] for m in members]
    assert f'data-key="f:{fid}"' in svg  # the open kernel is drawn as a cluster
    # the details pane: attributes, types, spec line and the generated kernel source
    details = dom.split('id="details"', 1)[1].split('id="tree"', 1)[0]
    assert "mlp_digits.yaml:18" in details and "float32[N, 128]" in details
    assert "def loop_" in details and f"# %{fid} fused" in details

    shot = Path(chromium(url, screenshot=tmp_path / "fused.png"))
    assert png_size(shot)[0] == 1600 and shot.stat().st_size > 20_000


def test_compare_page_syncs_selection(chromium, tmp_path, viz_cli_module, digits):
    out = tmp_path / "cmp.html"
    viz_cli_module(DIGITS, "-o", out, "--compare", "training", "optimized")
    g = digits.graph
    fid = next(n for n in g.nodes_by_op("fused") if g.node(n)["layer"] == "dense_1"
               and len(g.attrs(n)["members"]) == 3)
    matmul = g.attrs(fid)["members"][0]["orig_id"]
    # every node drawn (sources as nodes, groups open): the removed ones are marked
    dom = chromium(out.as_uri() + f"#select={matmul}&color=group&expandall=1&sources=nodes")
    assert body_attrs(dom).get("data-rendered") == "1"
    legend = dom.split('id="legend"', 1)[1].split("</span></span>", 1)[0]
    assert "fused kernel" in legend  # the colouring switched from phase to fused group
    left, right = drawn(dom, 0), drawn(dom, 1)
    sel = [u for u in units(left) if "selected" in u["class"].split()]
    assert [u["data-key"] for u in sel] == [f"n:{matmul}"]
    linked = [u for u in units(right) if "linked" in u["class"].split()]
    assert [u["data-key"] for u in linked] == [f"n:{fid}"]  # what the matmul became
    removed = [u for u in units(left) if "removed" in u["class"].split()]
    assert removed  # simplify dropped nodes of the training graph
    assert not [u for u in units(right) if "added" in u["class"].split()]


def test_two_thousand_nodes_open_fast(chromium, big_graph, tmp_path):
    out = draw(big_graph, tmp_path / "big.html", title="2,000-node training graph")
    dom = chromium(out.as_uri())
    attrs = body_attrs(dom)
    assert attrs.get("data-rendered") == "1"
    ms = float(attrs["data-render-ms"])
    assert ms < 2000, f"first render took {ms} ms"
    us = units(drawn(dom))
    groups = [u for u in us if u["class"].startswith("unit group")]
    assert groups and len(us) < 300  # opened collapsed: only the outer level is laid out
    assert any(u["data-group"] == "forward:encoder" for u in groups)

    # a repeated block opens from the hash: its layers appear
    dom = chromium(out.as_uri() + "#expand=forward:encoder.3")
    us = units(drawn(dom))
    layers = {u.get("data-layer") or u.get("data-group") for u in us}
    assert any(x and x.startswith("encoder.3.") for x in layers), sorted(x for x in layers if x)
    assert any(u.get("data-group") == "forward:encoder.4" for u in us)  # its siblings stay shut
    # opening all 62 copies of the block lays out thousands of edge bends: slower than
    # the first view, but it works (the first render counts from navigation start)
    assert body_attrs(dom).get("data-rendered") == "1"

    shot = Path(chromium(out.as_uri(), screenshot=tmp_path / "big.png"))
    assert png_size(shot) == (1600, 1000) and shot.stat().st_size > 20_000


# ---------------------------------------------------------------- legibility

SPECS = Path(__file__).resolve().parents[2] / "specs"
LEGIBLE_PX = 11  # the smallest node text a person reads without zooming
MAX_ASPECT = 3.0  # wider than this (width / height) is a strip

# Appended after the viewer's script (which renders synchronously): measures, from the
# page as drawn, the on-screen size of every node label inside the canvas (computed font
# size times the zoom of the SVG transform) and the drawing's aspect ratio.
MEASURE = """<script>
(function () {
  var canvas = document.querySelector(".canvas").getBoundingClientRect();
  var least = Infinity, shown = 0;
  document.querySelectorAll("#svg-0 g.unit text").forEach(function (t) {
    var r = t.getBoundingClientRect();
    if (r.right < canvas.left || r.left > canvas.right || r.bottom < canvas.top || r.top > canvas.bottom) return;
    var m = t.getScreenCTM();
    least = Math.min(least, parseFloat(getComputedStyle(t).fontSize) * Math.sqrt(m.a * m.a + m.b * m.b));
    shown += 1;
  });
  var box = document.querySelector("#svg-0 g.viewport").getBBox();
  var b = document.body;
  b.setAttribute("data-test-label-px", String(least));
  b.setAttribute("data-test-labels", String(shown));
  b.setAttribute("data-test-aspect", String(box.width / box.height));
  b.setAttribute("data-test-canvas", canvas.width + "x" + canvas.height);
})();
</script>
</body>"""


def measured(chromium, page: Path, tmp_path: Path) -> dict:
    """The page opened in chromium with the measuring script appended: its body attrs."""
    probe = tmp_path / f"measure_{page.name}"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE, 1), encoding="utf-8")
    dom = chromium(probe.as_uri())
    assert re.search(r'<html[^>]*data-console-errors="0"', dom), re.search(r"<html[^>]*>", dom).group(0)
    attrs = body_attrs(dom)
    assert attrs.get("data-rendered") == "1"
    return attrs


@pytest.mark.parametrize("stage", ["optimized", "training"])
@pytest.mark.parametrize("spec", ["mlp_digits", "lenet_digits", "lenet_bn_digits"])
def test_training_graph_opens_legible(chromium, viz_cli_module, tmp_path, spec, stage):
    page = tmp_path / f"{spec}_{stage}.html"
    viz_cli_module(SPECS / f"{spec}.yaml", "--stage", stage, "-o", page)
    attrs = measured(chromium, page, tmp_path)
    px, aspect = float(attrs["data-test-label-px"]), float(attrs["data-test-aspect"])
    assert px >= LEGIBLE_PX, f"node labels are {px:.1f} px on screen"
    assert int(attrs["data-test-labels"]) >= 20  # the window shows a good part of the graph
    assert aspect <= MAX_ASPECT, f"the drawing is a strip ({aspect:.2f} wide per unit of height)"


@pytest.mark.parametrize("spec", ["mlp_digits", "lenet_digits", "lenet_bn_digits"])
def test_every_stage_opens_without_console_errors(chromium, viz_cli_module, tmp_path, spec):
    for stage in ("lowered", "training", "fused", "optimized"):
        page = tmp_path / f"{spec}_{stage}.html"
        viz_cli_module(SPECS / f"{spec}.yaml", "--stage", stage, "-o", page)
        for view in ("", "#sources=nodes", "#expandall=1", "#view=fit"):
            dom = chromium(page.as_uri() + view)
            assert re.search(r'<html[^>]*data-console-errors="0"', dom), (stage, view, re.search(r"<html[^>]*>", dom).group(0))
            assert body_attrs(dom).get("data-rendered") == "1", (stage, view)
