"""CPU code generation: a planned graph -> Python source of Numba kernels and a step function.

The module has one generated loop kernel per fused elementwise group (identical kernels
are emitted once, whatever the order of their arguments) and one `step` function, itself
compiled with Numba, that binds the symbolic dims from its inputs, takes views of the
arenas for intermediate values (as the memory plan says), and runs the nodes in schedule
order. Non-elementwise ops write their own calls through their `emit_cpu`, against the
kernels in `library` (``K.``).

The nodes' work is not in `step` itself but in module-level functions ``chunk_<i>`` that
`step` calls (`CpuCodegen._chunked`): Numba's compile time grows faster than linearly with
a function's size, and many small functions compile far faster than one large one. A chunk
holds the nodes of one layer block (or several small layers), at most `CHUNK_STATEMENTS`
statements of their own (a step of at most `CHUNK_MIN` statements is left whole). `step`
keeps the symbol bindings, each node's comment, the fresh buffers (the outputs) and any
copy another chunk reads, under their readable names; a view of the arenas is bound again
inside each chunk that reads it. Inside a chunk names are canonical and arena offsets are
parameters, so identical layers share one chunk, compiled once (and cached by Numba on
disk, like every function of the module).

Everything the numbers depend on (inputs, parameters, state, constants, arenas and the
slot offsets) is an argument of `step`, never a global baked into the source, so the
source (and its Numba cache) depends only on the graph's structure.
"""

from __future__ import annotations

import ast
import builtins
import io
import keyword
import re
import tokenize

from graphdl.backends.common.codegen import (
    NP_DTYPE,
    SOURCES,
    EmitCtx,
    GraphSource,
    StepSignature,
    _indent_blocks,
    broadcast_index,
    dim_expr,
    is_flat_loop,
)
from graphdl.backends.cpu.library import FASTMATH as _FASTMATH_FLAGS
from graphdl.backends.cpu.library import calls_parallel_kernel
from graphdl.errors import Diagnostic, GraphdlError
from graphdl.ir.graph import Value
from graphdl.ir.types import TensorType
from graphdl.ops.registry import get_op

# the kernels' fast-math flags, as a literal in generated code (NaN checks keep working)
FASTMATH = "{" + ", ".join(f'"{f}"' for f in sorted(_FASTMATH_FLAGS)) + "}"


