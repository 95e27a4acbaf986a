"""CUDA code generation: a planned graph -> Python source of numba.cuda kernels and a driver.

It mirrors the CPU generator (graphdl/backends/cpu/codegen.py): one generated grid-stride
kernel per fused elementwise group, built from the ops' scalar functions compiled as CUDA
device functions (``K.s_<op>``), identical kernels emitted once; every other op writes its
launches through its CUDA emitter (graphdl/backends/cuda/registry.py) against the kernel
library (``K.``).

The driver is split in two, because on a GPU a launch costs Python time and the arrays of
a step never change between steps of the same batch size:

- ``setup(inputs..., params..., state..., consts..., arenas..., off)`` runs once per binding
  of the symbolic dims: it binds the symbols, carves every intermediate value out of the
  device arenas (as the memory plan says), makes the views the kernels take and configures
  every launch; it returns ``(run, packs, layout)``;
- ``run()`` launches the kernels in schedule order: nothing else happens per step.

Outputs are packed per dtype into one device buffer (``packs``; ``layout`` says where each
output lies), so a step ends with one device-to-host copy per dtype, not one per output.
Everything the numbers depend on is an argument of `setup`, never a global baked into the
source: the source (and its cache entry) depends only on the graph's structure.

A scan (graphdl/ir/scan.py) is a host loop in ``run`` over its body's launches, written by
the shared `GraphSource._emit_scan`. Since every view and launch is made in ``setup``, a
step's slice of a sequence cannot be a view ``seq[t]``: every body value, the per-step
slices included, has a device buffer of its own (allocated in setup); each step copies
``seq[t]`` into the slice's buffer and the body's outputs into ``out[t]`` with a copy kernel
that takes the element offset at run time (``copy_flat_offset``), and the next carries
into the carry buffers, which are the scan's final-carry outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphdl.backends.common.codegen import (
    SOURCES,
    EmitCtx,
    GraphSource,
    StepSignature,
    _rebase_members,
    _sliced_reads,
    broadcast_index,
    dim_expr,
    is_flat_loop,
)
from graphdl.backends.cuda.registry import emitter_for, epilogue_emitter_for
from graphdl.errors import Diagnostic, GraphdlError
from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.ops.registry import get_op


@dataclass
class Epilogue:
    """The elementwise members of a fused epilogue group, for a kernel that applies them to
    each value its head computes (`registry.cuda_epilogue_emitter`): ``members`` read the
    head's value as input ``head`` and the group's other inputs ``in_vars`` (types
    ``in_types``); ``out`` is the group's output type."""

    members: list[dict]
    in_vars: list[str]
    in_types: list[TensorType]
    head: int
    out: TensorType
    runtime: list[str]  # setup names of the run-time factors k0, k1, ... (`_divisors`)


