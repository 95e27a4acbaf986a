"""What the code generators of both backends share: `GraphSource` (the walk over a planned
graph: source variables, symbol binding, fused loops from scalar functions, the step's
parameters), `EmitCtx` (what an op's emitter sees) and `StepSignature`.

A backend subclasses `GraphSource` with how it allocates values, writes a loop kernel and
assembles its module (`graphdl.backends.cpu.codegen.CpuCodegen`,
`graphdl.backends.cuda.codegen.CudaCodegen`).
"""


from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.ops.registry import get_op

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

    def __init__(self, gen: GraphSource):
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
