"""Neural-network ops: softmax / log_softmax (and their backward ops), seeded dropout."""

from __future__ import annotations

import math

import numpy as np

from graphdl.ops.random import hash_counters, mix64, python_seed_key, seed_key, uniform24
from graphdl.ops.reduce import _prod
from graphdl.ops.registry import Attr, OpDef, Pattern, ShapeError, cpu_kernel, register


def _axis(attrs, rank):
    a = attrs["axis"]
    if not -rank <= a < rank:
        raise ShapeError(f"axis {a} out of range for rank {rank}")
    return a % rank


def _infer_same(attrs, types):
    _axis(attrs, types[0].rank)
    if types[0].dtype not in ("float32", "float64"):
        raise ShapeError(f"expects a float tensor, got {types[0].dtype}")
    for t in types[1:]:
        if t.shape != types[0].shape:
            raise ShapeError(f"shapes differ: {types[0]} and {t}")
    return [types[0]]


def _ref_softmax(attrs, x):
    # subtract the max so exp never overflows
    z = x - x.max(axis=attrs["axis"], keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=attrs["axis"], keepdims=True)).astype(x.dtype)


def _ref_log_softmax(attrs, x):
    z = x - x.max(axis=attrs["axis"], keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=attrs["axis"], keepdims=True))).astype(x.dtype)


def _ref_softmax_grad(attrs, g, y):
    return (y * (g - (g * y).sum(axis=attrs["axis"], keepdims=True))).astype(g.dtype)


def _ref_log_softmax_grad(attrs, g, y):
    return (g - np.exp(y) * g.sum(axis=attrs["axis"], keepdims=True)).astype(g.dtype)


@cpu_kernel
def softmax_arb(x, out, log):
    """Softmax over the middle axis of (A, R, B)."""
    na, nr, nb = x.shape
    for a in range(na):
        for b in range(nb):
            m = x[a, 0, b]
            for r in range(1, nr):
                if x[a, r, b] > m:  # noqa: PLR1730  (as the CUDA kernel: no max())
                    m = x[a, r, b]
            s = 0.0
            for r in range(nr):
                s += math.exp(x[a, r, b] - m)
            if log:
                ls = math.log(s)
                for r in range(nr):
                    out[a, r, b] = x[a, r, b] - m - ls
            else:
                inv = 1.0 / s
                for r in range(nr):
                    out[a, r, b] = math.exp(x[a, r, b] - m) * inv


@cpu_kernel
def softmax_grad_arb(g, y, out, log):
    na, nr, nb = g.shape
    for a in range(na):
        for b in range(nb):
            s = 0.0
            if log:
                for r in range(nr):
                    s += g[a, r, b]
                for r in range(nr):
                    out[a, r, b] = g[a, r, b] - math.exp(y[a, r, b]) * s
            else:
                for r in range(nr):
                    s += g[a, r, b] * y[a, r, b]
                for r in range(nr):
                    out[a, r, b] = y[a, r, b] * (g[a, r, b] - s)


def _view3(ctx, v, axis):
    shape = ctx.shape(v)
    return f"{ctx.var(v)}.reshape(({_prod(shape[:axis])}, {shape[axis]}, {_prod(shape[axis + 1:])}))"


def _emit_along_axis(kernel: str, log: bool):
    """Emitter of `softmax_arb` / `softmax_grad_arb`: the inputs, then the output, each
    seen as (A, R, B) around ``axis``."""

    def emit(ctx, attrs, ins, outs):
        axis = _axis(attrs, ctx.type(ins[0]).rank)
        return [ctx.call(kernel, *(_view3(ctx, v, axis) for v in [*ins, outs[0]]), log)]

    return emit


def _g_softmax(grad_op):
    def rule(g, attrs, ins, outs, gouts):
        return [g.op(grad_op, gouts[0], outs[0], axis=attrs["axis"])]

    return rule


