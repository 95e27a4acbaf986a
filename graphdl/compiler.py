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
    _check_parameter_memory(spec, lowered)
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


def _check_parameter_memory(spec, graph: Graph) -> None:
    """E307, at the layer holding the largest parameter, when the parameters alone need
    more memory than the machine has (a mistyped size: dim 64000 for 64), before anything
    is allocated."""
    import os

    from graphdl.errors import Diagnostic, GraphdlError
    from graphdl.ir.graph import Value

    try:
        total_ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    sizes = {}
    for name, nid in graph.named("param").items():
        t = graph.type_of(Value(nid))
        n = 1
        for d in t.shape:
            n *= d if isinstance(d, int) else 1
        sizes[name] = n * (8 if t.dtype in ("float64", "int64") else 4)
    need = sum(sizes.values())
    if need <= total_ram // 2:
        return
    biggest = max(sizes, key=sizes.get)
    layers = {lay.name: lay for lay in spec.model.layers}
    owner = next((layers[n] for n in sorted(layers, key=len, reverse=True)
                  if biggest.startswith(n + ".")), None)
    loc = owner.loc if owner is not None else spec.loc("model")
    raise GraphdlError(Diagnostic(
        "E307", f"the model's parameters need {need / 2**30:.1f} GiB, more than half of this "
        f"machine's memory ({total_ram / 2**30:.1f} GiB); the largest is '{biggest}' "
        f"{list(graph.type_of(Value(graph.named('param')[biggest])).shape)}",
        file=loc.file, line=loc.line, col=loc.col,
        help="check the sizes of this layer (units, dim, vocab) for a typo"), phase="shapes")
