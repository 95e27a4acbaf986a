"""`graphdl bench`: training and inference speed and compile time of a spec, on the CPU
(`bench_spec`) or the GPU (`bench_spec_cuda`).

Cold compile time is measured in a fresh subprocess with empty graphdl and Numba cache
directories; warm compile time in a second subprocess reusing them.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from graphdl.api import Model
from graphdl.ops.cost import flops
from graphdl.spec import load_spec

_COMPILE_SNIPPET = """
import json, sys, time
t0 = time.perf_counter()
from graphdl.api import Model
from graphdl.spec import load_spec
m = Model(load_spec(sys.argv[1]))
m.compile(("train", "eval", "predict"))
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def _compile_subprocess(spec_path: str, cache: str) -> float:
    env = dict(os.environ, GRAPHDL_CACHE_DIR=cache, NUMBA_CACHE_DIR=os.path.join(cache, "numba"))
    out = subprocess.run([sys.executable, "-c", _COMPILE_SNIPPET, spec_path], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def random_feeds(spec, program, batch: int, rng) -> dict:
    feeds = {}
    units = spec.model.layers[-1].params.get("units", 2)
    for info in program.inputs:
        if info.scalar:
            feeds[info.name] = info.dtype.type(1e-3 if info.name == "lr" else 1)
            continue
        shape = tuple(batch if isinstance(d, str) else d for d in info.shape)
        if info.dtype.kind == "i":
            feeds[info.name] = rng.integers(0, units, shape).astype(info.dtype)
        else:
            feeds[info.name] = rng.standard_normal(shape).astype(info.dtype)
    return feeds


def _rate(fn, seconds: float, warm: int = 20, chunk: int = 20) -> float:
    """Calls per second of fn, over about ``seconds`` (after ``warm`` calls)."""
    for _ in range(warm):
        fn()
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(chunk):
            fn()
        n += chunk
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def bench_spec(spec_path: str, seconds: float = 2.0, cold: bool = True) -> dict:
    """Train steps/s, eval samples/s, batch-1 latency, compile times and peak RSS on the CPU."""
    spec = load_spec(spec_path)
    result = {}
    if cold:
        with tempfile.TemporaryDirectory() as tmp:
            result["compile_s_cold"] = round(_compile_subprocess(spec_path, tmp), 3)
            result["compile_s_warm"] = round(_compile_subprocess(spec_path, tmp), 3)
    model = Model(spec)
    model.compile(("train", "eval", "predict"))
    batch = int(spec.train["batch_size"])
    rng = np.random.default_rng(0)
    train = model.compiled("train").program
    feeds = random_feeds(spec, train, batch, rng)
    result["batch_size"] = batch
    # the roof is measured just before and just after the step is timed, and the higher
    # taken: on a shared machine one of them can land while another process holds a core
    threads, roof = step_threads(), sgemm_gflops(step_threads(), seconds=min(seconds, 1.0))
    steps = _rate(lambda: train(feeds), seconds)
    result["train_steps_per_s"] = round(steps, 1)
    roof = max(roof, sgemm_gflops(threads, seconds=min(seconds, 1.0)))
    result.update(roofline(flops(train.graph, {"N": batch}), steps, threads, roof))
    ev = model.compiled("eval").program
    eval_batch = 512
    efeeds = random_feeds(spec, ev, eval_batch, rng)
    result["eval_samples_per_s"] = round(_rate(lambda: ev(efeeds), seconds) * eval_batch, 1)
    pred = model.compiled("predict").program
    pfeeds = random_feeds(spec, pred, 1, rng)
    for _ in range(200):
        pred(pfeeds)
    times = []
    for _ in range(2000):
        t0 = time.perf_counter()
        pred(pfeeds)
        times.append(time.perf_counter() - t0)
    result["infer_batch1_ms"] = round(float(np.median(times)) * 1000, 4)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def sgemm_gflops(threads: int, seconds: float = 1.0, n: int = 1024, tries: int = 5) -> float:
    """GFLOP/s of a float32 n x n x n matrix product (NumPy's BLAS) on ``threads`` threads:
    the machine's compute roof for a step on those threads. The best of ``tries`` timings
    of ``seconds / tries`` each, as a roof is what the machine can do: on a shared machine
    one timing can land while another process holds a core (measured 63 and 275 GFLOP/s a
    minute apart on 2 cores)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    c = np.empty((n, n), np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        calls = max(_rate(lambda: np.dot(a, b, c), seconds / tries, warm=1, chunk=2)
                    for _ in range(tries))
    return 2.0 * n**3 * calls / 1e9


def step_threads() -> int:
    """The threads a CPU step's parallel kernels run on (Numba's thread count)."""
    import numba

    return numba.get_num_threads()


def roofline(step_flops: int, steps_per_s: float, threads: int, sgemm: float) -> dict:
    """A CPU training step against the machine's roof: its FLOPs (`graphdl.ops.cost`), the
    GFLOP/s it reaches, sgemm's GFLOP/s (`sgemm_gflops`, measured in the same run on the
    step's ``threads``) and the fraction of it the step reaches."""
    achieved = step_flops * steps_per_s / 1e9
    return {"train_flops_per_step": int(step_flops), "train_gflops": round(achieved, 2),
            "sgemm_threads": threads, "sgemm_gflops": round(sgemm, 1),
            "roofline_fraction": round(achieved / sgemm, 4)}


def bench_spec_cuda(spec_path: str | Path, seconds: float = 2.0, batch: int | None = None) -> dict:
    """Training steps/s (and GFLOP/s of a step), eval samples/s, compile time on CUDA.

    Every timed call ends with the outputs on the host (a device-to-host copy
    synchronises), so a step's time is its whole time."""
    from graphdl.backends.cuda import device

    spec = load_spec(spec_path)
    t0 = time.perf_counter()
    model = Model(spec, device="cuda").compile(("train", "eval"))
    warm_s = sum(model.compiled(m).jit_seconds for m in ("train", "eval"))
    result = {"device": device.device_name(), "compile_s": round(time.perf_counter() - t0, 3),
              "kernel_compile_s": round(warm_s, 3)}
    batch = int(batch or spec.train["batch_size"])
    rng = np.random.default_rng(0)
    train = model.compiled("train").program
    feeds = random_feeds(spec, train, batch, rng)
    steps = _rate(lambda: train(feeds), seconds, warm=5, chunk=5)
    step_flops = flops(model.compiled("train").graph, {"N": batch})
    result.update({
        "batch_size": batch,
        "train_steps_per_s": round(steps, 2),
        "train_step_ms": round(1000.0 / steps, 3),
        "train_flops_per_step": int(step_flops),
        "train_gflops": round(step_flops * steps / 1e9, 1),
    })
    ev = model.compiled("eval").program
    eval_batch = max(batch, 512)
    efeeds = random_feeds(spec, ev, eval_batch, rng)
    result["eval_samples_per_s"] = round(_rate(lambda: ev(efeeds), seconds, warm=5, chunk=5) * eval_batch, 1)
    return result
