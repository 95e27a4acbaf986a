"""A layered graph layout in pure Python (the Sugiyama framework, kept small).

1. cycles are broken by reversing the back edges of a depth-first search (graphdl graphs
   are acyclic; this only makes the function total);
2. layering by longest path from the sources, then every source node (a parameter, an
   input) and every node fed by sources only is moved down to just above its first
   consumer, so weights sit beside the op that reads them instead of on the top row
   (``align="late"`` takes the longest path to the sinks instead); ``pin_below`` nodes
   (value labels) go right under their only input; ``sinks_last`` nodes go to the bottom
   layer (the output ports of a scan's body);
3. an edge that spans several layers gets a chain of dummy nodes, one per layer crossed
   (through a layer taller than ``TALL_LAYER`` it runs straight down the layer's height);
4. the order within each layer comes from barycentre sweeps (down, then up) each
   followed by a transpose pass (swap neighbours while that removes crossings), keeping
   the order with the fewest crossings seen;
5. x coordinates: each layer is placed as close as possible (weighted least squares) to
   the mean position of its neighbours in the layer above or below, subject to minimum
   gaps, which is an isotonic regression solved exactly by pool-adjacent-violators;
   dummy nodes weigh more so long edges run straight.

Everything is deterministic: ties are broken by the order in which nodes were given.
Nodes never overlap: within a layer the gaps are constraints, and layers are stacked
with ``layer_gap`` between their tallest nodes. Every edge of an acyclic input runs from
a higher layer to a lower one, so its polyline points down.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field

Point = tuple[float, float]
TALL_LAYER = 60.0  # layers taller than this (a box holding a scan's body) are crossed straight


@dataclass
class Layout:
    """Positions (centres) and sizes of the nodes, and one polyline per edge."""

    pos: dict[Hashable, Point]
    size: dict[Hashable, tuple[float, float]]
    layer: dict[Hashable, int]
    edges: dict[tuple[Hashable, Hashable], list[Point]]
    width: float
    height: float
    crossings: int = 0
    reversed_edges: list[tuple[Hashable, Hashable]] = field(default_factory=list)
    # edges drawn from side to side rather than top to bottom (between two columns)
    side: set[tuple[Hashable, Hashable]] = field(default_factory=set)

    def box(self, n: Hashable) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of a node."""
        x, y = self.pos[n]
        w, h = self.size[n]
        return (x - w / 2, y - h / 2, x + w / 2, y + h / 2)


