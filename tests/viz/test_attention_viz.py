"""Attention weights as heatmaps (graphdl/viz/attention.py): the static SVG parses and
holds every cell, the HTML page is self-contained, tokens are escaped in both, and in
headless chromium the page draws without console errors, with axis labels of at least
11 px on screen and a tooltip on hover (the same runner as the graph viewer's tests)."""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from test_browser import body_attrs, png_size
from test_formats import SVG_NS

from graphdl.viz.attention import MASKED, NOT_A_NUMBER, write_attention

HEADS, TQ, TK = 4, 6, 9
NASTY = "<b>&"  # a token that is markup if not escaped


def softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def make_samples(seed: int = 0) -> list[dict]:
    """2 samples of a decoder: causal self-attention over its 6 target tokens, then
    cross-attention from them to 9 source tokens, 4 heads each."""
    rng = np.random.default_rng(seed)
    samples = []
    for k in range(2):
        src = ["3", "1", NASTY, "1", "5", "9", "</script>", '"q"', "<eos>"]
        tgt = ["<bos>", "x", "y", NASTY, "z", "w"][: TQ]
        scores = rng.normal(size=(HEADS, TQ, TQ))
        scores[:, np.triu(np.ones((TQ, TQ), dtype=bool), 1)] = -np.inf
        cross = rng.normal(size=(HEADS, TQ, TK))
        cross[:, np.arange(TQ), TK - 1 - np.arange(TQ)] += 4.0  # reverse: query i -> key T-1-i
        samples.append({"name": f"sample {k}", "layers": [
            {"name": "decoder.0.self_attention", "kind": "causal", "weights": softmax(scores),
             "query_tokens": tgt, "key_tokens": tgt},
            {"name": "decoder.0.cross_attention", "kind": "cross", "weights": softmax(cross),
             "query_tokens": tgt, "key_tokens": src},
        ]})
    return samples


@pytest.fixture(scope="module")
def samples():
    return make_samples()


def page_json(text: str) -> dict:
    m = re.search(r'<script type="application/json" id="attention-data">(.*?)</script>', text, re.DOTALL)
    assert m
    return json.loads(m.group(1))


def external_refs(text: str) -> list[str]:
    """http(s) addresses, less the SVG namespace name (an identifier, never fetched)."""
    return re.findall(r"https?://\S+", text.replace('xmlns="http://www.w3.org/2000/svg"', ""))


# ---------------------------------------------------------------- SVG


def test_svg_is_well_formed_with_every_cell(tmp_path, samples):
    path = tmp_path / "att.svg"
    write_attention(path, samples, title="reverse <task>")
    text = path.read_text(encoding="utf-8")
    root = ET.fromstring(text)  # well-formed XML
    assert root.tag == SVG_NS + "svg"
    assert external_refs(text) == []
    maps = root.findall(f".//{SVG_NS}g[@class='heatmap']")
    # 2 samples x 2 layers x (4 heads + the mean)
    assert len(maps) == 2 * 2 * (HEADS + 1)
    assert [m.get("data-head") for m in maps[:5]] == ["0", "1", "2", "3", "mean"]
    assert [s.text for s in root.findall(f".//{SVG_NS}text[@class='sample']")] == ["sample 0", "sample 1"]

    # the cross-attention of sample 1, head 2: each cell's tooltip holds its weight
    w = samples[1]["layers"][1]["weights"]
    m = maps[3 * (HEADS + 1) + 2]
    assert (m.get("data-layer"), m.get("data-head")) == ("decoder.0.cross_attention", "2")
    cells = m.find(f"{SVG_NS}g[@class='cells']").findall(f"{SVG_NS}rect")
    assert len(cells) == TQ * TK
    tips = [c.find(f"{SVG_NS}title").text for c in cells]
    assert tips[0 * TK + 8].startswith("query 0 '<bos>' → key 8 '<eos>': ")
    assert float(tips[3 * TK + 5].rsplit(": ", 1)[1]) == pytest.approx(w[2, 3, 5], abs=1e-4)

    # a causal layer's future keys are grey, its allowed keys on the colour ramp
    causal = maps[0].find(f"{SVG_NS}g[@class='cells']").findall(f"{SVG_NS}rect")
    fills = np.array([c.get("fill") for c in causal]).reshape(TQ, TQ)
    future = np.triu(np.ones((TQ, TQ), dtype=bool), 1)
    assert (fills[future] == MASKED).all() and (fills[~future] != MASKED).all()

    # axis labels: the tokens, at 11 px or more
    sizes = {float(g.get("font-size")) for m in maps for g in m.findall(f"{SVG_NS}g")
             if g.get("class") in ("rows", "cols")}
    assert min(sizes) >= 11
    cross_cols = next(g for g in maps[5].findall(f"{SVG_NS}g") if g.get("class") == "cols")
    assert [t.text for t in cross_cols] == samples[0]["layers"][1]["key_tokens"]


