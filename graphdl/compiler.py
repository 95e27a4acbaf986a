"""From a resolved spec to compiled programs: lower -> pass pipeline -> codegen -> Program."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from graphdl.ir.graph import Graph
from graphdl.layers.lower import lower
from graphdl.passes.pipeline import PassContext
from graphdl.runtime.program import Program


@dataclass
class Compiled:
    mode: str
    lowered: Graph
    graph: Graph
    program: Program
    ctx: PassContext
    pass_seconds: float
    jit_seconds: float = 0.0  # Numba compile (or cache load) at warm-up
    snapshots: dict = field(default_factory=dict)


def compile_spec(spec, mode: str, *, keep_snapshots: bool = False, warmup: bool = True,
                 device: str = "cpu") -> Compiled:
    """Compile the ``mode`` ("train", "eval", "predict") program of a spec for ``device``
    ("cpu", or "cuda": a CudaProgram whose buffers live on the GPU)."""
    lowered = lower(spec, mode)
    lowered.meta["spec_path"] = spec.path
    ctx = PassContext(keep_snapshots=keep_snapshots)
    t0 = time.perf_counter()
    graph = ctx.run(lowered, training=(mode == "train"))
    pass_seconds = time.perf_counter() - t0
    if device == "cuda":
        from graphdl.backends.cuda.program import CudaProgram

        program = CudaProgram(graph, title=f"{spec.name} ({mode}, cuda)")
    else:
        program = Program(graph, title=f"{spec.name} ({mode})")
    c = Compiled(mode, lowered, graph, program, ctx, pass_seconds, snapshots=ctx.snapshots)
    if warmup:
        c.jit_seconds = program.warmup()
    return c


def dummy_feeds(program: Program, batch: int = 1) -> dict[str, np.ndarray]:
    feeds = {}
    for info in program.inputs:
        shape = tuple(batch if isinstance(d, str) else d for d in info.shape)
        feeds[info.name] = np.zeros(shape, info.dtype) if not info.scalar else info.dtype.type(0)
    return feeds