def layered_layout(
    nodes: Mapping[Hashable, tuple[float, float]],
    edges: Iterable[tuple[Hashable, Hashable]],
    *,
    node_gap: float = 24.0,
    layer_gap: float = 36.0,
    margin: float = 16.0,
    sweeps: int = 12,
    dummy_width: float = 4.0,
    tighten_sources: bool = True,
    align: str = "early",
    pin_below: Iterable[Hashable] = (),
    sinks_last: Iterable[Hashable] = (),
) -> Layout:
    """Lay out ``nodes`` (key -> (width, height)) joined by ``edges`` (u, v) pairs."""
    keys = list(nodes)
    idx = {k: i for i, k in enumerate(keys)}
    n = len(keys)
    widths = [float(nodes[k][0]) for k in keys]
    heights = [float(nodes[k][1]) for k in keys]

    pairs: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    for u, v in edges:
        if u not in idx or v not in idx:
            raise KeyError(f"edge ({u!r}, {v!r}) names a node that was not given")
        p = (idx[u], idx[v])
        if p[0] != p[1] and p not in seen:
            seen.add(p)
            pairs.append(p)

    rev = _back_edges(n, pairs)
    dag: list[tuple[int, int]] = []
    dag_seen: set[tuple[int, int]] = set()
    for u, v in pairs:
        e = (v, u) if (u, v) in rev else (u, v)
        if e not in dag_seen:
            dag_seen.add(e)
            dag.append(e)
    succ: list[list[int]] = [[] for _ in range(n)]
    pred: list[list[int]] = [[] for _ in range(n)]
    for u, v in dag:
        succ[u].append(v)
        pred[v].append(u)

    if align == "late":
        # longest path to the sinks: a node sits just above its first consumer ...
        layer = _longest_path_layers(n, pred, succ)
        top = max(layer, default=0)
        layer = [top - x for x in layer]
        # ... except sinks, which stay just below their last input
        for v in range(n):
            if pred[v] and not succ[v]:
                layer[v] = max(layer[p] for p in pred[v]) + 1
    elif align == "early":
        layer = _longest_path_layers(n, succ, pred)
        if tighten_sources:
            # sources, and nodes fed only by sources (a value label under a parameter),
            # move down to just above their first consumer; consumers first
            indeg0 = [not pred[v] for v in range(n)]
            for v in sorted(range(n), key=lambda v: -layer[v]):
                if succ[v] and all(indeg0[p] for p in pred[v]):
                    layer[v] = min(layer[s] for s in succ[v]) - 1
    else:
        raise ValueError(f"align must be 'early' or 'late', not {align!r}")
    # pinned nodes (labels of a value) sit right under their only input
    for v in sorted((idx[k] for k in pin_below if k in idx), key=lambda v: layer[v]):
        if len(pred[v]) == 1:
            layer[v] = layer[pred[v][0]] + 1
    low = min(layer, default=0)
    layer = [x - low for x in layer]
    last = [idx[k] for k in sinks_last if k in idx and not succ[idx[k]]]
    if last:
        bottom = max(layer)
        for v in last:
            layer[v] = bottom

    # dummy nodes: every DAG edge becomes a chain of unit-length segments
    lay = list(layer)
    wid = list(widths)
    hei = list(heights)
    weight = [1.0] * n
    seg_succ: list[list[int]] = [[] for _ in range(n)]
    seg_pred: list[list[int]] = [[] for _ in range(n)]
    chains: dict[tuple[int, int], list[int]] = {}
    for u, v in dag:
        chain = [u]
        for L in range(layer[u] + 1, layer[v]):
            d = len(lay)
            lay.append(L)
            wid.append(dummy_width)
            hei.append(0.0)
            weight.append(4.0)
            seg_succ.append([])
            seg_pred.append([])
            chain.append(d)
        chain.append(v)
        for a, b in itertools.pairwise(chain):
            seg_succ[a].append(b)
            seg_pred[b].append(a)
        chains[(u, v)] = chain
    total = len(lay)
    nlayers = (max(lay) + 1) if lay else 0

    layers = _initial_order(total, n, lay, nlayers, seg_succ, seg_pred)
    # effort scales down on huge inputs (a flat 2,000-node training graph has ~10^6
    # dummy nodes): fewer ordering sweeps and placement rounds
    big = total > 20_000
    layers, crossings = _reduce_crossings(layers, seg_succ, seg_pred,
                                          min(sweeps, 3) if big else sweeps, track=not big)

    xs = _assign_x(layers, wid, weight, seg_succ, seg_pred, node_gap, rounds=1 if big else 6)

    # vertical placement: layers stacked, each as tall as its tallest node
    layer_h = [0.0] * nlayers
    for v in range(total):
        layer_h[lay[v]] = max(layer_h[lay[v]], hei[v])
    tops = []
    y = margin
    for L in range(nlayers):
        tops.append(y)
        y += layer_h[L] + layer_gap
    height = (y - layer_gap + margin) if nlayers else 2 * margin
    ys = [tops[lay[v]] + layer_h[lay[v]] / 2 for v in range(total)]

    if total:
        shift = margin - min(xs[v] - wid[v] / 2 for v in range(total))
        xs = [x + shift for x in xs]
        width = max(xs[v] + wid[v] / 2 for v in range(total)) + margin
    else:
        width = 2 * margin

    pos = {keys[i]: (xs[i], ys[i]) for i in range(n)}
    edge_points: dict[tuple[Hashable, Hashable], list[Point]] = {}
    reversed_edges = []
    for u, v in pairs:
        flipped = (u, v) in rev
        a, b = (v, u) if flipped else (u, v)
        chain = chains[(a, b)]
        pts: list[Point] = [(xs[a], ys[a] + hei[a] / 2)]
        for d in chain[1:-1]:
            # through a tall layer (one holding an open scan's box) the edge runs straight
            # down the layer's whole height, so that it cannot cut across the box
            top, h = tops[lay[d]], layer_h[lay[d]]
            pts += [(xs[d], top), (xs[d], top + h)] if h > TALL_LAYER else [(xs[d], ys[d])]
        pts.append((xs[b], ys[b] - hei[b] / 2))
        if flipped:
            pts.reverse()
            reversed_edges.append((keys[u], keys[v]))
        edge_points[(keys[u], keys[v])] = pts
    return Layout(
        pos=pos,
        size={keys[i]: (widths[i], heights[i]) for i in range(n)},
        layer={keys[i]: lay[i] for i in range(n)},
        edges=edge_points,
        width=width,
        height=height,
        crossings=crossings,
        reversed_edges=reversed_edges,
    )


