"""Before/after benchmark: `tools/bench_vs_torch.py` on another revision and on this tree,
alternately, in one invocation.

    python tools/bench_revisions.py 72d8fde --model mlp [--runs 2 --rounds 3 --seconds 2]

The other revision is checked out as a git worktree in a temporary folder and imported from
there (PYTHONPATH), each tree with its own cache folder, so neither serves the other's
kernels. Runs alternate (before, after, before, after, ...) because these machines are
shared and noisy: compare the ratios against PyTorch and the spread across runs, never one
absolute number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("graphdl_train_steps_per_s", "torch_train_steps_per_s", "train_speedup_vs_torch",
        "graphdl_infer_batch1_ms", "graphdl_compile_s_cold")


def bench(tree: Path, cache: Path, model: str, rounds: int, seconds: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), GRAPHDL_CACHE_DIR=str(cache))
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run(
        [sys.executable, str(tree / "tools" / "bench_vs_torch.py"), "--model", model,
         "--rounds", str(rounds), "--seconds", str(seconds)],
        cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout[out.stdout.index("{"):])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("revision", help="the revision to compare this tree with (e.g. a commit)")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--runs", type=int, default=2, help="runs of each tree, alternating")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.revision],
                       cwd=ROOT, check=True, capture_output=True)
        try:
            rows = []
            for run in range(args.runs):
                for label, tree in ((args.revision, base), ("this tree", ROOT)):
                    result = bench(tree, Path(tmp) / f"cache_{tree.name}", args.model,
                                   args.rounds, args.seconds)
                    rows.append((label, run + 1, result))
                    print(f"{label:>12} run {run + 1}: " + ", ".join(
                        f"{k} {result[k]:.4g}" for k in KEYS if result.get(k) is not None),
                        flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT,
                           check=False, capture_output=True)
    print(json.dumps([{"tree": t, "run": r, **{k: res.get(k) for k in KEYS}}
                      for t, r, res in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
