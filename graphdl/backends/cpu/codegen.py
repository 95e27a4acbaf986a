"""CPU code generation: a planned graph -> Python source of Numba kernels and a step function.

The module has one generated loop kernel per fused elementwise group (identical kernels
are emitted once, whatever the order of their arguments) and one `step` function, itself
compiled with Numba, that binds the symbolic dims from its inputs, takes views of the arenas for intermediate values (as the
memory plan says), and calls the kernels in schedule order. Non-elementwise ops write their
own calls through their `emit_cpu`, against the kernels in `library` (``K.``).

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
    EmitCtx,
    GraphSource,
    StepSignature,
    _indent_blocks,
    broadcast_index,
    dim_expr,
    is_flat_loop,
)
from graphdl.backends.cpu.library import FASTMATH as _FASTMATH_FLAGS
from graphdl.errors import Diagnostic, GraphdlError
from graphdl.ir.graph import Value
from graphdl.ir.types import TensorType
from graphdl.ops.registry import get_op

# the kernels' fast-math flags, as a literal in generated code (NaN checks keep working)
FASTMATH = "{" + ", ".join(f'"{f}"' for f in sorted(_FASTMATH_FLAGS)) + "}"


class CpuCodegen(GraphSource):

    FLOAT32_SCALARS = True

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
        body = self._walk(EmitCtx(self))
        rets = [self.var[g.outputs[k]] for k in self.sig.outputs]
        body.append("return (" + "".join(r + ", " for r in rets) + ")")
        return self._module(body), self.sig

    def _keep_view(self, v: Value, ctx: EmitCtx) -> list[str]:
        return [f"{self.var[v]} = {self.var[v]}.copy()"]

    def _emit_scan(self, nid: int, ctx: EmitCtx) -> list[str]:
        """A scan's loop as a function of its own (`_as_function`), called by the step; a
        scan the schedule paired with it (`graphdl.passes.schedule.pair_loops`) is emitted
        here too, and the two run on two threads (`_parallel`)."""
        call = self._as_function(super()._emit_scan(nid, ctx))
        partner = dict(self.g.meta.get("parallel", [])).get(nid) if self.parent is None else None
        if partner is None:
            return call
        lines = [self._node_comment(partner) + "  (beside the scan above, on a second thread)"]
        for i in range(self.g.num_outputs(partner)):
            lines += self._allocate(Value(partner, i), ctx)
        other = self._as_function(super()._emit_scan(partner, ctx))
        self.emitted.add(partner)
        return lines + self._parallel(call + other)

    def _parallel(self, calls: list[str]) -> list[str]:
        """One call that runs the loop calls ``calls`` (``scan_<i>(args)``) at the same time:
        a module-level ``par_<i>`` whose prange gives each call a thread (deduplicated by its
        text, as the loops)."""
        parsed = [re.fullmatch(r"(\w+)\((.*)\)", c).groups() for c in calls]
        names: list[str] = []
        for _, args in parsed:
            for a in (x.strip() for x in args.split(",")):
                if a not in names:
                    names.append(a)
        rename = {n: f"v{i}" for i, n in enumerate(names)}
        body = [f"for i in prange({len(calls)}):"]
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

    def _as_function(self, lines: list[str]) -> list[str]:
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
        rename = {n: f"v{i}" for i, n in enumerate(free + [n for n in local if n in bound])}
        body = "\n".join(line for line in _rename(text, rename).split("\n")
                         if not line.lstrip().startswith("# %"))
        params = ", ".join(rename[n] for n in free)
        key = f"scan|{params}|{body}"
        if key not in self.loop_kernels:
            name = f"scan_{sum(k.startswith('scan|') for k in self.loop_kernels)}"
            self.loop_kernels[key] = name
            src = ["@njit(cache=True, error_model='numpy')", f"def {name}({params}):",
                   "    # a scan's loop over time (graphdl.ir.scan)"]
            src += ["    " + line if line else "" for line in body.split("\n")]
            self.loop_sources.append("\n".join(src))
        return [f"{self.loop_kernels[key]}({', '.join(free)})"]

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
            "",
        ]
        step = ["@njit(cache=True, error_model='numpy')", f"def step({', '.join(args)}):"]
        step += ["    " + line for line in self._symbol_bindings()]
        step += ["    " + line if line else "" for line in _indent_blocks(body)]
        return "\n".join(header + ["\n\n".join(self.loop_sources), "", ""] + step) + "\n"


_MODULE_NAME = re.compile(r"(loop|scan|par)_\d+")


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