class CudaEmitCtx(EmitCtx):
    """What a CUDA emitter sees: the CPU emitters' context (values, shapes, kernels,
    literals) plus setup. Emitters return the lines of ``run`` (launches) and put
    everything that depends only on the binding (views, scratch buffers, launch
    configurations) into ``setup`` through `view`, `flat`, `scratch` and `launch`."""

    def __init__(self, gen: CudaCodegen):
        super().__init__(gen)
        self._flat = gen.flat_views
        gen.ctx = self  # for the generator's copies (`CudaCodegen._copy_into`)

    def size(self, v: Value) -> str:
        return " * ".join(self.shape(v)) or "1"

    # ------------------------------------------------------------ setup
    def setup(self, line: str) -> None:
        self.gen.setup_lines.append(line)

    def view(self, expr: str, prefix: str = "w") -> str:
        """Bind ``expr`` (a view, a size, ...) once in setup; returns its name."""
        name = self.fresh(prefix)
        self.setup(f"{name} = {expr}")
        return name

    def flat(self, v: Value | str) -> str:
        """A 1-D view of a value (made once)."""
        var = v if isinstance(v, str) else self.var(v)
        if var not in self._flat:
            self._flat[var] = self.view(f"{var}.ravel()", "f")
        return self._flat[var]

    def reshaped(self, v: Value | str, shape: tuple[str, ...]) -> str:
        var = v if isinstance(v, str) else self.var(v)
        return self.view(f"{var}.reshape({self.shape_tuple(tuple(shape))})")

    def scratch(self, dtype: str, n: str) -> str:
        """A device buffer of ``n`` elements for this op alone (allocated once a binding)."""
        return self.view(f"R.alloc({n}, {dtype!r})", "s")

    def launch(self, config: str, args: list[str]) -> list[str]:
        """Configure a launch in setup (``config`` is an ``R.config*`` call); returns the
        line of ``run`` that launches it with ``args``."""
        name = self.view(config, "L")
        return [f"{name}({', '.join(args)})"]

    def launch1d(self, kernel: str, n: str, args: list[str]) -> list[str]:
        """A grid-stride launch over ``n`` items."""
        return self.launch(f"R.config1d({kernel}, {n})", args)

    # ------------------------------------------------------------ generated kernels
    def epilogue_chain(self, epi: Epilogue | None, index: list[str], value: str,
                       store: str) -> tuple[list[str], list[str], list[str]]:
        """The lines that finish one output value ``value`` (at multi-index ``index`` of the
        output) through the epilogue and store it into ``store``; returns (lines, kernel
        parameters the lines read, the launch's arguments for them). No epilogue: the
        store alone."""
        if epi is None:
            return [f"{store} = {value}"], [], []
        read = {}
        params, args = [], []
        for i, (var, t) in enumerate(zip(epi.in_vars, epi.in_types)):
            if i == epi.head:
                read[i] = value
                continue
            read[i] = f"e{i}[{broadcast_index(t, epi.out, index)}]"
            params.append(f"e{i}")
            args.append(var)
        lines, params = self.gen._scalar_chain(epi.members, read, store, params)
        return lines, params, args + epi.runtime

    def generated_kernel(self, body: list[str], params: list[str], head_ops: list[str],
                         epi: Epilogue | None) -> str:
        """Write (once) a kernel with this body into the generated module; its name."""
        members = [{"op": op} for op in head_ops] + (epi.members if epi else [])
        return self.gen._register_loop("@jit", body, params, members)

    def copy(self, src: str, dst: str, n: str) -> list[str]:
        """Copy ``n`` elements between two device arrays of the same dtype."""
        return self.launch1d(self.kernel("copy_flat"), n, [self.flat(src), self.flat(dst)])

    def copy_offset(self, src: str, dst: str, n: str, src_off: str, dst_off: str) -> list[str]:
        """Copy ``n`` elements (a size bound in setup) from ``src`` at element ``src_off``
        into ``dst`` at ``dst_off``: the offsets are expressions of ``run`` (a scan's step)."""
        return self.launch1d(self.kernel("copy_flat_offset"), n,
                             [self.flat(src), self.flat(dst), src_off, dst_off, n])