class CpuCodegen(GraphSource):

    FLOAT32_SCALARS = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # runs of nodes one kernel call updates, by first node (`_update_runs`, set by
        # `generate`; none in a loop body)
        self._runs: dict[int, list[int]] = {}
        # the nodes a paired scan runs on its own thread before its loop, by scan
        # (`graphdl.passes.schedule.pair_prologues`): emitted with it, not in order
        self.prologue: dict[int, list[int]] = {}
        # the nodes it runs after its loop on its thread (`pair_prologues` too)
        self.epilogue: dict[int, list[int]] = {}
        self.in_thread = False  # emitting for a thread: no kernel that splits between threads
        if self.parent is None:
            self.prologue = {s: list(nodes) for s, nodes in self.g.meta.get("prologues", [])}
            self.epilogue = {s: list(nodes) for s, nodes in self.g.meta.get("epilogues", [])}
            for nodes in [*self.prologue.values(), *self.epilogue.values()]:
                self.emitted |= set(nodes)
        # independent row-split GEMMs run side by side (`graphdl.passes.schedule.pair_gemms`)
        self.gemm_partner: dict[int, int] = {}
        if self.parent is None:
            self.gemm_partner = {a: b for a, b in self.g.meta.get("parallel_gemms", [])}

    def _absorbed_epilogue(self, head: dict, rest: list[dict], ins: list, out, ctx):
        emit = get_op(head["op"]).emit_cpu_epilogue
        return None if emit is None else emit(ctx, head["attrs"], ins, [out], rest)

    # ------------------------------------------------------------ values
    def _bind_output(self, name: str, t: TensorType, ctx: EmitCtx) -> list[str]:
        shape = ctx.shape_tuple(tuple(dim_expr(d) for d in t.shape))
        return [f"{name} = np.empty({shape}, {NP_DTYPE[t.dtype]})"]

    def _bind(self, line: str, ctx: EmitCtx) -> list[str]:
        return [line]

    # ------------------------------------------------------------ generation
    def generate(self) -> tuple[str, StepSignature]:
        g = self.g
        self._declare_sources()
        self._runs = self._update_runs()
        body = self._walk(EmitCtx(self))
        rets = [self.var[g.outputs[k]] for k in self.sig.outputs]
        # subnormals flushed on the calling thread while the step runs (fpenv)
        body = (["fp_word = flush_subnormals()"] + self._chunked(body, rets)
                + ["restore_fp(fp_word)", "return (" + "".join(r + ", " for r in rets) + ")"])
        return self._module(body), self.sig

    # ------------------------------------------------------------ chunks
    def _chunked(self, body: list[str], rets: list[str]) -> list[str]:
        """The step's body as calls of module-level functions ``chunk_<i>`` (Numba's compile
        time grows faster than linearly with a function's size; many small functions
        compile far faster than one large one). Nodes are grouped by layer (a layer block
        such as ``encoder.0`` kept together) into chunks of at most `CHUNK_STATEMENTS`
        statements (a step of at most `CHUNK_MIN` is left whole). A view of the step's
        parameters (an arena slot, a reshaped source or a view of such a view) is bound
        again in every chunk that reads it (`_rematerialisable`), so the step is little
        more than calls. Any other name a chunk binds that another part of the step reads
        is bound in the step itself, before the chunk's call, when its value is a fresh
        buffer or a view (`_hoistable`); any other such line (a copy) stays in the step
        between two chunks. Inside a chunk every name is canonical (`_as_chunk`), the node
        comments stay in the step, and an arena offset ``off[k]`` is a parameter: chunks of
        identical layers have one text, emitted and compiled once."""
        nodes = _split_nodes(_indent_blocks(body))
        if sum(len(s) for _, s, _ in nodes) <= self.CHUNK_MIN:
            return body  # small enough to compile fast in one function
        groups: list[list[tuple[str | None, list[ast.stmt], list[str]]]] = []
        key = None
        whole: list[bool] = []  # per group: not a piece of a larger layer block
        for comment, stmts, texts in nodes:
            k = self._chunk_key(comment)
            if groups and k == key and sum(len(s) for _, s, _ in groups[-1]) + len(stmts) > (
                    self.CHUNK_STATEMENTS):
                whole[-1] = False
                groups.append([])
                whole.append(False)
            elif not groups or k != key:
                groups.append([])
                whole.append(True)
            key = k
            groups[-1].append((comment, stmts, texts))
        groups = _merge_small(groups, whole, self.CHUNK_STATEMENTS)
        flat, remat = self._rematerialisable([n for g in groups for n in g])
        sizes = [len(g) for g in groups]
        groups = [flat[sum(sizes[:i]):sum(sizes[:i + 1])] for i in range(len(sizes))]
        # items: ("chunk", [(comment, stmts, texts)]) ; a statement that must stay in the
        # step splits its chunk
        stay: set[int] = set()  # id() of statements kept in the step between chunks
        while True:
            segments = _segments(groups, stay)
            reads_after = _reads_after(segments, rets)
            more = set()
            for i, seg in enumerate(segments):
                if seg[0] != "chunk":
                    continue
                for s in _exported(seg[1], reads_after[i]):
                    if not _hoistable(s):
                        more.add(id(s))
            if not more - stay:
                break
            stay |= more
        out: list[str] = []
        for i, seg in enumerate(segments):
            if seg[0] == "step":
                out += _needed(remat, _loaded(ast.parse("\n".join(seg[1])).body)) + seg[1]
                continue
            read = _loaded([s for _, stmts, _ in seg[1] for s in stmts])
            pre = _needed(remat, read)
            prefix = [(None, ast.parse("\n".join(pre)).body, pre)] if pre else []
            out += self._as_chunk(prefix + seg[1], reads_after[i] - remat.keys())
        return out + _needed(remat, set(rets))

    def _rematerialisable(self, nodes):
        """The statements binding a view of the step's parameters (an arena slot, a
        reshaped source or another such view), taken out of ``nodes``: each chunk that reads
        one binds it again (`_needed`), which costs nothing at run time and keeps the step
        (whose compile time grows with its size) to calls. Returns (nodes, name -> line)."""
        roots = set(self._step_args()) | {b.split(" = ")[0] for b in self._symbol_bindings()}
        counts: dict[str, int] = {}
        for _, stmts, _ in nodes:
            for st in stmts:
                for n in ast.walk(st):
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                        counts[n.id] = counts.get(n.id, 0) + 1
        remat: dict[str, tuple[str, set[str]]] = {}
        out = []
        for comment, stmts, texts in nodes:
            keep, kept = [], []
            for st, t in zip(stmts, texts):
                b = _binds(st)
                reads = _loaded([st.value]) if b is not None else set()
                if (b is not None and counts[b] == 1 and _hoistable(st) and not _allocates(st)
                        and reads <= roots | remat.keys()):
                    remat[b] = (t, reads)
                else:
                    keep.append(st)
                    kept.append(t)
            out.append((comment, keep, kept))
        return out, remat

    # the most statements of one chunk, and the most of a step left whole. Numba's compile
    # time per statement grows with the function's size (a synthetic 100-statement function
    # took about 34 s, a 200-statement one about 95 s), but each jitted caller links in its
    # callees' code and optimises and compiles it again (numba CPUCodeLibrary.finalize):
    # the step's final module holds every chunk and kernel. Measured on 2 busy cores (CPU
    # seconds of a cold train compile): the 949-statement transformer 270 -> 152 chunked;
    # but LeNet (124 statements) 43 -> 50 and the BiLSTM (283) 50 -> 63, so smaller steps
    # stay whole.
    CHUNK_STATEMENTS = 40
    CHUNK_MIN = 400
    # most updates one multi-tensor call makes (`_update_runs`): each adds about four
    # statements (its in-place views) to the call's chunk
    RUN_NODES = CHUNK_STATEMENTS // 4

    def _chunk_key(self, comment: str | None):
        m = re.match(r"# %(\d+)\b", comment or "")
        if not m:
            return None
        from graphdl.passes.schedule import layer_block

        nid = int(m.group(1))
        return self.g.node(nid)["phase"], layer_block(self.g, nid)

    def _as_chunk(self, nodes, reads_after: set[str]) -> list[str]:
        """One chunk: the step's lines (each node's comment and the lines binding the names
        the rest of the step reads) and the call of the module-level function holding the
        rest, deduplicated by its text."""
        exported = {id(s) for s in _exported(nodes, reads_after)}
        step: list[str] = []
        work: list[str] = []
        for comment, stmts, texts in nodes:
            if comment is not None:
                step.append(comment)
            for s, text in zip(stmts, texts):
                (step if id(s) in exported else work).append(text)
        if not work:
            return step
        offsets: dict[str, str] = {}

        def offset(m):
            name = f"__off{m.group(1)}"
            offsets[name] = m.group(0)
            return name

        work = [re.sub(r"\s+#[^'\"\n]*$", "", line) for t in work for line in t.split("\n")]
        text = re.sub(r"(?<![.\w])off\[(\d+)\]", offset, "\n".join(work))
        tree = ast.parse(text)
        free = _free_names(tree.body)
        names = _names_in_order(text)
        keep = {"np", "K", "prange"} | set(dir(builtins))
        local = [n for n in names if n not in keep and not _MODULE_NAME.fullmatch(n)]
        params = [n for n in local if n in free]
        name = self._outline("chunk", text, params, local,
                             "a part of the step (graphdl.backends.cpu.codegen: chunks)")
        args = [offsets.get(n, n) for n in params]
        return step + [f"{name}({', '.join(args)})"]

    def _outline(self, kind: str, text: str, params: list[str], local: list[str], what: str,
                 drop_comments: bool = False) -> str:
        """The name of a module-level njit function ``<kind>_<i>`` running ``text`` with
        ``params`` as its parameters; every name of ``local`` is renamed by its order
        (params first: ``v0``, ``v1``...), and node comments dropped when asked, so blocks
        that compute the same thing under other names share one function, emitted (and
        compiled by Numba) once."""
        first = set(params)
        rename = {n: f"v{i}" for i, n in enumerate(params + [n for n in local if n not in first])}
        body = _rename(text, rename)
        if drop_comments:
            body = "\n".join(line for line in body.split("\n") if not line.lstrip().startswith("# %"))
        sig = ", ".join(rename[n] for n in params)
        key = f"{kind}|{sig}|{body}"
        if key not in self.loop_kernels:
            name = f"{kind}_{sum(k.startswith(kind + '|') for k in self.loop_kernels)}"
            self.loop_kernels[key] = name
            src = ["@njit(cache=True, error_model='numpy')", f"def {name}({sig}):", f"    # {what}"]
            src += ["    " + line if line else "" for line in body.split("\n")]
            self.loop_sources.append("\n".join(src))
        return self.loop_kernels[key]

    def _keep_view(self, v: Value, ctx: EmitCtx) -> list[str]:
        return [f"{self.var[v]} = {self.var[v]}.copy()"]

    # ------------------------------------------------------------ multi-tensor updates
    def _emit_node(self, nid: int, ctx: EmitCtx) -> list[str]:
        """A node as the common walk emits it, except the first of a run of updates one
        kernel call makes (`_update_runs`): the others' comments and buffers, then that
        call; the walk then skips them."""
        if nid in self.gemm_partner:
            return self._emit_gemm_pair(nid, self.gemm_partner[nid], ctx)
        run = self._runs.get(nid)
        if run is None:
            return super()._emit_node(nid, ctx)
        g = self.g
        lines = []
        for other in run[1:]:
            lines.append(self._node_comment(other) + "  (in the call below)")
            for i in range(g.num_outputs(other)):
                lines += self._allocate(Value(other, i), ctx)
            self.emitted.add(other)
        group = [(g.inputs_of(m), [Value(m, i) for i in range(g.num_outputs(m))]) for m in run]
        nd = g.node(nid)
        return lines + get_op(nd["op"]).emit_cpu_group(ctx, nd["attrs"], group)

    def _emit_gemm_pair(self, nid: int, partner: int, ctx: EmitCtx) -> list[str]:
        """Two independent GEMMs (`gemm_partner`): from SPLIT_ROWS rows on (both), one
        parallel region with each GEMM whole on a thread; below, both on the calling
        thread, each one BLAS call (what the row-split kernels do there)."""
        from graphdl.ops.matmul import SPLIT_ROWS
        from graphdl.passes.schedule import gemm_rows

        lines = [self._node_comment(partner) + "  (beside the node above, on a second thread)"]
        for i in range(self.g.num_outputs(partner)):
            lines += self._allocate(Value(partner, i), ctx)
        self.emitted.add(partner)
        self.in_thread = True
        try:
            one, two = super()._emit_node(nid, ctx), super()._emit_node(partner, ctx)
        finally:
            self.in_thread = False
        if calls_parallel_kernel("\n".join(one + two)):
            return lines + super()._emit_node(nid, ctx) + super()._emit_node(partner, ctx)
        rows = [" * ".join(ctx.shape(gemm_rows(self.g, n))[:-1]) or "1" for n in (nid, partner)]
        small = self.unique("small")
        lines.append(f"{small} = min({rows[0]}, {rows[1]}) < {SPLIT_ROWS}")
        what = "a GEMM on a thread of its own (graphdl.passes.schedule.pair_gemms)"
        return lines + self._parallel(self._as_function(one, "gemm", what)
                                      + self._as_function(two, "gemm", what), serial_if=small)

    def _update_runs(self) -> dict[int, list[int]]:
        """Runs of two or more nodes one after another in the schedule that one kernel
        call updates (`OpDef.emit_cpu_group`: an optimiser's multi-tensor update): the
        same op, attributes, dtype and values in the op's ``group_by`` slots (learning
        rate, step count), every output planned in its input's buffer (so no member's
        copy can overwrite what another reads). A run holds at most `RUN_NODES` nodes: a
        call with its members' views stays within one chunk (`_chunked`). By first node
        id."""
        g = self.g
        plan = g.meta["memory_plan"]["values"]

        def key(nid: int):
            nd = g.node(nid)
            op = get_op(nd["op"])
            if op.emit_cpu_group is None or not all(
                    "inplace" in plan.get(f"{nid}:{i}", {}) for i in range(g.num_outputs(nid))):
                return None
            ins = g.inputs_of(nid)
            return (nd["op"], repr(sorted(nd["attrs"].items())), g.type_of(ins[0]).dtype,
                    tuple(ins[i] for i in op.group_by))

        runs: dict[int, list[int]] = {}
        current: list[int] = []
        current_key = None
        for nid in self.order:
            if g.node(nid)["op"] in SOURCES:
                continue
            k = key(nid)
            if k is not None and k == current_key and len(current) < self.RUN_NODES:
                current.append(nid)
                continue
            if len(current) > 1:
                runs[current[0]] = current
            current, current_key = ([nid], k) if k is not None else ([], None)
        if len(current) > 1:
            runs[current[0]] = current
        return runs

    def _emit_scan(self, nid: int, ctx: EmitCtx) -> list[str]:
        """A scan's loop as a function of its own (`_as_function`), called by the step; a
        scan the schedule paired with it (`graphdl.passes.schedule.pair_loops`) is emitted
        here too, and the two run on two threads (`_parallel`), each with its prologue and
        epilogue (`_thread_lines`) unless one of those calls a parallel kernel."""
        partner = dict(self.g.meta.get("parallel", [])).get(nid) if self.parent is None else None
        if partner is None:
            return self._as_function(super()._emit_scan(nid, ctx))
        threads = [self._thread_lines(self.prologue, s, ctx, True) for s in (nid, partner)]
        lines = [self._node_comment(partner) + "  (beside the scan above, on a second thread)"]
        for i in range(self.g.num_outputs(partner)):
            lines += self._allocate(Value(partner, i), ctx)
        # what a thread computes for later nodes is bound in the step, before the threads
        for n in self.epilogue.get(nid, []) + self.epilogue.get(partner, []):
            for i in range(self.g.num_outputs(n)):
                lines += self._allocate(Value(n, i), ctx)
        scan, other = super()._emit_scan(nid, ctx), super()._emit_scan(partner, ctx)
        self.emitted.add(partner)
        after = [self._thread_lines(self.epilogue, s, ctx, True) for s in (nid, partner)]
        if calls_parallel_kernel("\n".join(x for t in threads + after for x in t)):
            # a kernel that starts a parallel region of its own stays on the calling thread
            return (self._thread_lines(self.prologue, nid, ctx, False)
                    + self._thread_lines(self.prologue, partner, ctx, False) + lines
                    + self._parallel(self._as_function(scan) + self._as_function(other))
                    + self._thread_lines(self.epilogue, nid, ctx, False)
                    + self._thread_lines(self.epilogue, partner, ctx, False))
        return lines + self._parallel(self._as_function(threads[0] + scan + after[0])
                                      + self._as_function(threads[1] + other + after[1]))

    def _thread_lines(self, nodes: dict[int, list[int]], nid: int, ctx: EmitCtx,
                      in_thread: bool) -> list[str]:
        """The lines of the nodes scan ``nid`` runs on its own thread before its loop
        (``nodes`` = `prologue`, their values bound here) or after it (`epilogue`, bound
        in the step), emitted as `_walk` would; ``in_thread``: with single-thread GEMM
        kernels, not those that split between threads."""
        lines: list[str] = []
        self.in_thread = in_thread
        try:
            for n in nodes.get(nid, []):
                lines.append(self._node_comment(n) + "  (on the scan's thread)")
                if nodes is self.prologue:
                    for i in range(self.g.num_outputs(n)):
                        lines += self._allocate(Value(n, i), ctx)
                lines += self._emit_node(n, ctx)
        finally:
            self.in_thread = False
        return lines

    def _parallel(self, calls: list[str], serial_if: str | None = None) -> list[str]:
        """One call that runs the loop calls ``calls`` (``scan_<i>(args)``) at the same time:
        a module-level ``par_<i>`` whose prange gives each call a thread (deduplicated by its
        text, as the loops); where the boolean ``serial_if`` (a name in the step) is true,
        the calls run one after the other on the calling thread instead."""
        parsed = [re.fullmatch(r"(\w+)\((.*)\)", c).groups() for c in calls]
        names: list[str] = [serial_if] if serial_if else []
        for _, args in parsed:
            for a in (x.strip() for x in args.split(",")):
                if a not in names:
                    names.append(a)
        rename = {n: f"v{i}" for i, n in enumerate(names)}
        body = []
        if serial_if:
            body.append(f"if {rename[serial_if]}:")
            for fn, args in parsed:
                body.append(f"    {fn}({', '.join(rename[a.strip()] for a in args.split(','))})")
            body.append("    return")
        body.append(f"for i in prange({len(calls)}):")
        for k, (fn, args) in enumerate(parsed):
            body.append(f"    {'if' if k == 0 else 'elif'} i == {k}:")
            body.append(f"        {fn}({', '.join(rename[a.strip()] for a in args.split(','))})")
        params = ", ".join(rename[n] for n in names)
        key = f"par|{params}|" + "\n".join(body)
        if key not in self.loop_kernels:
            name = f"par_{sum(k.startswith('par|') for k in self.loop_kernels)}"
            self.loop_kernels[key] = name
            src = ["@njit(cache=True, error_model='numpy', parallel=True)",
                   f"def {name}({params}):",
                   "    # independent loops, one thread each (graphdl.passes.schedule)"]
            self.loop_sources.append("\n".join(src + ["    " + b for b in body]))
        return [f"{self.loop_kernels[key]}({', '.join(names)})"]

    def _as_function(self, lines: list[str], kind: str = "scan",
                     what: str = "a scan's loop over time (graphdl.ir.scan)") -> list[str]:
        """The block ``lines`` as a module-level njit function ``scan_<i>`` and the line
        that calls it. Its parameters are the names the block reads but does not bind (the
        step's buffers, the symbols' sizes); inside, every name is renamed by its first
        appearance (``v0``, ``v1``...) and the node comments dropped, so loops that compute
        the same thing (the two directions of a layer, stacked layers of one size) share one
        function, which Numba compiles once."""
        text = "\n".join(_indent_blocks(lines))
        tree = ast.parse(text)
        bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                 and isinstance(n.ctx, ast.Store)}
        names = _names_in_order(text)
        keep = {"np", "K"} | set(dir(builtins))
        local = [n for n in names if n not in keep and not _MODULE_NAME.fullmatch(n)]
        free = [n for n in local if n not in bound]
        name = self._outline(kind, text, free, local, what, drop_comments=True)
        return [f"{name}({', '.join(free)})"]

    def _copy_into(self, dst: str, src: str, t: TensorType) -> list[str]:
        return [f"K.copy_flat({src}, {dst})"]

    def _copy_back(self, new: Value, target: Value, ctx: EmitCtx) -> list[str]:
        return [f"{self.var[target]}[...] = {self.var[new]}"]

    def _emitter(self, op: str):
        return get_op(op).emit_cpu

    def _missing_kernel(self, nd: dict) -> GraphdlError:
        # DESIGN: a missing kernel is a compile-time error, never a NumPy fallback
        return GraphdlError(Diagnostic(
            "E708", f"no CPU kernel for op {nd['op']} (layer {nd['layer']})",
            file=self.g.meta.get("spec_path"), line=nd["line"],
            help="this op can only run in the reference interpreter"), phase="compile")

    def _call_loop(self, members, in_vars, in_types, out: Value, ctx: EmitCtx) -> list[str]:
        out_t = self.g.type_of(out)
        lines = []
        runtime = []
        for expr in self._divisors(members):
            k = ctx.fresh("k")
            lines.append(f"{k} = {expr}")
            runtime.append(k)
        members, in_vars, in_types = self._loop_inputs(members, in_vars, in_types)
        same = self._output_buffer_inputs(in_vars, in_types, out)
        name = self._loop_kernel(members, in_types, out_t, same)
        args = [v for i, v in enumerate(in_vars) if i not in same]
        lines.append(f"{name}({', '.join(args + [self.var[out]] + runtime)})")
        return lines

    def _output_buffer_inputs(self, in_vars: list[str], in_types: list[TensorType],
                              out: Value) -> frozenset[int]:
        """The loop inputs that are the output's own buffer: an epilogue head's value (the
        head wrote the output, the loop finishes it) or the input the memory plan put the
        output on (in place)."""
        names = {self.var[out]}
        plan = self.g.meta["memory_plan"]["values"].get(f"{out.node}:{out.index}", {})
        if "inplace" in plan:
            names.add(self.var[Value(*map(int, plan["inplace"].split(":")))])
        out_t = self.g.type_of(out)
        return frozenset(i for i, (v, t) in enumerate(zip(in_vars, in_types))
                         if v in names and t == out_t)

    def _loop_kernel(self, members, in_types: list[TensorType], out_t: TensorType,
                     same: frozenset[int] = frozenset()) -> str:
        """Generate (or reuse) the loop kernel for a group of elementwise members. The
        inputs ``same`` are the output's own buffer: the loop reads them through ``out``, so
        that LLVM sees one array read and written at the same index and vectorises the loop
        (through two names it must assume they overlap anywhere: 4x slower)."""
        params = [f"x{i}" for i in range(len(in_types)) if i not in same] + ["out"]
        flat = is_flat_loop(in_types, out_t)
        lines = []
        if flat:
            lines.append("n = out.size")
            lines.append("o = out.reshape(n)")
            for i, t in enumerate(in_types):
                if i not in same:
                    lines.append(f"f{i} = x{i}.reshape(x{i}.size)")
            loop_idx = ["i"]
            lines.append("for i in range(n):")
            read = {i: (f"f{i}[0]" if t.rank == 0 and out_t.rank != 0 else f"f{i}[i]") for i, t in enumerate(in_types)}
            read.update({i: "o[i]" for i in same})
            store = "o[i]"
        else:
            r = out_t.rank
            dims = [f"d{j}" for j in range(r)]
            lines.append(f"{', '.join(dims)}{',' if r == 1 else ''} = out.shape")
            loop_idx = [f"i{j}" for j in range(r)]
            for j in range(r):
                lines.append("    " * j + f"for i{j} in range(d{j}):")
            read = {i: f"{'out' if i in same else f'x{i}'}[{broadcast_index(t, out_t, loop_idx)}]"
                    for i, t in enumerate(in_types)}
            store = f"out[{', '.join(loop_idx)}]" if r else "out[0]"
        indent = "    " * (1 if flat else max(out_t.rank, 1))
        if not flat and out_t.rank == 0:
            indent = ""
        body, params = self._scalar_chain(members, read, store, params)
        decorator = f"@njit(cache=True, error_model='numpy', fastmath={FASTMATH})"
        return self._register_loop(decorator, lines + [indent + b for b in body], params, members)

    def _module(self, body: list[str]) -> str:
        args = self._step_args()
        header = [
            self._docstring("CPU"),
            "import numpy as np",
            "from numba import njit" + (", prange" if any(
                k.startswith("par|") for k in self.loop_kernels) else ""),
            "from graphdl.backends.cpu import library as K",
            "from graphdl.backends.cpu.fpenv import flush_subnormals, restore_fp",
            "",
        ]
        step = ["@njit(cache=True, error_model='numpy')", f"def step({', '.join(args)}):"]
        step += ["    " + line for line in self._symbol_bindings()]
        step += ["    " + line if line else "" for line in _indent_blocks(body)]
        if self.g.meta.get("mode") == "decode_step" and "decode_input" in self.g.meta:
            step += ["", ""] + self._greedy(args)
        return "\n".join(header + ["\n\n".join(self.loop_sources), "", ""] + step) + "\n"

    def _greedy(self, args: list[str]) -> list[str]:
        """A decode_step program's greedy decoding loop, compiled beside its step: each
        token calls `step` from compiled code (`graphdl.runtime.decode.Decoder.greedy`),
        where from Python each call unboxed its ~50 arrays and the loop's own work (the
        feeds, the caches copied back, argmax) ran in NumPy: 0.10 ms of Python and dispatch
        per token against a step of a few tens of us at batch 1. Writes tokens [N, steps]
        in place; ``eos`` < 0: no end token. The caches, the decode input and the position
        are the step's own input arrays, refilled in place."""
        g = self.g
        var = {name: self.var[Value(g.find("input", name))] for name in self.sig.inputs}
        outs = {name: i for i, name in enumerate(self.sig.outputs)}
        tok_in, pos = var[g.meta["decode_input"]], var["decode.pos"]
        logits = outs[g.meta["model_outputs"][0]]
        lines = ["@njit(cache=True, error_model='numpy')",
                 f"def greedy({', '.join(args)}, first, steps, eos, tokens):",
                 "    n = first.shape[0]",
                 "    tok = first.copy()",
                 "    done = np.zeros(n, np.bool_)",
                 "    for t in range(steps):",
                 "        for i in range(n):",
                 f"            {tok_in}[i, 0] = tok[i]",
                 f"            {pos}[i] = t",
                 f"        r = step({', '.join(args)})"]
        for name in self.sig.outputs:
            if name.startswith("cache.") and name in var:
                lines.append(f"        {var[name]}[...] = r[{outs[name]}]")
        lines += [f"        y = r[{logits}].reshape((n, -1))",
                  "        finished = True",
                  "        for i in range(n):",
                  "            best = 0",
                  "            top = y[i, 0]",
                  "            if not np.isnan(top):",
                  "                for j in range(1, y.shape[1]):",
                  "                    if np.isnan(y[i, j]):  # as np.argmax: the first NaN",
                  "                        best = j",
                  "                        break",
                  "                    if y[i, j] > top:",
                  "                        top = y[i, j]",
                  "                        best = j",
                  "            if eos >= 0:",
                  "                if done[i]:",
                  "                    best = eos",
                  "                done[i] = done[i] or best == eos",
                  "                finished = finished and done[i]",
                  "            tokens[i, t] = best",
                  "            tok[i] = best",
                  "        if eos >= 0 and finished:",
                  "            tokens[:, t + 1:] = eos",
                  "            return"]
        return lines


