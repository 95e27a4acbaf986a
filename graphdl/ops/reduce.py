"""Reductions over axes: sum, mean, max (keepdims or not).

The CPU kernels see the input as a 3-D view (A, R, B): the reduced axes (made contiguous
by a transpose when they are not) collapse into R, the axes before into A, after into B.
"""

from __future__ import annotations

import math

import numpy as np

from graphdl.ir.types import TensorType
from graphdl.ops.registry import (
    PAR_BLOCKS,
    Attr,
    OpDef,
    Pattern,
    ShapeError,
    cpu_helper,
    cpu_kernel,
    prange,
    register,
)


def normalize_axes(axes, rank: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(rank))
    if isinstance(axes, int):
        axes = (axes,)
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise ShapeError(f"axis {a} is out of range for a rank-{rank} tensor")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ShapeError(f"axes {tuple(axes)} repeat an axis")
    return tuple(sorted(out))


def _infer(attrs, types):
    t = types[0]
    axes = normalize_axes(attrs["axes"], t.rank)
    if attrs["keepdims"]:
        shape = tuple(1 if i in axes else d for i, d in enumerate(t.shape))
    else:
        shape = tuple(d for i, d in enumerate(t.shape) if i not in axes)
    return [TensorType(shape, t.dtype)]


def _ref(fn):
    def ref(attrs, x):
        axes = normalize_axes(attrs["axes"], x.ndim)
        return np.asarray(fn(x, axis=axes, keepdims=attrs["keepdims"]), dtype=x.dtype)

    return ref


def reduced_count(t: TensorType, axes) -> tuple:
    """The reduced dims (ints or symbols), for mean's divisor."""
    return tuple(t.shape[a] for a in normalize_axes(axes, t.rank))


def _expand_grad(g, gout, x_type: TensorType, attrs):
    """Reshape a reduced gradient back to keepdims form so it broadcasts over x."""
    axes = normalize_axes(attrs["axes"], x_type.rank)
    kd = tuple(1 if i in axes else d for i, d in enumerate(x_type.shape))
    if not attrs["keepdims"]:
        gout = g.op("reshape", gout, shape=kd)
    return g.op("broadcast_to", gout, shape=x_type.shape)


def _g_sum(g, attrs, ins, outs, gouts):
    return [_expand_grad(g, gouts[0], g.type_of(ins[0]), attrs)]


def _g_mean(g, attrs, ins, outs, gouts):
    xt = g.type_of(ins[0])
    full = _expand_grad(g, gouts[0], xt, attrs)
    return [g.op("mul_scalar", full, c=1.0, div=reduced_count(xt, attrs["axes"]))]


def _g_max(g, attrs, ins, outs, gouts):
    # the gradient goes to the elements equal to the max (all of them on a tie)
    xt = g.type_of(ins[0])
    axes = normalize_axes(attrs["axes"], xt.rank)
    kd = tuple(1 if i in axes else d for i, d in enumerate(xt.shape))
    m = outs[0] if attrs["keepdims"] else g.op("reshape", outs[0], shape=kd)
    gk = gouts[0] if attrs["keepdims"] else g.op("reshape", gouts[0], shape=kd)
    mask = g.op("eq", ins[0], m)
    zero = g.const(0.0, xt.dtype)
    return [g.op("where", mask, gk, zero)]


def emit_reduce(kernel: str, flag: bool):
    def emit(ctx, attrs, ins, outs):
        xt = ctx.type(ins[0])
        axes = normalize_axes(attrs["axes"], xt.rank)
        x = ctx.var(ins[0])
        shape = ctx.shape(ins[0])
        lines = []
        perm, (a, r, b) = arb_layout(shape, axes)
        if perm is not None:  # make the reduced axes contiguous (rare: non-adjacent axes)
            tmp = ctx.fresh("perm")
            lines.append(f"{tmp} = np.ascontiguousarray(np.transpose({x}, {perm}))")
            x = tmp
        out = ctx.var(outs[0])
        if (kernel == "reduce_sum_arb" and b == "1" and _static(a) == 0 and _static(r) >= 64
                and ctx.in_step()):
            # long row sums (a convolution's bias gradient, over H x W): split between
            # threads when large, decided at run time
            lines.append(ctx.call("reduce_rows_split", f"{x}.reshape(({a}, {r}))",
                                  f"{out}.reshape(({a},))", flag))
            return lines
        lines.append(ctx.call(kernel, f"{x}.reshape(({a}, {r}, {b}))", f"{out}.reshape(({a}, {b}))", flag))
        return lines

    return emit


def _static(expr: str) -> int:
    """The value of a product of dims written as source (``10 * 10``); 0 if a symbol is in it."""
    factors = expr.split(" * ")
    return math.prod(int(f) for f in factors) if all(f.isdigit() for f in factors) else 0


