"""Matrix product, batched, with transpose flags so gradients need no transpose copies."""

from __future__ import annotations

import numpy as np

from graphdl.ir.types import TensorType
from graphdl.ops.registry import (
    Attr,
    OpDef,
    Pattern,
    ShapeError,
    cpu_kernel,
    prange,
    register,
)

# Rows of a GEMM over every step of a sequence (N * T rows) are split between the threads
# from this many rows on; below, one BLAS call on one thread is faster.
SPLIT_ROWS = 256
# Fewer rows than that but at least this many multiply-adds (an input projection at batch 1:
# 32 steps' rows, 256 -> 512 features, 4.2M; one core takes 77-90 us): the columns are split
# instead (56 us on two cores, where two halves of the rows took 96: BLAS is slow on 16
# rows). tb only, where a thread's columns are contiguous rows of b.
SPLIT_WORK = 2_000_000


@cpu_kernel(parallel=True)
def gemm_rows_split(a, b, out, tb):
    """out = a @ b (b^T when tb) for a [M, K], out [M, N]: from SPLIT_ROWS rows on, the rows
    in two halves, one per thread, each one single-threaded BLAS call; with fewer rows but
    SPLIT_WORK multiply-adds and tb, the columns in two halves (each thread's product into
    a buffer of its own, then copied into its columns of out). The step calls it outside
    any loop over time only (a loop's body may already run on a thread of its own)."""
    m, kd = a.shape
    n = out.shape[1]
    if m < SPLIT_ROWS and tb and m * kd * n >= SPLIT_WORK:
        for half in prange(2):
            lo = half * n // 2
            hi = (half + 1) * n // 2
            part = np.empty((m, hi - lo), out.dtype)
            np.dot(a, b[lo:hi].T, part)
            for i in range(m):
                for j in range(hi - lo):
                    out[i, lo + j] = part[i, j]
        return
    if m < SPLIT_ROWS:
        if tb:
            np.dot(a, b.T, out)
        else:
            np.dot(a, b, out)
        return
    for half in prange(2):
        lo = half * m // 2
        hi = (half + 1) * m // 2
        if tb:
            np.dot(a[lo:hi], b.T, out[lo:hi])
        else:
            np.dot(a[lo:hi], b, out[lo:hi])


@cpu_kernel(parallel=True)
def gemm_tn_rows_split(a, b, out, part):
    """out = a^T b for a [M, K], b [M, N] (out [K, N]): each thread sums half of the rows
    into its slice of ``part`` [2, K, N], then the halves are added."""
    m = a.shape[0]
    if m < SPLIT_ROWS:
        np.dot(a.T, b, out)
        return
    for half in prange(2):
        lo = half * m // 2
        hi = (half + 1) * m // 2
        np.dot(a[lo:hi].T, b[lo:hi], part[half])
    k, n = out.shape
    for i in range(k):
        for j in range(n):
            out[i, j] = part[0, i, j] + part[1, i, j]


# A product of fewer rows than this is a matrix-vector product (an RNN's step at batch 1):
# a loop of dot products beats BLAS, whose call and packing cost more than the arithmetic
# (a [1, 128] row by a [512, 128]^T weight: 2.8 us against 3.4). From two rows on BLAS wins.
MATVEC_ROWS = 2


@cpu_kernel
def gemm_nt(a, b, out):
    """out = a @ b^T for a [M, K], b [N, K] (out [M, N]): under MATVEC_ROWS rows, dot
    products of contiguous rows, four rows of b at a time (each element of a row of a is
    loaded once for the four); else one BLAS call."""
    m, kd = a.shape
    n = b.shape[0]
    if m >= MATVEC_ROWS:
        np.dot(a, b.T, out)
        return
    zero = out.dtype.type(0)
    for i in range(m):
        ai = a[i]
        j = 0
        while j + 4 <= n:
            b0, b1, b2, b3 = b[j], b[j + 1], b[j + 2], b[j + 3]
            s0, s1, s2, s3 = zero, zero, zero, zero
            for k in range(kd):
                x = ai[k]
                s0 += x * b0[k]
                s1 += x * b1[k]
                s2 += x * b2[k]
                s3 += x * b3[k]
            out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = s0, s1, s2, s3
            j += 4
        while j < n:
            bj = b[j]
            s0 = zero
            for k in range(kd):
                s0 += ai[k] * bj[k]
            out[i, j] = s0
            j += 1