_AXIS = {"axis": Attr(int, -1)}
for _name, _ref, _log in (("softmax", _ref_softmax, False), ("log_softmax", _ref_log_softmax, True)):
    register(
        OpDef(
            name=_name,
            inputs=("x",),
            infer=_infer_same,
            reference=_ref,
            pattern=Pattern.OPAQUE,
            attrs=dict(_AXIS),
            flops_per_element=4,
            grad=_g_softmax(_name + "_grad"),
            emit_cpu=_emit_along_axis("softmax_arb", _log),
            doc=f"{_name} along `axis` (max-subtracted for stability)",
        )
    )
    register(
        OpDef(
            name=_name + "_grad",
            inputs=("g", "y"),
            infer=_infer_same,
            reference=_ref_softmax_grad if not _log else _ref_log_softmax_grad,
            pattern=Pattern.OPAQUE,
            attrs=dict(_AXIS),
            no_grad_reason="second order not needed for training",
            emit_cpu=_emit_along_axis("softmax_grad_arb", _log),
            doc=f"backward of {_name} from its output y",
        )
    )


# ------------------------------------------------------------------ dropout
# A counter-based generator: the keep decision for element i is a hash of (seed, salt, i),
# so the backward pass recomputes the same mask instead of storing it, and any backend
# that implements the same hash draws the same mask (graphdl/ops/random.py).

def dropout_mask_reference(n: int, seed: int, salt: int, rate: float) -> np.ndarray:
    """The keep mask as NumPy computes it: element i is kept when
    ``uniform24(mix64(key, i)) >= rate``, as in `dropout_flat`."""
    return uniform24(hash_counters(python_seed_key(seed, salt), n)) >= rate


@cpu_kernel
def dropout_flat(x, seed, out, salt, rate, scale):
    """out = x * keep / (1 - rate); x, out flat; seed a 1-element int64 array."""
    base = seed_key(seed[0], salt)
    for i in range(x.size):
        if uniform24(mix64(base, i)) >= rate:
            out[i] = x[i] * scale
        else:
            out[i] = x[i] * 0


def _infer_dropout(attrs, types):
    if types[1].dtype != "int64" or types[1].rank != 0:
        raise ShapeError(f"dropout's seed must be an int64 scalar, got {types[1]}")
    if not 0.0 <= attrs["rate"] < 1.0:
        raise ShapeError(f"dropout rate must be in [0, 1), got {attrs['rate']}")
    return [types[0]]


def _ref_dropout(attrs, x, seed):
    keep = dropout_mask_reference(x.size, int(seed), attrs["salt"], attrs["rate"])
    scale = x.dtype.type(1.0 / (1.0 - attrs["rate"]))
    return np.where(keep.reshape(x.shape), x * scale, x * 0).astype(x.dtype)


def _g_dropout(g, attrs, ins, outs, gouts):
    # the same mask applied to the gradient: dropout is linear in x for a fixed seed
    return [g.op("dropout", gouts[0], ins[1], **attrs), None]


def _emit_dropout(ctx, attrs, ins, outs):
    scale = 1.0 / (1.0 - attrs["rate"])
    return [ctx.call("dropout_flat", f"{ctx.var(ins[0])}.ravel()", ins[1], f"{ctx.var(outs[0])}.ravel()",
                     attrs["salt"], repr(attrs["rate"]), ctx.lit(scale, ctx.type(ins[0]).dtype))]


register(
    OpDef(
        name="dropout",
        flops_per_element=2,
        inputs=("x", "seed"),
        infer=_infer_dropout,
        reference=_ref_dropout,
        pattern=Pattern.OPAQUE,
        attrs={"rate": Attr(float), "salt": Attr(int, 0)},
        grad=_g_dropout,
        differentiable=(0,),
        emit_cpu=_emit_dropout,
        doc="training-mode inverted dropout with a counter-based mask from (seed, salt, index)",
    )
)