def test_svg_escapes_tokens(tmp_path, samples):
    path = tmp_path / "att.svg"
    write_attention(path, samples, title=NASTY)
    text = path.read_text(encoding="utf-8")
    assert NASTY not in text and "</script>" not in text
    assert "&lt;b&gt;&amp;" in text
    root = ET.fromstring(text)
    assert NASTY in [t.text for t in root.iter(SVG_NS + "text")]  # read back as the token


def test_svg_long_sequences_stay_legible(tmp_path):
    """T = 64: small cells, every k-th token labelled so labels never overlap, labels
    still 12 px; the file stays small (faint cells left to the white ground)."""
    rng = np.random.default_rng(1)
    t = 64
    tokens = [f"tok{i}" for i in range(t)]
    w = softmax(rng.normal(size=(8, t, t)) + 6.0 * np.eye(t)[::-1])
    path = tmp_path / "long.svg"
    write_attention(path, [{"name": "long", "layers": [
        {"name": "enc", "kind": "self", "weights": w, "query_tokens": tokens, "key_tokens": tokens}]}])
    root = ET.parse(path).getroot()
    m = root.find(f".//{SVG_NS}g[@class='heatmap']")
    rows = next(g for g in m.findall(f"{SVG_NS}g") if g.get("class") == "rows")
    ys = [float(r.get("y")) for r in rows]
    assert 8 <= len(ys) < t and min(np.diff(ys)) >= 13  # a label every k rows, 13 px or more apart
    assert float(rows.get("font-size")) >= 11
    assert path.stat().st_size < 1_500_000


# ---------------------------------------------------------------- HTML