_MODULE_NAME = re.compile(r"(loop|scan|par|gemm|chunk)_\d+")


def _names_in_order(text: str) -> list[str]:
    """The distinct identifiers of ``text`` in order of first appearance (not attributes
    such as ``.shape`` or ``K.<kernel>``, not keywords)."""
    seen: list[str] = []
    prev = None
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if (tok.type == tokenize.NAME and not (prev is not None and prev.string == ".")
                and tok.string not in seen and not keyword.iskeyword(tok.string)):
            seen.append(tok.string)
        if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
            prev = tok
    return seen


def _rename(text: str, rename: dict[str, str]) -> str:
    """``text`` with the identifiers in ``rename`` replaced (not attributes, not comments)."""
    out = []
    for line in text.split("\n"):
        if line.lstrip().startswith("#"):
            out.append(line)
            continue
        out.append(re.sub(r"(?<![.\w])([A-Za-z_]\w*)\b",
                          lambda m: rename.get(m.group(1), m.group(1)), line))
    return "\n".join(out)


def _split_nodes(lines: list[str]):
    """The step's lines as nodes: (the node's ``# %`` comment or None, its statements, each
    statement's text). Other comments are dropped."""
    nodes = []
    comment, block = None, []

    def close():
        text = "\n".join(block)
        tree = ast.parse(text)
        src = text.split("\n")
        texts = ["\n".join(src[s.lineno - 1:s.end_lineno]) for s in tree.body]
        if comment is not None or tree.body:
            nodes.append((comment, tree.body, texts))

    for line in lines:
        if line.startswith("# %"):
            close()
            comment, block = line, []
        elif not line.lstrip().startswith("#"):
            block.append(line)
    close()
    return nodes