def _mk(t: TensorType, transposed: bool):
    m, k = t.shape[-2], t.shape[-1]
    return (k, m) if transposed else (m, k)


def _infer(attrs, types):
    a, b = types
    if a.rank < 2 or b.rank < 2:
        raise ShapeError(f"matmul needs rank >= 2 inputs, got {a} and {b}")
    if a.dtype != b.dtype or a.dtype not in ("float32", "float64"):
        raise ShapeError(f"matmul needs matching float dtypes, got {a.dtype} and {b.dtype}")
    m, k1 = _mk(a, attrs["transpose_a"])
    k2, n = _mk(b, attrs["transpose_b"])
    if k1 != k2:
        raise ShapeError(
            f"matmul inner dims differ: {list(a.shape)} @ {list(b.shape)} ({k1} vs {k2})"
        )
    if b.rank > 2 and a.shape[:-2] != b.shape[:-2]:
        raise ShapeError(f"matmul batch dims differ: {list(a.shape[:-2])} vs {list(b.shape[:-2])}")
    if b.rank > 2 and a.rank != b.rank:
        raise ShapeError(f"matmul ranks differ: {a} and {b}")
    return [TensorType(tuple(a.shape[:-2]) + (m, n), a.dtype)]


def _ref(attrs, a, b):
    if attrs["transpose_a"]:
        a = np.swapaxes(a, -1, -2)
    if attrs["transpose_b"]:
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b).astype(a.dtype)


def _grad(g, attrs, ins, outs, gouts):
    a, b = ins
    gy = gouts[0]
    ta, tb = attrs["transpose_a"], attrs["transpose_b"]
    at, bt = g.type_of(a), g.type_of(b)
    shared_weight = bt.rank == 2 and at.rank > 2
    if shared_weight and ta:
        raise ShapeError("the gradient of matmul with transpose_a, a batched input and a 2-D "
                         "weight is not supported; transpose the input instead")
    # dA = gY @ B^T (or its transpose), dB = A^T @ gY (or its transpose)
    if ta:
        da = g.op("matmul", b, gy, transpose_a=tb, transpose_b=True)
    else:
        da = g.op("matmul", gy, b, transpose_a=False, transpose_b=not tb)
    if tb:
        db = g.op("matmul", gy, a, transpose_a=True, transpose_b=ta)
    else:
        db = g.op("matmul", a, gy, transpose_a=not ta, transpose_b=False)
    if shared_weight:
        # a 2-D weight shared by every batch entry: its gradient sums a^T gY over the batch
        # axes, one GEMM over all rows
        db = g.op("matmul_rows", gy, a) if tb else g.op("matmul_rows", a, gy)
    return [da, db]


def _emit(ctx, attrs, ins, outs):
    a, b = ctx.var(ins[0]), ctx.var(ins[1])
    out = ctx.var(outs[0])
    at, bt = ctx.type(ins[0]), ctx.type(ins[1])
    sa = ".T" if attrs["transpose_a"] else ""
    sb = ".T" if attrs["transpose_b"] else ""
    if at.rank == 2:
        if attrs["transpose_b"] and not attrs["transpose_a"]:
            return [ctx.call("gemm_nt", ins[0], ins[1], outs[0])]
        return [f"np.dot({a}{sa}, {b}{sb}, {out})"]
    if bt.rank == 2 and not attrs["transpose_a"]:
        # rows of every batch at once: one large GEMM (on two threads when it is large)
        k = ctx.shape(ins[0])[-1]
        n = ctx.shape(outs[0])[-1]
        rows = " * ".join(ctx.shape(ins[0])[:-1])
        if ctx.in_step():
            return [ctx.call("gemm_rows_split", f"{a}.reshape(({rows}, {k}))", b,
                             f"{out}.reshape(({rows}, {n}))",
                             ctx.runtime(bool(attrs["transpose_b"])))]
        if attrs["transpose_b"]:
            return [ctx.call("gemm_nt", f"{a}.reshape((-1, {k}))", b, f"{out}.reshape((-1, {n}))")]
        return [f"np.dot({a}.reshape((-1, {k})), {b}, {out}.reshape((-1, {n})))"]
    sh_a, sh_b, sh_o = ctx.shape(ins[0]), ctx.shape(ins[1]), ctx.shape(outs[0])
    batch = " * ".join(sh_a[:-2])
    a3 = f"{a}.reshape(({batch}, {sh_a[-2]}, {sh_a[-1]}))"
    b3 = f"{b}.reshape(({batch}, {sh_b[-2]}, {sh_b[-1]}))" if bt.rank > 2 else None
    o3 = f"{out}.reshape(({batch}, {sh_o[-2]}, {sh_o[-1]}))"
    i = ctx.fresh("i")
    a3v, o3v = ctx.fresh("a3"), ctx.fresh("o3")
    lines = [f"{a3v} = {a3}", f"{o3v} = {o3}"]
    if b3:
        b3v = ctx.fresh("b3")
        lines.append(f"{b3v} = {b3}")
        rhs = f"{b3v}[{i}]{sb}"
    else:
        rhs = f"{b}{sb}"
    lines += [f"for {i} in range({batch}):", f"    np.dot({a3v}[{i}]{sa}, {rhs}, {o3v}[{i}])"]
    return lines


