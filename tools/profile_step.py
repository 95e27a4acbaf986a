"""Where a CPU step's time goes: each graph node of a compiled program timed on its real
shapes, summed per node, per op (or kernel) and per phase.

    python tools/profile_step.py specs/bench_transformer.yaml            # the train step
    python tools/profile_step.py SPEC --mode eval --batch 512 --top 30
    python tools/profile_step.py SPEC --by kernel --repeat 50

How: the program is compiled as usual (`graphdl.api.Model`, the kernel cache), then the
body of its generated ``step`` (one Numba function) is run as plain Python, statement by
statement, against the same jitted kernels (``K.<kernel>``, the module's ``loop_<i>``) and
the same arenas and arguments as `Program.__call__`, with a clock read after each graph
node's statements (the ``# %<id> <op>`` comment the code generator writes above them).
A node's time therefore includes one Python-to-Numba dispatch per kernel call (a few
microseconds; the report prints the measured cost of one dispatch and the number of
calls), and a NumPy expression of the step (``x[...] = np.transpose(...)``, ``x[...] = 0``)
runs in NumPy instead of Numba's compiled version. The report also gives the compiled
step's own time, so the sum of the nodes can be compared with it.

FLOPs per node come from `graphdl.ops.cost` (a fused node counts its members); GFLOP/s is
shown for nodes that compute more than 1 MFLOP.

A large step is split into chunk functions (`chunk_<i>`) whose calls the per-node report
cannot look into. ``--calls`` times every jitted call instead, summed per callee: the step
and its chunks run as Python, every kernel (``K.<name>``) and generated function
(``loop_<i>``, ``scan_<i>``, ``par_<i>``, ``gemm_<i>``) is timed around its call:

    python tools/profile_step.py specs/bench_transformer.yaml --calls
    python tools/profile_step.py specs/bench_lstm.yaml --calls --into-loops   # inside scans

``--into-loops`` also runs the scans and parallel pairs as Python (their pairs one after
the other), so the kernels they call are timed; the step-level kernels' times are then
less trustworthy (the threads sleep where the pairs would have kept them busy).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graphdl.api import Model
from graphdl.backends.cpu import fpenv
from graphdl.bench import random_feeds
from graphdl.ops.cost import node_flops
from graphdl.spec import load_spec

_NODE_COMMENT = re.compile(r"^\s*# %(\d+) (\w+)\s+\[(\w+)\]\s+layer=(\S+)")


def _step_function(source: str) -> tuple[ast.FunctionDef, list[str]]:
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "step":
            return node, source.split("\n")
    raise SystemExit("no step function in the generated source")


def instrumented_step(source: str):
    """The generated step's body as Python source of ``step_profiled(_clock, _marks, ...)``
    that appends ``(node id, clock())`` after each node's statements, and the nodes'
    (op, phase, layer) by id."""
    fn, lines = _step_function(source)
    # the node comment that precedes each top-level statement of the step
    comments = {}
    for i, line in enumerate(lines, start=1):
        m = _NODE_COMMENT.match(line)
        if m:
            comments[i] = (int(m.group(1)), m.group(2), m.group(3), m.group(4))
    nodes = {}
    out = [f"def step_profiled(_clock, _marks, {', '.join(a.arg for a in fn.args.args)}):"]
    current = None
    starts = sorted(comments)
    for stmt in fn.body:
        owner = None
        for ln in starts:
            if ln < stmt.lineno:
                owner = comments[ln]
            else:
                break
        nid = owner[0] if owner else -1
        if owner:
            nodes[nid] = owner[1:]
        if nid != current and current is not None:
            out.append(f"    _marks.append(({current}, _clock()))")
        current = nid
        text = "\n".join(lines[stmt.lineno - 1:stmt.end_lineno])
        first_indent = len(lines[stmt.lineno - 1]) - len(lines[stmt.lineno - 1].lstrip())
        for sub in text.split("\n"):
            out.append("    " + sub[first_indent:])
    # the return statement is the last one; mark before it
    ret = out.pop()
    out.append(f"    _marks.append(({current}, _clock()))")
    out.append(ret)
    return "\n".join(out), nodes


def _fused_label(graph, nid: int) -> str:
    nd = graph.node(nid)
    if nd["op"] != "fused":
        return nd["op"]
    ops = [m["op"] for m in nd["attrs"]["members"]]
    return "fused[" + ",".join(ops) + "]"


def _dispatch_cost() -> float:
    """Seconds of one Python call of a jitted kernel with a few array arguments."""
    from graphdl.backends.cpu import library as K

    a = np.zeros(64, np.float32)
    b = np.zeros(64, np.float32)
    c = np.zeros(64, np.float32)
    K.copy_flat(a, b)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        K.copy_flat(a, b)
        K.copy_flat(b, c)
    return (time.perf_counter() - t0) / (2 * n)


def _step_seconds(program, feeds: dict, seconds: float) -> float:
    """The compiled step's own time per call (as graphdl bench measures it)."""
    for _ in range(10):
        program(feeds)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        program(feeds)
        n += 1
    return (time.perf_counter() - t0) / n


