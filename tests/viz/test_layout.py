"""The pure-Python layered layout: no overlaps, edges point down, deterministic."""

from __future__ import annotations

import itertools
import random

import pytest

from graphdl.viz.layout import _place_row, layered_layout


def random_dag(n: int, m: int, seed: int):
    r = random.Random(seed)
    nodes = {f"v{i}": (r.randint(20, 140), r.randint(12, 40)) for i in range(n)}
    edges = set()
    while len(edges) < m:
        a, b = r.randrange(n), r.randrange(n)
        if a < b:
            edges.add((f"v{a}", f"v{b}"))
    return nodes, sorted(edges)


def overlaps(lay, keys) -> list:
    boxes = sorted((lay.box(k), k) for k in keys)
    bad = []
    for i, (a, ka) in enumerate(boxes):
        for b, kb in boxes[i + 1:]:
            if b[0] >= a[2]:
                break  # sorted by left edge: nothing further right can touch a
            if a[1] < b[3] and b[1] < a[3]:
                bad.append((ka, kb))
    return bad


def assert_points_down(lay, edges):
    for u, v in edges:
        pts = lay.edges[(u, v)]
        assert lay.layer[v] > lay.layer[u], (u, v)
        assert all(p[1] < q[1] for p, q in itertools.pairwise(pts)), (u, v, pts)
        # it starts on the bottom of u and ends on the top of v
        assert pts[0] == pytest.approx((lay.pos[u][0], lay.box(u)[3]))
        assert pts[-1] == pytest.approx((lay.pos[v][0], lay.box(v)[1]))


@pytest.mark.parametrize("align", ["early", "late"])
@pytest.mark.parametrize("n,m,seed", [(1, 0, 0), (12, 20, 1), (60, 90, 2), (300, 420, 3), (800, 1000, 4)])
def test_random_dags_no_overlap_edges_down(n, m, seed, align):
    nodes, edges = random_dag(n, m, seed)
    lay = layered_layout(nodes, edges, align=align, pin_below=list(nodes)[::7])
    assert not overlaps(lay, nodes)
    assert_points_down(lay, edges)
    for k in nodes:  # inside the canvas
        x0, y0, x1, y1 = lay.box(k)
        assert x0 >= 0 and y0 >= 0 and x1 <= lay.width + 1e-6 and y1 <= lay.height + 1e-6


def test_deterministic():
    nodes, edges = random_dag(200, 300, 7)
    a = layered_layout(nodes, edges)
    b = layered_layout(dict(nodes), list(edges))
    assert a.pos == b.pos and a.edges == b.edges and (a.width, a.height) == (b.width, b.height)


def test_gaps_and_layers():
    nodes = {"a": (100, 30), "b": (40, 20), "c": (40, 20), "d": (60, 24)}
    edges = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
    lay = layered_layout(nodes, edges, node_gap=10, layer_gap=20)
    assert [lay.layer[k] for k in "abcd"] == [0, 1, 1, 2]
    left, right = sorted("bc", key=lambda k: lay.pos[k][0])
    assert lay.box(right)[0] - lay.box(left)[2] >= 10 - 1e-9
    assert lay.box("b")[1] - lay.box("a")[3] >= 20 - 1e-9
    # a diamond is drawn symmetrically: the top and bottom sit centred over the middle row
    mid = (lay.pos["b"][0] + lay.pos["c"][0]) / 2
    assert lay.pos["a"][0] == pytest.approx(mid) and lay.pos["d"][0] == pytest.approx(mid)
    assert lay.crossings == 0


def test_long_edges_get_bends_and_sources_move_down():
    # p is a source read only at the bottom: it sits just above its consumer
    nodes = {k: (30, 20) for k in ("a", "b", "c", "d", "p")}
    edges = [("a", "b"), ("b", "c"), ("c", "d"), ("p", "d"), ("a", "d")]
    lay = layered_layout(nodes, edges)
    assert lay.layer["p"] == lay.layer["d"] - 1
    assert len(lay.edges[("a", "d")]) == 2 + 2  # two dummy bends for layers 1 and 2
    assert_points_down(lay, edges)
    # through a tall layer (an open scan's box) a long edge runs straight down
    nodes["b"] = (30, 200)
    lay = layered_layout(nodes, edges)
    pts = lay.edges[("a", "d")]
    assert len(pts) == 2 + 1 + 2 and pts[1][0] == pts[2][0]
    assert pts[2][1] - pts[1][1] == pytest.approx(200)
    assert_points_down(lay, edges)