def _cost(attrs, ins, out, bindings) -> int:
    """2 * batch * M * K * N (a multiply-add counts 2)."""
    a = ins[0]
    k = a.shape[-2] if attrs["transpose_a"] else a.shape[-1]
    return 2 * out.numel(bindings) * (bindings[k] if isinstance(k, str) else k)


register(
    OpDef(
        name="matmul",
        cost=_cost,
        inputs=("a", "b"),
        infer=_infer,
        reference=_ref,
        pattern=Pattern.OUT_FUSABLE,
        attrs={"transpose_a": Attr(bool, False), "transpose_b": Attr(bool, False)},
        grad=_grad,
        emit_cpu=_emit,
        doc="a @ b over the last two axes; leading axes are batch (b may be 2-D and shared)",
    )
)


# ------------------------------------------------------------------ matmul_rows
# sum over the leading axes of a^T b: [..., K] x [..., M] -> [K, M], the rows of every
# leading index taken as rows of one matrix (one GEMM, whatever the leading dims). The
# gradient of a shared 2-D weight, and of a weight that a loop applies at every step
# (graphdl/passes/hoist.py).

def _infer_rows(attrs, types):
    a, b = types
    if a.rank < 2 or a.shape[:-1] != b.shape[:-1]:
        raise ShapeError(f"matmul_rows needs inputs with the same leading axes, got {a} and {b}")
    if a.dtype != b.dtype or a.dtype not in ("float32", "float64"):
        raise ShapeError(f"matmul_rows needs matching float dtypes, got {a.dtype} and {b.dtype}")
    return [TensorType((a.shape[-1], b.shape[-1]), a.dtype)]


def _ref_rows(attrs, a, b):
    k, m = a.shape[-1], b.shape[-1]
    return (a.reshape(-1, k).T @ b.reshape(-1, m)).astype(a.dtype)


def _grad_rows(g, attrs, ins, outs, gouts):
    a, b = ins
    gy = gouts[0]  # [K, M]
    return [g.op("matmul", b, gy, transpose_b=True), g.op("matmul", a, gy)]


def _emit_rows(ctx, attrs, ins, outs):
    k, m = ctx.shape(ins[0])[-1], ctx.shape(ins[1])[-1]
    rows = " * ".join(ctx.shape(ins[0])[:-1])
    if ctx.in_step():  # the row-splitting kernels (from SPLIT_ROWS rows on)
        part = ctx.fresh("part")
        dtype = ctx.type(outs[0]).dtype
        return [f"{part} = np.empty((2, {k}, {m}), np.{dtype})",
                ctx.call("gemm_tn_rows_split", f"{ctx.var(ins[0])}.reshape(({rows}, {k}))",
                         f"{ctx.var(ins[1])}.reshape(({rows}, {m}))", outs[0], part)]
    return [(f"np.dot({ctx.var(ins[0])}.reshape((-1, {k})).T, "
            f"{ctx.var(ins[1])}.reshape((-1, {m})), {ctx.var(outs[0])})")]


def _cost_rows(attrs, ins, out, bindings) -> int:
    return 2 * ins[0].numel(bindings) * (out.shape[1])


register(
    OpDef(
        name="matmul_rows",
        cost=_cost_rows,
        inputs=("a", "b"),
        infer=_infer_rows,
        reference=_ref_rows,
        pattern=Pattern.OPAQUE,
        grad=_grad_rows,
        emit_cpu=_emit_rows,
        doc="a^T b summed over every leading axis: [..., K] x [..., M] -> [K, M] (one GEMM)",
    )
)
