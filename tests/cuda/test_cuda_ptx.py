"""Every kernel launched by the CUDA tests also compiles for a real GPU.

The simulator runs kernels as Python and is lenient where the GPU compiler is not
(typing, unsupported functions, float64 creeping into float32 code). So when the tests
ran in the simulator and numba-cuda with NVVM is installed (no GPU needed), every
(kernel, argument types) pair launched in this session is compiled to PTX in a
subprocess that uses the real CUDA target. Skipped otherwise (on a GPU the other tests
compile everything for real; CI installs no NVVM).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
PROBE = """
import sys
from numba import cuda
if getattr(cuda, "implementation", "") != "NVIDIA":
    sys.exit(3)
cuda.compile_ptx(lambda x: None, "(float32[::1],)", cc=(8, 0))
"""


def _real_env():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parents[1]), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def nvvm():
    from graphdl.backends.cuda import device

    if not device.SIMULATOR:
        pytest.skip("running on a GPU: every kernel was compiled for it by the other tests")
    try:
        out = subprocess.run([sys.executable, "-c", PROBE], env=_real_env(), capture_output=True,
                             text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot run the PTX probe: {e}")
    if out.returncode == 3:
        pytest.skip("numba.cuda is numba's deprecated built-in target, not numba-cuda: "
                    "install graphdl[cuda] to check PTX")
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"no NVVM to compile PTX here (install numba-cuda[cu12]): {last}")


def test_launched_kernels_compile_to_ptx(nvvm, launched_kernels, tmp_path):
    if len(launched_kernels) < 10:
        # run alone: launch the MLP's programs so there is something to compile
        from test_cuda_mlp import SPEC  # noqa: F401

        pytest.skip("run with the rest of tests/cuda: it compiles what they launched")
    records = [[path, qual, args] for (path, qual, _), args in launched_kernels.items()]
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    out = subprocess.run([sys.executable, str(HERE / "ptx_compile.py"), str(path), "8.0"],
                         env=_real_env(), capture_output=True, text=True, timeout=900,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))  # shown with -s
    assert not result["failures"], "\n".join(result["failures"])
    assert result["compiled"] == len(records)
    # the register tiles of the matmul stay in registers
    assert not [k for k in result["local_memory"] if k.startswith("matmul_tiled")], result["local_memory"]
    # float32 GEMM does no float64 arithmetic
    assert not [k for k in result["float64"] if k.startswith("matmul_tiled(float32")], result["float64"]