def _merge_small(groups, whole: list[bool], limit: int):
    """Consecutive groups of fewer than ``limit // 2`` statements merged while the merged
    group stays within ``limit`` (each function costs a fixed time to compile); larger
    groups and the pieces of a layer block split by size, the code that may repeat, are
    kept as they are so that identical layers make identical chunks."""
    def size(g):
        return sum(len(s) for _, s, _ in g)
    out: list = []
    mergeable = False
    for g, w in zip(groups, whole):
        small = w and size(g) < limit // 2
        if out and small and mergeable and size(out[-1]) + size(g) <= limit:
            out[-1] = out[-1] + g
        else:
            out.append(g)
            mergeable = small
    return out


def _segments(groups, stay: set[int]):
    """The chunks of ``groups`` split at the statements ``stay`` (by id): a list of
    ("chunk", nodes) and ("step", lines) items in order."""
    out = []
    for group in groups:
        cur = []
        for comment, stmts, texts in group:
            node = (comment, [], [])
            cur.append(node)
            for s, t in zip(stmts, texts):
                if id(s) in stay:
                    out.append(("chunk", cur))
                    out.append(("step", [t]))
                    cur = [(None, [], [])]
                    node = cur[0]
                else:
                    node[1].append(s)
                    node[2].append(t)
        out.append(("chunk", cur))
    return out