def profile(spec_path: str, mode: str, batch: int | None, repeat: int, seconds: float):
    spec = load_spec(spec_path)
    model = Model(spec)
    c = model.compiled(mode)
    program = c.program
    graph = c.graph
    batch = int(batch or spec.train["batch_size"])
    feeds = random_feeds(spec, program, batch, np.random.default_rng(0))
    step_s = _step_seconds(program, feeds, seconds)

    src, nodes = instrumented_step(program.source)
    ns = {**vars(program.module), **fpenv.python_standins(run=True)}
    # the generated step's own statements, as Python (nothing else is executed)
    exec(compile(src, f"<profiled step of {program.source_path}>", "exec"), ns)  # noqa: S102
    fn = ns["step_profiled"]
    args = program.step_args(feeds)
    totals: dict[int, list[float]] = defaultdict(list)
    for r in range(repeat + 3):
        marks: list = []
        t_start = time.perf_counter()
        fn(time.perf_counter, marks, *args)
        if r < 3:  # warm-up: kernels not yet called with these types load from the cache
            continue
        prev = t_start
        for nid, t in marks:
            totals[nid].append(t - prev)
            prev = t
    # each node's median over the repeats
    med = {nid: float(np.median(v)) for nid, v in totals.items()}
    binding = {"N": batch}
    calls = {nid: 0 for nid in med}
    for line_nid, count in _kernel_calls(program.source).items():
        if line_nid in calls:
            calls[line_nid] = count
    return program, graph, step_s, med, nodes, binding, calls


_GENERATED = re.compile(r"(loop|scan|par|gemm|chunk)_\d+$")


def profile_calls(spec_path: str, mode: str, batch: int | None, repeat: int, seconds: float,
                  into_loops: bool, top: int) -> None:
    """Every jitted call of one step timed and summed per callee (`--calls`)."""
    import types

    spec = load_spec(spec_path)
    program = Model(spec).compiled(mode).program
    batch = int(batch or spec.train["batch_size"])
    feeds = random_feeds(spec, program, batch, np.random.default_rng(0))
    step_s = _step_seconds(program, feeds, seconds)
    module = program.module
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)

    def timed(name, fn):
        def call(*a):
            t = time.perf_counter()
            out = fn(*a)
            totals[name] += time.perf_counter() - t
            counts[name] += 1
            return out
        return call

    ns = {**vars(module), **fpenv.python_standins(run=True)}
    ns["K"] = types.SimpleNamespace(**{k: timed(k, getattr(module.K, k)) for k in dir(module.K)
                                       if not k.startswith("_") and callable(getattr(module.K, k))})
    ns["prange"] = range
    for name, fn in vars(module).items():
        if not _GENERATED.match(name):
            continue
        as_python = name.startswith("chunk") or (into_loops and name.split("_")[0] in
                                                 ("scan", "par", "gemm"))
        ns[name] = (types.FunctionType(fn.py_func.__code__, ns, name) if as_python
                    else timed(name, fn))
    step = types.FunctionType(module.step.py_func.__code__, ns, "step")
    args = program.step_args(feeds)
    for _ in range(3):  # kernels not yet called with these types load from the cache
        step(*args)
    totals.clear()
    counts.clear()
    t0 = time.perf_counter()
    for _ in range(repeat):
        step(*args)
    wall = (time.perf_counter() - t0) / repeat
    inside = sum(totals.values()) / repeat
    print(f"compiled step: {step_s * 1e3:.2f} ms ({1 / step_s:.1f} steps/s); run from Python: "
          f"{wall * 1e3:.2f} ms, {inside * 1e3:.2f} ms of it in the timed calls")
    print(f"\n{'share':>6} {'ms':>8} {'calls':>6}  callee")
    rows = sorted(totals.items(), key=lambda kv: -kv[1])
    for name, t in rows[:top]:
        print(f"{100 * t / repeat / inside:5.1f}% {t / repeat * 1e3:8.3f} "
              f"{counts[name] // repeat:6d}  {name}")


def _kernel_calls(source: str) -> dict[int, int]:
    """Kernel calls per node in the step (``K.<name>(`` and ``loop_<i>(``)."""
    fn, lines = _step_function(source)
    out: dict[int, int] = defaultdict(int)
    nid = -1
    for line in lines[fn.lineno:fn.end_lineno]:
        m = _NODE_COMMENT.match(line)
        if m:
            nid = int(m.group(1))
            continue
        out[nid] += len(re.findall(r"\b(?:K\.\w+|loop_\d+|scan_\d+|par_\d+)\(", line))
    return out


