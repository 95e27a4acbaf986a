"""The pass pipeline, in order, and the context that runs hooks around every pass.

Read this list to know what graphdl does to a graph:

1. infer_shapes  - a type for every value (symbolic batch N stays symbolic)
2. hoist         - scan body ops that read no carry run for all steps before the loop
3. autodiff      - training graphs only: backward graph from the loss + optimiser updates
                   (a scan's gradient is a reverse scan: backprop through time)
4. simplify      - constant folding, algebraic identities, CSE, DCE, to a fixed point
5. hoist_grads   - training graphs only: per-step gradient sums leave the backward loop
6. fuse          - elementwise chains and matmul/reduction epilogues -> `fused` kernels
7. schedule      - the execution order (updates last; free big buffers early)
8. plan_memory   - liveness over that order, buffer reuse, in-place updates

Every pass treats a scan's body as a graph of its own (`graphdl.ir.scan`).

schedule runs before plan_memory because liveness is only defined once the order is
fixed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from graphdl.ir.graph import Graph
from graphdl.ir.verify import verify
from graphdl.passes.autodiff import autodiff
from graphdl.passes.fuse import fuse
from graphdl.passes.hoist import hoist, hoist_grads
from graphdl.passes.infer_shapes import infer_shapes
from graphdl.passes.plan_memory import plan_memory
from graphdl.passes.schedule import schedule
from graphdl.passes.simplify import simplify


@dataclass
class Pass:
    name: str
    run: Callable[[Graph], Graph]
    purpose: str
    training_only: bool = False


PIPELINE: list[Pass] = [
    Pass("infer_shapes", infer_shapes, "a type for every value"),
    Pass("hoist", hoist, "move loop-invariant work out of scans"),
    Pass("autodiff", autodiff, "backward graph and optimiser updates", training_only=True),
    Pass("simplify", simplify, "fold constants, identities, CSE, DCE"),
    Pass("hoist_grads", hoist_grads, "sum per-step gradients after the loop",
         training_only=True),
    Pass("fuse", fuse, "fuse elementwise chains and epilogues"),
    Pass("schedule", schedule, "fix the execution order"),
    Pass("plan_memory", plan_memory, "liveness, buffer reuse, in-place updates"),
]


@dataclass
class PassRecord:
    name: str
    nodes: int
    seconds: float


@dataclass
class PassContext:
    """Runs hooks around every pass: verify invariants, time it, keep snapshots."""

    verify: bool = True
    keep_snapshots: bool = False
    records: list[PassRecord] = field(default_factory=list)
    snapshots: dict[str, Graph] = field(default_factory=dict)

    def run(self, graph: Graph, training: bool, stop_after: str | None = None) -> Graph:
        if self.keep_snapshots:
            self.snapshots["lowered"] = graph
        for p in PIPELINE:
            if p.training_only and not training:
                continue
            t0 = time.perf_counter()
            graph = p.run(graph)
            dt = time.perf_counter() - t0
            if self.verify:
                verify(graph, after=p.name)
            self.records.append(PassRecord(p.name, len(graph), dt))
            if self.keep_snapshots:
                self.snapshots[p.name] = graph
            if p.name == stop_after:
                break
        return graph