def _loaded(stmts) -> set[str]:
    return {n.id for s in stmts for n in ast.walk(s)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _reads_after(segments, rets: list[str]) -> list[set[str]]:
    """For each segment, the names read by the segments after it or returned."""
    after: list[set[str]] = [set()] * len(segments)
    acc = set(rets)
    for i in range(len(segments) - 1, -1, -1):
        after[i] = set(acc)
        seg = segments[i]
        if seg[0] == "step":
            acc |= _loaded(ast.parse("\n".join(seg[1])).body)
        else:
            acc |= _loaded([s for _, stmts, _ in seg[1] for s in stmts])
    return after


def _binds(s: ast.stmt) -> str | None:
    if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name):
        return s.targets[0].id
    return None


def _exported(nodes, reads_after: set[str]) -> list[ast.stmt]:
    """The statements of a chunk that the step itself must run: those binding a name read
    after the chunk, and (recursively) those binding a name such a statement reads; any
    other statement that binds a name read after the chunk is returned too (a split)."""
    stmts = [s for _, ss, _ in nodes for s in ss]
    by_name: dict[str, ast.stmt] = {}
    for s in stmts:
        b = _binds(s)
        if b is not None:
            by_name[b] = s
    out: dict[int, ast.stmt] = {}
    for s in stmts:
        stored = {n.id for n in ast.walk(s) if isinstance(n, ast.Name)
                  and isinstance(n.ctx, ast.Store)}
        if stored & reads_after:
            out[id(s)] = s
    todo = list(out.values())
    while todo:
        s = todo.pop()
        if _binds(s) is None:
            continue
        for n in _loaded([s.value]):
            d = by_name.get(n)
            if d is not None and id(d) not in out:
                out[id(d)] = d
                todo.append(d)
    return [s for s in stmts if id(s) in out]


