"""Shape ops: reshape (a view), transpose, broadcast_to, concat, slice (and its gradient)."""

from __future__ import annotations

import numpy as np

from graphdl.ir.types import TensorType, broadcast_shapes
from graphdl.ops.elementwise import _cast
from graphdl.ops.registry import (
    Attr,
    OpDef,
    Pattern,
    ShapeError,
    cpu_helper,
    cpu_kernel,
    register,
    vector_copy,
)


def _numel_static(shape):
    n = 1
    syms = []
    for d in shape:
        if isinstance(d, str):
            syms.append(d)
        else:
            n *= d
    return n, sorted(syms)


def _infer_reshape(attrs, types):
    src = types[0].shape
    target = list(attrs["shape"])
    n_src, sym_src = _numel_static(src)
    if target.count(-1) > 1:
        raise ShapeError(f"reshape to {target}: at most one -1")
    if -1 in target:
        rest = [d for d in target if d != -1]
        n_rest, sym_rest = _numel_static(rest)
        if sym_rest != sym_src[: len(sym_rest)] or n_rest == 0 or n_src % n_rest:
            raise ShapeError(f"cannot reshape {list(src)} to {target}")
        extra = [s for s in sym_src if s not in sym_rest]
        if extra:
            raise ShapeError(f"reshape to {target} would hide the symbolic dim {extra[0]}")
        target[target.index(-1)] = n_src // n_rest
    n_dst, sym_dst = _numel_static(target)
    if n_dst != n_src or sym_dst != sym_src:
        raise ShapeError(f"cannot reshape {list(src)} ({n_src} x {sym_src}) to {list(target)}")
    return [TensorType(tuple(target), types[0].dtype)]


def _bind_shape(shape, bindings, like=None):
    return tuple(bindings[d] if isinstance(d, str) else d for d in shape)


def _ref_reshape(attrs, x, bindings=None):
    out_shape = _bind_shape(attrs["shape"], bindings or {})
    return x.reshape(out_shape)


def _g_reshape(g, attrs, ins, outs, gouts):
    return [g.op("reshape", gouts[0], shape=g.type_of(ins[0]).shape)]


def _emit_reshape(ctx, attrs, ins, outs):
    shape = ctx.shape(outs[0])
    return [f"{ctx.var(outs[0])} = {ctx.var(ins[0])}.reshape({ctx.shape_tuple(shape)})"]


register(
    OpDef(
        name="reshape",
        inputs=("x",),
        infer=_infer_reshape,
        reference=_ref_reshape,
        pattern=Pattern.INJECTIVE,
        attrs={"shape": Attr(tuple)},
        grad=_g_reshape,
        emit_cpu=_emit_reshape,
        view=True,
        doc="same data, new shape (may hold symbols such as N and one -1)",
    )
)


def _infer_transpose(attrs, types):
    perm = tuple(attrs["perm"])
    if sorted(perm) != list(range(types[0].rank)):
        raise ShapeError(f"perm {perm} is not a permutation of {types[0].rank} axes")
    return [TensorType(tuple(types[0].shape[p] for p in perm), types[0].dtype)]


def _g_transpose(g, attrs, ins, outs, gouts):
    inv = tuple(int(i) for i in np.argsort(attrs["perm"]))
    return [g.op("transpose", gouts[0], perm=inv)]


def _emit_transpose(ctx, attrs, ins, outs):
    perm = tuple(attrs["perm"])
    if len(perm) == 3:
        return [ctx.call("transpose_3d", ins[0], outs[0], ctx.runtime(*perm))]
    if len(perm) == 4:  # a kernel: np.transpose inline costs seconds of compile time each
        last = ctx.type(ins[0]).shape[-1]
        if (perm[3] == 3 and ctx.type(ins[0]).dtype == "float32" and isinstance(last, int)
                and last % VECTOR == 0):
            return [ctx.call("transpose_4d_vec", ins[0], outs[0], ctx.runtime(*perm))]
        return [ctx.call("transpose_4d", ins[0], outs[0], ctx.runtime(*perm))]
    return [f"{ctx.var(outs[0])}[...] = np.transpose({ctx.var(ins[0])}, {perm})"]


register(
    OpDef(
        name="transpose",
        inputs=("x",),
        infer=_infer_transpose,
        reference=lambda attrs, x: np.array(np.transpose(x, attrs["perm"]), order="C"),
        pattern=Pattern.INJECTIVE,
        attrs={"perm": Attr(tuple)},
        grad=_g_transpose,
        emit_cpu=_emit_transpose,
        doc="permute the axes by perm",
    )
)


