"""schedule: fix the execution order the memory plan and the code generator follow.

Update-phase nodes run last (see `priority`). Independent scans are paired to run on two
threads (`pair_loops`), each with the nodes only it needs and those that need only it
(`pair_prologues`); so are independent row-split GEMMs close in the order (`pair_gemms`).
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
    epilogues: list[list] = []
    if pairs:
        order, prologues, epilogues = pair_prologues(g, order, pairs)
    grouped = {n for _, nodes in prologues + epilogues for n in nodes}
    order, gemm_pairs = pair_gemms(g, order, grouped)
    if gemm_pairs:
        g.meta["parallel_gemms"] = gemm_pairs
    g.meta["schedule"] = order
    if pairs:
        g.meta["parallel"] = pairs
    if prologues:
        g.meta["prologues"] = prologues
    if epilogues:
        g.meta["epilogues"] = epilogues
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


def _prologue(g: Graph, s: int, order: list[int], pos: dict[int, int],
              taken: set[int]) -> list[int]:
    """The nodes only scan ``s`` needs (its input projection and bias, say): ancestors of
    ``s`` that run before it, are no scan, no update and no output, and whose every value is
    read by ``s`` or another of them; in schedule order."""
    roots = set(g.roots()) | set(g.updates.values())
    mine: set[int] = set()
    for n in sorted(nx.ancestors(g.nx, s), key=lambda n: -pos[n]):
        nd = g.node(n)
        if nd["op"] in SOURCES or nd["op"] == "scan" or nd["phase"] == "update" or n in taken:
            continue
        outs = [Value(n, i) for i in range(g.num_outputs(n))]
        readers = {c for v in outs for c, _ in g.consumers(v)}
        if readers and readers <= mine | {s} and not any(v in roots for v in outs):
            mine.add(n)
    return sorted(mine, key=pos.__getitem__)


def _epilogue(g: Graph, s: int, thread: set[int], before: set[int],
              after: list[int], taken: set[int]) -> list[int]:
    """The nodes after a pair that read only values from before it and from scan ``s``'s
    thread (``thread``: its prologue and itself) or its other epilogue nodes, at least one
    of them from there: a backward loop's weight and bias gradients, its input gradient
    GEMM. No scan, no update, no output; in schedule order."""
    roots = set(g.roots())
    mine: list[int] = []
    own = set(thread)
    for n in after:
        nd = g.node(n)
        if nd["op"] in SOURCES or nd["op"] == "scan" or nd["phase"] == "update" or n in taken:
            continue
        producers = {v.node for v in g.inputs_of(n)}
        if (producers & own and producers <= own | before
                and not any(Value(n, i) in roots for i in range(g.num_outputs(n)))):
            mine.append(n)
            own.add(n)
    return mine


def pair_prologues(g: Graph, order: list[int], pairs: list[list[int]]
                   ) -> tuple[list[int], list[list], list[list]]:
    """Each paired scan takes to its thread the nodes only it needs (`_prologue`: its
    input projection and bias) and the nodes that need only it (`_epilogue`: in BPTT, its
    weight and bias gradients and its share of the input gradient): the whole runs as one
    parallel region, so the second thread is woken once per pair, not also for each GEMM
    that splits its rows between the threads (a region of its own each), and one
    direction's GEMMs run beside the other's. The prologues move right before the pair
    (the pair's other inputs already run before it, `pair_loops`), the epilogues right
    after it. Returns the order and ``[[scan, [nodes]], ...]`` of the prologues and of the
    epilogues, for the scans that have one.
    """
    order = list(order)
    pro: list[list] = []
    epi: list[list] = []
    taken: set[int] = set()  # a node joins one thread
    for a, b in pairs:
        pos = {n: i for i, n in enumerate(order)}
        pa = _prologue(g, a, order, pos, taken)
        pb = _prologue(g, b, order, pos, taken | set(pa))
        moved = set(pa) | set(pb)
        order = [n for n in order if n not in moved]
        at = order.index(a)
        order[at:at] = pa + pb
        first = order.index(pa[0] if pa else pb[0] if pb else a)
        before = set(order[:first])
        after = order[order.index(b) + 1:]
        ea = _epilogue(g, a, set(pa) | {a}, before, after, taken)
        eb = _epilogue(g, b, set(pb) | {b}, before, after, taken | set(ea))
        moved = set(ea) | set(eb)
        taken |= set(pa) | set(pb) | moved
        order = [n for n in order if n not in moved]
        at = order.index(b) + 1
        order[at:at] = ea + eb
        pro += [[s, p] for s, p in ((a, pa), (b, pb)) if p]
        epi += [[s, e] for s, e in ((a, ea), (b, eb)) if e]
    return order, pro, epi


# how far after a GEMM `pair_gemms` looks for another (schedule positions)
GEMM_WINDOW = 16


def gemm_rows(g: Graph, n: int) -> Value | None:
    """The first input of node ``n`` if it is a GEMM over every row of a batch (and of a
    sequence) that the CPU splits between two threads (a `matmul` of a rank-3+ value by a
    2-D weight, a `matmul_rows`; or a fused group headed by one), else None."""
    nd = g.node(n)
    op, attrs, ins = nd["op"], nd["attrs"], g.inputs_of(n)
    if op == "fused":
        if attrs["kind"] != "epilogue":
            return None
        head = attrs["members"][0]
        op, attrs = head["op"], head["attrs"]
        refs = head["inputs"]
        if not all(r[0] == "input" for r in refs):
            return None
        ins = [ins[r[1]] for r in refs]
    if op == "matmul_rows":
        return ins[0]
    if (op == "matmul" and g.type_of(ins[0]).rank >= 3 and g.type_of(ins[1]).rank == 2
            and not attrs["transpose_a"]):
        return ins[0]
    return None


def layer_block(g: Graph, n: int) -> str:
    """The layer block node ``n`` belongs to (``encoder.1`` for ``encoder.1.dense_3``): the
    unit the CPU code generator keeps together in one chunk function, so that identical
    blocks share one (`CpuCodegen._chunk_key`)."""
    layer = g.node(n)["layer"] or ""
    return layer.rsplit(".", 1)[0] if "." in layer else layer


def pair_gemms(g: Graph, order: list[int], taken: set[int]) -> tuple[list[int], list[list[int]]]:
    """Pairs of independent row-split GEMMs (`gemm_rows`) close in the schedule: in a
    backward pass a dense layer's weight gradient and its input gradient. A pair runs as
    one parallel region, each GEMM whole on one thread, instead of two regions that each
    split one GEMM's rows (and wake the second thread once more); below the split's rows
    both run on the calling thread, as before. The second moves right after the first,
    with what it needs that ran between them moved before the first (none of it depends
    on the first, since the second does not)."""
    order = list(order)
    pairs: list[list[int]] = []
    paired: set[int] = set(taken)
    i = 0
    while i < len(order):
        a = order[i]
        if a in paired or gemm_rows(g, a) is None or g.node(a)["phase"] == "update":
            i += 1
            continue
        after_a = None
        for b in order[i + 1:i + 1 + GEMM_WINDOW]:
            if (b in paired or gemm_rows(g, b) is None
                    or g.node(b)["phase"] != g.node(a)["phase"]
                    or layer_block(g, b) != layer_block(g, a)):
                continue
            if after_a is None:
                after_a = nx.descendants(g.nx, a)
            if b in after_a:
                continue
            at_b = order.index(b)
            ancestors = nx.ancestors(g.nx, b)
            needs = [n for n in order[i + 1:at_b] if n in ancestors]
            if any(n in taken or g.op_of(n) == "scan" for n in needs):
                continue  # a scan's pair or thread group stays as it is
            for n in needs + [b]:
                order.remove(n)
            order[i:i + 1] = needs + [a, b]
            pairs.append([a, b])
            paired |= {a, b}
            i += len(needs)
            break
        i += 1
    return order, pairs
