"""schedule: fix the execution order the memory plan and the code generator follow.

Update-phase nodes run last (see `priority`).
A topological order that runs each node as soon as its inputs are ready, preferring the
node that frees the most bytes (its inputs' last use), which keeps the peak lower than a
plain topological sort on wide backward graphs.
"""

from __future__ import annotations

import heapq

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
    g.meta["schedule"] = order
    return g