def _infer_broadcast_to(attrs, types):
    target = tuple(attrs["shape"])
    if broadcast_shapes(types[0].shape, target) != target:
        raise ShapeError(f"cannot broadcast {list(types[0].shape)} to {list(target)}")
    return [TensorType(target, types[0].dtype)]


def _ref_broadcast_to(attrs, x, bindings=None):
    return np.array(np.broadcast_to(x, _bind_shape(attrs["shape"], bindings or {})), order="C")


def _g_broadcast_to(g, attrs, ins, outs, gouts):
    return [gouts[0]]  # the autodiff driver sums the gradient back to the input's shape


# broadcast_to is an elementwise identity whose input broadcasts: it fuses like one
register(
    OpDef(
        name="broadcast_to",
        inputs=("x",),
        infer=_infer_broadcast_to,
        reference=_ref_broadcast_to,
        pattern=Pattern.BROADCAST,
        attrs={"shape": Attr(tuple)},
        grad=_g_broadcast_to,
        scalar=_cast,
        doc="repeat x to a larger broadcast-compatible shape",
    )
)


def _infer_concat(attrs, types):
    rank = types[0].rank
    axis = attrs["axis"]
    if not -rank <= axis < rank:
        raise ShapeError(f"concat axis {axis} out of range for rank {rank}")
    axis %= rank
    total = 0
    for t in types:
        if t.rank != rank or t.dtype != types[0].dtype:
            raise ShapeError("concat inputs differ in rank or dtype: " + ", ".join(map(str, types)))
        for i in range(rank):
            if i != axis and t.shape[i] != types[0].shape[i]:
                raise ShapeError(
                    "concat inputs must match except on the concat axis: "
                    + ", ".join(str(list(x.shape)) for x in types)
                )
        if isinstance(t.shape[axis], str):
            raise ShapeError(f"cannot concat along the symbolic dim {t.shape[axis]}")
        total += t.shape[axis]
    shape = list(types[0].shape)
    shape[axis] = total
    return [TensorType(tuple(shape), types[0].dtype)]


def _g_concat(g, attrs, ins, outs, gouts):
    rank = g.type_of(ins[0]).rank
    axis = attrs["axis"] % rank
    grads, start = [], 0
    for v in ins:
        size = g.type_of(v).shape[axis]
        grads.append(g.op("slice", gouts[0], axis=axis, start=start, stop=start + size))
        start += size
    return grads


@cpu_kernel
def copy_flat(src, dst):
    """dst[...] = src for two C-contiguous arrays of one size (generated code's copies: a
    call to this one kernel compiles far faster than NumPy's broadcasting setitem)."""
    s = src.reshape(src.size)
    d = dst.reshape(dst.size)
    for i in range(d.size):
        d[i] = s[i]


@cpu_kernel
def transpose_3d(x, out, p0, p1, p2):
    """out = np.transpose(x, (p0, p1, p2)) for a C-contiguous rank-3 x."""
    d0, d1, d2 = out.shape
    st = (x.shape[1] * x.shape[2], x.shape[2], 1)
    s0, s1, s2 = st[p0], st[p1], st[p2]
    flat = x.reshape(x.size)
    for i in range(d0):
        for j in range(d1):
            for k in range(d2):
                out[i, j, k] = flat[i * s0 + j * s1 + k * s2]


@cpu_helper
def _out_strides(out, p0, p1, p2, p3):
    """The element strides in C-contiguous ``out`` = np.transpose(x, (p0, p1, p2, p3)) of
    x's axes 0..3 (where a step along each of x's axes lands in out)."""
    n1, n2, n3 = out.shape[1], out.shape[2], out.shape[3]
    s = (n1 * n2 * n3, n2 * n3, n3, 1)
    inv = [0, 0, 0, 0]
    inv[p0] = 0
    inv[p1] = 1
    inv[p2] = 2
    inv[p3] = 3
    return s[inv[0]], s[inv[1]], s[inv[2]], s[inv[3]]


