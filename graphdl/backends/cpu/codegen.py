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

from graphdl.backends.common.codegen import (
    NP_DTYPE,
    SOURCES,
    EmitCtx,
    GraphSource,
    StepSignature,
    _indent_blocks,
    dim_expr,
)
from graphdl.backends.cpu.library import FASTMATH as _FASTMATH_FLAGS
from graphdl.errors import Diagnostic, GraphdlError
from graphdl.ir.graph import Value
from graphdl.ir.types import TensorType
from graphdl.ops.registry import get_op

# the kernels' fast-math flags, as a literal in generated code (NaN checks keep working)
FASTMATH = "{" + ", ".join(f'"{f}"' for f in sorted(_FASTMATH_FLAGS)) + "}"


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
