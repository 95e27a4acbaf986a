"""Benchmark: the same model in PyTorch eager (2 threads) and through `graphdl bench`.

--model mlp:   64 -> 128 -> 64 -> 10 ReLU, Adam, batch 64, cross-entropy (specs/bench_mlp.yaml)
--model lenet: LeNet-5 on 1x28x28, Adam, batch 64 (specs/bench_lenet.yaml)
--model lstm:  2-layer bidirectional LSTM, hidden 128, 16 features, T = 32, final states ->
               dense 10, Adam, batch 32 (specs/bench_lstm.yaml)
--model transformer: torch.nn.Transformer(d_model=64, nhead=4, 2 + 2 layers, feed-forward
               128, dropout 0, batch_first) + token embeddings (vocab 16), sinusoidal
               positions and a projection to 16 logits per step; src [31], tgt [32]
               (causal target mask), cross-entropy over every step, Adam, batch 32
               (specs/bench_transformer.yaml). First checks that the torch twin has
               graphdl's parameter count and, given graphdl's weights, its logits; after
               the rounds, runs tools/bench_decode.py (cached greedy decoding vs re-running
               the predict program per token; --decode-rounds 0 skips it).

The two run alternately, several rounds each, in one invocation, because these machines
are shared and noisy: compare the ratios, not the absolute times. Each round also prints
graphdl's roofline fraction: the step's FLOPs times its rate over sgemm's GFLOP/s,
measured by `graphdl bench` in the same process on the same number of threads. Batch-1 latency is one
forward pass on one sample: graphdl's predict program, torch's module in eval mode under
inference_mode. The load average is printed before and after.

    pip install -e '.[bench]' && python tools/bench_vs_torch.py --model mlp [--rounds 3]
    python tools/bench_vs_torch.py --model transformer --rounds 2 [--no-cold]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("mlp", "lenet", "lstm", "transformer")
SPECS = {name: ROOT / "specs" / f"bench_{name}.yaml" for name in MODELS}
BATCH = {"mlp": 64, "lenet": 64, "lstm": 32, "transformer": 32}
# the transformer twin: specs/bench_transformer.yaml's sizes
VOCAB, D_MODEL, HEADS, FF, SRC_LEN, TGT_LEN, MAX_LEN = 16, 64, 4, 128, 31, 32, 64


def _lstm_model():
    """torch twin of specs/bench_lstm.yaml: its final states (h_n of the last layer, both
    directions) -> dense 10, as graphdl's `output: last`."""
    import torch
    from torch import nn

    class BiLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(16, 128, num_layers=2, bidirectional=True, batch_first=True)
            self.head = nn.Linear(256, 10)

        def forward(self, x):
            _, (h, _) = self.rnn(x)
            return self.head(torch.cat([h[-2], h[-1]], dim=1))

    return BiLSTM(), (32, 16)


def _transformer_model():
    """torch twin of specs/bench_transformer.yaml: embeddings + sinusoidal positions (the
    table graphdl adds), torch.nn.Transformer (post-norm, final encoder and decoder
    LayerNorms), a linear projection to the logits of each target step."""
    import torch
    from torch import nn

    from graphdl.ops.nn import sinusoidal_positions

    class TokenTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.src_emb = nn.Embedding(VOCAB, D_MODEL)
            self.tgt_emb = nn.Embedding(VOCAB, D_MODEL)
            self.core = nn.Transformer(d_model=D_MODEL, nhead=HEADS, num_encoder_layers=2,
                                       num_decoder_layers=2, dim_feedforward=FF, dropout=0.0,
                                       batch_first=True)
            self.logits = nn.Linear(D_MODEL, VOCAB)
            table = sinusoidal_positions(MAX_LEN, D_MODEL)
            self.register_buffer("positions", torch.from_numpy(table))
            self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(TGT_LEN))

        def forward(self, src, tgt):
            s = self.src_emb(src) + self.positions[: src.shape[1]]
            t = self.tgt_emb(tgt) + self.positions[: tgt.shape[1]]
            h = self.core(s, t, tgt_mask=self.causal, tgt_is_causal=True)
            return self.logits(h)

    return TokenTransformer()


def torch_model(name: str):
    """The torch twin of each benchmark spec, and its input shape."""
    from torch import nn

    if name == "lstm":
        return _lstm_model()
    if name == "transformer":
        return _transformer_model(), None
    if name == "mlp":
        return nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
        ), (64,)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    ), (1, 28, 28)


