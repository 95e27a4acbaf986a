"""What the code generators of both backends share: `GraphSource` (the walk over a planned
graph: value names, symbol binding, fused loops from scalar functions, the step's
parameters, the module header), `EmitCtx` (what an op's emitter sees) and `StepSignature`.

Generated code names every value after the graph's provenance, so a reader finds the spec
in it: sources by their names (``x``, ``dense_1_kernel``), a layer's output
``<layer>_out``, its other forward values ``<layer>_<op>``, a parameter's gradient
``<layer>_grad_<param>`` (``dense_1_grad_kernel``), other backward values
``<layer>_grad_<op>``, an update ``<param>_new``. Names are made unique in schedule order
(``_2``, ``_3``): they are a function of the graph alone, since the source is the cache key.

A backend subclasses `GraphSource` with how it allocates values, writes a loop kernel and
assembles its module (`graphdl.backends.cpu.codegen.CpuCodegen`,
`graphdl.backends.cuda.codegen.CudaCodegen`).
"""


from __future__ import annotations

import builtins
import keyword
import re
from dataclasses import dataclass, field
from pathlib import PurePath

import numpy as np

from graphdl.ir.graph import Graph, Value
from graphdl.ir.scan import body_inputs, body_output_names, split_inputs
from graphdl.ir.types import TensorType
from graphdl.ops.registry import get_op
from graphdl.version import __version__

SOURCES = ("input", "param", "state", "const")
NP_DTYPE = {"float32": "np.float32", "float64": "np.float64", "int64": "np.int64", "bool": "np.bool_"}


def dim_expr(d) -> str:
    """A dim in generated code: an int literal, or the variable bound to a symbol (prefixed,
    so a symbol named K or np cannot shadow the kernel module or NumPy)."""
    return f"sym_{d}" if isinstance(d, str) else str(d)


def _ident(name: str) -> str:
    """``name`` as a Python identifier: ASCII letters, digits and ``_``, starting with a letter."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", name)
    return ident if ident[:1].isalpha() else "v_" + ident


# names generated code binds itself (modules, the step's own parameters, Python's builtins):
# no value may shadow them
_RESERVED = (
    set(keyword.kwlist) | set(dir(builtins))
    | {"np", "K", "R", "cuda", "jit", "njit", "math", "off", "step", "setup", "run", "layout"}
    | {"flush_subnormals", "restore_fp", "fp_word"}  # the CPU step's float mode (fpenv)
    | {f"arena_{d}" for d in NP_DTYPE}
)
_LOOP_NAME = re.compile(r"(loop|scan|par|gemm|chunk)_\d+")  # module-level kernels and loops


@dataclass
class StepSignature:
    """What `step` takes and returns, in order (the runtime builds calls from it)."""

    inputs: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    state: list[str] = field(default_factory=list)
    consts: list[int] = field(default_factory=list)  # const node ids
    arenas: list[str] = field(default_factory=list)  # dtypes
    outputs: list[str] = field(default_factory=list)


class EmitCtx:
    """What an op's `emit_cpu` sees: variable names, shape expressions, kernels, literals."""

    def __init__(self, gen: GraphSource):
        self.gen = gen
        self._fresh = 0

    def in_step(self) -> bool:
        """Emitting into the step itself: not a scan's body or a paired scan's thread,
        which run beside another loop (a kernel called there must not split its work
        between the pool's threads)."""
        return self.gen.parent is None and not getattr(self.gen, "in_thread", False)

    def var(self, v: Value) -> str:
        return self.gen.var[v]

    def type(self, v: Value) -> TensorType:
        return self.gen.g.type_of(v)

    def shape(self, v: Value) -> tuple[str, ...]:
        return tuple(dim_expr(d) for d in self.gen.g.type_of(v).shape)

    def shape_tuple(self, shape: tuple[str, ...]) -> str:
        if not shape:
            return "(1,)"
        return "(" + ", ".join(shape) + ("," if len(shape) == 1 else "") + ")"

    def same_buffer(self, out: Value, inp: Value) -> bool:
        """Whether the memory plan gave ``out`` the buffer of ``inp`` (in place)."""
        p = self.gen.g.meta["memory_plan"]["values"].get(f"{out.node}:{out.index}", {})
        return p.get("inplace") == f"{inp.node}:{inp.index}"

    def kernel(self, name: str) -> str:
        return f"K.{name}"

    def call(self, kernel: str, *args: Value | str | int) -> str:
        """The line ``K.kernel(arg, ...)``: a Value is passed as its variable, an int or
        bool as a run-time value (`runtime`: one compiled kernel whatever the constant),
        anything else as its text (``repr`` a float attribute first, to keep every digit)."""
        parts = [self.var(a) if isinstance(a, Value)
                 else self.runtime(a) if isinstance(a, (int, np.integer, np.bool_))
                 else str(a) for a in args]
        return f"{self.kernel(kernel)}({', '.join(parts)})"

    def lit(self, x: float, dtype: str) -> str:
        return f"{NP_DTYPE[dtype]}({x!r})"

    def runtime(self, *values: int | bool) -> str:
        """Ints / bools for a kernel as run-time values, comma separated. Numba types a
        bare constant argument as a literal and compiles the callee once per value; behind
        ``np.int64(...)`` / ``np.bool_(...)`` a kernel (and the helpers it calls) compiles
        once per array signature, whatever the strides, padding or window sizes."""
        return ", ".join(
            f"np.bool_({v})" if isinstance(v, (bool, np.bool_)) else f"np.int64({int(v)})"
            for v in values
        )

    def fresh(self, prefix: str) -> str:
        self._fresh += 1
        return f"_{prefix}{self._fresh}"


