#!/usr/bin/env python3
"""Check graphdl's CUDA backend on a machine with an NVIDIA GPU; prints one JSON summary.

    python tools/gpu_check.py                 # install, test, benchmark (< 8 minutes)
    python tools/gpu_check.py --no-install    # the environment is ready
    python tools/gpu_check.py --simulate      # a dry run of this script on the CUDA simulator

Stages, each in a subprocess with its own timeout, all under one time budget (a stage
that would not fit is skipped and says so):

1. gpu: the card, its driver and memory (nvidia-smi);
2. install: ``pip install -e '.[cuda,test]'`` (numba-cuda with the CUDA 12 toolkit wheels);
3. device: what graphdl's CUDA backend sees (name, compute capability, binding);
4. tests: ``pytest tests/cuda`` on the real device (NUMBA_ENABLE_CUDASIM=0);
5. bench_mlp: the digits MLP's training steps/s and eval samples/s, CUDA and CPU;
6. bench_dense: a large dense workload (batch 1024, 4096-wide layers): training steps/s
   and GFLOP/s, and the tiled matmul alone at 1024 x 4096 x 4096 against the card's FP32
   peak (from a table of known cards);
7. bench_lenet: LeNet (specs/lenet_digits.yaml, its batch of 64) training steps/s on the
   GPU, on the CPU, and in PyTorch CUDA eager (the same layers, Adam) when torch imports
   with CUDA;
8. bench_conv: a conv-heavy network (batch 256, 3x64x64 input, four 3x3 conv layers of 64
   channels with bias and relu): the convolutions' GFLOP/s, forward and training step,
   against the card's FP32 peak;
9. matmul_maxreg128: the matmul of stage 6 with a register cap of 128;
10. mlp_accuracy, lenet_accuracy: ``graphdl run`` of the MLP and LeNet specs with --device
   cuda and cpu: test accuracy of both (LeNet for LENET_EPOCHS epochs on both devices,
   to fit the time budget; the simulator's dry run skips LeNet: a step takes a minute there).

Exit status: 0 when the tests passed and every benchmark ran, 1 otherwise, 2 without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STARTED = time.monotonic()

BENCH_MLP = r"""
import json, sys
from graphdl.bench import bench_spec_cuda
out = {"cuda": bench_spec_cuda(sys.argv[1], seconds=float(sys.argv[2]), batch=int(sys.argv[3]) or None)}
try:
    from graphdl.bench import bench_spec
    cpu = bench_spec(sys.argv[1], seconds=float(sys.argv[2]), cold=False)
    out["cpu"] = {k: cpu[k] for k in ("batch_size", "train_steps_per_s", "eval_samples_per_s") if k in cpu}
except Exception as e:
    out["cpu"] = {"error": f"{type(e).__name__}: {e}"}
print(json.dumps(out))
"""

BENCH_DENSE = r"""
import json, sys, tempfile
from graphdl.backends.cuda.bench import matmul_gflops, write_dense_spec
from graphdl.bench import bench_spec_cuda
width, batch, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
out = {"matmul": matmul_gflops(batch, width, width)}
spec = write_dense_spec(tempfile.mkdtemp(), width=width, batch=batch)
out["train"] = bench_spec_cuda(spec, seconds=seconds)
print(json.dumps(out))
"""

MATMUL_ONLY = r"""
import json, sys
from graphdl.backends.cuda.bench import matmul_gflops
print(json.dumps(matmul_gflops(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[2]))))
"""

BENCH_LENET = r"""
import json, sys
from graphdl.bench import bench_spec, bench_spec_cuda
spec, seconds, batch = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]) or None
out = {"cuda": bench_spec_cuda(spec, seconds=seconds, batch=batch)}
try:
    cpu = bench_spec(spec, seconds=seconds, cold=False)
    out["cpu"] = {k: cpu[k] for k in ("batch_size", "train_steps_per_s", "eval_samples_per_s") if k in cpu}
except Exception as e:
    out["cpu"] = {"error": f"{type(e).__name__}: {e}"}
if "train_steps_per_s" in out.get("cpu", {}):
    out["cuda_vs_cpu"] = round(out["cuda"]["train_steps_per_s"] / out["cpu"]["train_steps_per_s"], 3)
