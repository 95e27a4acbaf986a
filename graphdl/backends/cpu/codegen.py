"""CPU code generation: a planned graph -> Python source of Numba kernels and a step function.

The module has one generated loop kernel per fused elementwise group (identical kernels
are emitted once) and one `step` function, itself compiled with Numba, that binds the
symbolic dims from its inputs, takes views of the arenas for intermediate values (as the
memory plan says), and calls the kernels in schedule order. Non-elementwise ops write their
own calls through their `emit_cpu`, against the kernels in `library` (``K.``).

Everything the numbers depend on (inputs, parameters, state, constants, arenas and the
slot offsets) is an argument of `step`, never a global baked into the source, so the
source (and its Numba cache) depends only on the graph's structure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from graphdl.errors import Diagnostic, GraphdlError
from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.ops.registry import FASTMATH as _FASTMATH_FLAGS
from graphdl.ops.registry import get_op

# the kernels' fast-math flags, as a literal in generated code (NaN checks keep working)
FASTMATH = "{" + ", ".join(f'"{f}"' for f in sorted(_FASTMATH_FLAGS)) + "}"
SOURCES = ("input", "param", "state", "const")
NP_DTYPE = {"float32": "np.float32", "float64": "np.float64", "int64": "np.int64", "bool": "np.bool_"}


def dim_expr(d) -> str:
    """A dim in generated code: an int literal, or the variable bound to a symbol (prefixed,
    so a symbol named K or np cannot shadow the kernel module or NumPy)."""
    return f"sym_{d}" if isinstance(d, str) else str(d)


def _ident(name: str) -> str:
    return re.sub(r"\W", "_", name)


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

    def __init__(self, gen: CpuCodegen):
        self.gen = gen
        self._fresh = 0

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

    def __init__(self, g: Graph, title: str = "program"):
        self.g = g
        self.title = title
        self.var: dict[Value, str] = {}
        self.sig = StepSignature()
        self.loop_kernels: dict[str, str] = {}  # source body -> kernel name
        self.loop_sources: list[str] = []

    def _emit_node(self, nid: int, ctx) -> list[str]:
        """The lines of one scheduled node: a fused group (its head through the head op's
        emitter, then one generated loop), an op with an emitter of this backend
        (`_emitter`), or an elementwise op as a one-member loop; else `_missing_kernel`."""
        g = self.g
        nd = g.node(nid)
        ins = g.inputs_of(nid)
        outs = [Value(nid, i) for i in range(g.num_outputs(nid))]
        if nd["op"] == "fused":
            members = nd["attrs"]["members"]
            lines = []
            in_vars = [self.var[v] for v in ins]
            in_types = [g.type_of(v) for v in ins]
            if nd["attrs"]["kind"] == "epilogue":
                head = members[0]
                head_ins = [ins[r[1]] for r in head["inputs"]]
                # the head writes the fused output; the loop then finishes it in place
                lines += self._emitter(head["op"])(ctx, head["attrs"], head_ins, [outs[0]])
                in_vars = in_vars + [self.var[outs[0]]]
                in_types = in_types + [TensorType.from_json(head["type"])]
                members = _rebase_members(members, len(ins))
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

    def _step_args(self) -> list[str]:
        """The generated entry point's parameters, in `StepSignature` order."""
        sig = self.sig
        return (
            [f"in_{_ident(n)}" for n in sig.inputs]
            + [f"pa_{_ident(n)}" for n in sig.params]
            + [f"st_{_ident(n)}" for n in sig.state]
            + [f"c{n}" for n in sig.consts]
            + [f"arena_{d}" for d in sig.arenas]
            + ["off"]
        )

    @staticmethod
    def _scalar_chain(members: list[dict], read: dict, store: str, params: list[str]):
        """The body of a fused elementwise loop: ``t{j} = K.s_<op>(...)`` per member (its
        inputs read with ``read``, its scalar attributes as literals, a division factor as
        a run-time parameter ``k{i}``), then ``store = t{last}``; returns (lines, params
        with the ``k{i}`` appended)."""
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
            call = f"K.s_{m['op']}({', '.join(args)})"
            if m["op"] == "cast":
                # the scalar function is the identity: the conversion is the typed constructor
                call = f"{NP_DTYPE[m['attrs']['dtype']]}({call})"
            body.append(f"t{j} = {call}")
        body.append(f"{store} = t{len(members) - 1}")
        return body, params + [f"k{i}" for i in range(runtime_k)]

    def _register_loop(self, decorator: str, src_body: list[str], params: list[str],
                       members: list[dict]) -> str:
        """The name of the loop kernel with this body and these parameters: emitted once,
        reused by every fused group that generates the same source."""
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
                self.var[Value(nid)] = f"{kind[:2]}_{_ident(name)}"
                getattr(self.sig, field_).append(name)
        for nid in sorted(g.nodes_by_op("const")):
            self.var[Value(nid)] = f"c{nid}"
            self.sig.consts.append(nid)

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