# ----------------------------------------------------------------------------- steps


def _back_edges(n: int, pairs: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """Edges that close a cycle in an iterative depth-first search (none for a DAG)."""
    out: list[list[int]] = [[] for _ in range(n)]
    for u, v in pairs:
        out[u].append(v)
    state = [0] * n  # 0 new, 1 on the stack, 2 done
    back: set[tuple[int, int]] = set()
    for root in range(n):
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, 0)]
        while stack:
            v, i = stack[-1]
            if i < len(out[v]):
                stack[-1] = (v, i + 1)
                w = out[v][i]
                if state[w] == 1:
                    back.add((v, w))
                elif state[w] == 0:
                    state[w] = 1
                    stack.append((w, 0))
            else:
                state[v] = 2
                stack.pop()
    return back


def _longest_path_layers(n: int, succ: list[list[int]], pred: list[list[int]]) -> list[int]:
    indeg = [len(p) for p in pred]
    heap = [v for v in range(n) if indeg[v] == 0]
    heapq.heapify(heap)
    layer = [0] * n
    while heap:
        v = heapq.heappop(heap)
        for w in succ[v]:
            layer[w] = max(layer[w], layer[v] + 1)
            indeg[w] -= 1
            if indeg[w] == 0:
                heapq.heappush(heap, w)
    return layer


def _initial_order(total, n, lay, nlayers, seg_succ, seg_pred) -> list[list[int]]:
    """Depth-first visiting order from the sources, so chains start out side by side."""
    layers: list[list[int]] = [[] for _ in range(nlayers)]
    seen = [False] * total
    starts = [v for v in range(total) if not seg_pred[v]] + list(range(total))
    for s in starts:
        if seen[s]:
            continue
        stack = [s]
        while stack:
            v = stack.pop()
            if seen[v]:
                continue
            seen[v] = True
            layers[lay[v]].append(v)
            for w in reversed(seg_succ[v]):
                if not seen[w]:
                    stack.append(w)
    return layers


def _count_crossings(upper: list[int], lower: list[int], seg_succ, pos) -> int:
    ends = []
    for u in upper:
        for w in seg_succ[u]:
            ends.append((pos[u], pos[w]))
    if len(ends) < 2:
        return 0
    ends.sort()
    size = len(lower)
    tree = [0] * (size + 1)
    crossings = 0
    for seen, (_, b) in enumerate(ends):
        # edges already seen whose lower end lies strictly right of b cross this one
        i = b + 1
        s = 0
        while i > 0:
            s += tree[i]
            i -= i & -i
        crossings += seen - s
        i = b + 1
        while i <= size:
            tree[i] += 1
            i += i & -i
    return crossings


def _all_crossings(layers, seg_succ, pos) -> int:
    return sum(_count_crossings(layers[L], layers[L + 1], seg_succ, pos) for L in range(len(layers) - 1))


def _positions(layers: list[list[int]], total_hint: dict | None = None) -> dict[int, int]:
    pos = total_hint if total_hint is not None else {}
    for row in layers:
        for i, v in enumerate(row):
            pos[v] = i
    return pos


def _pair_crossings(a: list[int], b: list[int], pos) -> int:
    """Crossings between the edges of two neighbours u (left) and v (right) of a row
    when they end at positions ``a`` (u's) and ``b`` (v's) of the same adjacent row."""
    if not a or not b:
        return 0
    return sum(1 for x in a for y in b if x > y)


def _transpose(layers, seg_succ, seg_pred, pos, max_rounds: int = 4) -> None:
    """Swap neighbours in a row while that removes crossings (a local search)."""
    for _ in range(max_rounds):
        improved = False
        for row in layers:
            for i in range(len(row) - 1):
                u, v = row[i], row[i + 1]
                up_u = [pos[w] for w in seg_pred[u]]
                up_v = [pos[w] for w in seg_pred[v]]
                dn_u = [pos[w] for w in seg_succ[u]]
                dn_v = [pos[w] for w in seg_succ[v]]
                now = _pair_crossings(up_u, up_v, pos) + _pair_crossings(dn_u, dn_v, pos)
                swapped = _pair_crossings(up_v, up_u, pos) + _pair_crossings(dn_v, dn_u, pos)
                if swapped < now:
                    row[i], row[i + 1] = v, u
                    pos[u], pos[v] = i + 1, i
                    improved = True
        if not improved:
            break