def _kernels_of(source: str) -> dict[int, str]:
    fn, lines = _step_function(source)
    out: dict[int, str] = {}
    nid = -1
    for line in lines[fn.lineno:fn.end_lineno]:
        m = _NODE_COMMENT.match(line)
        if m:
            nid = int(m.group(1))
            continue
        for k in re.findall(r"\b(K\.\w+|loop_\d+|scan_\d+|par_\d+)\(", line):
            out.setdefault(nid, k.replace("K.", ""))
        if nid not in out and "np.transpose" in line:
            out[nid] = "np.transpose"
    return out


def summary(program, graph, step_s, med, binding, calls) -> None:
    total = sum(med.values())
    dispatch = _dispatch_cost()
    n_calls = sum(calls.values())
    print(f"compiled step: {step_s * 1e3:.2f} ms ({1 / step_s:.1f} steps/s); "
          f"sum of nodes run from Python: {total * 1e3:.2f} ms over {len(med)} nodes, "
          f"{n_calls} kernel calls (one Python dispatch ~{dispatch * 1e6:.1f} us, "
          f"~{n_calls * dispatch * 1e3:.2f} ms of the sum)")
    total_flops = sum(node_flops(graph, nid, binding) for nid in med if nid >= 0)
    print(f"FLOPs per step: {total_flops / 1e9:.3f} G; at the compiled step's rate "
          f"{total_flops / step_s / 1e9:.1f} GFLOP/s")


def report(program, graph, med, nodes, binding, calls, by: str, top: int) -> None:
    """One table: the nodes' times summed by ``by``, largest first."""
    total = sum(med.values())
    flops_of = {nid: node_flops(graph, nid, binding) for nid in med if nid >= 0}
    kernels = _kernels_of(program.source)

    def key(nid):
        if nid < 0:
            return "(step prologue)"
        _, phase, layer = nodes[nid]
        if by == "op":
            return f"{_fused_label(graph, nid)} [{phase}]"
        if by == "kernel":
            return kernels.get(nid, "(views only)")
        if by == "phase":
            return phase
        if by == "layer":
            return layer
        return f"%{nid} {_fused_label(graph, nid)} [{phase}] {layer}"

    groups: dict[str, list] = defaultdict(lambda: [0.0, 0, 0, 0])
    for nid, t in med.items():
        g = groups[key(nid)]
        g[0] += t
        g[1] += 1
        g[2] += flops_of.get(nid, 0)
        g[3] += calls.get(nid, 0)
    rows = sorted(groups.items(), key=lambda kv: -kv[1][0])
    print(f"\n{'share':>6} {'ms':>8} {'nodes':>5} {'calls':>5} {'GFLOP/s':>8}  {by}")
    cum = 0.0
    for name, (t, count, fl, nc) in rows[:top]:
        cum += t
        gfs = f"{fl / t / 1e9:8.1f}" if fl > 1e6 and t > 0 else " " * 8
        print(f"{100 * t / total:5.1f}% {t * 1e3:8.3f} {count:5d} {nc:5d} {gfs}  {name}")
    rest = total - cum
    if len(rows) > top:
        print(f"{100 * rest / total:5.1f}% {rest * 1e3:8.3f}  ({len(rows) - top} more)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--mode", default="train",
                    choices=("train", "eval", "predict", "encode", "decode_step"))
    ap.add_argument("--batch", type=int, default=None, help="default: the spec's batch_size")
    ap.add_argument("--repeat", type=int, default=30, help="profiled steps (median per node)")
    ap.add_argument("--seconds", type=float, default=2.0,
                    help="how long to time the compiled step")
    ap.add_argument("--by", action="append", choices=("op", "kernel", "node", "phase", "layer"),
                    help="group by (repeatable; default: op, kernel and phase)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--calls", action="store_true",
                    help="time every jitted call, chunks included, summed per callee")
    ap.add_argument("--into-loops", action="store_true",
                    help="with --calls: also time the calls inside scans and parallel pairs")
    args = ap.parse_args()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if args.calls:
        profile_calls(args.spec, args.mode, args.batch, args.repeat, args.seconds,
                      args.into_loops, args.top)
        return 0
    program, graph, step_s, med, nodes, binding, calls = profile(
        args.spec, args.mode, args.batch, args.repeat, args.seconds)
    summary(program, graph, step_s, med, binding, calls)
    for by in args.by or ["op", "kernel", "phase"]:
        report(program, graph, med, nodes, binding, calls, by=by, top=args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