def arb_layout(shape: tuple[str, ...], axes: tuple[int, ...]):
    """How a reduction over ``axes`` of a tensor of ``shape`` (dims as source expressions)
    runs as an (A, R, B) view with R reduced: (perm, (A, R, B)). ``perm`` is None when the
    axes are adjacent; otherwise the transpose that makes them adjacent first (both
    backends copy the input so permuted)."""
    perm = None
    if axes and axes != tuple(range(axes[0], axes[-1] + 1)):
        kept = [i for i in range(len(shape)) if i not in axes]
        perm = kept[:1] + list(axes) + kept[1:] if kept and kept[0] < axes[0] else list(axes) + kept
        shape = tuple(shape[i] for i in perm)
        axes = tuple(range(perm.index(axes[0]), perm.index(axes[0]) + len(axes)))
        perm = tuple(perm)
    a = _prod(shape[: axes[0]]) if axes else _prod(shape)
    r = _prod(shape[axes[0] : axes[-1] + 1]) if axes else "1"
    b = _prod(shape[axes[-1] + 1 :]) if axes else "1"
    return perm, (a, r, b)


def _prod(dims) -> str:
    return " * ".join(str(d) for d in dims) if dims else "1"


@cpu_kernel
def reduce_sum_arb(x, out, mean):
    """Sum (or mean, when ``mean``) over the middle axis of (A, R, B)."""
    na, nr, nb = x.shape
    if nb == 1:  # row sums (`_row_sums`)
        _row_sums(x.reshape((na, nr)), out.reshape(na), 0, na, mean)
        return
    for a in range(na):
        # column sums (a bias gradient: [N*T, C] -> [C]) four rows at a time: a quarter of
        # the loads and stores of out, the loop's cost, when C is a few vectors wide
        for b in range(nb):
            out[a, b] = 0
        r = 0
        while r + 4 <= nr:
            for b in range(nb):
                out[a, b] += (x[a, r, b] + x[a, r + 1, b]) + (x[a, r + 2, b] + x[a, r + 3, b])
            r += 4
        while r < nr:
            for b in range(nb):
                out[a, b] += x[a, r, b]
            r += 1
    if mean:
        scale = out.dtype.type(1.0) / out.dtype.type(nr)
        for a in range(na):
            for b in range(nb):
                out[a, b] *= scale


@cpu_helper
def _row_sums(x, out, a0, a1, mean):
    """out[a] = sum (or mean) of row a of x [A, R], for a0 <= a < a1: a register accumulator
    per row vectorises (reassoc); accumulating through out[a] in memory was 40x slower on
    conv bias gradients."""
    nr = x.shape[1]
    scale = out.dtype.type(1.0) / out.dtype.type(nr)  # as reduce_sum_arb's mean
    for a in range(a0, a1):
        row = x[a]
        s = out.dtype.type(0)
        for r in range(nr):
            s += row[r]
        out[a] = s * scale if mean else s


# from this many values, row sums split between the threads (each row summed by one
# thread, so the bits do not depend on the number of threads)
ROWS_SPLIT = 1 << 16


@cpu_kernel(parallel=True)
def reduce_rows_split(x, out, mean):
    """Row sums (or means) of x [A, R] into out [A]: in PAR_BLOCKS blocks of rows on the
    pool's threads from ROWS_SPLIT values on. A convolution's bias gradient (LeNet's: 1024
    rows of 100, 384 of 784) ran on the calling thread between two parallel kernels, long
    enough for the pool's threads to fall asleep."""
    na = x.shape[0]
    if x.size < ROWS_SPLIT or na < 2 * PAR_BLOCKS:
        _row_sums(x, out, 0, na, mean)
        return
    for t in prange(PAR_BLOCKS):
        _row_sums(x, out, na * t // PAR_BLOCKS, na * (t + 1) // PAR_BLOCKS, mean)


@cpu_kernel
def reduce_max_arb(x, out, unused):
    na, nr, nb = x.shape
    for a in range(na):
        for b in range(nb):
            out[a, b] = x[a, 0, b]
        for r in range(1, nr):
            for b in range(nb):
                v = x[a, r, b]
                # NaN wins, as in NumPy, so non-finite values are never hidden
                if v > out[a, b] or v != v:  # noqa: PLR0124  (v != v: NaN)
                    out[a, b] = v


def _cost(attrs, ins, out, bindings) -> int:
    return ins[0].numel(bindings)  # one operation per element read


_ATTRS = {"axes": Attr(object, None), "keepdims": Attr(bool, False)}

for _name, _np, _grad, _kernel, _flag in (
    ("sum", np.sum, _g_sum, "reduce_sum_arb", False),
    ("mean", np.mean, _g_mean, "reduce_sum_arb", True),
    ("max", np.max, _g_max, "reduce_max_arb", False),
):
    register(
        OpDef(
            name=_name,
            inputs=("x",),
            infer=_infer,
            reference=_ref(_np),
            pattern=Pattern.REDUCTION,
            attrs=dict(_ATTRS),
            cost=_cost,
            grad=_grad,
            emit_cpu=emit_reduce(_kernel, _flag),
            doc=f"{_name} over `axes` (None: all), keeping reduced dims as 1 with `keepdims`",
        )
    )
