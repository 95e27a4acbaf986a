"""A cached step that calls a parallel kernel runs in a fresh process.

Numba does not start its thread pool when it loads from its cache a function that only
calls a parallel one (numba/numba#8578): graphdl starts the pool itself before loading such
a step (`graphdl.backends.cpu.library.start_thread_pool`). Without that, the second process
below, where the step comes from the disk cache, dies with a segmentation fault.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SPEC = """\
graphdl: 1
name: pool-cache-check
data:
  source: {type: builtin, name: digits, as_images: true}
model:
  inputs:
    image: {shape: [1, 8, 8], dtype: float32}
  layers:
    - {type: conv2d, name: conv, filters: 3, kernel: 3, padding: 1, activation: relu}
    - {type: maxpool2d, name: pool, kernel: 2}
    - {type: flatten}
    - {type: dense, name: head, units: 10}
train: {target: label, epochs: 1, batch_size: 8, loss: {type: cross_entropy},
        optimizer: {type: sgd, lr: 0.1}}
"""

RUN = """\
import sys
import numpy as np
import graphdl
m = graphdl.load(sys.argv[1])
x = np.linspace(-1, 1, 5 * 64, dtype=np.float32).reshape(5, 1, 8, 8)
np.save(sys.argv[2], m.predict({"image": x}))
"""


def _run(spec: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUN, str(spec), str(out)], env=dict(os.environ),
                          capture_output=True, text=True, timeout=600, check=False)


def test_cached_step_with_parallel_kernels_runs_in_a_fresh_process(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    first = _run(spec, tmp_path / "a.npy")  # compiles (or loads) the predict step
    assert first.returncode == 0, first.stderr[-2000:]
    second = _run(spec, tmp_path / "b.npy")  # the step now comes from the disk cache
    assert second.returncode == 0, f"exit {second.returncode}: {second.stderr[-2000:]}"
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