print(json.dumps(out))
"""

# LeNet as specs/lenet_digits.yaml builds it (conv 5x5 pad 2 + relu, max pool 2, conv 5x5 +
# relu, max pool 2, dense 120 / 84 / 10, cross-entropy, Adam), in PyTorch CUDA eager
TORCH_LENET = r"""
import json, sys, time
try:
    import torch
except ImportError as e:
    print(json.dumps({"skipped": f"torch is not installed: {e}"})); sys.exit(0)
if not torch.cuda.is_available():
    print(json.dumps({"skipped": f"torch {torch.__version__} sees no CUDA device"})); sys.exit(0)
batch, seconds = int(sys.argv[1]), float(sys.argv[2])
nn = torch.nn
dev = torch.device("cuda")
model = nn.Sequential(
    nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
    nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)).to(dev)
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
x = torch.randn(batch, 1, 28, 28, device=dev)
y = torch.randint(0, 10, (batch,), device=dev)
def step():
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss
for _ in range(10):
    step()
torch.cuda.synchronize()
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    for _ in range(10):
        loss = step()
    loss.item()  # the loss on the host, as graphdl's step ends
    n += 10
rate = n / (time.perf_counter() - t0)
print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(0),
                  "batch_size": batch, "train_steps_per_s": round(rate, 2)}))
"""

BENCH_CONV = r"""
import json, sys
from graphdl.backends.cuda.bench import conv_workload
batch, size, channels, layers = map(int, sys.argv[1:5])
print(json.dumps(conv_workload(batch, size, channels, layers)))
"""

LENET_EPOCHS = 5

DEVICE = r"""
import json
from graphdl.backends.cuda import device
print(json.dumps({"available": device.is_available(), "name": device.device_name(),
                  "compute_capability": device.compute_capability(),
                  "multiprocessors": device.multiprocessors(),
                  "binding": device.IMPLEMENTATION, "simulator": device.SIMULATOR,
                  "why_not": device.unavailable_reason()}))
