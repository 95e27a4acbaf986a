"""The generated-module cache both backends share: generated source at a stable path named
by a content hash.

Numba can only cache a function whose source is an importable file, and a new process
can only load that cache when the module is importable by the same name. So generated
source is written to ``<cache>/<backend>/gdl_<hash>.py`` and imported as
``graphdl_gen.gdl_<hash>`` registered in ``sys.modules``. Each backend's key
(`graphdl.backends.cpu.cache`, `graphdl.backends.cuda.cache`) covers the code (the source
less its header docstring, `code_of`) plus everything the compiled code depends on that the
source does not show. The header names the spec, program and mode; leaving it out of the
key lets programs that generate the same code (specs that differ only in ``name:`` or in
where they lie) share one file and one Numba cache. The file is written once, by the first
of them: its header names that one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
import types
from functools import cache
from pathlib import Path

from graphdl.ops.registry import all_ops, cpu_kernels, is_cpu_helper

# the files that hold the flags and constants kernels are compiled with: the CPU library's
# fast-math flags and parallel options, the ops' PAR_BLOCKS (paths inside the package)
FLAG_FILES = (
    "backends/cpu/library.py", "backends/cpu/linking.py", "backends/cpu/simd.py", "ops/registry.py")
PACKAGE = "graphdl_gen"


def cache_dir() -> Path:
    """GRAPHDL_CACHE_DIR, else the user's cache folder (XDG_CACHE_HOME or ~/.cache)."""
    env = os.environ.get("GRAPHDL_CACHE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "graphdl"


@cache
def function_source(name: str) -> str:
    """Source of a library function as generated code names it: K.<kernel>, K.s_<op> or
    K.s32_<op> (an op's float32 scalar function)."""
    kernels = cpu_kernels()
    if name in kernels:
        fn = kernels[name]
    elif name.startswith("s_") and name[2:] in all_ops():
        fn = all_ops()[name[2:]].scalar
    elif name.startswith("s32_") and name[4:] in all_ops() and all_ops()[name[4:]].scalar_f32:
        fn = all_ops()[name[4:]].scalar_f32
    else:
        return f"<unknown {name}>"
    return _meaning(fn, set())


def _meaning(fn, seen: set) -> str:
    """A function's source, the module-level constants it reads and, recursively, the
    source of the helpers it calls (`graphdl.ops.registry.cpu_helper`)."""
    seen.add(fn)
    try:
        text = inspect.getsource(fn)
    except OSError:
        text = fn.__qualname__
    parts = [text]
    for k in sorted(set(fn.__code__.co_names) & fn.__globals__.keys()):
        v = fn.__globals__[k]
        if isinstance(v, (int, float)):
            parts.append(f"{k}={v!r}")
        elif is_cpu_helper(v) and v not in seen:
            parts.append(_meaning(v, seen))
    return ";".join(parts)


def toolchain_fingerprint(versions: str, files: list[Path], flags: str = "") -> str:
    """A hash of what a backend's compiled code depends on besides the generated source:
    the tool versions, its own files (name and content) and the flags it compiles with."""
    h = hashlib.sha256()
    h.update(versions.encode())
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(flags.encode())
    return h.hexdigest()


def code_of(source: str) -> str:
    """Generated source less its header docstring (the first thing in it, see
    `graphdl.backends.common.codegen.GraphSource._docstring`): what the cache key hashes,
    since the header changes no generated code."""
    if source.startswith('"""'):
        end = source.find('"""', 3)
        if end != -1:
            return source[end + 3:]
    return source


def content_key(fingerprint: str, source: str, callees: list[str]) -> str:
    """The name of a generated module: a hash of the backend's fingerprint, the code
    (`code_of`: the source less its header) and the source of each library function it
    calls (``K.<name>``). Numba's cache of a function holds its callees' machine code but
    only notices changes to the function's own file, so a changed kernel must change the
    key."""
    h = hashlib.sha256()
    h.update(fingerprint.encode())
    h.update(code_of(source).encode())
    for name in sorted(set(callees)):
        h.update(name.encode())
        h.update(function_source(name).encode())
    return h.hexdigest()[:20]


def import_generated(source: str, key: str, backend: str) -> tuple[types.ModuleType, Path, bool]:
    """Write ``source`` to ``<cache>/<backend>/gdl_<key>.py`` (atomically, if new) and import
    it as ``graphdl_gen.gdl_<key>`` registered in sys.modules; shared by the backends. A file
    already there is kept as it is, header included: rewriting it would make Numba's cache
    of it stale."""
    directory = cache_dir() / backend
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"gdl_{key}.py"
    existed = path.exists()
    if not existed:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(source, encoding="utf-8")
        os.replace(tmp, path)
    modname = f"{PACKAGE}.gdl_{key}"
    if modname in sys.modules:
        return sys.modules[modname], path, True
    if PACKAGE not in sys.modules:
        pkg = types.ModuleType(PACKAGE)
        pkg.__path__ = []
        sys.modules[PACKAGE] = pkg
    if str(directory) not in sys.modules[PACKAGE].__path__:
        sys.modules[PACKAGE].__path__.append(str(directory))
    spec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    spec.loader.exec_module(module)
    return module, path, existed


def numba_cache_dir(base: Path, files: tuple[Path, ...]) -> Path:
    """``base/numba/<fingerprint of files>``."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return base / "numba" / h.hexdigest()[:12]


def use_graphdl_numba_cache() -> None:
    """Numba's own cache (compiled machine code) goes under graphdl's cache directory too,
    unless NUMBA_CACHE_DIR is set: one folder holds everything a run compiled. It must be
    chosen before anything is jitted.

    The folder is named by a fingerprint of the files that hold the flags and constants
    every kernel is compiled with (`FLAG_FILES`). Numba invalidates a cached function only when its own
    source file changes, so without the fingerprint a change of those would keep serving
    kernels compiled with the old ones.
    """
    if "NUMBA_CACHE_DIR" in os.environ:
        return
    package = Path(__file__).resolve().parents[2]
    folder = numba_cache_dir(cache_dir(), tuple(package / f for f in FLAG_FILES))
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    import numba

    numba.config.CACHE_DIR = str(folder)  # numba read its config when it was imported