def test_html_is_self_contained_and_escaped(tmp_path, samples):
    path = tmp_path / "att.html"
    write_attention(path, samples, title="attention <of> " + NASTY)
    text = path.read_text(encoding="utf-8")
    assert external_refs(text) == [] and "http" not in text
    assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=|<link\b|@import|url\(", text)
    assert NASTY not in text  # neither in the title nor in the inlined JSON
    assert text.count("</script>") == 3  # the page's own three scripts, no token closes one
    assert "<title>attention &lt;of&gt; &lt;b&gt;&amp;</title>" in text

    doc = page_json(text)
    assert doc["format"] == "graphdl-attention/1"
    assert [s["name"] for s in doc["samples"]] == ["sample 0", "sample 1"]
    layer = doc["samples"][1]["layers"][1]
    assert layer["key_tokens"] == samples[1]["layers"][1]["key_tokens"]  # the tokens, intact
    w = samples[1]["layers"][1]["weights"]
    assert np.allclose(np.array(layer["heads"]).reshape(HEADS, TQ, TK), w, atol=1e-4)
    assert np.allclose(np.array(layer["mean"]).reshape(TQ, TK), w.mean(axis=0), atol=1e-4)
    causal = doc["samples"][0]["layers"][0]
    future = np.flatnonzero(np.triu(np.ones((TQ, TQ), dtype=bool), 1))
    assert causal["masked"] == future.tolist() and layer["masked"] == []


def test_bad_input_names_the_layer(tmp_path, samples):
    bad = [{"name": "s", "layers": [dict(samples[0]["layers"][1], key_tokens=["a", "b"])]}]
    with pytest.raises(ValueError, match=r"s, layer 0 \(decoder.0.cross_attention\).*9 key tokens, got .* 2"):
        write_attention(tmp_path / "x.html", bad)
    with pytest.raises(ValueError, match="use .html or .svg"):
        write_attention(tmp_path / "x.png", samples)
    with pytest.raises(ValueError, match="kind 'full'"):
        write_attention(tmp_path / "x.svg", [{"name": "s", "layers": [dict(samples[0]["layers"][1], kind="full")]}])


def test_not_a_number_is_drawn_apart(tmp_path, samples):
    """A NaN weight (a bug upstream) is shown as such, not as 0 or 1, and the files stay
    valid (JSON has no NaN)."""
    layer = dict(samples[0]["layers"][1])
    layer["weights"] = layer["weights"].copy()
    layer["weights"][1, 2, 3] = np.nan
    one = [{"name": "s", "layers": [layer]}]
    write_attention(tmp_path / "nan.html", one)
    doc = page_json((tmp_path / "nan.html").read_text(encoding="utf-8"))
    assert doc["samples"][0]["layers"][0]["heads"][1][2 * TK + 3] is None
    assert doc["samples"][0]["layers"][0]["mean"][2 * TK + 3] is None
    write_attention(tmp_path / "nan.svg", one)
    root = ET.parse(tmp_path / "nan.svg").getroot()
    head1 = root.findall(f".//{SVG_NS}g[@class='heatmap']")[1]
    cell = head1.find(f"{SVG_NS}g[@class='cells']").findall(f"{SVG_NS}rect")[2 * TK + 3]
    assert cell.get("fill") == NOT_A_NUMBER and cell.find(f"{SVG_NS}title").text.endswith(": not a number")


def tooltip_text(dom: str) -> str:
    m = re.search(r'<div id="tip"[^>]*>(.*?)</div>', dom, re.DOTALL)
    assert m, "no tooltip element"
    assert m.group(1).count("<b>") == 4  # its own four bold captions, no token became markup
    return html.unescape(re.sub(r"<[^>]+>", "", m.group(1)))


def test_page_in_chromium(chromium, tmp_path, samples):
    path = tmp_path / "att.html"
    write_attention(path, samples, title="reverse")

    # default view: drawn, no console errors, axis labels at least 11 px on screen
    dom = chromium(path.as_uri())
    assert re.search(r'<html[^>]*data-console-errors="0"', dom), re.search(r"<html[^>]*>", dom).group(0)
    attrs = body_attrs(dom)
    assert attrs.get("data-rendered") == "1"
    assert attrs["data-maps"] == str(2 * (HEADS + 1))
    assert float(attrs["data-label-px"]) >= 11
    assert '<option value="1">sample 1</option>' in dom  # the sample selector

    # sample 1, cross-attention, head 2, query 3 -> key 2 (the token "<b>&" on both axes):
    # a mouse move there shows query, key and weight
    dom = chromium(path.as_uri() + "#sample=1&hover=1,2,3,2")
    assert re.search(r'<html[^>]*data-console-errors="0"', dom)
    attrs = body_attrs(dom)
    assert attrs.get("data-sample") == "1" and attrs.get("data-hover") == "shown"
    tip = tooltip_text(dom)
    w = samples[1]["layers"][1]["weights"][2, 3, 2]
    assert "decoder.0.cross_attention · head 2" in tip
    assert f"query 3: {NASTY}" in tip and f"key 2: {NASTY}" in tip and f"weight: {w:.4f}" in tip
    assert 'class="tick row hl" data-i="3"' in dom  # the cell's row label lights up

    # the mean only, one map per layer; a screenshot a person can look at
    dom = chromium(path.as_uri() + "#show=mean&scale=map")
    assert body_attrs(dom)["data-maps"] == "2"
    shot = Path(chromium(path.as_uri() + "#hover=1,mean,2,6", screenshot=tmp_path / "att.png"))
    assert png_size(shot) == (1600, 1000) and shot.stat().st_size > 20_000


def test_long_sequences_in_chromium(chromium, tmp_path):
    """T = 64 with 8 heads at the default 1600 x 1000 view: labels stay 11 px or more."""
    rng = np.random.default_rng(2)
    t = 64
    tokens = [f"word{i}" for i in range(t)]
    layers = [{"name": f"encoder.{k}.multihead_attention", "kind": "self",
               "weights": softmax(rng.normal(size=(8, t, t)) + 6.0 * np.eye(t)[::-1]),
               "query_tokens": tokens, "key_tokens": tokens} for k in range(2)]
    path = tmp_path / "long.html"
    write_attention(path, [{"name": "long", "layers": layers}])
    dom = chromium(path.as_uri() + "#hover=1,7,40,23")
    assert re.search(r'<html[^>]*data-console-errors="0"', dom)
    attrs = body_attrs(dom)
    assert attrs.get("data-rendered") == "1" and attrs["data-maps"] == str(2 * 9)
    assert float(attrs["data-label-px"]) >= 11
    assert attrs.get("data-hover") == "shown"  # scrolled to, and not covered
    assert "query 40: word40" in tooltip_text(dom)


def test_attention_pooling_is_drawn_as_pooling_not_cross_attention(tmp_path):
    """An `attention` layer with one input (a learned query over the steps) is kind "pool"
    in the attention program, and the page names it so."""
    from graphdl.layers.lower import lower
    from graphdl.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "specs" / "lstm_attention_vowels.yaml")
    g = lower(spec, "attention")
    kinds = {name: info["kind"] for name, info in g.meta["attention"].items()}
    assert list(kinds.values()) == ["pool"], kinds
    rng = np.random.default_rng(0)
    layer = {"name": next(iter(kinds)), "kind": "pool", "weights": softmax(rng.normal(size=(1, 1, 7))),
             "query_tokens": ["query"], "key_tokens": [str(t) for t in range(1, 8)]}
    path = tmp_path / "pool.html"
    write_attention(path, [{"name": "sample 0", "layers": [layer]}], title="pool")
    assert page_json(path.read_text(encoding="utf-8"))["samples"][0]["layers"][0]["kind_text"] \
        == "attention pooling (one learned query)"