def torch_inputs(name: str, shape, batch: int):
    """(the model's inputs for a batch, a target, the number of classes)."""
    import torch

    if name == "transformer":
        src = torch.randint(0, VOCAB, (batch, SRC_LEN))
        tgt = torch.randint(0, VOCAB, (batch, TGT_LEN))
        return (src, tgt), torch.randint(0, VOCAB, (batch, TGT_LEN)), VOCAB
    return (torch.randn(batch, *shape),), torch.randint(0, 10, (batch,)), 10


def torch_round(name: str, seconds: float) -> dict:
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, shape = torch_model(name)
    xs, y, classes = torch_inputs(name, shape, BATCH[name])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        # per-step logits [N, T, classes] against [N, T] targets: the mean over every step
        loss = loss_fn(model(*xs).reshape(-1, classes), y.reshape(-1))
        loss.backward()
        opt.step()

    for _ in range(50):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            step()
        n += 20
    steps = n / (time.perf_counter() - t0)
    x1, _, _ = torch_inputs(name, shape, 1)
    model.eval()
    times = []
    with torch.inference_mode():
        for _ in range(200):
            model(*x1)
        for _ in range(2000):
            t = time.perf_counter()
            model(*x1)
            times.append(time.perf_counter() - t)
    return {"train_steps_per_s": steps, "infer_batch1_ms": statistics.median(times) * 1000}


def graphdl_round(name: str, seconds: float, cold: bool) -> dict:
    cmd = [sys.executable, "-m", "graphdl.cli", "bench", str(SPECS[name]), "--json",
           "--seconds", str(seconds)]
    if not cold:
        cmd.append("--no-cold")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


_STACK_PARAM = re.compile(
    r"^(encoder|decoder)\.(\d+)\.(multihead_attention|dense|layer_norm)_(\d+)\.(.+)$")
_TOP_LEVEL = {"encoder_norm": "core.encoder.norm", "decoder_norm": "core.decoder.norm"}
_TORCH_ATTENTION = {"encoder": ("self_attn",), "decoder": ("self_attn", "multihead_attn")}


def transformer_state(params: dict) -> dict:
    """graphdl's parameters of specs/bench_transformer.yaml under the torch twin's names:
    within a block copy, its attentions, dense layers and layer norms in spec order are
    torch's self_attn[, multihead_attn], linear1, linear2 and norm1..3; dense kernels
    [in, out] are transposed to torch's [out, in]."""
    import torch

    state, groups = {}, {}
    for name, value in params.items():
        m = _STACK_PARAM.match(name)
        if m:
            stack, copy, kind, number, leaf = m.groups()
            members = groups.setdefault((stack, int(copy), kind), {})
            members.setdefault(int(number), {})[leaf] = value
            continue
        layer, _, leaf = name.partition(".")
        if leaf == "kernel":
            leaf, value = "weight", value.T
        state[f"{_TOP_LEVEL.get(layer, layer)}.{leaf}"] = value
    for (stack, copy, kind), members in groups.items():
        for j, number in enumerate(sorted(members)):
            if kind == "multihead_attention":
                module = _TORCH_ATTENTION[stack][j]
            else:
                module = f"linear{j + 1}" if kind == "dense" else f"norm{j + 1}"
            for leaf, value in members[number].items():
                if leaf == "kernel":
                    leaf, value = "weight", value.T
                state[f"core.{stack}.layers.{copy}.{module}.{leaf}"] = value
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def check_transformer_twin() -> None:
    """The torch twin has graphdl's parameters (same names once mapped, same count) and,
    loaded with graphdl's initial weights, gives graphdl's logits."""
    import torch

    from graphdl.api import Model
    from graphdl.spec import load_spec

    model = Model(load_spec(SPECS["transformer"]))
    predict = model.compiled("predict").program
    twin = _transformer_model().eval()
    state = transformer_state(model.params)
    names = {n for n, _ in twin.named_parameters()}
    if set(state) != names:
        raise SystemExit(f"twin parameters differ: graphdl only {sorted(set(state) - names)}, "
                         f"torch only {sorted(names - set(state))}")
    twin.load_state_dict(state, strict=False)
    n_gdl = sum(v.size for v in model.params.values())
    n_torch = sum(p.numel() for p in twin.parameters())
    rng = np.random.default_rng(0)
    src = rng.integers(0, VOCAB, (4, SRC_LEN)).astype(np.int64)
    tgt = rng.integers(0, VOCAB, (4, TGT_LEN)).astype(np.int64)
    ours = np.asarray(predict({"src": src, "tgt_in": tgt})["logits"])
    with torch.no_grad():
        theirs = twin(torch.from_numpy(src), torch.from_numpy(tgt)).numpy()
    err = float(np.abs(ours - theirs).max())
    print(f"twin check: graphdl {n_gdl:,} parameters, torch {n_torch:,}; max |logit "
          f"difference| on 4 samples {err:.2e} (logits up to {np.abs(theirs).max():.2f})",
          flush=True)
    if n_gdl != n_torch or err > 1e-3:
        raise SystemExit("the torch twin is not graphdl's model")