class GraphSource:
    """What every backend's generator shares: variable names for the graph's sources, the
    symbolic dims bound from the inputs, and the generated loop kernels."""

    # how a bound dim is read from an input's shape (CUDA wraps it in int())
    SHAPE_READ = "{}"
    # whether float32 loop members call their op's float32 scalar function (``K.s32_<op>``,
    # `OpDef.scalar_f32`) where it has one
    FLOAT32_SCALARS = False
    # whether a scan's body computes a per-step output straight into its slice ``out[t]``
    # (`_outputs_in_place`; a view per step), else into a buffer copied there
    STEP_OUTPUTS_IN_PLACE = True

    def __init__(self, g: Graph, title: str = "program", parent: GraphSource | None = None):
        self.g = g
        self.title = title
        self.order: list[int] = g.meta.get("schedule") or g.topo_order()
        self.var: dict[Value, str] = {}
        self.sig = StepSignature()
        self.sources: list[Value] = []  # the step's value parameters, in `sig` order
        self.loop_kernels: dict[str, str] = {}  # source body -> kernel name
        self.loop_sources: list[str] = []
        self._taken: set[str] = set()
        self.emitted: set[int] = set()  # nodes a backend emitted early (with a paired node)
        self.bound: dict[Value, str] = {}  # values written into a buffer named beforehand
        self.step_views: set[Value] = set()  # a body's values bound to ``out[t]`` each step
        self.parent = parent
        if parent is not None:  # a scan's body: one namespace and one set of loop kernels
            self.loop_kernels = parent.loop_kernels
            self.loop_sources = parent.loop_sources
            self._taken = parent._taken
        self.names = self._value_names()

    # ------------------------------------------------------------ value names
    def unique(self, base: str) -> str:
        """``base``, or ``base_2``, ``base_3``... : the first name no value or module-level
        name has taken (then taken)."""
        name = base
        k = 1
        while name in self._taken or name in _RESERVED or _LOOP_NAME.fullmatch(name):
            k += 1
            name = f"{base}_{k}"
            if _LOOP_NAME.fullmatch(name):  # "scan" -> "scan_v2": scan_2 is a loop's name
                name = f"{base}_v{k}"
        self._taken.add(name)
        return name

    def _value_names(self) -> dict[Value, str]:
        """A readable name for every value (see the module docstring), unique in the order
        sources (inputs, params, state by name, constants by id) then schedule."""
        g = self.g
        self._taken |= {dim_expr(d) for t in _all_types(g) for d in t.shape if isinstance(d, str)}
        bases: dict[Value, str] = {}
        for kind in ("input", "param", "state"):
            for name, nid in sorted(g.named(kind).items()):
                bases[Value(nid)] = _ident(name)
        for nid in sorted(g.nodes_by_op("const")):
            bases[Value(nid)] = _layer_prefix(g.node(nid)["layer"]) + "const"
        roles = self._role_names()
        layer_outs = self._layer_outputs()
        for nid in self.order:
            if g.node(nid)["op"] in SOURCES:
                continue
            for i in range(g.num_outputs(nid)):
                v = Value(nid, i)
                bases[v] = roles.get(v) or self._provenance_name(v, v in layer_outs)
        return {v: self.unique(base) for v, base in bases.items()}

    def _role_names(self) -> dict[Value, str]:
        """Names by what a value is for: an update ``<param>_new``; a parameter's gradient
        (what its update op reads after the parameter, as autodiff builds them: ``[param,
        grad, ...]``) ``<layer>_grad_<param>``; a returned value without a layer (a graph
        built in Python) the output's name."""
        g = self.g
        roles: dict[Value, str] = {}
        for pid, new in sorted(g.updates.items()):
            pnode = g.node(pid)
            roles[new] = f"{_ident(pnode['name'])}_new"
            ins = g.inputs_of(new.node)
            if pnode["op"] != "param" or new.index != 0 or len(ins) < 2 or ins[0] != Value(pid):
                continue
            grad = ins[1]
            if g.node(grad.node)["op"] in SOURCES or grad in roles:
                continue
            layer = pnode["layer"]
            what = pnode["name"]
            if layer and what.startswith(f"{layer}."):
                what = what[len(layer) + 1:]
            roles[grad] = f"{_layer_prefix(layer)}grad_{_ident(what)}"
        for name, v in sorted(g.outputs.items()):
            if not g.node(v.node)["layer"]:  # a graph built in Python: the output's name
                roles.setdefault(v, _ident(name))
        return roles

    def _layer_outputs(self) -> set[Value]:
        """Each layer's output: its one forward value that a forward node of another layer
        reads or the program returns (a layer with several such values has none)."""
        g = self.g
        returned = set(g.outputs.values())
        leaving: dict[str, list[Value]] = {}
        for nid in self.order:
            nd = g.node(nid)
            if nd["op"] in SOURCES or nd["phase"] != "forward" or not nd["layer"]:
                continue
            for i in range(g.num_outputs(nid)):
                v = Value(nid, i)
                readers = [g.node(c) for c, _ in g.consumers(v)]
                if v in returned or any(r["phase"] == "forward" and r["layer"] != nd["layer"]
                                        for r in readers):
                    leaving.setdefault(nd["layer"], []).append(v)
        return {vs[0] for vs in leaving.values() if len(vs) == 1}

    def _provenance_name(self, v: Value, layer_output: bool) -> str:
        nd = self.g.node(v.node)
        op = nd["op"]
        if op == "fused":
            op = nd["attrs"]["members"][-1]["op"]  # what the group's value finally is
        prefix = _layer_prefix(nd["layer"])
        if nd["phase"] == "backward":
            base = f"{prefix}grad_{op.removesuffix('_grad')}"
        elif layer_output:
            base = f"{prefix}out"
        else:
            base = prefix + op
        return f"{base}_{v.index}" if v.index else base

    # ------------------------------------------------------------ header
    def _docstring(self, backend: str) -> str:
        """The module docstring: program, backend, graphdl version, spec file. A relative
        spec path is kept as given; an absolute one (a temporary or home directory) by its
        file name only.

        The docstring is not part of the cache key (`graphdl.backends.common.cache.code_of`):
        every program that generates the same code shares one cached file, written once, so
        the file names the program that first generated it. Its line count does not depend
        on the program, so the code below it starts on the same line for every program."""
        spec = self.g.meta.get("spec_path")
        origin = ""
        if spec:
            path = PurePath(str(spec))
            origin = " from " + _one_line(path.name if path.is_absolute() else path.as_posix())
        title = _one_line(self.title)
        return "\n".join([
            f'"""{title}: {backend} code generated by graphdl {__version__}{origin}.',
            "",
            "The cache names this file by a hash of the code below, not of this docstring:",
            "programs that generate the same code (specs that differ only in name:, say)",
            "share it, and the program and spec named above are the first that generated it.",
            "",
            "Generated, do not edit: graphdl writes it again from the graph. Values are named",
            "after their layers: <layer>_out (a layer's output), <layer>_<op>,",
            "<layer>_grad_<param> (a parameter's gradient), <layer>_grad_<op>, <param>_new",
            "(an update); the comment above each node's code gives its spec line.",
            '"""',
        ])

    def _node_comment(self, nid: int) -> str:
        """The comment that opens a node's code (graphdl.viz.source finds nodes by it)."""
        nd = self.g.node(nid)
        return f"# %{nid} {nd['op']}  [{nd['phase']}] layer={nd['layer']} line={nd['line']}"

    def _allocate(self, v: Value, ctx) -> list[str]:
        """Name ``v`` and bind it where the memory plan puts it: a fresh output buffer
        (`_bind_output`), the buffer of the value it overwrites, or a view of an arena slot
        (`_bind`); a view or alias of another value is bound by its op's emitter. Returns
        the step's lines."""
        if v in self.bound:  # a scan's next carry, written into the carry's buffer
            self.var[v] = self.bound[v]
            return []
        if v in self.step_views:  # a per-step output: bound to out[t] at each step
            self.var[v] = self.names[v]
            return []
        plan = self.g.meta["memory_plan"]["values"].get(f"{v.node}:{v.index}")
        t = self.g.type_of(v)
        name = self.names[v]
        self.var[v] = name
        if plan is not None and plan.get("view"):
            return []  # the view op's emitter binds it; `_walk` copies it out (`_keep_view`)
        if plan is None or "output" in plan:
            return self._bind_output(name, t, ctx)
        if "alias" in plan:
            return []  # the view op's emitter binds it
        shape = ctx.shape_tuple(ctx.shape(v))
        if "inplace" in plan:
            src = self.var[Value(*map(int, plan["inplace"].split(":")))]
            return self._bind(f"{name} = {src}.reshape({shape})  # in place", ctx)
        slot = plan["slot"]
        if t.dtype not in self.sig.arenas:
            self.sig.arenas.append(t.dtype)
        view = f"arena_{t.dtype}[off[{slot}]:off[{slot}] + {self._size_expr(t)}].reshape({shape})"
        return self._bind(f"{name} = {view}  # slot {slot}", ctx)

    def _walk(self, ctx) -> list[str]:
        """The step's lines in schedule order: for each node a comment, its values'
        allocation (`_allocate`), its code (`_emit_node`) and a copy of every value the plan
        made a view (`_keep_view`); then the updates that could not be planned in place,
        copied back (`_copy_back`). Sets the step's outputs."""
        g = self.g
        plan = g.meta["memory_plan"]["values"]
        lines: list[str] = []
        for nid in self.order:
            if g.node(nid)["op"] in SOURCES or nid in self.emitted:
                continue
            outs = [Value(nid, i) for i in range(g.num_outputs(nid))]
            lines.append(self._node_comment(nid))
            for v in outs:
                lines += self._allocate(v, ctx)
            lines += self._emit_node(nid, ctx)
            for v in outs:
                if plan.get(f"{v.node}:{v.index}", {}).get("view"):
                    lines += self._keep_view(v, ctx)
        for pid, v in sorted(g.updates.items()):
            if "inplace" not in plan.get(f"{v.node}:{v.index}", {}):
                lines += self._copy_back(v, Value(pid), ctx)
        self.sig.outputs = sorted(g.outputs)
        return lines

    def _emit_node(self, nid: int, ctx) -> list[str]:
        """The lines of one scheduled node: a fused group (its head through the head op's
        emitter, then one generated loop), an op with an emitter of this backend
        (`_emitter`), or an elementwise op as a one-member loop; else `_missing_kernel`."""
        g = self.g
        nd = g.node(nid)
        ins = g.inputs_of(nid)
        outs = [Value(nid, i) for i in range(g.num_outputs(nid))]
        if get_op(nd["op"]).body:
            return self._emit_scan(nid, ctx)
        if nd["op"] == "fused":
            members = nd["attrs"]["members"]
            lines = []
            in_vars = [self.var[v] for v in ins]
            in_types = [g.type_of(v) for v in ins]
            if nd["attrs"]["kind"] == "epilogue":
                head = members[0]
                head_ins = [ins[r[1]] for r in head["inputs"]]
                absorbed = self._absorbed_epilogue(head, members[1:], head_ins, outs[0], ctx)
                if absorbed is not None:  # the head's kernel finishes the epilogue itself
                    return absorbed
                # the head writes the fused output; the loop then finishes it in place
                lines += self._emitter(head["op"])(ctx, head["attrs"], head_ins, [outs[0]])
                in_vars = in_vars + [self.var[outs[0]]]
                in_types = in_types + [TensorType.from_json(head["type"])]
                members = _rebase_members(members, len(ins))
            members, in_vars, in_types = _sliced_reads(members, in_vars, in_types)
            lines += self._call_loop(members, in_vars, in_types, outs[0], ctx)
            return lines
        emit = self._emitter(nd["op"])
        if emit is not None:
            return emit(ctx, nd["attrs"], ins, outs)
        if get_op(nd["op"]).scalar is not None:
            member = {
                "op": nd["op"],
                "attrs": nd["attrs"],
                "inputs": [["input", i] for i in range(len(ins))],
                "type": g.type_of(outs[0]).to_json(),
            }
            return self._call_loop([member], [self.var[v] for v in ins],
                                   [g.type_of(v) for v in ins], outs[0], ctx)
        raise self._missing_kernel(nd)

    def _absorbed_epilogue(self, head: dict, rest: list[dict], ins: list, out,
                           ctx) -> list[str] | None:
        """The lines of an epilogue group whose head's kernel applies the rest itself, or
        None: here none does (the head's call, then a loop); see the CPU backend's."""
        return None

    # ------------------------------------------------------------ loops
    def _emit_scan(self, nid: int, ctx) -> list[str]:
        """A scan (`graphdl.ir.scan`) as a loop over time in the step: the body's buffers
        are allocated once before the loop; each step binds the body's inputs (a carry is
        the buffer of the scan's final-carry output, a sequence slice ``seq[t]`` as
        `_read_step` binds it, an invariant the outer value), runs the body's nodes in
        their schedule order, then copies the next carries into their buffers and each
        per-step output into ``out[t]`` (`_write_step`)."""
        g = self.g
        nd = g.node(nid)
        attrs = nd["attrs"]
        body: Graph = attrs["body"]
        k = attrs["num_carry"]
        outs = [Value(nid, i) for i in range(g.num_outputs(nid))]
        carries, seqs, invs = split_inputs(attrs, g.inputs_of(nid))
        c_ids, x_ids, w_ids = split_inputs(attrs, body_inputs(body))
        sub = type(self)(body, self.title, parent=self)
        sub_ctx = type(ctx)(sub)
        lines: list[str] = []
        for c, out in zip(carries, outs):
            lines += self._copy_into(self.var[out], self.var[c], g.type_of(c))
        for b, out in zip(c_ids, outs):
            sub.var[Value(b)] = self.var[out]
        for b, w in zip(w_ids, invs):
            sub.var[Value(b)] = self.var[w]
        for b in x_ids:
            sub.var[Value(b)] = sub.names[Value(b)]
            lines += self._step_buffer(sub.var[Value(b)], body.type_of(Value(b)), ctx)
        for v, i in _carries_in_place(body, c_ids).items():
            sub.bound[v] = self.var[outs[i]]
        names = body_output_names(body, k)
        in_place = (_outputs_in_place(body, k, sub.bound) if self.STEP_OUTPUTS_IN_PLACE
                    else {})
        for v in in_place:
            sub.step_views.add(v)
        sub_ctx._fresh = ctx._fresh
        pre, step_lines = sub._walk_body(sub_ctx)
        ctx._fresh = sub_ctx._fresh
        steps, it, t = self.unique("steps"), self.unique("step_i"), self.unique("t")
        lines += pre
        lines.append(f"{steps} = {self.var[seqs[0]]}.shape[0]")
        loop = [f"{t} = {steps} - 1 - {it}" if attrs["reverse"] else f"{t} = {it}"]
        for b, s in zip(x_ids, seqs):
            loop += self._read_step(sub.var[Value(b)], self.var[s], t, body.type_of(Value(b)), ctx)
        for v, j in in_place.items():  # the body writes these straight into out[t]
            loop.append(f"{sub.var[v]} = {self.var[outs[j]]}{_step_index(t, body.type_of(v))}")
        loop += step_lines
        # the outputs first: one may be a carry as it entered the step (saved for BPTT)
        loop.append("# this step's outputs, the next carries")
        for j, (out, name) in enumerate(zip(outs[k:], names[k:]), start=k):
            src = body.outputs[name]
            if in_place.get(src) == j:
                continue
            loop += self._write_step(self.var[out], t, sub.var[src], body.type_of(src), ctx)
        # a carry whose next value is another carry as it entered the step (a swap) goes
        # through a buffer of its own, copied before any carry is overwritten
        sources = []
        for i, name in enumerate(names[:k]):
            src = body.outputs[name]
            var = sub.var[src]
            if src in {Value(b) for b in c_ids} and src != Value(c_ids[i]):
                held = self.unique(f"{var}_held")
                lines += self._loop_buffer(held, body.type_of(src), ctx)
                loop += self._copy_into(held, var, body.type_of(src))
                var = held
            sources.append((var, body.type_of(src)))
        for out, (var, st) in zip(outs[:k], sources):
            if var != self.var[out]:  # else the body wrote it there (`_carries_in_place`)
                loop += self._copy_into(self.var[out], var, st)
        if loop[-1].startswith("# this step's outputs"):
            loop.pop()  # nothing to copy: every next carry was written in place
        lines.append(f"for {it} in range({steps}):")
        lines += ["    " + line for line in _indent_blocks(loop)]
        return lines

    # How a backend moves data in and out of a scan's body (the CPU's defaults: a step's
    # slice is a view, written back with `_copy_into`). The CUDA generator binds its views
    # once, before any step, so there a slice is a buffer of its own that each step copies
    # into and out of (graphdl/backends/cuda/codegen.py).
    def _step_buffer(self, name: str, t: TensorType, ctx) -> list[str]:
        """Lines run before the loop that give body input ``name`` (one step's slice of a
        sequence, type ``t``) a buffer: none where `_read_step` binds a view."""
        return []

    def _read_step(self, dst: str, seq: str, step: str, t: TensorType, ctx) -> list[str]:
        """One step's lines binding ``dst`` (type ``t``) to slice ``step`` of ``seq``."""
        return [f"{dst} = {seq}{_step_index(step, t)}"]

    def _write_step(self, out: str, step: str, src: str, t: TensorType, ctx) -> list[str]:
        """One step's lines copying ``src`` (type ``t``) into slice ``step`` of ``out``."""
        return self._copy_into(out + _step_index(step, t), src, t)

    def _loop_buffer(self, name: str, t: TensorType, ctx) -> list[str]:
        """Lines run before the loop that bind ``name`` to a buffer of type ``t`` the loop
        alone uses."""
        return self._bind_output(name, t, ctx)

    def _walk_body(self, ctx) -> tuple[list[str], list[str]]:
        """A scan body's lines: (buffer allocations, run once before the loop; the lines of
        one step, in schedule order)."""
        pre: list[str] = []
        step: list[str] = []
        for nid in self.order:
            if self.g.node(nid)["op"] in SOURCES:
                continue
            step.append(self._node_comment(nid))
            for v in [Value(nid, i) for i in range(self.g.num_outputs(nid))]:
                pre += self._allocate(v, ctx)
            step += self._emit_node(nid, ctx)
        return pre, step

    def _step_args(self) -> list[str]:
        """The generated entry point's parameters, in `StepSignature` order."""
        return ([self.var[v] for v in self.sources]
                + [f"arena_{d}" for d in self.sig.arenas] + ["off"])

    @staticmethod
    def _loop_inputs(members: list[dict], in_vars: list[str], in_types: list[TensorType]):
        """The inputs a fused loop reads, numbered in the order its body first reads them
        (an epilogue head's own inputs are not read): two groups that compute the same
        thing from inputs listed in another order get the same kernel text, emitted once,
        and their calls pass the arguments in that order. Returns (members with their
        input references renumbered, in_vars, in_types)."""
        order: list[int] = []
        for m in members:
            for ref in m["inputs"]:
                if ref[0] == "input" and ref[1] not in order:
                    order.append(ref[1])
        remap = {old: new for new, old in enumerate(order)}
        members = [
            {**m, "inputs": [["input", remap[r[1]]] if r[0] == "input" else r for r in m["inputs"]]}
            for m in members
        ]
        return members, [in_vars[i] for i in order], [in_types[i] for i in order]

    @staticmethod
    def _divisors(members: list[dict]) -> list[str]:
        """The expressions of the run-time factors of a loop (``c / (N * ...)`` of a
        ``mul_scalar`` dividing by symbolic dims), in the order `_scalar_chain` numbers
        them ``k0, k1, ...``."""
        exprs = []
        for m in members:
            if m["op"] == "mul_scalar" and m["attrs"]["div"]:
                dims = " * ".join(dim_expr(d) for d in m["attrs"]["div"])
                exprs.append(f"{m['attrs']['c']!r} / ({dims})")
        return exprs

    def _scalar_chain(self, members: list[dict], read: dict, store: str, params: list[str]):
        """The body of a fused elementwise loop: ``t{j} = K.s_<op>(...)`` per member
        (``K.s32_<op>`` for a float32 member with a float32 scalar function, where the
        backend has them: `FLOAT32_SCALARS`; its inputs read with ``read``, its scalar
        attributes as literals, a division factor as a run-time parameter ``k{i}``), then
        ``store = t{last}``; returns (lines, params with the ``k{i}`` appended)."""
        runtime_k = 0
        body = []
        for j, m in enumerate(members):
            opdef = get_op(m["op"])
            args = []
            for ref in m["inputs"]:
                args.append(read[ref[1]] if ref[0] == "input" else f"t{ref[1]}")
            for a in opdef.scalar_attrs:
                if m["op"] == "mul_scalar" and m["attrs"]["div"]:
                    args.append(f"k{runtime_k}")
                    runtime_k += 1
                else:
                    args.append(repr(m["attrs"][a]))
            prefix = "s_"
            if (self.FLOAT32_SCALARS and opdef.scalar_f32 is not None
                    and TensorType.from_json(m["type"]).dtype == "float32"):
                prefix = "s32_"
            call = f"K.{prefix}{m['op']}({', '.join(args)})"
            if m["op"] == "cast":
                # the scalar function is the identity: the conversion is the typed constructor
                call = f"{NP_DTYPE[m['attrs']['dtype']]}({call})"
            body.append(f"t{j} = {call}")
        body.append(f"{store} = t{len(members) - 1}")
        return body, params + [f"k{i}" for i in range(runtime_k)]

    def _register_loop(self, decorator: str, src_body: list[str], params: list[str],
                       members: list[dict]) -> str:
        """The name of the loop kernel with this body and these parameters: emitted once,
        reused by every fused group that generates the same source (its inputs numbered by
        `_loop_inputs`, so the order a group lists them in does not matter)."""
        key = "\n".join(src_body) + "|" + ",".join(params)
        if key in self.loop_kernels:
            return self.loop_kernels[key]
        name = f"loop_{len(self.loop_kernels)}"
        self.loop_kernels[key] = name
        ops = ", ".join(m["op"] for m in members)
        text = [decorator, f"def {name}({', '.join(params)}):", f"    # fused: {ops}"]
        text += ["    " + line for line in src_body]
        self.loop_sources.append("\n".join(text))
        return name

    def _declare_sources(self) -> None:
        g = self.g
        for kind, field_ in (("input", "inputs"), ("param", "params"), ("state", "state")):
            for name, nid in sorted(g.named(kind).items()):
                getattr(self.sig, field_).append(name)
                self.sources.append(Value(nid))
        for nid in sorted(g.nodes_by_op("const")):
            self.sig.consts.append(nid)
            self.sources.append(Value(nid))
        for v in self.sources:
            self.var[v] = self.names[v]

    def _symbol_bindings(self) -> list[str]:
        seen = {}
        for name, nid in sorted(self.g.named("input").items()):
            for axis, d in enumerate(self.g.type_of(Value(nid)).shape):
                if isinstance(d, str) and d not in seen:
                    seen[d] = f"{dim_expr(d)} = " + self.SHAPE_READ.format(
                        f"{self.var[Value(nid)]}.shape[{axis}]")
        for nid in self.g.nodes():
            for t in self.g.node(nid)["types"]:
                for d in t.symbols() - set(seen):
                    raise ValueError(f"symbolic dim {d} of {self.g.describe(nid)} is bound by "
                                     "no graph input: its size is unknown at run time")
        return list(seen.values())

    def _size_expr(self, t: TensorType) -> str:
        if not t.shape:
            return "1"
        return " * ".join(dim_expr(d) for d in t.shape)