"""


class Budget:
    def __init__(self, seconds: float):
        self.deadline = STARTED + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timeout(self, want: float, reserve: float = 10.0) -> float | None:
        """Seconds a stage may take, or None when it cannot fit any more."""
        t = min(want, self.left() - reserve)
        return t if t >= min(30.0, want) else None


def run(cmd, timeout, env=None, cwd=ROOT) -> dict:
    """Run a command; {rc, seconds, stdout, stderr} (rc 124 on timeout)."""
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                           check=False)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc = 124
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")) + \
            f"\ntimed out after {timeout:.0f} s"
    except OSError as e:
        rc, out, err = 127, "", f"{type(e).__name__}: {e}"
    return {"rc": rc, "seconds": round(time.monotonic() - t0, 1), "stdout": out, "stderr": err}


def last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def tail(text: str, n: int = 1500) -> str:
    return text[-n:].strip()


def env_for(simulate: bool, **extra) -> dict:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    env["NUMBA_ENABLE_CUDASIM"] = "1" if simulate else "0"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def python_stage(name, code, args, budget, want, summary, simulate, **extra_env):
    t = budget.timeout(want)
    if t is None:
        summary[name] = {"skipped": "out of time"}
        return None
    r = run([sys.executable, "-c", code, *map(str, args)], t, env=env_for(simulate, **extra_env))
    result = last_json(r["stdout"])
    if r["rc"] != 0 or result is None:
        summary[name] = {"error": f"exit {r['rc']} after {r['seconds']} s", "stderr": tail(r["stderr"])}
        return None
    summary[name] = {**result, "seconds": r["seconds"]}
    return result


def gpu_info() -> dict | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    r = run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], 30)
    if r["rc"] != 0 or not r["stdout"].strip():
        return {"error": tail(r["stderr"] or r["stdout"], 300)}
    name, driver, memory = [x.strip() for x in r["stdout"].strip().splitlines()[0].split(",")][:3]
    info = {"name": name, "driver": driver, "memory": memory}
    r2 = run([smi], 30)
    m = re.search(r"CUDA Version:\s*([\d.]+)", r2["stdout"])
    if m:
        info["driver_cuda"] = m.group(1)
    return info


def install(budget: Budget, info: dict, summary: dict) -> bool:
    t = budget.timeout(300)
    if t is None:
        summary["install"] = {"skipped": "out of time"}
        return False
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    has_extra = re.search(r"^\s*cuda\s*=", text, re.MULTILINE) is not None
    cuda_major = int(float(info.get("driver_cuda", "12").split(".")[0]))
    toolkit = "cu13" if cuda_major >= 13 and os.environ.get("GRAPHDL_CUDA_TOOLKIT") == "cu13" else "cu12"
    if has_extra:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "-e", ".[cuda,test]"]
    else:  # the extra is not declared yet: the same packages by name
        cmd = [sys.executable, "-m", "pip", "install", "-q", "-e", ".[test]",
               f"numba-cuda[{toolkit}]>=0.30"]
    r = run(cmd, t)
    summary["install"] = {"command": " ".join(cmd[3:]), "rc": r["rc"], "seconds": r["seconds"]}
    if r["rc"] != 0:
        summary["install"]["stderr"] = tail(r["stderr"])
    return r["rc"] == 0


def run_tests(budget: Budget, summary: dict, simulate: bool) -> bool:
    t = budget.timeout(240)
    if t is None:
        summary["tests"] = {"skipped": "out of time"}
        return False
    r = run([sys.executable, "-m", "pytest", "tests/cuda", "-q", "-p", "no:cacheprovider"], t,
            env=env_for(simulate))
    counts = {}
    for word in ("passed", "failed", "skipped", "error", "errors"):
        m = re.findall(rf"(\d+) {word}", r["stdout"])
        if m:
            counts[word] = int(m[-1])
    summary["tests"] = {"rc": r["rc"], "seconds": r["seconds"], **counts}
    if r["rc"] != 0:
        summary["tests"]["output"] = tail(r["stdout"] + r["stderr"], 2500)
    return r["rc"] == 0 and counts.get("passed", 0) > 0


def accuracy(budget: Budget, summary: dict, simulate: bool, name: str, spec: str,
             epochs: int | None = None, want: float = 150.0) -> bool:
    """``graphdl run spec`` on the GPU and on the CPU (``epochs`` overrides the spec's on
    both); their test metrics go to ``summary[name]``."""
    out = {}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for device in ("cuda", "cpu"):
            t = budget.timeout(want)
            if t is None:
                out[device] = {"skipped": "out of time"}
                ok = False
                continue
            run_dir = Path(tmp) / device
            cmd = [sys.executable, "-m", "graphdl.cli", "run", spec, "--device",
                   device, "--run-dir", str(run_dir), "--no-progress"]
            if simulate:
                cmd += ["--epochs", "1"]
            elif epochs:
                cmd += ["--epochs", str(epochs)]
            r = run(cmd, t, env=env_for(simulate and device == "cuda"))
            res_path = run_dir / "results.json"
            if r["rc"] == 0 and res_path.exists():
                res = json.loads(res_path.read_text())
                out[device] = {**res.get("test", {}), "epochs_run": res.get("epochs_run"),
                               "seconds": res.get("seconds")}
            else:
                out[device] = {"error": f"exit {r['rc']}", "stderr": tail(r["stderr"], 800)}
                ok = False
    if "accuracy" in out.get("cuda", {}) and "accuracy" in out.get("cpu", {}):
        out["accuracy_difference"] = round(out["cuda"]["accuracy"] - out["cpu"]["accuracy"], 4)
    if epochs and not simulate:
        out["epochs"] = epochs
    summary[name] = out
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-install", action="store_true", help="skip pip install")
    ap.add_argument("--simulate", action="store_true",
                    help="dry run on the CUDA simulator (tiny sizes; numbers mean nothing)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for everything (default 450)")
    ap.add_argument("--json-out", help="also write the summary here")
    args = ap.parse_args(argv)
    budget = Budget(args.budget)
    summary: dict = {"tool": "graphdl gpu_check", "simulate": args.simulate}
    status = 0
    try:
        info = {"name": "CUDA simulator"} if args.simulate else gpu_info()
        summary["gpu"] = info
        if not info or "error" in info:
            summary["error"] = "no NVIDIA GPU found (nvidia-smi is missing or failed)"
            return 2
        if not args.no_install and not args.simulate and not install(budget, info, summary):
            status = 1
        dev = python_stage("device", DEVICE, [], budget, 120, summary, args.simulate)
        if not dev or not dev.get("available"):
            summary["error"] = "graphdl's CUDA backend sees no usable device"
            return 1
        if not run_tests(budget, summary, args.simulate):
            status = 1
        width, batch, seconds = (32, 4, 0.2) if args.simulate else (4096, 1024, 3.0)
        mlp_batch = 4 if args.simulate else 0  # 0: the spec's batch size
        if python_stage("bench_mlp", BENCH_MLP, ["specs/mlp_digits.yaml", seconds, mlp_batch], budget, 150,
                        summary, args.simulate) is None:
            status = 1
        dense = python_stage("bench_dense", BENCH_DENSE, [width, batch, seconds], budget, 180, summary,
                             args.simulate)
        if dense is None:
            status = 1
        else:
            mm = dense["matmul"]
            summary["matmul_summary"] = (
                f"{mm['gflops']:.0f} GFLOP/s on {mm['device']} for {batch}x{width}x{width} float32"
                + (f" = {100 * mm['fraction_of_fp32_peak']:.1f} % of its {mm['fp32_peak_tflops']} "
                   "TFLOP/s FP32 peak" if "fraction_of_fp32_peak" in mm else " (peak unknown for this card)"))
        # LeNet at the spec's batch (64); on the simulator a LeNet step takes most of a
        # minute (bench_mlp has run the same timing code there)
        lenet = None
        if args.simulate:
            summary["bench_lenet"] = {"skipped": "a LeNet step takes most of a minute on the simulator"}
        else:
            lenet = python_stage("bench_lenet", BENCH_LENET, ["specs/lenet_digits.yaml", seconds, 0],
                                 budget, 150, summary, False)
            if lenet is None:
                status = 1
        if lenet is not None:
            torch_res = python_stage("torch_lenet", TORCH_LENET, [lenet["cuda"]["batch_size"], seconds],
                                     budget, 90, summary, False)
            if torch_res and "train_steps_per_s" in torch_res:
                lenet["cuda_vs_torch"] = round(
                    lenet["cuda"]["train_steps_per_s"] / torch_res["train_steps_per_s"], 3)
                summary["bench_lenet"]["cuda_vs_torch"] = lenet["cuda_vs_torch"]
        conv_args = [2, 8, 4, 2] if args.simulate else [256, 64, 64, 4]
        conv = python_stage("bench_conv", BENCH_CONV, conv_args, budget, 150, summary, args.simulate)
        if conv is None:
            status = 1
        else:
            summary["conv_summary"] = "; ".join(
                f"{name} {conv[name]['conv_gflops']:.0f} GFLOP/s"
                + (f" = {100 * conv[name]['fraction_of_fp32_peak']:.1f} % of FP32 peak"
                   if "fraction_of_fp32_peak" in conv[name] else "")
                for name in ("forward", "train")) + f" on {conv['device']}"
        python_stage("matmul_maxreg128", MATMUL_ONLY, [batch, width], budget, 90, summary,
                     args.simulate, GRAPHDL_CUDA_MM_MAXREG=128)
        if not accuracy(budget, summary, args.simulate, "mlp_accuracy", "specs/mlp_digits.yaml"):
            status = 1
        if args.simulate:
            summary["lenet_accuracy"] = {"skipped": "a LeNet epoch takes hours on the simulator"}
        elif not accuracy(budget, summary, False, "lenet_accuracy", "specs/lenet_digits.yaml",
                          epochs=LENET_EPOCHS, want=200):
            status = 1
        return status
    finally:
        summary["seconds"] = round(time.monotonic() - STARTED, 1)
        text = json.dumps(summary, indent=2, default=str)
        if args.json_out:
            Path(args.json_out).write_text(text + "\n", encoding="utf-8")
        print(text)


if __name__ == "__main__":
    sys.exit(main())