class CudaCodegen(GraphSource):
    SHAPE_READ = "int({})"
    # the views are bound once, before any step: a step's outputs are copied out (`_write_step`)
    STEP_OUTPUTS_IN_PLACE = False

    def __init__(self, g: Graph, title: str = "program", parent: CudaCodegen | None = None):
        super().__init__(g, title, parent)
        self.ctx: CudaEmitCtx | None = None  # set by the context made for this generator
        self.setup_lines: list[str] = []
        self.packs: dict[str, list[tuple[str, str]]] = {}  # dtype -> [(offset var, size expr)]
        self.out_region: dict[str, tuple[str, str, str, str]] = {}  # var -> (dtype, start, size, shape)
        self.flat_views: dict[str, str] = {}  # var -> its 1-D view (`CudaEmitCtx.flat`)
        self.in_body = parent is not None  # a scan's body: its lines go to the parent's setup
        if parent is not None:
            self.setup_lines = parent.setup_lines
            self.flat_views = parent.flat_views

    # ------------------------------------------------------------ values
    def _output_buffer(self, name: str, t: TensorType, ctx: CudaEmitCtx) -> None:
        """Bind ``name`` to a region of the output pack of its dtype."""
        regions = self.packs.setdefault(t.dtype, [])
        start = f"_po_{t.dtype}_{len(regions)}"
        size = self._size_expr(t)
        regions.append((start, size))
        shape = ctx.shape_tuple(tuple(dim_expr(d) for d in t.shape))
        ctx.setup(f"{name} = _pk_{t.dtype}[{start}:{start} + {size}].reshape({shape})")
        self.out_region[name] = (t.dtype, start, size, shape)

    def _bind_output(self, name: str, t: TensorType, ctx: CudaEmitCtx) -> list[str]:
        if self.in_body:  # a body's value (one step's): a buffer of its own, not returned
            return self._loop_buffer(name, t, ctx)
        self._output_buffer(name, t, ctx)
        return []

    def _loop_buffer(self, name: str, t: TensorType, ctx: CudaEmitCtx) -> list[str]:
        shape = ctx.shape_tuple(tuple(dim_expr(d) for d in t.shape))
        ctx.setup(f"{name} = R.alloc({self._size_expr(t)}, {t.dtype!r}).reshape({shape})")
        return []

    # ------------------------------------------------------------ scans
    def _step_buffer(self, name: str, t: TensorType, ctx: CudaEmitCtx) -> list[str]:
        return self._loop_buffer(name, t, ctx)

    def _read_step(self, dst: str, seq: str, step: str, t: TensorType,
                   ctx: CudaEmitCtx) -> list[str]:
        n = ctx.view(self._size_expr(t), "n")
        return ctx.copy_offset(seq, dst, n, f"{step} * {n}", "0")

    def _write_step(self, out: str, step: str, src: str, t: TensorType,
                    ctx: CudaEmitCtx) -> list[str]:
        n = ctx.view(self._size_expr(t), "n")
        return ctx.copy_offset(src, out, n, "0", f"{step} * {n}")

    def _copy_into(self, dst: str, src: str, t: TensorType) -> list[str]:
        return self.ctx.copy(src, dst, self._size_expr(t))

    def _bind(self, line: str, ctx: CudaEmitCtx) -> list[str]:
        ctx.setup(line)  # bound once a binding: ``run`` has nothing to do for it
        return []

    # ------------------------------------------------------------ generation
    def generate(self) -> tuple[str, StepSignature]:
        g = self.g
        ctx = CudaEmitCtx(self)
        self._declare_sources()
        self._check_supported()
        run = self._walk(ctx)
        for name in self.sig.outputs:
            v = g.outputs[name]
            if self.var[v] not in self.out_region:  # a source returned as it is
                run += self._keep_view(v, ctx)
        return self._module(run), self.sig

    def _copy_back(self, new: Value, target: Value, ctx: CudaEmitCtx) -> list[str]:
        return ctx.copy(self.var[new], self.var[target], ctx.size(new))

    def _keep_view(self, v: Value, ctx: CudaEmitCtx) -> list[str]:
        """Copy a value that lives elsewhere (a view, a source) into the output pack."""
        src = self.var[v]
        dst = self.unique(f"{src}_result")
        self._output_buffer(dst, self.g.type_of(v), ctx)
        self.var[v] = dst
        return ctx.copy(src, dst, ctx.size(v))

    def _check_supported(self) -> None:
        """Every op needs a CUDA kernel, those of scan bodies included: an error at compile
        time, never a CPU fallback."""
        g = self.g
        missing: dict[str, list[dict]] = {}
        _find_missing(g, missing)
        if not missing:
            return
        diags = []
        for op, nodes in sorted(missing.items()):
            nd = nodes[0]
            layers = sorted({str(n["layer"]) for n in nodes})
            diags.append(Diagnostic(
                "E708",
                f"no CUDA kernel for op {op} (used by layer {', '.join(layers)}): "
                "the CUDA backend cannot run this model",
                file=g.meta.get("spec_path"), line=nd.get("line"),
                help="use device: cpu for this model (the CPU backend implements every op)",
            ))
        raise GraphdlError(diags, phase="compile")

    def _emitter(self, op: str):
        return emitter_for(op)

    def _emit_node(self, nid: int, ctx) -> list[str]:
        nd = self.g.node(nid)
        if nd["op"] == "fused" and nd["attrs"]["kind"] == "epilogue":
            emit = epilogue_emitter_for(nd["attrs"]["members"][0]["op"])
            if emit is not None:
                return self._emit_fused_epilogue(nid, emit, ctx)
        return super()._emit_node(nid, ctx)

    def _emit_fused_epilogue(self, nid: int, emit, ctx: CudaEmitCtx) -> list[str]:
        """An epilogue group whose head writes its kernel with the epilogue inside (conv +
        bias + activation: one launch). The members are rebased as the shared generator
        does for the head-then-loop form; the head's value is the input after the
        group's own."""
        g = self.g
        nd = g.node(nid)
        ins = g.inputs_of(nid)
        out = Value(nid, 0)
        members = nd["attrs"]["members"]
        head = members[0]
        head_ins = [ins[r[1]] for r in head["inputs"]]
        head_mark = "<head>"  # the head's value: no variable, the kernel's own result
        in_vars = [self.var[v] for v in ins] + [head_mark]
        in_types = [g.type_of(v) for v in ins] + [TensorType.from_json(head["type"])]
        rest = _rebase_members(members, len(ins))
        rest, in_vars, in_types = _sliced_reads(rest, in_vars, in_types)
        runtime = [ctx.view(expr, "k") for expr in self._divisors(rest)]
        # only the inputs the epilogue reads, numbered as it reads them (kernels dedupe)
        rest, in_vars, in_types = self._loop_inputs(rest, in_vars, in_types)
        epi = Epilogue(rest, in_vars, in_types, in_vars.index(head_mark), g.type_of(out), runtime)
        return emit(ctx, head["attrs"], head_ins, [out], epi)

    def _missing_kernel(self, nd: dict) -> Exception:
        # unreachable: `_check_supported` refused the graph (E708) before generation
        return AssertionError(f"op {nd['op']} passed _check_supported without a CUDA kernel")

    def _call_loop(self, members, in_vars, in_types, out: Value, ctx: CudaEmitCtx) -> list[str]:
        out_t = self.g.type_of(out)
        runtime = [ctx.view(expr, "k") for expr in self._divisors(members)]
        members, in_vars, in_types = self._loop_inputs(members, in_vars, in_types)
        name, flat = self._loop_kernel(members, in_types, out_t)
        if flat:
            args = [ctx.flat(x) for x in in_vars] + [ctx.flat(self.var[out])]
        else:
            args = list(in_vars) + [self.var[out]]
        return ctx.launch1d(name, ctx.size(out), args + runtime)

    def _loop_kernel(self, members, in_types: list[TensorType], out_t: TensorType) -> tuple[str, bool]:
        """Generate (or reuse) the grid-stride kernel of a group of elementwise members."""
        params = [f"x{i}" for i in range(len(in_types))] + ["out"]
        flat = is_flat_loop(in_types, out_t)
        lines = []
        if flat:
            # every input has the output's shape (or is a scalar): 1-D views
            lines.append("for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):")
            read = {i: (f"x{i}[0]" if t.rank == 0 and out_t.rank != 0 else f"x{i}[i]")
                    for i, t in enumerate(in_types)}
            store = "out[i]"
        else:
            r = out_t.rank
            dims = [f"d{j}" for j in range(r)]
            lines.append(f"{', '.join(dims)}{',' if r == 1 else ''} = out.shape")
            lines.append(f"n = {' * '.join(dims)}")
            lines.append("for i in range(cuda.grid(1), n, cuda.gridsize(1)):")
            idx = [f"i{j}" for j in range(r)]
            lines.append("    q = i")
            for j in range(r - 1, 0, -1):
                lines.append(f"    i{j} = q % d{j}")
                lines.append(f"    q = q // d{j}")
            lines.append("    i0 = q")
            read = {i: f"x{i}[{broadcast_index(t, out_t, idx)}]" for i, t in enumerate(in_types)}
            store = f"out[{', '.join(idx)}]"
        body, params = self._scalar_chain(members, read, store, params)
        return self._register_loop("@jit", lines + ["    " + b for b in body], params, members), flat

    def _module(self, run: list[str]) -> str:
        sig = self.sig
        args = self._step_args()
        header = [
            self._docstring("CUDA"),
            "import math  # noqa: F401",
            "",
            "import numpy as np  # noqa: F401",
            "",
            "from graphdl.backends.cuda import library as K",
            "from graphdl.backends.cuda import runtime as R",
            "from graphdl.backends.cuda.device import cuda, jit  # noqa: F401",
            "",
        ]
        setup = [f"def setup({', '.join(args)}):"]
        setup += ["    " + line for line in self._symbol_bindings()]
        # the output packs: one device buffer per dtype, each output a region of it
        for dtype, regions in sorted(self.packs.items()):
            prev = "0"
            for start, size in regions:
                setup.append(f"    {start} = {prev}")
                prev = f"{start} + {size}"
            setup.append(f"    _pk_{dtype} = R.alloc({prev}, {dtype!r})")
        setup += ["    " + line for line in self.setup_lines]
        setup.append("")
        setup.append("    def run():")
        body = [s for line in run for s in line.split("\n")]
        setup += ["        " + line for line in body] or []
        setup.append("        return None")
        setup.append("")
        layout = []
        for name in sig.outputs:
            var = self.var[self.g.outputs[name]]
            dtype, start, size, shape = self.out_region[var]
            layout.append(f"({name!r}, {dtype!r}, {start}, {start} + {size}, {shape})")
        packs = ", ".join(f"{d!r}: _pk_{d}" for d in sorted(self.packs))
        setup.append(f"    layout = [{', '.join(layout)}]")
        setup.append(f"    return run, {{{packs}}}, layout")
        loops = "\n\n\n".join(self.loop_sources)
        return "\n".join(header + ["", loops, "", ""] + setup) + "\n"


def _find_missing(g: Graph, missing: dict[str, list[dict]]) -> None:
    """Add the nodes of ``g`` (and of its scans' bodies) whose op has no CUDA kernel to
    ``missing`` (op -> nodes). A scan itself is the generated host loop."""
    for nid in g.nodes():
        nd = g.node(nid)
        ops = [nd["op"]]
        if nd["op"] == "fused":
            ops = [m["op"] for m in nd["attrs"]["members"]]
        for op in ops:
            if op in SOURCES or op == "fused":
                continue
            opdef = get_op(op)
            if opdef.body:
                _find_missing(nd["attrs"]["body"], missing)
            elif emitter_for(op) is None and opdef.scalar is None:
                missing.setdefault(op, []).append(nd)