@dataclass(frozen=True)
class SlicedRead(TensorType):
    """A loop input read through a slice fused into the loop (`graphdl.passes.fuse`): the
    loop is passed the whole value and reads the slice's elements, of type (``shape``,
    ``dtype``), at ``offsets`` (one per axis) from the index it would read a value of that
    type at."""

    offsets: tuple[int, ...] = ()


def is_flat_loop(in_types: list[TensorType], out_t: TensorType) -> bool:
    """Whether every input of an elementwise loop has the output's shape or is a scalar,
    and none is a sliced read: then the loop runs over flat 1-D views, with no index
    arithmetic."""
    return all((t.shape == out_t.shape or t.rank == 0) and not isinstance(t, SlicedRead)
               for t in in_types)


def broadcast_index(t: TensorType, out_t: TensorType, loop_idx: list[str]) -> str:
    """The index an elementwise loop over ``out_t`` (loop variables ``loop_idx``) reads an
    input of type ``t`` at: aligned from the right, a broadcast axis at 0, each axis moved
    by its offset for a `SlicedRead`."""
    if t.rank == 0:
        return "0"
    offsets = t.offsets if isinstance(t, SlicedRead) else (0,) * t.rank
    idx = []
    for k in range(t.rank):
        j = out_t.rank - t.rank + k
        at = "0" if t.shape[k] == 1 and out_t.shape[j] != 1 else loop_idx[j]
        if offsets[k]:
            at = str(offsets[k]) if at == "0" else f"{at} + {offsets[k]}"
        idx.append(at)
    return ", ".join(idx)


