"""Cold start: how long `graphdl run SPEC` takes to its first training step on a machine
that has compiled nothing yet (issue 15: LeNet within 15 s, the MLP within 5 s).

Each spec runs `graphdl run SPEC --epochs 1` in a fresh process with new, empty
GRAPHDL_CACHE_DIR and NUMBA_CACHE_DIR, then once more with those caches warm, and prints
from its results.json the wall seconds to the first step (`seconds_to_first_step`, from
the command's start) and the process's CPU seconds by then (`cpu_seconds_to_first_step`,
every thread). On a shared machine the wall time stretches with the load; the CPU time
is the compile work. The load average is printed before and after.

    python tools/cold_start.py                                  # the MLP and LeNet digits specs
    python tools/cold_start.py specs/lenet_digits.yaml --rounds 2
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
SPECS = ("specs/mlp_digits.yaml", "specs/lenet_digits.yaml")


def first_step(spec: str, cache: Path, run_dir: Path) -> dict:
    """`graphdl run` of ``spec`` for one epoch with ``cache`` as both caches: its
    results.json's times to the first step."""
    env = dict(os.environ, GRAPHDL_CACHE_DIR=str(cache), NUMBA_CACHE_DIR=str(cache / "numba"))
    subprocess.run([sys.executable, "-m", "graphdl.cli", "run", spec, "--epochs", "1",
                    "--run-dir", str(run_dir), "--no-progress"], env=env, cwd=ROOT, check=True,
                   capture_output=True, text=True)
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    return {"wall_s": results["seconds_to_first_step"],
            "cpu_s": results["cpu_seconds_to_first_step"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="*", default=list(SPECS))
    ap.add_argument("--rounds", type=int, default=1, help="cold runs per spec (new caches each)")
    args = ap.parse_args()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for spec in args.specs:
        for r in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                cache = Path(tmp) / "cache"
                cold = first_step(spec, cache, Path(tmp) / "cold")
                warm = first_step(spec, cache, Path(tmp) / "warm")
            print(f"{spec} round {r + 1}: first step cold {cold['wall_s']:.1f} s "
                  f"({cold['cpu_s']:.1f} CPU s), warm {warm['wall_s']:.1f} s "
                  f"({warm['cpu_s']:.1f} CPU s)", flush=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