def _reduce_crossings(layers, seg_succ, seg_pred, sweeps, track: bool = True):
    """Barycentre sweeps; with ``track`` the order with the fewest crossings is kept
    (counting them costs about as much as a sweep, so huge inputs skip it)."""
    pos = _positions(layers)
    best = [list(r) for r in layers]
    best_c = _all_crossings(layers, seg_succ, pos) if track else -1
    stale = 0
    small = sum(len(r) for r in layers) <= 4000  # the local search is quadratic in degree
    for _ in range(sweeps):
        if best_c == 0:
            break
        for direction in ("down", "up"):
            rng = range(1, len(layers)) if direction == "down" else range(len(layers) - 2, -1, -1)
            nbrs = seg_pred if direction == "down" else seg_succ
            for L in rng:
                row = layers[L]
                keyed = []
                for v in row:
                    ns = nbrs[v]
                    bary = sum(pos[w] for w in ns) / len(ns) if ns else float(pos[v])
                    keyed.append((bary, pos[v], v))
                keyed.sort()
                layers[L] = [v for _, _, v in keyed]
                for i, v in enumerate(layers[L]):
                    pos[v] = i
        if small:
            _transpose(layers, seg_succ, seg_pred, pos)
        if not track:
            best = layers
            continue
        c = _all_crossings(layers, seg_succ, pos)
        if c < best_c:
            best_c = c
            best = [list(r) for r in layers]
            stale = 0
        else:
            stale += 1
            if stale >= 3:
                break
    if not track:
        best_c = _all_crossings(best, seg_succ, _positions(best))
    return best, best_c


def _place_row(widths: list[float], desired: list[float], weights: list[float], gap: float) -> list[float]:
    """Positions closest to ``desired`` (weighted least squares) keeping the row's order
    and a gap of ``gap`` between neighbouring boxes: pool adjacent violators."""
    m = len(widths)
    offs = [0.0] * m
    for i in range(1, m):
        offs[i] = offs[i - 1] + (widths[i - 1] + widths[i]) / 2 + gap
    blocks: list[list[float]] = []  # [sum of weights, weighted sum of targets, count]
    for i in range(m):
        blocks.append([weights[i], weights[i] * (desired[i] - offs[i]), 1])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][0] > blocks[-1][1] / blocks[-1][0]:
            w, s, c = blocks.pop()
            blocks[-1][0] += w
            blocks[-1][1] += s
            blocks[-1][2] += c
    out: list[float] = []
    for w, s, c in blocks:
        out.extend([s / w] * int(c))
    return [out[i] + offs[i] for i in range(m)]


def _assign_x(layers, wid, weight, seg_succ, seg_pred, gap, rounds: int = 6) -> list[float]:
    xs = [0.0] * len(wid)
    for row in layers:
        x = 0.0
        for i, v in enumerate(row):
            if i:
                x += (wid[row[i - 1]] + wid[v]) / 2 + gap
            xs[v] = x
    # centre every row on the widest one before relaxing
    if layers:
        mid = max((xs[r[-1]] for r in layers if r), default=0.0) / 2
        for row in layers:
            if row:
                c = (xs[row[0]] + xs[row[-1]]) / 2
                for v in row:
                    xs[v] += mid - c

    def relax(L: int, nbr_lists) -> None:
        row = layers[L]
        if not row:
            return
        desired = []
        for v in row:
            total = 0.0
            count = 0
            for lst in nbr_lists:
                for w in lst[v]:
                    total += xs[w]
                    count += 1
            desired.append(total / count if count else xs[v])
        placed = _place_row([wid[v] for v in row], desired, [weight[v] for v in row], gap)
        for v, x in zip(row, placed):
            xs[v] = x

    for _ in range(rounds):
        for L in range(1, len(layers)):
            relax(L, (seg_pred,))
        for L in range(len(layers) - 2, -1, -1):
            relax(L, (seg_succ,))
    for L in range(len(layers)):
        relax(L, (seg_pred, seg_succ))
    return xs