def _layer_prefix(layer: str | None) -> str:
    return f"{_ident(layer)}_" if layer else ""


def _all_types(g: Graph) -> list[TensorType]:
    return [t for nid in g.nodes() for t in g.node(nid)["types"] if t is not None]


def _step_index(step: str, t: TensorType) -> str:
    """The index of one step's slice of a sequence whose slices have type ``t``: a rank-0
    value is a [1] array in generated code, so its slice is ``seq[t:t + 1]``."""
    return f"[{step}:{step} + 1]" if t.rank == 0 else f"[{step}]"


def _indent_blocks(lines: list[str]) -> list[str]:
    return [s for line in lines for s in line.split("\n")]


def _sliced_reads(members: list[dict], in_vars: list[str], in_types: list[TensorType]):
    """A fused loop's slice members (`graphdl.passes.fuse`: each reads an input of the
    group) as inputs of their own: the sliced value again, typed as a `SlicedRead` at the
    slice's offset, so the loop reads it in place instead of a copy. Returns (members less
    the slices, their references renumbered; in_vars; in_types)."""
    in_vars, in_types = list(in_vars), list(in_types)
    ref_of: dict[int, list] = {}  # member index -> its reference in the new list
    kept: list[dict] = []
    for j, m in enumerate(members):
        if m["op"] != "slice":
            ref_of[j] = ["member", len(kept)]
            kept.append(m)
            continue
        (src,) = m["inputs"]  # ["input", i]: fuse keeps a slice's source outside the group
        t = TensorType.from_json(m["type"])
        offsets = [0] * t.rank
        offsets[m["attrs"]["axis"] % t.rank] = m["attrs"]["start"]
        in_vars.append(in_vars[src[1]])
        in_types.append(SlicedRead(t.shape, t.dtype, tuple(offsets)))
        ref_of[j] = ["input", len(in_types) - 1]
    out = []
    for m in kept:
        refs = []
        for r in m["inputs"]:
            if r[0] == "member":
                new = ref_of[r[1]]
                refs.append(new if new[0] == "input" else ["member", new[1], r[2]])
            else:
                refs.append(r)
        out.append({**m, "inputs": refs})
    return out, in_vars, in_types


