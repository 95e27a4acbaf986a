"""From a graph (or a resolved spec) to a program: pass pipeline -> the device's backend.

`compile_graph` is the one way a graph becomes a program: training and evaluation, data
preprocessing and PCA fitting, benchmarks and tests all go through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphdl.backends.common.program import CompiledProgram
from graphdl.backends.cpu.program import Program
from graphdl.ir.graph import Graph
from graphdl.layers.lower import lower
from graphdl.passes.pipeline import PassContext


def compile_graph(graph: Graph, device: str = "cpu", *, training: bool = False,
                  title: str = "program", ctx: PassContext | None = None) -> CompiledProgram:
    """Run the pass pipeline on ``graph`` (with autodiff when ``training``) and build its
    program for ``device``: "cpu" (`Program`) or "cuda" (a `CudaProgram` whose buffers
    live on the GPU). ``ctx`` keeps the pass records and snapshots when given."""
    planned = (ctx or PassContext()).run(graph, training=training)
    if device == "cuda":
        from graphdl.backends.cuda.program import CudaProgram  # imports CUDA: only when asked

        return CudaProgram(planned, title=title)
    if device != "cpu":
        raise ValueError(f"unknown device {device!r} (cpu or cuda)")
    return Program(planned, title=title)


@dataclass
class Compiled:
    mode: str
    lowered: Graph
    graph: Graph
    program: CompiledProgram
    ctx: PassContext
    pass_seconds: float
    jit_seconds: float = 0.0  # Numba compile (or cache load) at warm-up
    snapshots: dict = field(default_factory=dict)


def compile_spec(spec, mode: str, *, keep_snapshots: bool = False, warmup: bool = True,
                 device: str = "cpu") -> Compiled:
    """Compile the ``mode`` ("train", "eval", "predict") program of a spec for ``device``."""
    lowered = lower(spec, mode)
    lowered.meta["spec_path"] = spec.path
    ctx = PassContext(keep_snapshots=keep_snapshots)
    suffix = ", cuda" if device == "cuda" else ""
    program = compile_graph(lowered, device, training=(mode == "train"),
                            title=f"{spec.name} ({mode}{suffix})", ctx=ctx)
    pass_seconds = sum(r.seconds for r in ctx.records)
    c = Compiled(mode, lowered, program.graph, program, ctx, pass_seconds, snapshots=ctx.snapshots)
    if warmup:
        c.jit_seconds = program.warmup()
    return c
