"""schedule: fix the execution order the memory plan and the code generator follow.

Update-phase nodes run last (see `priority`). Independent scans are paired to run on two
threads (`pair_loops`), each with the nodes only it needs (`pair_prologues`).
A topological order that runs each node as soon as its inputs are ready, preferring the
node that frees the most bytes (its inputs' last use), which keeps the peak lower than a
plain topological sort on wide backward graphs.
"""

from __future__ import annotations

import heapq

import networkx as nx

from graphdl.ir.graph import Graph, Value
from graphdl.ir.scan import map_bodies

SOURCES = ("input", "param", "state", "const")


def schedule(graph: Graph) -> Graph:
    g = graph.copy()
    map_bodies(g, schedule)
    indeg = {n: 0 for n in g.nodes()}
    for u, v in g.nx.edges():
        indeg[v] += 1
    remaining_uses: dict[Value, int] = {}
    for n in g.nodes():
        for v in g.inputs_of(n):
            remaining_uses[v] = remaining_uses.get(v, 0) + 1

    def priority(n: int):
        freed = 0
        for v in set(g.inputs_of(n)):
            if remaining_uses.get(v) == sum(1 for x in g.inputs_of(n) if x == v) and g.op_of(v.node) not in SOURCES:
                t = g.type_of(v)
                freed += t.numel({s: 64 for s in t.symbols()})
        # update-phase nodes wait until the forward and backward parts are done, so an
        # in-place parameter update never runs before a backward node reads the parameter
        return (g.node(n)["phase"] == "update", -freed, n)

    ready = [priority(n) for n, d in indeg.items() if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        n = heapq.heappop(ready)[-1]
        order.append(n)
        for v in g.inputs_of(n):
            remaining_uses[v] -= 1
        for succ in set(g.nx.successors(n)):
            indeg[succ] -= g.nx.number_of_edges(n, succ)
            if indeg[succ] == 0:
                heapq.heappush(ready, priority(succ))
    order, pairs = pair_loops(g, order)
    prologues: list[list] = []
    if pairs:
        order, prologues = pair_prologues(g, order, pairs)
    g.meta["schedule"] = order
    if pairs:
        g.meta["parallel"] = pairs
    if prologues:
        g.meta["prologues"] = prologues
    return g


def pair_loops(g: Graph, order: list[int]) -> tuple[list[int], list[list[int]]]:
    """Pairs of scans that can run at the same time, on two threads: a scan ``b`` whose
    inputs are all computed before scan ``a`` starts (the two directions of a bidirectional
    layer, forward and in BPTT) moves right after ``a``, and the pair is listed. The memory
    plan gives the two the same position, so neither writes a buffer the other still reads
    (`graphdl.passes.plan_memory`); the CPU backend runs them concurrently."""
    order = list(order)
    pairs: list[list[int]] = []
    paired: set[int] = set()
    for a in [n for n in order if g.op_of(n) == "scan"]:
        if a in paired:
            continue
        pos = {n: i for i, n in enumerate(order)}
        after_a = nx.descendants(g.nx, a)
        for b in order[pos[a] + 1:]:
            if g.op_of(b) != "scan" or b in paired or b in after_a \
                    or g.node(b)["phase"] != g.node(a)["phase"]:
                continue
            # what b needs that runs between a and b (its input projection, say) moves
            # before a, in its order; none of it depends on a, since b does not
            needs = [n for n in order[pos[a] + 1:pos[b]] if n in nx.ancestors(g.nx, b)]
            for n in needs + [b]:
                order.remove(n)
            at = order.index(a)
            order[at:at + 1] = needs + [a, b]
            pairs.append([a, b])
            paired |= {a, b}
            break
    return order, pairs


def _prologue(g: Graph, s: int, order: list[int], pos: dict[int, int]) -> list[int]:
    """The nodes only scan ``s`` needs (its input projection and bias, say): ancestors of
    ``s`` that run before it, are no scan, no update and no output, and whose every value is
    read by ``s`` or another of them; in schedule order."""
    roots = set(g.roots()) | set(g.updates.values())
    mine: set[int] = set()
    for n in sorted(nx.ancestors(g.nx, s), key=lambda n: -pos[n]):
        nd = g.node(n)
        if nd["op"] in SOURCES or nd["op"] == "scan" or nd["phase"] == "update":
            continue
        outs = [Value(n, i) for i in range(g.num_outputs(n))]
        readers = {c for v in outs for c, _ in g.consumers(v)}
        if readers and readers <= mine | {s} and not any(v in roots for v in outs):
            mine.add(n)
    return sorted(mine, key=pos.__getitem__)


def pair_prologues(g: Graph, order: list[int], pairs: list[list[int]]
                   ) -> tuple[list[int], list[list]]:
    """Each paired scan's prologue (`_prologue`) joins it on its thread: the prologues and
    the pair run as one parallel region, so the second thread is woken once per pair, not
    also for each input projection (a GEMM splits its rows between the threads, a region
    of its own), and a projection runs beside the other direction's. The prologues move
    right before the pair (the pair's other inputs already run before it, `pair_loops`).
    Returns the order and ``[[scan, [prologue nodes]], ...]`` for the scans that have one.
    """
    order = list(order)
    out: list[list] = []
    for a, b in pairs:
        pos = {n: i for i, n in enumerate(order)}
        pa, pb = _prologue(g, a, order, pos), _prologue(g, b, order, pos)
        if not pa and not pb:
            continue
        moved = set(pa) | set(pb)
        order = [n for n in order if n not in moved]
        at = order.index(a)
        order[at:at] = pa + pb
        out += [[s, p] for s, p in ((a, pa), (b, pb)) if p]
    return order, out