class CpuCodegen(GraphSource):

    # ------------------------------------------------------------ values
    def _allocate(self, v: Value, ctx: EmitCtx) -> list[str]:
        plan = self.g.meta["memory_plan"]["values"].get(f"{v.node}:{v.index}")
        t = self.g.type_of(v)
        name = f"v{v.node}_{v.index}" if v.index else f"v{v.node}"
        self.var[v] = name
        shape = ctx.shape_tuple(ctx.shape(v))
        if plan is not None and plan.get("view"):
            return []  # the view op binds it; `generate` copies it out
        if plan is None or "output" in plan:
            return [f"{name} = np.empty({shape}, {NP_DTYPE[t.dtype]})"]
        if "alias" in plan:
            return []  # the view op's emitter binds it
        if "inplace" in plan:
            src = self.var[Value(*map(int, plan["inplace"].split(":")))]
            return [f"{name} = {src}.reshape({shape})"]
        slot = plan["slot"]
        arena = f"arena_{t.dtype}"
        if t.dtype not in self.sig.arenas:
            self.sig.arenas.append(t.dtype)
        return [f"{name} = {arena}[off[{slot}]:off[{slot}] + {self._size_expr(t)}].reshape({shape})"]

    # ------------------------------------------------------------ generation
    def generate(self) -> tuple[str, StepSignature]:
        g = self.g
        ctx = EmitCtx(self)
        self._declare_sources()
        body: list[str] = []
        order = g.meta.get("schedule") or g.topo_order()
        for nid in order:
            nd = g.node(nid)
            if nd["op"] in SOURCES:
                continue
            outs = [Value(nid, i) for i in range(g.num_outputs(nid))]
            body.append(f"# %{nid} {nd['op']}  [{nd['phase']}] layer={nd['layer']} line={nd['line']}")
            for v in outs:
                body += self._allocate(v, ctx)
            body += self._emit_node(nid, ctx)
            for v in outs:
                if self.g.meta["memory_plan"]["values"].get(f"{v.node}:{v.index}", {}).get("view"):
                    body.append(f"{self.var[v]} = {self.var[v]}.copy()")
        # updates that could not be planned in place are copied back
        plan = g.meta["memory_plan"]["values"]
        for pid, v in sorted(g.updates.items()):
            p = plan.get(f"{v.node}:{v.index}", {})
            if "inplace" not in p:
                body.append(f"{self.var[Value(pid)]}[...] = {self.var[v]}")
        self.sig.outputs = sorted(g.outputs)
        rets = [self.var[g.outputs[k]] for k in self.sig.outputs]
        body.append("return (" + "".join(r + ", " for r in rets) + ")")
        return self._module(body), self.sig

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
        for m in members:
            if m["op"] == "mul_scalar" and m["attrs"]["div"]:
                dims = " * ".join(dim_expr(d) for d in m["attrs"]["div"])
                k = ctx.fresh("k")
                lines.append(f"{k} = {m['attrs']['c']!r} / ({dims})")
                runtime.append(k)
        # pass only the inputs the loop reads (an epilogue head's inputs are not read)
        used = sorted({r[1] for m in members for r in m["inputs"] if r[0] == "input"})
        remap = {old: new for new, old in enumerate(used)}
        members = [
            {**m, "inputs": [["input", remap[r[1]]] if r[0] == "input" else r for r in m["inputs"]]}
            for m in members
        ]
        in_vars = [in_vars[i] for i in used]
        in_types = [in_types[i] for i in used]
        name = self._loop_kernel(members, in_types, out_t)
        args = ", ".join(in_vars + [self.var[out]] + runtime)
        lines.append(f"{name}({args})")
        return lines

    def _loop_kernel(self, members, in_types: list[TensorType], out_t: TensorType) -> str:
        """Generate (or reuse) the loop kernel for a group of elementwise members."""
        n_in = len(in_types)
        params = [f"x{i}" for i in range(n_in)] + ["out"]
        flat = all(t.shape == out_t.shape or t.rank == 0 for t in in_types)
        lines = []
        if flat:
            lines.append("n = out.size")
            lines.append("o = out.reshape(n)")
            for i, t in enumerate(in_types):
                lines.append(f"f{i} = x{i}.reshape(x{i}.size)")
            loop_idx = ["i"]
            lines.append("for i in range(n):")
            read = {i: (f"f{i}[0]" if t.rank == 0 and out_t.rank != 0 else f"f{i}[i]") for i, t in enumerate(in_types)}
            store = "o[i]"
        else:
            r = out_t.rank
            dims = [f"d{j}" for j in range(r)]
            lines.append(f"{', '.join(dims)}{',' if r == 1 else ''} = out.shape")
            loop_idx = [f"i{j}" for j in range(r)]
            for j in range(r):
                lines.append("    " * j + f"for i{j} in range(d{j}):")
            read = {}
            for i, t in enumerate(in_types):
                if t.rank == 0:
                    read[i] = f"x{i}[0]"
                    continue
                idx = []
                for k in range(t.rank):
                    j = r - t.rank + k
                    idx.append("0" if t.shape[k] == 1 and out_t.shape[j] != 1 else loop_idx[j])
                read[i] = f"x{i}[{', '.join(idx)}]"
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
            f'"""Generated by graphdl for {self.title}. Do not edit: regenerated from the graph."""',
            "import numpy as np",
            "from numba import njit",
            "from graphdl.backends.cpu import library as K",
            "",
        ]
        step = ["@njit(cache=True, error_model='numpy')", f"def step({', '.join(args)}):"]
        step += ["    " + line for line in self._symbol_bindings()]
        step += ["    " + line if line else "" for line in _indent_blocks(body)]
        return "\n".join(header + ["\n\n".join(self.loop_sources), "", ""] + step) + "\n"


def _indent_blocks(lines: list[str]) -> list[str]:
    return [s for line in lines for s in line.split("\n")]


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
