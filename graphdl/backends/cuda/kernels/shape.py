"""CUDA kernels of the shape ops (graphdl/ops/shape.py): reshape (a view: no kernel),
transpose, concat, slice, slice_grad; broadcast_to has a scalar function, so the code
generator writes its loop. Also the plain copy and fill kernels the generator uses (and
the offset copy of a scan's steps)."""

from __future__ import annotations

from graphdl.backends.cuda.device import cuda, jit
from graphdl.backends.cuda.registry import cuda_emitter, cuda_kernel
from graphdl.errors import Diagnostic, GraphdlError
from graphdl.ops.shape import _slice_dims, _split3

RANK = 6  # transpose handles up to this many axes (shapes are padded with leading ones)


@cuda_kernel
@jit
def copy_flat(src, dst):
    for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        dst[i] = src[i]


@cuda_kernel
@jit
def copy_flat_offset(src, dst, src_off, dst_off, n):
    """dst[dst_off + i] = src[src_off + i] for i < n, over 1-D views: a scan's step copies
    its slice of a sequence in and its outputs out (the offsets are known at run time only)."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        dst[dst_off + i] = src[src_off + i]


@cuda_kernel
@jit
def fill_flat(dst, value):
    v = dst.dtype.type(value)
    for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        dst[i] = v


@cuda_kernel
@jit
def copy_into_3d(src, dst, offset):
    """dst[a, offset + m, b] = src[a, m, b] (concat). A deliberate parallel of its adjoint
    `copy_from_3d` (split): the same index walk, the offset on the other side."""
    na, nm, nb = src.shape
    for i in range(cuda.grid(1), na * nm * nb, cuda.gridsize(1)):
        b = i % nb
        q = i // nb
        m = q % nm
        a = q // nm
        dst[a, offset + m, b] = src[a, m, b]


@cuda_kernel
@jit
def copy_from_3d(src, dst, offset):
    """dst[a, m, b] = src[a, offset + m, b] (split). A deliberate parallel of its adjoint
    `copy_into_3d` (concat): the same index walk, the offset on the other side."""
    na, nm, nb = dst.shape
    for i in range(cuda.grid(1), na * nm * nb, cuda.gridsize(1)):
        b = i % nb
        q = i // nb
        m = q % nm
        a = q // nm
        dst[a, m, b] = src[a, offset + m, b]


@cuda_kernel
@jit
def transpose_nd(src, dst, oshape, istrides):
    """dst (flat, the transposed shape ``oshape``) from src (flat): output axis j steps
    ``istrides[j]`` elements in src. Both tuples are padded to RANK axes."""
    for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        q = i
        s = 0
        for j in range(RANK - 1, -1, -1):
            d = oshape[j]
            s += (q % d) * istrides[j]
            q = q // d
        dst[i] = src[s]


def _slice_views(ctx, attrs, src, dst) -> tuple[str, str]:
    """``src`` and ``dst`` as (A, M, B) views about the slice axis (slice and slice_grad)."""
    a, m, mo, b = _slice_dims(ctx, attrs, src, dst)
    return ctx.reshaped(src, (a, m, b)), ctx.reshaped(dst, (a, mo, b))


@cuda_emitter("reshape")
def _emit_reshape(ctx, attrs, ins, outs):
    ctx.setup(f"{ctx.var(outs[0])} = {ctx.var(ins[0])}.reshape({ctx.shape_tuple(ctx.shape(outs[0]))})")
    return []


def emit_transpose(ctx, src: str, shape: tuple[str, ...], perm: tuple[int, ...], dst: str) -> list[str]:
    """Launch a transpose of ``src`` (shape ``shape``, expressions) into ``dst`` (a device
    array of the transposed shape), for emitters that need one (reductions)."""
    if len(perm) > RANK:
        raise GraphdlError(Diagnostic(
            "E708", f"no CUDA kernel for a transpose of rank {len(perm)} (the CUDA backend "
            f"handles rank <= {RANK})", help="use device: cpu for this model"), phase="compile")
    strides = []
    for k in range(len(shape)):
        strides.append(" * ".join(shape[k + 1 :]) or "1")
    oshape = ", ".join(shape[p] for p in perm)
    ostrides = ", ".join(strides[p] for p in perm)
    pad = RANK - len(perm)
    os_ = ctx.view(f"({'1, ' * pad}{oshape}{',' if len(perm) == 1 and not pad else ''})", "sh")
    is_ = ctx.view(f"({'0, ' * pad}{ostrides}{',' if len(perm) == 1 and not pad else ''})", "st")
    n = " * ".join(shape) or "1"
    return ctx.launch1d(ctx.kernel("transpose_nd"), n, [ctx.flat(src), ctx.flat(dst), os_, is_])


@cuda_emitter("transpose")
def _emit_transpose(ctx, attrs, ins, outs):
    return emit_transpose(ctx, ctx.var(ins[0]), ctx.shape(ins[0]), tuple(attrs["perm"]),
                          ctx.var(outs[0]))


@cuda_emitter("concat")
def _emit_concat(ctx, attrs, ins, outs):
    axis = attrs["axis"] % ctx.type(outs[0]).rank
    a, m, b = _split3(ctx, outs[0], axis)
    out3 = ctx.reshaped(outs[0], (a, m, b))
    lines, offset = [], 0
    for v in ins:
        _, mi, _ = _split3(ctx, v, axis)
        src3 = ctx.reshaped(v, (a, mi, b))
        lines += ctx.launch1d(ctx.kernel("copy_into_3d"), ctx.size(v), [src3, out3, str(offset)])
        offset += ctx.type(v).shape[axis]
    return lines


@cuda_emitter("slice")
def _emit_slice(ctx, attrs, ins, outs):
    src3, dst3 = _slice_views(ctx, attrs, ins[0], outs[0])
    return ctx.launch1d(ctx.kernel("copy_from_3d"), ctx.size(outs[0]), [src3, dst3, str(attrs["start"])])


@cuda_emitter("slice_grad")
def _emit_slice_grad(ctx, attrs, ins, outs):
    src3, dst3 = _slice_views(ctx, attrs, ins[0], outs[0])
    lines = ctx.launch1d(ctx.kernel("fill_flat"), ctx.size(outs[0]), [ctx.flat(outs[0]), "0"])
    lines += ctx.launch1d(ctx.kernel("copy_into_3d"), ctx.size(ins[0]), [src3, dst3, str(attrs["start"])])
    return lines
