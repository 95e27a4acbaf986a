"""Large kernels are compiled once and called by address, not copied into every caller.

Numba links a jitted callee into its caller by copying the callee's LLVM module into the
caller's and optimising and compiling the whole again. graphdl's calls nest (generated
step → kernel → parfor body → per-block helper → tile), so a convolution block was
optimised and turned into machine code four times, and the step's own compile re-did
every kernel of the model: in a cold LeNet compile, LLVM's final-module work was 22 of
39 s. A callee too large for LLVM to inline gains nothing from the copies.

So a registered kernel or helper (`register`, from `graphdl.backends.cpu.library`) whose
compiled function has more than about 200 LLVM instructions (MIN_LINES) is *called by
symbol*: the caller keeps only a declaration, and the symbol resolves to the callee's
machine code, compiled once, through llvmlite's process symbol table. Small callees
(random-number mixers, index helpers, fused elementwise loops) are linked as before, so
LLVM still inlines them into the loops that call them, and so is every callee of a
generated scan (HOT_CALLERS), which calls them at each time step. Measured, LeNet's
training step runs at the same speed and gives the same
bits.

Numba's on-disk cache stores a library's object code; an object that calls by symbol
needs its callees loaded first. Each cached library therefore also stores, beside its
object code, the callees it calls by symbol (registry key, argument types, symbol
name); loading it first compiles or loads those (through their own dispatchers and
cache entries, recursively) and binds each symbol name to the loaded function's
address, whatever name that compile gave it (Numba's names carry a per-process counter,
so a callee recompiled by another process has another name).

This works on Numba's code-library internals (`CPUCodeLibrary.add_linking_library`,
`serialize_using_object_code`, `_unserialize`, `Dispatcher.add_overload`), checked when
installed: on a Numba whose internals differ, `install` leaves Numba as it is (every
callee linked, slower compiles) and `installed()` says so, which a test checks.
"""

from __future__ import annotations

import inspect

# a callee whose function (after its own optimisation) prints to more LLVM IR lines than
# this (about 200 instructions: a line per instruction, label and declaration) is called
# by symbol; LLVM's inliner would not inline a function this large into a caller
MIN_LINES = 250
# a generated scan (`scan_<i>`, graphdl.backends.cpu.codegen) calls its body's kernels at
# every time step: those stay linked into it, as before (called by symbol, an LSTM's
# batch-1 forward pass ran 10-27 % slower)
HOT_CALLERS = ("scan_",)

_REGISTRY: dict[str, object] = {}  # registry key -> dispatcher
_installed = False


def register(dispatcher, key: str):
    """Let ``dispatcher``'s compiled functions be called by symbol; ``key`` finds it
    again in another process (the same key for the same function)."""
    _REGISTRY[key] = dispatcher
    dispatcher._graphdl_link_key = key
    return dispatcher


def installed() -> bool:
    return _installed


def install() -> None:
    """Patch Numba's CPU code libraries (once per process); see the module docstring."""
    global _installed
    if _installed:
        return
    from numba.core import codegen, dispatcher

    lib_cls = codegen.CPUCodeLibrary
    disp_cls = dispatcher.Dispatcher
    expected = (
        (lib_cls.add_linking_library, ("self", "library")),
        (lib_cls.serialize_using_object_code, ("self",)),
        (lib_cls._unserialize.__func__, ("cls", "codegen", "state")),
        (disp_cls.add_overload, ("self", "cres")),
    )
    for fn, params in expected:
        if tuple(inspect.signature(fn).parameters) != params:
            return
    if "shared_bitcode = data" not in inspect.getsource(lib_cls._unserialize):
        return

    link = lib_cls.add_linking_library
    serialize = lib_cls.serialize_using_object_code
    unserialize = lib_cls._unserialize.__func__
    add_overload = disp_cls.add_overload

    def add_overload_with_origin(self, cres):
        key = getattr(self, "_graphdl_link_key", None)
        if key is not None and not cres.objectmode:
            cres.library._graphdl_origin = (key, tuple(cres.signature.args),
                                            cres.fndesc.mangled_name)
        return add_overload(self, cres)

    def add_linking_library(self, library):
        origin = getattr(library, "_graphdl_origin", None)
        if (origin is not None and not self.name.startswith(HOT_CALLERS)
                and _large(library, origin[2])):
            _bind(origin[2], library, origin[2])
            deps = self.__dict__.setdefault("_graphdl_deps", [])
            if origin not in deps:
                deps.append(origin)
            return None
        return link(self, library)

    def serialize_using_object_code(self):
        name, kind, data = serialize(self)
        deps = _all_deps(self)
        return (name, kind, (*data, deps)) if deps else (name, kind, data)

    def _unserialize(cls, codegen_, state):
        name, kind, data = state
        deps = []
        if kind == "object" and len(data) == 3:
            deps = data[2]
            _load(deps)
            state = (name, kind, data[:2])
        library = unserialize(cls, codegen_, state)
        if deps:
            library._graphdl_deps = list(deps)
        return library

    disp_cls.add_overload = add_overload_with_origin
    lib_cls.add_linking_library = add_linking_library
    lib_cls.serialize_using_object_code = serialize_using_object_code
    lib_cls._unserialize = classmethod(_unserialize)
    _installed = True


def _large(library, name: str) -> bool:
    size = getattr(library, "_graphdl_size", None)
    if size is None:
        fn = library._get_module_for_linking().get_function(name)
        size = str(fn).count("\n")  # about one line per instruction; printed by LLVM, fast
        library._graphdl_size = size
    return size > MIN_LINES


def _all_deps(library) -> list:
    """The callees ``library`` calls by symbol, its own and those of the libraries linked
    into it, callees before callers."""
    out: list = []
    seen: set = set()

    def walk(lib):
        if id(lib) in seen:
            return
        seen.add(id(lib))
        for linked in getattr(lib, "_linking_libraries", ()):
            walk(linked)
        for dep in getattr(lib, "_graphdl_deps", ()):
            if dep not in out:
                out.append(dep)

    walk(library)
    return out


def _bind(symbol: str, library, name: str) -> None:
    """Make ``symbol`` resolve to ``library``'s function ``name``."""
    import llvmlite.binding as ll

    address = library.get_pointer_to_function(name)
    if not address:
        raise RuntimeError(f"graphdl: {name} is not defined by its library")
    ll.add_symbol(symbol, address)


def _load(deps: list) -> None:
    """Compile or load from the cache every callee a cached library calls by symbol, and
    bind the symbol names it was compiled against."""
    for key, argtypes, symbol in deps:
        dispatcher = _REGISTRY.get(key)
        if dispatcher is None:
            raise RuntimeError(
                f"graphdl: a cached kernel calls {key}, which this graphdl does not have; "
                "clear the kernel cache (GRAPHDL_CACHE_DIR)")
        dispatcher.compile(argtypes)
        cres = dispatcher.overloads[argtypes]
        _bind(symbol, cres.library, cres.fndesc.mangled_name)
