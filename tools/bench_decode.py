"""Greedy decoding with cached keys and values vs re-running the model over the prefix.

    python tools/bench_decode.py [--spec specs/bench_transformer.yaml] [--batch 1 32] [--rounds 5]

Two ways to decode the decode input's 32 tokens greedily, with the same (initial) weights:

- cached: `Model.decode` (graphdl/runtime/decode.py): the ``encode`` program once (the
  encoder, and each cross-attention's keys and values projected from its output), then
  one ``decode_step`` call per token, which feeds the previous token and every causal
  self-attention's keys and values so far and attends to them (a token costs O(T));
- re-run: the ``predict`` program (the whole model, one forward pass) called once per
  token, tgt_in holding BOS and the tokens decoded so far (PAD after: the causal mask keeps
  later positions out), the next token the argmax of the logits at the current position.
  The predict program's shapes are fixed, so every call runs all 32 positions, and it runs
  the encoder again each time; the estimate "re-run, encoder once" subtracts 31 calls'
  time of the encoder layers alone from it (the encode program less the cross-attention
  keys and values it projects for the decoder, which a re-run of the decoder computes
  again), which is what a re-run of the decoder alone would cost.

The two must give the same tokens (checked). Times: each way is run ``--rounds`` times,
taking turns, and the median is reported. FLOPs per call from `graphdl.ops.cost.flops`.
Prints one JSON line at the end (tools/bench_vs_torch.py --model transformer reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from graphdl.api import Model
from graphdl.compiler import compile_graph
from graphdl.data.sequences import BOS, FIRST_TOKEN
from graphdl.ir.graph import Value
from graphdl.layers.decode import decode_plan
from graphdl.layers.lower import lower
from graphdl.ops.cost import flops
from graphdl.spec import load_spec


def rerun_greedy(model: Model, plan, fields: dict) -> np.ndarray:
    """Greedy decoding by calling the predict program on the growing prefix."""
    program = model.compiled("predict").program
    output = model.spec.model.outputs[0]
    n, steps = len(fields[plan.input]), plan.steps
    feeds = {k: np.ascontiguousarray(v) for k, v in fields.items()}
    prefix = np.zeros((n, steps), np.int64)
    prefix[:, 0] = fields[plan.input][:, 0]
    feeds[plan.input] = prefix
    out = np.zeros((n, steps), np.int64)
    for t in range(steps):
        logits = np.asarray(program(feeds)[output])  # [N, steps, vocab]
        nxt = logits[:, t].argmax(axis=-1)
        out[:, t] = nxt
        if t + 1 < steps:
            prefix[:, t + 1] = nxt
    return out


def encoder_alone(model: Model, plan):
    """A program of the encoder layers alone: the encode program with only the encoder's
    values as outputs (what it projects for the decoder left to dead-code elimination)."""
    g = lower(model.spec, "encode")
    done = g.meta["layer_outputs"]
    g.outputs = {f"memory.{name}": Value(*done[name]) for name in plan.memory}
    program = compile_graph(g, model.device, title=f"{model.spec.name} (encoder alone)")
    program.bind_params(model.params, model.state)
    return program


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(spec_path: str, batch: int, rounds: int, model: Model | None = None) -> dict:
    """Median seconds of cached and re-run greedy decoding of one batch, and their ratio."""
    spec = load_spec(spec_path)
    model = model or Model(spec)
    plan = decode_plan(spec)
    model.compile(("predict", "encode", "decode_step"))
    rng = np.random.default_rng(batch)
    vocab = int(spec.model.layers[-1].params["units"])
    fields = {}
    for name, inp in spec.model.inputs.items():
        fields[name] = rng.integers(FIRST_TOKEN, vocab, (batch, *inp.shape)).astype(np.int64)
    fields[plan.input][:, 0] = BOS
    cached = model.decode(fields, "greedy", batch_size=batch)
    rerun = rerun_greedy(model, plan, fields)
    if not np.array_equal(cached, rerun):
        raise SystemExit(f"batch {batch}: cached decoding and the re-run give different tokens")
    encode = model.compiled("encode").program
    encoder = encoder_alone(model, plan)
    enc_feeds = {i.name: fields[i.name] for i in encode.inputs}
    encoder(enc_feeds)  # compiles it (or loads it from the kernel cache)
    times = {"cached": [], "rerun": [], "encode": [], "encoder": []}
    for _ in range(rounds):
        times["cached"].append(_time(lambda: model.decode(fields, "greedy", batch_size=batch)))
        times["rerun"].append(_time(lambda: rerun_greedy(model, plan, fields)))
        times["encode"].append(min(_time(lambda: encode(enc_feeds)) for _ in range(5)))
        times["encoder"].append(min(_time(lambda: encoder(enc_feeds)) for _ in range(5)))
    med = {k: statistics.median(v) for k, v in times.items()}
    bindings = {"N": batch}
    count = {m: flops(model.compiled(m).graph, bindings)
             for m in ("predict", "encode", "decode_step")}
    encoder_once = med["rerun"] - (plan.steps - 1) * med["encoder"]
    return {
        "batch": batch,
        "tokens": plan.steps,
        "cached_s": med["cached"],
        "rerun_s": med["rerun"],
        "speedup": med["rerun"] / med["cached"],
        "cached_ms_per_token": med["cached"] / plan.steps * 1e3,
        "rerun_ms_per_token": med["rerun"] / plan.steps * 1e3,
        "encode_s": med["encode"],
        "encoder_alone_s": med["encoder"],
        "rerun_encoder_once_s_estimate": encoder_once,
        "speedup_vs_encoder_once_estimate": encoder_once / med["cached"],
        "flops_cached": count["encode"] + plan.steps * count["decode_step"],
        "flops_rerun": plan.steps * count["predict"],
        "all_cached_s": times["cached"],
        "all_rerun_s": times["rerun"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "specs" / "bench_transformer.yaml"))
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs",
          flush=True)
    model = Model(load_spec(args.spec))
    results = []
    for batch in args.batch:
        r = compare(args.spec, batch, args.rounds, model)
        results.append(r)
        print(f"batch {batch:>3}: greedy {r['tokens']} tokens, cached {r['cached_s'] * 1e3:.1f} ms "
              f"({r['cached_ms_per_token']:.2f} ms/token, {r['flops_cached'] / 1e6:.1f} MFLOP) vs "
              f"re-run {r['rerun_s'] * 1e3:.1f} ms ({r['flops_rerun'] / 1e6:.1f} MFLOP): "
              f"{r['speedup']:.1f}x; re-run with the encoder once (estimate) "
              f"{r['rerun_encoder_once_s_estimate'] * 1e3:.1f} ms: "
              f"{r['speedup_vs_encoder_once_estimate']:.1f}x", flush=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(json.dumps({"decode": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