def _carries_in_place(body: Graph, c_ids: list[int]) -> dict[Value, int]:
    """The next carries a scan's body can write straight into their carry's buffer
    (value -> carry index), saving the copy at the end of every step: a value of its own
    (not a view, not an input passed on) that is the next value of that carry alone, whose
    carry as it entered the step is not returned (saved for BPTT) and is read by no node
    after the one writing the value, nor by that node unless it is an elementwise loop,
    which reads each element before it writes it."""
    order = body.meta.get("schedule") or body.topo_order()
    pos = {n: i for i, n in enumerate(order)}
    plan = body.meta["memory_plan"]["values"]
    names = body_output_names(body, len(c_ids))
    nexts = [body.outputs[n] for n in names[:len(c_ids)]]
    returned = set(body.outputs.values())
    found: dict[Value, int] = {}
    for i, (b, v) in enumerate(zip(c_ids, nexts)):
        old = Value(b)
        if (body.op_of(v.node) in SOURCES or nexts.count(v) != 1 or old in returned
                or not plan.get(f"{v.node}:{v.index}", {}).get("output")):
            continue
        readers = {c for c, _ in body.consumers(old)}
        if any(pos[r] > pos[v.node] for r in readers):
            continue
        if v.node in readers and not _reads_elementwise(body, v.node, old):
            continue
        found[v] = i
    return found