@cpu_kernel
def transpose_4d(x, out, p0, p1, p2, p3):
    """out = np.transpose(x, (p0, p1, p2, p3)) for any rank-4 x and a C-contiguous out:
    reads x in order, writes out at its element strides (contiguous runs where the last
    axis stays last)."""
    t0, t1, t2, t3 = _out_strides(out, p0, p1, p2, p3)
    o = out.reshape(out.size)
    d0, d1, d2, d3 = x.shape
    for a in range(d0):
        for b in range(d1):
            for c in range(d2):
                base = a * t0 + b * t1 + c * t2
                if t3 == 1:
                    for d in range(d3):
                        o[base + d] = x[a, b, c, d]
                else:
                    for d in range(d3):
                        o[base + d * t3] = x[a, b, c, d]


# the vector copy of the float32 transpose below (16 floats: one AVX-512 register)
VECTOR = 16
copy_16 = vector_copy(VECTOR)


@cpu_kernel
def transpose_4d_vec(x, out, p0, p1, p2, p3):
    """transpose_4d of a C-contiguous float32 x that keeps its last axis last, that axis a
    multiple of VECTOR: each run of the last axis is moved VECTOR floats at a time by one
    vector load and store (`copy_16`). A loop over a run of 16 (a head's features, the
    split of attention's heads) ran one element at a time: 28 -> 7.5 us for [32, 31, 4, 16]
    -> [32, 4, 31, 16]."""
    t0, t1, t2, _ = _out_strides(out, p0, p1, p2, p3)
    o = out.reshape(out.size)
    xf = x.reshape(x.size)
    d0, d1, d2, d3 = x.shape
    i = 0
    for a in range(d0):
        for b in range(d1):
            for c in range(d2):
                base = a * t0 + b * t1 + c * t2
                for d in range(0, d3, VECTOR):
                    copy_16(xf, i + d, o, base + d)
                i += d3


# Deliberate parallel of copy_from_3d (split), its adjoint: the same loops, the offset on
# the other side (kept apart so each inner loop stays a plain contiguous copy).
@cpu_kernel
def copy_into_3d(src, dst, offset):
    """dst[:, offset:offset + M, :] = src for C-contiguous src [A, M, B] and dst [A, MD, B]:
    per a, one contiguous run of M * B elements on both sides (a loop over b alone does
    not vectorise when B is 1 or small, as in a split of features: 88 us against 22 for
    992 rows of 64 of 192 floats)."""
    na, nm, nb = src.shape
    md = dst.shape[1]
    run = nm * nb
    s = src.reshape(src.size)
    d = dst.reshape(dst.size)
    for a in range(na):
        sb = a * run
        db = (a * md + offset) * nb
        for i in range(run):
            d[db + i] = s[sb + i]


def _split3(ctx, v, axis):
    shape = ctx.shape(v)
    a = " * ".join(shape[:axis]) or "1"
    b = " * ".join(shape[axis + 1 :]) or "1"
    return a, shape[axis], b


def _emit_concat(ctx, attrs, ins, outs):
    axis = attrs["axis"] % ctx.type(outs[0]).rank
    out = ctx.var(outs[0])
    a, m, b = _split3(ctx, outs[0], axis)
    lines, offset = [], 0
    for v in ins:
        _, mi, _ = _split3(ctx, v, axis)
        lines.append(ctx.call("copy_into_3d", f"{ctx.var(v)}.reshape(({a}, {mi}, {b}))",
                              f"{out}.reshape(({a}, {m}, {b}))", offset))
        offset += ctx.type(v).shape[axis]
    return lines


register(
    OpDef(
        name="concat",
        inputs=("xs",),
        variadic=True,
        infer=_infer_concat,
        reference=lambda attrs, *xs: np.concatenate(xs, axis=attrs["axis"]),
        pattern=Pattern.INJECTIVE,
        attrs={"axis": Attr(int, -1)},
        grad=_g_concat,
        emit_cpu=_emit_concat,
        doc="join the inputs along axis",
    )
)


def _infer_slice(attrs, types):
    t = types[0]
    axis = attrs["axis"]
    if not -t.rank <= axis < t.rank:
        raise ShapeError(f"slice axis {axis} out of range for rank {t.rank}")
    axis %= t.rank
    size = t.shape[axis]
    start, stop = attrs["start"], attrs["stop"]
    if isinstance(size, str):
        raise ShapeError(f"cannot slice the symbolic dim {size}")
    if not 0 <= start < stop <= size:
        raise ShapeError(f"slice [{start}:{stop}] is out of range for a dim of size {size}")
    shape = list(t.shape)
    shape[axis] = stop - start
    return [TensorType(tuple(shape), t.dtype)]