_PURE_CALLS = {"reshape", "ravel", "transpose", "empty", "zeros", "ones", "int64", "float32",
               "float64", "bool_"}


def _hoistable(s: ast.stmt) -> bool:
    """Whether ``s`` binds a name to a view of other arrays or a fresh buffer (so the step
    can run it before the chunk it came from): no other call, no copy."""
    if _binds(s) is None:
        return False
    for n in ast.walk(s.value):
        if isinstance(n, ast.Call):
            f = n.func
            if not (isinstance(f, ast.Attribute) and f.attr in _PURE_CALLS):
                return False
            if isinstance(f.value, ast.Name) and f.value.id == "K":
                return False
    return True


def _allocates(s: ast.stmt) -> bool:
    """Whether ``s`` makes a fresh buffer (it cannot be run twice for one value)."""
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr in ("empty", "zeros", "ones") for n in ast.walk(s))


def _needed(remat: dict[str, tuple[str, set[str]]], read: set[str]) -> list[str]:
    """The lines binding the rematerialisable names ``read`` needs (those it reads and,
    recursively, theirs), in the order the step bound them."""
    need: set[str] = set()
    todo = [n for n in read if n in remat]
    while todo:
        n = todo.pop()
        if n not in need:
            need.add(n)
            todo += [m for m in remat[n][1] if m in remat]
    return [line for n, (line, _) in remat.items() if n in need]


def _free_names(stmts) -> set[str]:
    """The names ``stmts`` read before binding them (in order of execution)."""
    free: set[str] = set()
    bound: set[str] = set()

    def load(node):
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in bound:
                free.add(n.id)

    def store(target):
        for n in ast.walk(target):
            if isinstance(n, ast.Name):
                if isinstance(n.ctx, ast.Store):
                    bound.add(n.id)
                elif n.id not in bound:
                    free.add(n.id)

    def run(body):
        for s in body:
            if isinstance(s, ast.Assign):
                load(s.value)
                for t in s.targets:
                    store(t)
            elif isinstance(s, ast.AugAssign):
                load(s.value)
                load(ast.Name(s.target.id, ast.Load()) if isinstance(s.target, ast.Name)
                     else s.target)
                store(s.target)
            elif isinstance(s, (ast.For, ast.While, ast.If)):
                load(s.iter if isinstance(s, ast.For) else s.test)
                if isinstance(s, ast.For):
                    store(s.target)
                run(s.body)
                run(s.orelse)
            else:
                load(s)
    run(stmts)
    return free
