"""Benchmark: the same model in PyTorch eager (2 threads) and through `graphdl bench`.

--model mlp:   64 -> 128 -> 64 -> 10 ReLU, Adam, batch 64, cross-entropy (specs/bench_mlp.yaml)
--model lenet: LeNet-5 on 1x28x28, Adam, batch 64 (specs/bench_lenet.yaml)
--model lstm:  2-layer bidirectional LSTM, hidden 128, 16 features, T = 32, final states ->
               dense 10, Adam, batch 32 (specs/bench_lstm.yaml)

The two run alternately, several rounds each, in one invocation, because these machines
are shared and noisy: compare the ratios, not the absolute times.

    pip install -e '.[bench]' && python tools/bench_vs_torch.py --model mlp [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = {name: ROOT / "specs" / f"bench_{name}.yaml" for name in ("mlp", "lenet", "lstm")}
BATCH = {"mlp": 64, "lenet": 64, "lstm": 32}


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


def torch_model(name: str):
    """The torch twin of each benchmark spec, and its input shape."""
    from torch import nn

    if name == "lstm":
        return _lstm_model()
    if name == "mlp":
        return nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
        ), (64,)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    ), (1, 28, 28)


def torch_round(name: str, seconds: float) -> dict:
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, shape = torch_model(name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(BATCH[name], *shape)
    y = torch.randint(0, 10, (BATCH[name],))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
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
    x1 = torch.randn(1, *shape)
    times = []
    with torch.inference_mode():
        for _ in range(200):
            model(x1)
        for _ in range(2000):
            t = time.perf_counter()
            model(x1)
            times.append(time.perf_counter() - t)
    return {"train_steps_per_s": steps, "infer_batch1_ms": statistics.median(times) * 1000}


def graphdl_round(name: str, seconds: float, cold: bool) -> dict:
    cmd = [sys.executable, "-m", "graphdl.cli", "bench", str(SPECS[name]), "--json",
           "--seconds", str(seconds)]
    if not cold:
        cmd.append("--no-cold")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(SPECS), default="mlp")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    torch_runs, gdl_runs = [], []
    for r in range(args.rounds):
        gdl_runs.append(graphdl_round(args.model, args.seconds, cold=(r == 0)))
        torch_runs.append(torch_round(args.model, args.seconds))
        print(f"round {r + 1}: graphdl {gdl_runs[-1]['train_steps_per_s']:.0f} steps/s, "
              f"{gdl_runs[-1]['infer_batch1_ms'] * 1000:.1f} us batch-1 | torch "
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
    }
    summary["train_speedup_vs_torch"] = summary["graphdl_train_steps_per_s"] / summary["torch_train_steps_per_s"]
    summary["batch1_latency_ratio_vs_torch"] = summary["graphdl_infer_batch1_ms"] / summary["torch_infer_batch1_ms"]
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