def _ref_slice(attrs, x):
    idx = [slice(None)] * x.ndim
    idx[attrs["axis"]] = slice(attrs["start"], attrs["stop"])
    return np.ascontiguousarray(x[tuple(idx)])


def _g_slice(g, attrs, ins, outs, gouts):
    t = g.type_of(ins[0])
    return [g.op("slice_grad", gouts[0], axis=attrs["axis"], start=attrs["start"], size=t.shape[attrs["axis"]])]


# Deliberate parallel of copy_into_3d (concat), its adjoint: the same loops, the offset on
# the other side.
@cpu_kernel
def copy_from_3d(src, dst, offset):
    """dst = src[:, offset:offset + M, :] for C-contiguous src [A, MS, B] and dst [A, M, B],
    in contiguous runs of M * B (as copy_into_3d)."""
    na, nm, nb = dst.shape
    ms = src.shape[1]
    run = nm * nb
    s = src.reshape(src.size)
    d = dst.reshape(dst.size)
    for a in range(na):
        sb = (a * ms + offset) * nb
        db = a * run
        for i in range(run):
            d[db + i] = s[sb + i]


def _slice_dims(ctx, attrs, src, dst) -> tuple[str, str, str, str]:
    """(A, M, MO, B): ``src`` seen as (A, M, B) and ``dst`` as (A, MO, B) about the slice
    axis (slice and slice_grad, on both backends)."""
    axis = attrs["axis"] % ctx.type(src).rank
    a, m, b = _split3(ctx, src, axis)
    _, mo, _ = _split3(ctx, dst, axis)
    return a, m, mo, b


def _emit_slice(ctx, attrs, ins, outs):
    a, m, mo, b = _slice_dims(ctx, attrs, ins[0], outs[0])
    return [ctx.call("copy_from_3d", f"{ctx.var(ins[0])}.reshape(({a}, {m}, {b}))",
                     f"{ctx.var(outs[0])}.reshape(({a}, {mo}, {b}))", attrs["start"])]


_SLICE_ATTRS = {"axis": Attr(int), "start": Attr(int), "stop": Attr(int)}
register(
    OpDef(
        name="slice",
        inputs=("x",),
        infer=_infer_slice,
        reference=_ref_slice,
        pattern=Pattern.INJECTIVE,
        attrs=_SLICE_ATTRS,
        grad=_g_slice,
        emit_cpu=_emit_slice,
        doc="x[..., start:stop, ...] along `axis` (step 1)",
    )
)


def _infer_slice_grad(attrs, types):
    t = types[0]
    axis = attrs["axis"] % t.rank
    shape = list(t.shape)
    shape[axis] = attrs["size"]
    return [TensorType(tuple(shape), t.dtype)]


def _ref_slice_grad(attrs, g):
    axis = attrs["axis"] % g.ndim
    shape = list(g.shape)
    shape[axis] = attrs["size"]
    out = np.zeros(shape, g.dtype)
    idx = [slice(None)] * g.ndim
    idx[axis] = slice(attrs["start"], attrs["start"] + g.shape[axis])
    out[tuple(idx)] = g
    return out


def _g_slice_grad(g, attrs, ins, outs, gouts):
    n = g.type_of(ins[0]).shape[attrs["axis"]]
    return [g.op("slice", gouts[0], axis=attrs["axis"], start=attrs["start"], stop=attrs["start"] + n)]


def _emit_slice_grad(ctx, attrs, ins, outs):
    a, m, mo, b = _slice_dims(ctx, attrs, ins[0], outs[0])
    out = ctx.var(outs[0])
    return [
        f"{out}[...] = 0",
        ctx.call("copy_into_3d", f"{ctx.var(ins[0])}.reshape(({a}, {m}, {b}))",
                 f"{out}.reshape(({a}, {mo}, {b}))", attrs["start"]),
    ]


register(
    OpDef(
        name="slice_grad",
        inputs=("g",),
        infer=_infer_slice_grad,
        reference=_ref_slice_grad,
        pattern=Pattern.INJECTIVE,
        attrs={"axis": Attr(int), "start": Attr(int), "size": Attr(int)},
        grad=_g_slice_grad,
        emit_cpu=_emit_slice_grad,
        doc="the gradient of slice: g placed at [start:start+len] in zeros of dim `size`",
    )
)