def _outputs_in_place(body: Graph, k: int, bound: dict) -> dict[Value, int]:
    """The per-step outputs a scan's body can compute straight into their slot ``out[t]``
    (value -> the scan's output index), saving a copy per output at every step (an LSTM's
    forward step returns seven values for BPTT): a value of its own (not a body input, not
    a view), returned once per step, not already written into a carry's buffer (`bound`;
    a next carry that is not is copied from ``out[t]``)."""
    plan = body.meta["memory_plan"]["values"]
    names = body_output_names(body, k)
    returned = [body.outputs[n] for n in names]
    found: dict[Value, int] = {}
    for j in range(k, len(names)):
        v = returned[j]
        if (body.op_of(v.node) in SOURCES or returned[k:].count(v) != 1 or v in bound
                or not plan.get(f"{v.node}:{v.index}", {}).get("output")):
            continue
        found[v] = j
    return found


def _reads_elementwise(g: Graph, nid: int, x: Value) -> bool:
    """Whether node ``nid`` is an elementwise loop that reads ``x`` only at the index it
    writes (not through a slice fused into it, not before an epilogue's head writes)."""
    nd = g.node(nid)
    if nd["op"] != "fused" or nd["attrs"]["kind"] != "elementwise":
        return False
    slots = {i for i, v in enumerate(g.inputs_of(nid)) if v == x}
    return not any(m["op"] == "slice" and m["inputs"][0][0] == "input"
                   and m["inputs"][0][1] in slots for m in nd["attrs"]["members"])


def _rebase_members(members: list[dict], n_ext: int) -> list[dict]:
    """Epilogue members without their head: the head's value becomes input ``n_ext``."""
    out = []
    for m in members[1:]:
        refs = []
        for r in m["inputs"]:
            if r[0] == "member" and r[1] == 0:
                refs.append(["input", n_ext])
            elif r[0] == "member":
                refs.append(["member", r[1] - 1, r[2]])
            else:
                refs.append(r)
        out.append({**m, "inputs": refs})
    return out


def _one_line(text) -> str:
    """``text`` fit for one line of the header docstring: no line breaks, no double quotes
    (which could end the docstring), forward slashes."""
    return " ".join(str(text).replace("\\", "/").replace('"', "'").split())