def decode_round(rounds: int) -> list[dict]:
    """tools/bench_decode.py in a subprocess (its lines printed): its results per batch."""
    cmd = [sys.executable, str(ROOT / "tools" / "bench_decode.py"), "--spec",
           str(SPECS["transformer"]), "--rounds", str(rounds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    lines = out.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(f"decode: {line}", flush=True)
    return json.loads(lines[-1])["decode"]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(SPECS), default="mlp")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--no-cold", action="store_true",
                    help="skip the cold and warm compile-time measurement of round 1")
    ap.add_argument("--decode-rounds", type=int, default=5,
                    help="transformer: rounds of tools/bench_decode.py (0: skip it)")
    ap.add_argument("--check-twin", action="store_true",
                    help="transformer: only check the torch twin against graphdl's model")
    args = ap.parse_args()
    if args.model == "transformer":
        if args.check_twin:
            check_transformer_twin()
            return 0
        # in a subprocess: graphdl's threads and kernels stay out of the timed process
        subprocess.run([sys.executable, __file__, "--model", "transformer", "--check-twin"],
                       check=True, cwd=ROOT)
    load_before = _load()
    print(f"load average {load_before} on {os.cpu_count()} CPUs", flush=True)
    torch_runs, gdl_runs = [], []
    for r in range(args.rounds):
        gdl_runs.append(graphdl_round(args.model, args.seconds, cold=(r == 0 and not args.no_cold)))
        torch_runs.append(torch_round(args.model, args.seconds))
        g = gdl_runs[-1]
        print(f"round {r + 1}: graphdl {g['train_steps_per_s']:.0f} steps/s "
              f"({g['train_gflops']:.1f} GFLOP/s = {100 * g['roofline_fraction']:.1f} % of "
              f"sgemm's {g['sgemm_gflops']:.0f} on {g['sgemm_threads']} threads), "
              f"{g['infer_batch1_ms'] * 1000:.1f} us batch-1 | torch "
              f"{torch_runs[-1]['train_steps_per_s']:.0f} steps/s, "
              f"{torch_runs[-1]['infer_batch1_ms'] * 1000:.1f} us batch-1", flush=True)

    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    summary = {
        "model": args.model,
        "graphdl_train_steps_per_s": med(gdl_runs, "train_steps_per_s"),
        "torch_train_steps_per_s": med(torch_runs, "train_steps_per_s"),
        "graphdl_infer_batch1_ms": med(gdl_runs, "infer_batch1_ms"),
        "torch_infer_batch1_ms": med(torch_runs, "infer_batch1_ms"),
        "graphdl_compile_s_cold": gdl_runs[0].get("compile_s_cold"),
        "graphdl_compile_s_warm": gdl_runs[0].get("compile_s_warm"),
        "graphdl_eval_samples_per_s": med(gdl_runs, "eval_samples_per_s"),
        # the roofline: a step's FLOPs at its rate against sgemm measured in the same run
        "train_flops_per_step": gdl_runs[0]["train_flops_per_step"],
        "graphdl_train_gflops": med(gdl_runs, "train_gflops"),
        "sgemm_gflops": med(gdl_runs, "sgemm_gflops"),
        "graphdl_roofline_fraction": med(gdl_runs, "roofline_fraction"),
    }
    summary["train_speedup_vs_torch"] = summary["graphdl_train_steps_per_s"] / summary["torch_train_steps_per_s"]
    summary["batch1_latency_ratio_vs_torch"] = summary["graphdl_infer_batch1_ms"] / summary["torch_infer_batch1_ms"]
    # every round's rate: on a busy machine torch's 2 threads collapse in some rounds only
    summary["graphdl_train_steps_per_s_rounds"] = [r["train_steps_per_s"] for r in gdl_runs]
    summary["torch_train_steps_per_s_rounds"] = [round(r["train_steps_per_s"], 1) for r in torch_runs]
    summary["load_average_before"] = load_before
    summary["load_average_after_rounds"] = _load()
    if args.model == "transformer" and args.decode_rounds > 0:
        for r in decode_round(args.decode_rounds):
            summary[f"decode_batch{r['batch']}_cached_ms"] = r["cached_s"] * 1000
            summary[f"decode_batch{r['batch']}_rerun_ms"] = r["rerun_s"] * 1000
            summary[f"decode_batch{r['batch']}_speedup"] = r["speedup"]
        summary["load_average_after_decode"] = _load()
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
