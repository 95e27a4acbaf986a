"""The fused `attention` op alone vs its unfused composition: time and planned peak memory.

    python tools/bench_attention.py                     # T = 128, 512, 2048; N 1, H 4, D 16
    python tools/bench_attention.py --t 128 512 --causal --seconds 0.5 --rounds 5

For each sequence length T, four programs are compiled through `compile_graph` with static
shapes q, k, v [N, H, T, D] (float32):

- forward: ``attention(q, k, v)`` (graphdl/ops/attention.py: online softmax over key
  blocks, the T x T scores never held) vs `build_composition` (matmul -> mul_scalar ->
  attention_mask -> softmax -> matmul, the T x T scores and weights in the arena);
- forward + backward: out and the gradients of sum(out * w) with respect to q, k and v
  (q, k, v are parameters, w an input), the fused pair ``attention`` / ``attention_grad`` (which
  recomputes the weights from q, k and the row log-sum-exp) vs the composition's autodiff.

Time: the mean of back-to-back calls over ``--seconds``, the four programs of a T taking
turns block by block, the best block of ``--rounds`` reported (on a shared machine the
best block is the one least disturbed). Memory: `graphdl.passes.plan_memory.peak_bytes`,
the memory plan of the compiled program -- what `graphdl compile` prints as "planned peak
memory" (arena slots + parameters + returned outputs; arrays fed as inputs are the
caller's and not counted). FLOPs: `graphdl.ops.cost.flops`
(the composition's count includes the masked half of the scores under --causal; the fused
op's counts only the visible pairs). The two are checked to agree before timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.ops.attention import build_composition
from graphdl.ops.cost import flops
from graphdl.passes.autodiff import build_gradients
from graphdl.passes.plan_memory import peak_bytes

MIB = 1024 * 1024


def attention_graph(shape: tuple, *, fused: bool, backward: bool, causal: bool) -> Graph:
    """out = attention(q, k, v) fused or composed; with ``backward`` also dq, dk and dv of
    sum(out * w) (out stays an output, as in a training step where later layers read it:
    otherwise the composition's last matmul would be dead code)."""
    g = Graph()
    t = TensorType(shape, "float32")
    source = g.param if backward else g.input
    q, k, v = (source(name, t) for name in "qkv")
    if fused:
        nid = g.apply("attention", [q, k, v], {"causal": causal, "has_mask": False})
        out = Value(nid, 0)
    else:
        out = build_composition(g, q, k, v, causal=causal)
    g.outputs["out"] = out
    if not backward:
        return g
    w = g.input("w", t)
    loss = g.op("sum", g.op("mul", out, w))
    grads = build_gradients(g, loss, [q.node, k.node, v.node])
    for name, p in zip("qkv", (q, k, v)):
        g.outputs[f"d{name}"] = grads[p.node]
    return g


def _block(fn, seconds: float) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return elapsed / n


def best_times(fns: dict, seconds: float, rounds: int) -> dict:
    """The best mean call time of each function over ``rounds`` blocks, taking turns."""
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            time.sleep(0.05)
            best[k] = min(best[k], _block(fn, seconds))
    return best


def measure(t: int, n: int, heads: int, d: int, causal: bool, seconds: float,
            rounds: int) -> dict:
    """Times (s), planned peak bytes and FLOPs of the four programs at sequence length t."""
    shape = (n, heads, t, d)
    rng = np.random.default_rng(t)
    q, k, v, w = (rng.standard_normal(shape).astype(np.float32) for _ in range(4))
    programs, calls = {}, {}
    for fused in (True, False):
        for backward in (False, True):
            key = ("fused" if fused else "composed", "fwd+bwd" if backward else "fwd")
            g = attention_graph(shape, fused=fused, backward=backward, causal=causal)
            title = f"bench_attention_{key[0]}_{'bwd' if backward else 'fwd'}_{t}"
            prog = compile_graph(g, title=title)
            if backward:
                prog.bind_params({"q": q, "k": k, "v": v}, {})
                feeds = {"w": w}
            else:
                prog.bind_params({}, {})
                feeds = {"q": q, "k": k, "v": v}
            prog.warmup()
            programs[key] = prog
            calls[key] = (lambda p=prog, f=feeds: p(f))
    for what, names in (("fwd", ("out",)), ("fwd+bwd", ("out", "dq", "dk", "dv"))):
        a, b = calls["fused", what](), calls["composed", what]()
        for name in names:
            x, y = np.asarray(a[name]), np.asarray(b[name])
            err = float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-30))
            if err > 1e-3:
                raise SystemExit(f"T={t} {what} {name}: fused and composed differ "
                                 f"(relative error {err:.2e})")
    times = best_times(calls, seconds, rounds)
    return {key: {"seconds": times[key], "peak_bytes": peak_bytes(prog.graph, {}),
                  "flops": flops(prog.graph, {})}
            for key, prog in programs.items()}


def print_table(rows: dict) -> None:
    head = (f"{'T':>5} | {'pass':<8} | {'fused ms':>9} | {'composed ms':>11} | {'speedup':>7} | "
            f"{'fused peak MiB':>14} | {'composed peak MiB':>17} | {'memory ratio':>12} | "
            f"{'fused GFLOP/s':>13}")
    print(head)
    print("-" * len(head))
    for t, res in rows.items():
        for what in ("fwd", "fwd+bwd"):
            f, c = res["fused", what], res["composed", what]
            speedup = c["seconds"] / f["seconds"]
            memory = c["peak_bytes"] / f["peak_bytes"]
            print(f"{t:>5} | {what:<8} | {f['seconds'] * 1e3:>9.3f} | "
                  f"{c['seconds'] * 1e3:>11.3f} | {speedup:>6.2f}x | "
                  f"{f['peak_bytes'] / MIB:>14.2f} | {c['peak_bytes'] / MIB:>17.2f} | "
                  f"{memory:>11.1f}x | {f['flops'] / f['seconds'] / 1e9:>13.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--t", type=int, nargs="+", default=[128, 512, 2048],
                    help="sequence lengths (queries = keys)")
    ap.add_argument("--batch", type=int, default=1, help="N")
    ap.add_argument("--heads", type=int, default=4, help="H")
    ap.add_argument("--dim", type=int, default=16,
                    help="D per head (16: the bench transformer's 64 / 4 heads)")
    ap.add_argument("--causal", action="store_true", help="causal mask (default: none)")
    ap.add_argument("--seconds", type=float, default=0.5, help="length of a timed block")
    ap.add_argument("--rounds", type=int, default=3, help="blocks per program (best is kept)")
    args = ap.parse_args()
    load = os.getloadavg()
    print(f"attention: N={args.batch}, H={args.heads}, D={args.dim}, "
          f"{'causal' if args.causal else 'no mask'}, float32; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs", flush=True)
    rows = {}
    for t in args.t:
        rows[t] = measure(t, args.batch, args.heads, args.dim, args.causal, args.seconds,
                          args.rounds)
        print(f"T={t} measured", flush=True)
    print_table(rows)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
