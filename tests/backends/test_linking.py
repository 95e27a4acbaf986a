"""Large kernels are called by symbol (graphdl/backends/cpu/linking.py): the caller holds a
declaration, its cache entry names the callee, and a new process loads the callee first,
even when the callee's cache entry was compiled again under another name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from graphdl.backends.cpu import linking
from graphdl.backends.cpu.library import load_library

ROOT = Path(__file__).resolve().parents[2]

CALLER = textwrap.dedent("""
    import numpy as np
    from numba import njit
    from graphdl.backends.cpu.library import load_library

    K = load_library()


    @njit(cache=True)
    def pool_sum(x, out):
        K.avg_pool2d_fwd(x, out, 2, 2, 2, 2, 0, 0, True)
        return out.sum()


    @njit(cache=True)
    def scan_0(x, out):  # named like a generated scan: its callees stay linked
        for _ in range(2):
            K.avg_pool2d_fwd(x, out, 2, 2, 2, 2, 0, 0, True)
        return out.sum()
""")

RUN = textwrap.dedent("""
    import json, sys
    import numpy as np
    from numba import njit
    from graphdl.backends.cpu import linking
    from graphdl.backends.cpu.library import load_library

    K = load_library()
    # compile a few functions first, so Numba's per-process counter (part of every
    # compiled function's symbol name) differs from the first process's
    for k in range(int(sys.argv[1])):
        njit(lambda a, k=k: a + k)(1.0)
    import caller
    x = np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8) % 7
    out = np.zeros((2, 3, 4, 4), np.float32)
    total = float(caller.pool_sum(x, out))
    (sig,) = caller.pool_sum.signatures
    cres = caller.pool_sum.overloads[sig]
    (kernel_sig,) = K.avg_pool2d_fwd.signatures
    deps = linking._all_deps(cres.library)
    declared = [f.name for f in cres.library._final_module.functions
                if "avg_pool2d_fwd" in f.name and not f.name.startswith("cfunc")]
    scan_total = float(caller.scan_0(x, out))
    (scan_sig,) = caller.scan_0.signatures
    scan_lib = caller.scan_0.overloads[scan_sig].library
    print(json.dumps({
        "scan_total": scan_total, "scan_deps": [d[0] for d in linking._all_deps(scan_lib)],
        "installed": linking.installed(), "total": total, "out": out.ravel().tolist(),
        "hits": sum(caller.pool_sum.stats.cache_hits.values()),
        "deps": [d[0] for d in deps],
        "declared_only": [cres.library._final_module.get_function(n).is_declaration
                          for n in declared],
        "kernel_symbol": K.avg_pool2d_fwd.overloads[kernel_sig].fndesc.mangled_name,
    }))
""")


def _run(tmp_path: Path, shift: int) -> dict:
    env = dict(os.environ, GRAPHDL_CACHE_DIR=str(tmp_path / "cache"),
               NUMBA_CACHE_DIR=str(tmp_path / "cache" / "numba"),
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    done = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(shift)], check=False,
                          env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _reference(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def test_the_patch_applies_to_this_numba():
    load_library()
    assert linking.installed(), (
        "graphdl.backends.cpu.linking did not patch Numba's code libraries: Numba's "
        "internals changed; every kernel is copied into its callers again (slow compiles)")


def test_a_large_kernel_is_called_by_symbol_and_its_cache_entry_survives_a_recompile(tmp_path):
    (tmp_path / "caller.py").write_text(CALLER, encoding="utf-8")
    (tmp_path / "run.py").write_text(RUN, encoding="utf-8")
    x = np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8) % 7
    want = _reference(x)

    first = _run(tmp_path, 0)
    assert first["installed"] and first["hits"] == 0
    assert first["deps"] == ["kernel:avg_pool2d_fwd"]
    assert first["declared_only"] == [True]  # no copy of the kernel in the caller
    np.testing.assert_array_equal(np.array(first["out"]).reshape(want.shape), want)
    assert first["total"] == float(want.sum())
    # a scan calls its body's kernels every step: they are linked into it, not called by
    # symbol (HOT_CALLERS; by symbol an LSTM's batch-1 pass ran 10-27 % slower)
    assert first["scan_deps"] == [] and first["scan_total"] == first["total"]

    # the kernel's cache entry goes; a new process loads the caller from the cache, which
    # compiles the kernel again (under another symbol name) before the caller's code loads
    removed = [p for p in (tmp_path / "cache").rglob("*avg_pool2d_fwd*") if p.is_file()]
    assert removed
    for p in removed:
        p.unlink()
    second = _run(tmp_path, 5)
    assert second["hits"] == 1
    assert second["kernel_symbol"] != first["kernel_symbol"]
    np.testing.assert_array_equal(np.array(second["out"]).reshape(want.shape), want)
    assert second["total"] == first["total"]


def test_generated_scans_are_named_as_hot_callers():
    """The code generator's time loops carry the name prefix linking keeps linked."""
    from graphdl.backends.cpu.codegen import CpuCodegen
    from graphdl.layers.lower import lower
    from graphdl.passes.pipeline import PassContext
    from graphdl.spec import load_spec

    graph = PassContext().run(lower(load_spec(ROOT / "specs" / "bench_lstm.yaml"), "predict"),
                              training=False)
    lines = CpuCodegen(graph, "predict").generate()[0].splitlines()
    names = [lines[i - 1].split("(")[0].removeprefix("def ") for i, line in enumerate(lines)
             if "a scan's loop over time" in line]  # the comment under each scan's def
    assert names and all(n.startswith(linking.HOT_CALLERS) for n in names), names
