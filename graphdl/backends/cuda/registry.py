"""Where CUDA kernels and their emitters are registered (no CUDA import here).

An op gets a CUDA implementation either from its scalar function (elementwise ops: the
code generator writes the loop, fused or not) or from a *CUDA emitter*: a function
``emit(ctx, attrs, ins, outs) -> list[str]`` registered here under the op's name, which
writes the launches into the generated program (see `codegen.CudaEmitCtx`). The kernels it
launches are registered with `cuda_kernel` and reached from generated code as ``K.<name>``.

The op modules in ``graphdl/ops`` stay free of CUDA: the kernels and emitters of an op
family live in ``graphdl/backends/cuda/kernels/<family>.py``, imported by `load_all` when the
CUDA backend is first used. A new op family adds its module to `FAMILIES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

CUDA_EMITTERS: dict[str, Callable] = {}
CUDA_KERNELS: dict[str, object] = {}
CUDA_EPILOGUE_EMITTERS: dict[str, Callable] = {}

FAMILIES = ("reduce", "matmul", "nn", "losses", "optim", "shape", "control", "layernorm",
            "attention", "batchnorm", "image", "conv", "pool")


def cuda_emitter(*op_names: str) -> Callable:
    """Register ``fn`` as the CUDA emitter of the named ops."""

    def deco(fn):
        for name in op_names:
            if name in CUDA_EMITTERS and CUDA_EMITTERS[name] is not fn:
                raise ValueError(f"cuda emitter for {name!r} registered twice")
            CUDA_EMITTERS[name] = fn
        return fn

    return deco


def cuda_epilogue_emitter(*op_names: str) -> Callable:
    """Register ``fn`` as the emitter of the named ops *with a fused epilogue*:
    ``emit(ctx, attrs, ins, outs, epilogue) -> list[str]`` writes one kernel that applies the
    epilogue (`codegen.Epilogue`: the elementwise ops `fuse` appended to the op) to each
    output value before it stores it. An epilogue group whose head has none runs as the
    head's launch followed by a generated loop over its output."""

    def deco(fn):
        for name in op_names:
            if name in CUDA_EPILOGUE_EMITTERS and CUDA_EPILOGUE_EMITTERS[name] is not fn:
                raise ValueError(f"cuda epilogue emitter for {name!r} registered twice")
            CUDA_EPILOGUE_EMITTERS[name] = fn
        return fn

    return deco


def cuda_kernel(kernel):
    """Register a jitted kernel (or device function) under its Python name."""
    name = kernel.__name__
    if name in CUDA_KERNELS and CUDA_KERNELS[name] is not kernel:
        raise ValueError(f"cuda kernel {name!r} registered twice")
    CUDA_KERNELS[name] = kernel
    return kernel


_loaded = False


def load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for family in FAMILIES:
        importlib.import_module(f"graphdl.backends.cuda.kernels.{family}")


def emitter_for(op: str) -> Callable | None:
    load_all()
    return CUDA_EMITTERS.get(op)


def epilogue_emitter_for(op: str) -> Callable | None:
    load_all()
    return CUDA_EPILOGUE_EMITTERS.get(op)


def supported_ops() -> set[str]:
    """Ops with a CUDA implementation: an emitter, a scalar function (generated loop), or a
    body (a scan: the generated host loop; the ops of its body are checked when a program
    is generated)."""
    from graphdl.ops.registry import all_ops

    load_all()
    ops = all_ops()
    return {n for n, o in ops.items() if n in CUDA_EMITTERS or o.scalar is not None or o.body} | {
        "input", "param", "state", "const", "fused"}
