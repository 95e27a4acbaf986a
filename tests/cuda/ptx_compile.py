"""Compile recorded CUDA launches to PTX with NVVM, for a GPU that is not here.

Run by test_cuda_ptx.py in a subprocess *without* the simulator (numba-cuda and NVVM
installed, no GPU needed): ``python ptx_compile.py records.json [cc]``. Each record names a
kernel (its file and qualified name) and the types of the arguments it was launched with;
the kernel's Python function is compiled with those types by `cuda.compile_ptx`. Prints
one JSON object: compiled count, failures, and per kernel whether it uses local memory
(a register tile that spilled) or float64 arithmetic.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path


def _sig(args) -> str:
    out = []
    for a in args:
        if a[0] == "array":
            dtype = "boolean" if a[1] == "bool" else a[1]
            ndim, layout = a[2], a[3]
            dims = [":"] * ndim
            if layout == "C":
                dims[-1] = "::1"
            out.append(f"{dtype}[{', '.join(dims)}]")
        elif a[0] == "scalar":
            out.append(a[1])
        elif a[0] == "tuple":
            out.append(f"UniTuple(int64, {a[1]})")
        else:
            raise TypeError(f"cannot describe argument {a}")
    return "(" + ", ".join(out) + ")"


def _load(path: str) -> types.ModuleType:
    """A module by file: graphdl's own modules by import, generated ones from their file."""
    p = Path(path)
    if p.name.startswith("gdl_"):
        pkg_name = "graphdl_gen_cuda"
        if pkg_name not in sys.modules:
            pkg = types.ModuleType(pkg_name)
            pkg.__path__ = [str(p.parent)]
            sys.modules[pkg_name] = pkg
        name = f"{pkg_name}.{p.stem}"
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, p)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
        return sys.modules[name]
    parts = p.with_suffix("").parts
    i = len(parts) - 1 - list(reversed(parts)).index("graphdl")
    return importlib.import_module(".".join(parts[i:]))


def _no_device_needed(cc) -> None:
    """numba-cuda asks the current device for its compute capability when it compiles a
    device function called by a kernel (the scalar functions): answer for the target."""
    try:
        from numba.cuda import dispatcher
    except ImportError:
        return
    if hasattr(dispatcher, "get_current_device"):
        dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)


def main() -> int:
    from numba import cuda

    from graphdl.backends.cuda.library import load_library

    load_library()  # device functions for K.s_*

    records = json.loads(Path(sys.argv[1]).read_text())
    cc = tuple(int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "8.0").split("."))
    _no_device_needed(cc)
    result = {"compiled": 0, "failures": [], "local_memory": [], "float64": {},
              "implementation": getattr(cuda, "implementation", "?")}
    for path, qualname, args in records:
        mod = _load(path)
        kernel = getattr(mod, qualname)
        fn = getattr(kernel, "py_func", kernel)
        sig = _sig(args)
        try:
            ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
        except Exception as e:  # noqa: BLE001
            result["failures"].append(f"{Path(path).name}:{qualname}{sig}: {type(e).__name__}: "
                                      f"{str(e).splitlines()[0][:400]}")
            continue
        result["compiled"] += 1
        if "ld.local" in ptx or "st.local" in ptx:
            result["local_memory"].append(f"{qualname}{sig}")
        f64 = sum(ptx.count(op) for op in ("fma.rn.f64", "mul.f64", "add.f64", "div.rn.f64"))
        if f64:
            result["float64"][f"{qualname}{sig}"] = f64
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
