"""Measurements of the CUDA backend: a spec's training and inference speed, the tiled
matmul's GFLOP/s, and that against the card's FP32 peak (tools/gpu_check.py prints them).

Every timed call ends with the outputs on the host (a device-to-host copy synchronises),
so a step's time is its whole time; the matmul is timed with CUDA events.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

# FP32 peak (TFLOP/s, non-tensor-core, boost clock) of cards by name, most specific first.
FP32_PEAK_TFLOPS = [
    ("GH200", 67.0), ("H200", 67.0), ("H100 NVL", 60.0), ("H100 PCIe", 51.2), ("H100", 67.0),
    ("H800", 67.0), ("B200", 80.0), ("B100", 60.0), ("A100", 19.5), ("A800", 19.5),
    ("A40", 37.4), ("A30", 10.3), ("A10G", 31.2), ("A10", 31.2), ("A16", 4.5), ("A2", 4.5),
    ("L40S", 91.6), ("L40", 90.5), ("L4", 30.3), ("T4", 8.1), ("V100", 15.7), ("P100", 9.3),
    ("RTX 6000 Ada", 91.1), ("RTX A6000", 38.7), ("RTX 5090", 104.8), ("RTX 4090", 82.6),
    ("RTX 4080", 48.7), ("RTX 3090", 35.6), ("RTX 3080", 29.8),
]


def fp32_peak_tflops(name: str) -> float | None:
    for key, peak in FP32_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return peak
    return None


def _programs(spec, modes=("train", "eval")):
    from graphdl.backends.cuda.program import CudaProgram
    from graphdl.layers.lower import lower
    from graphdl.passes.pipeline import PassContext
    from graphdl.runtime.params import init_params, init_state

    progs, graphs = {}, {}
    params: dict = {}
    state: dict = {}
    for mode in modes:
        g = PassContext().run(lower(spec, mode), training=(mode == "train"))
        graphs[mode] = g
        for k, v in init_params(g, spec.seed).items():
            params.setdefault(k, v)
        for k, v in init_state(g).items():
            state.setdefault(k, v)
        progs[mode] = CudaProgram(g, title=f"{spec.name} ({mode}, cuda)")
    for p in progs.values():
        p.bind_params(params, state)
    compile_s = sum(p.warmup() for p in progs.values())
    return progs, graphs, compile_s


def _rate(fn, seconds: float, warm: int = 5) -> float:
    for _ in range(warm):
        fn()
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(5):
            fn()
        n += 5
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def bench_spec_cuda(spec_path: str | Path, seconds: float = 2.0, batch: int | None = None) -> dict:
    """Training steps/s (and GFLOP/s of a step), eval samples/s, compile time on CUDA."""
    from graphdl.backends.cuda import device
    from graphdl.ir.cost import flops
    from graphdl.runtime.bench import random_feeds
    from graphdl.spec import load_spec

    spec = load_spec(spec_path)
    t0 = time.perf_counter()
    progs, graphs, warm_s = _programs(spec)
    result = {"device": device.device_name(), "compile_s": round(time.perf_counter() - t0, 3),
              "kernel_compile_s": round(warm_s, 3)}
    batch = int(batch or spec.train.get("batch_size", 32))
    rng = np.random.default_rng(0)
    train = progs["train"]
    feeds = random_feeds(spec, train, batch, rng)
    steps = _rate(lambda: train(feeds), seconds)
    step_flops = flops(graphs["train"], {"N": batch})
    result.update({
        "batch_size": batch,
        "train_steps_per_s": round(steps, 2),
        "train_step_ms": round(1000.0 / steps, 3),
        "train_flops_per_step": int(step_flops),
        "train_gflops": round(step_flops * steps / 1e9, 1),
    })
    ev = progs["eval"]
    eval_batch = max(batch, 512)
    efeeds = random_feeds(spec, ev, eval_batch, rng)
    result["eval_samples_per_s"] = round(_rate(lambda: ev(efeeds), seconds) * eval_batch, 1)
    return result


def matmul_gflops(m: int, k: int, n: int, repeats: int = 10) -> dict:
    """GFLOP/s of the tiled matmul kernel on float32 [m, k] @ [k, n], timed with events,
    checked against NumPy on a few rows."""
    from graphdl.backends.cuda import device as D
    from graphdl.backends.cuda import library as K
    from graphdl.backends.cuda import runtime as R

    rng = np.random.default_rng(0)
    a = rng.standard_normal((1, m, k)).astype(np.float32)
    b = rng.standard_normal((1, k, n)).astype(np.float32)
    da, db = D.to_device(a), D.to_device(b)
    dc = D.device_array((1, m, n), np.float32)
    launch = R.config_matmul(K.matmul_tiled, 1, m, n)
    t0 = time.perf_counter()
    launch(da, db, dc, False, False)  # compiles (or loads the cache)
    D.synchronize()
    first_s = time.perf_counter() - t0
    start, stop = D.event(), D.event()
    t0 = time.perf_counter()
    start.record()
    for _ in range(repeats):
        launch(da, db, dc, False, False)
    stop.record()
    stop.synchronize()
    ms = start.elapsed_time(stop) / repeats
    if D.SIMULATOR or ms <= 0:  # the simulator's events time nothing
        ms = (time.perf_counter() - t0) * 1000.0 / repeats
    c = dc.copy_to_host()
    rows = slice(0, min(m, 8))
    err = float(np.max(np.abs(c[0, rows] - a[0, rows] @ b[0])) / (np.max(np.abs(a[0, rows] @ b[0])) + 1e-30))
    gflops = 2.0 * m * k * n / (ms * 1e-3) / 1e9
    name = D.device_name()
    peak = fp32_peak_tflops(name)
    out = {"shape": [m, k, n], "ms": round(ms, 3), "gflops": round(gflops, 1),
           "first_call_s": round(first_s, 3), "max_rel_error": err, "device": name,
           "max_registers": D.MM_MAX_REGISTERS or None}
    if peak:
        out["fp32_peak_tflops"] = peak
        out["fraction_of_fp32_peak"] = round(gflops / (peak * 1000.0), 4)
    return out


DENSE_SPEC = """\
# generated by graphdl's CUDA benchmark: a large dense workload (bench only, random data)
graphdl: 1
name: dense-{width}
seed: 0
data:
  source: {{type: builtin, name: digits}}
model:
  inputs:
    x: {{shape: [{width}], dtype: float32}}
  layers:
    - {{type: dense, units: {width}, activation: relu}}
    - {{type: dense, units: {width}, activation: relu}}
    - {{type: dense, units: 10}}
train:
  target: y
  epochs: 1
  batch_size: {batch}
  loss: {{type: cross_entropy}}
  optimizer: {{type: sgd, lr: 1.0e-3}}
  metrics: [accuracy]
"""


def write_dense_spec(directory: str | Path, width: int = 4096, batch: int = 1024) -> Path:
    path = Path(directory) / f"dense_{width}.yaml"
    path.write_text(DENSE_SPEC.format(width=width, batch=batch), encoding="utf-8")
    return path