def test_cycles_multi_edges_and_unknown_nodes():
    nodes = {k: (30, 20) for k in "abc"}
    lay = layered_layout(nodes, [("a", "b"), ("b", "c"), ("c", "a"), ("a", "b"), ("b", "b")])
    assert len(lay.reversed_edges) == 1 and set(lay.edges) == {("a", "b"), ("b", "c"), ("c", "a")}
    assert not overlaps(lay, nodes)
    with pytest.raises(KeyError):
        layered_layout(nodes, [("a", "zz")])
    with pytest.raises(ValueError, match="align"):
        layered_layout(nodes, [], align="middle")
    empty = layered_layout({}, [])
    assert empty.pos == {} and empty.width > 0


def test_place_row_is_least_squares_with_gaps():
    # desired positions too close together: they spread symmetrically around their mean
    xs = _place_row([10, 10, 10], [50, 50, 50], [1, 1, 1], 5)
    assert xs == pytest.approx([35, 50, 65])
    # far apart already: unchanged
    assert _place_row([10, 10], [0, 100], [1, 1], 5) == pytest.approx([0, 100])
    # a heavy node stays put, the light one moves away
    xs = _place_row([10, 10], [0, 0], [100, 1], 10)
    assert xs[1] - xs[0] == pytest.approx(20) and abs(xs[0]) < 0.5


def test_training_graph_layout(digits):
    """The real training graph, value labels as layout nodes, mirrored: the forward pass
    flows down, the backward pass beside it flows up with each layer's gradient level
    with the layer, the updates sit in rows below both."""
    from graphdl.viz.data import stage_data
    from graphdl.viz.svg import stage_layout

    st = stage_data(digits.snapshots["autodiff"], name="autodiff", bindings={"N": 64})
    lay, values = stage_layout(st)
    by_id = {n["id"]: n for n in st["nodes"]}
    assert not overlaps(lay, list(lay.pos))
    assert not lay.reversed_edges
    col = {1: [], 2: [], 0: []}
    for k in lay.pos:
        col[lay.layer[k]].append(k)
    assert all(col.values())
    fwd_right = max(lay.box(k)[2] for k in col[0])
    assert min(lay.box(k)[0] for k in col[1]) > fwd_right  # the backward column beside
    assert min(lay.box(k)[1] for k in col[2]) > max(lay.box(k)[3] for k in col[0] + col[1])
    for (u, v), pts in lay.edges.items():
        c = lay.layer[u]
        if c == lay.layer[v] and c < 2:  # inside a column: down (forward) or up (backward)
            ys = [p[1] for p in pts]
            assert ys == sorted(ys, reverse=(c == 1)), (u, v, pts)
        elif (u, v) in lay.side:  # between the columns: side to side
            assert pts[0][1] == pytest.approx(lay.pos[u][1]) and pts[-1][1] == pytest.approx(lay.pos[v][1])
        else:  # to the updates: from a bottom to a top
            assert pts[0][1] == pytest.approx(lay.box(u)[3]) and pts[-1][1] == pytest.approx(lay.box(v)[1])
    # every value label sits right below its producer (above it in the backward pass)
    for (_, nid, i) in values:
        (_, vy), (_, py) = lay.pos[("v", nid, i)], lay.pos[("n", nid)]
        assert (vy < py) if by_id[nid]["phase"] == "backward" else (vy > py), (nid, i)
    # a layer's forward nodes and its gradient's are level (within a few node heights)
    def level(c, layer):
        ys = [lay.pos[k][1] for k in col[c] if k[0] == "n" and by_id[k[1]]["layer"] == layer]
        return sum(ys) / len(ys)
    for layer in ("dense_1", "dense_2", "dense_3"):
        assert abs(level(0, layer) - level(1, layer)) < 250, layer
    assert level(0, "dense_1") < level(0, "dense_3") and level(1, "dense_1") < level(1, "dense_3")