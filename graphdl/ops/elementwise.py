"""Elementwise ops: arithmetic, activations, comparisons, `where`, and their gradient helpers.

Each op gives a scalar function (plain Python, jitted and inlined by the backends into
generated loops, fused or not) and a vectorised NumPy reference. The scalar functions may
compute in float64 internally; generated kernels store into typed buffers.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from graphdl.ir.types import TensorType, broadcast_shapes
from graphdl.ops.registry import Attr, OpDef, Pattern, ShapeError, cpu_helper, register

FLOATS = ("float32", "float64")


def _infer_broadcast(out_dtype: str | None = None, nin: int = 2):
    def infer(attrs, types):
        shape = types[0].shape
        for t in types[1:]:
            b = broadcast_shapes(shape, t.shape)
            if b is None:
                shapes = " and ".join(str(list(x.shape)) for x in types)
                raise ShapeError(f"shapes {shapes} cannot broadcast")
            shape = b
        data_types = [t.dtype for t in types if t.dtype != "bool"] or ["bool"]
        dtype = out_dtype or data_types[0]
        if out_dtype is None:
            for t in types:
                if t.dtype != "bool" and t.dtype != dtype:
                    raise ShapeError(f"dtypes {t.dtype} and {dtype} differ; cast one of them")
        return [TensorType(shape, dtype)]

    return infer


def _infer_float_unary(attrs, types):
    if types[0].dtype not in FLOATS:
        raise ShapeError(f"expects a float tensor, got {types[0].dtype}")
    return [types[0]]


def elementwise(
    name,
    scalar,
    reference,
    grad=None,
    nin=1,
    attrs=None,
    out_dtype=None,
    no_grad_reason=None,
    differentiable=None,
    doc="",
    scalar_f32=None,
):
    """Register an elementwise op from its scalar function and NumPy reference (and, where
    float32 loops gain from one, its float32 scalar function: see `OpDef.scalar_f32`)."""
    attrs = attrs or {}
    if nin == 1 and out_dtype is None:
        infer = _infer_float_unary
    else:
        infer = _infer_broadcast(out_dtype, nin)
    return register(
        OpDef(
            name=name,
            inputs=tuple("xyz"[:nin]) if nin <= 3 else tuple(f"x{i}" for i in range(nin)),
            infer=infer,
            reference=reference,
            pattern=Pattern.ELEMWISE if nin == 1 else Pattern.BROADCAST,
            attrs=attrs,
            grad=grad,
            no_grad_reason=no_grad_reason,
            differentiable=differentiable,
            scalar=scalar,
            scalar_attrs=tuple(attrs),
            scalar_f32=scalar_f32,
            inplace_ok=tuple(range(nin)),
            doc=doc,
        )
    )


# ------------------------------------------------------------------ scalar functions
# Written for Numba: no Python objects, only math on numbers.


def _add(x, y):
    return x + y


def _sub(x, y):
    return x - y


def _mul(x, y):
    return x * y


def _div(x, y):
    return x / y


def _neg(x):
    return -x


def _exp(x):
    return math.exp(x)


def _log(x):
    return math.log(x)


def _sqrt(x):
    return math.sqrt(x)


def _square(x):
    return x * x


def _pow(x, exponent):
    return x**exponent


def _maximum(x, y):
    return x if x >= y else y  # noqa: FURB136  (NaN in x gives y, as the kernels always did)


def _minimum(x, y):
    return x if x <= y else y  # noqa: FURB136


def _where(c, x, y):
    return x if c else y


def _relu(x):
    return x if x > 0 else x * 0


def _relu_grad(g, y):
    return g if y > 0 else g * 0


def _leaky_relu(x, alpha):
    return x if x > 0 else x * alpha


def _leaky_relu_grad(g, x, alpha):
    return g if x > 0 else g * alpha


def _elu(x, alpha):
    return x if x > 0 else alpha * (math.exp(x) - 1.0)


def _elu_grad(g, x, alpha):
    return g if x > 0 else g * alpha * math.exp(x)


def _sigmoid(x):
    # two branches so exp never overflows
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _sigmoid_grad(g, y):
    return g * y * (1.0 - y)


def _tanh(x):
    return math.tanh(x)


def _tanh_grad(g, y):
    return g * (1.0 - y * y)


# float32 versions (`OpDef.scalar_f32`): float32 loops call these instead of the float64
# math above. libm's exp and tanh are one call per element, which no loop vectorises (a
# third of an LSTM step went into them); these are plain float32 arithmetic, within 3 ulp of
# the exact result for |x| < 30 and 5 beyond, wherever that is a normal float32
# (tests/ops/test_elementwise.py measures it), and NaN stays NaN.


@cpu_helper
def exp_nonpositive_f32(x):
    """e^x for float32 x <= 0, flushed to 0 below float32's normal range (x < -87.33654).

    x = k ln2 + r with |r| <= ln2 / 2: e^r by its Taylor polynomial of degree 7 (truncation
    error < 1e-8 relative), 2^k written into the exponent bits. ln2 is split in a part
    whose product with k is exact and the rest (Cody and Waite), so r keeps its precision.
    No subnormal number is ever computed: arithmetic on them takes the processor's slow
    path, 20 times slower (an LSTM whose gates saturate would run into it at every step).
    """
    c = max(x, np.float32(-87.33654))
    # round(c / ln2) as truncation of a positive number (a cast vectorises, floor does not)
    k = np.int32(c * np.float32(1.4426950408889634) + np.float32(126.5)) - np.int32(126)
    n = np.float32(k)
    r = c - n * np.float32(0.693145751953125) - n * np.float32(1.4286068203094173e-06)
    p = np.float32(1.0) + r * (np.float32(1.0) + r * (np.float32(0.5) + r * (
        np.float32(1.0 / 6.0) + r * (np.float32(1.0 / 24.0) + r * (np.float32(1.0 / 120.0) + r * (
            np.float32(1.0 / 720.0) + r * np.float32(1.0 / 5040.0)))))))
    y = p * np.int32((k + np.int32(127)) << np.int32(23)).view(np.float32)
    if x < np.float32(-87.33654):
        return np.float32(0.0)
    return x if math.isnan(x) else y  # NaN in, NaN out (k is meaningless then)


@cpu_helper
def is_f32(a):
    """Whether array ``a`` holds float32, as a constant the compiler folds (2^24 + 1 rounds
    to 2^24 in float32 only; ``a.itemsize`` is read from the array at run time)."""
    return a.dtype.type(16777217.0) == a.dtype.type(16777216.0)


@cpu_helper
def exp_shifted(x, fast):
    """e^x for a score minus its row's max (x <= 0, or a rounding above): with ``fast``
    (float32; `exp_nonpositive_f32`, plain arithmetic, so the loops over a row vectorise),
    else libm's exp. Kernels pass ``fast = is_f32(q)``, a constant of the compiled
    function, so the branch is folded away."""
    if fast:
        return exp_nonpositive_f32(x)
    return math.exp(x)


def _sigmoid_f32(x):
    # e = e^-|x| never overflows: 1 / (1 + e) for x >= 0, e / (1 + e) below
    e = exp_nonpositive_f32(-abs(x))
    s = np.float32(1.0) / (np.float32(1.0) + e)
    return s if x >= np.float32(0.0) else e * s


def _tanh_f32(x):
    # |x| >= 0.625: (1 - e) / (1 + e) with e = e^-2|x| (no cancellation there); below, an odd
    # polynomial x + x^3 q(x^2) fitted to tanh by least squares in relative error (0.9 ulp)
    a = abs(x)
    e = exp_nonpositive_f32(np.float32(-2.0) * a)
    big = (np.float32(1.0) - e) / (np.float32(1.0) + e)
    y = x * x
    small = x + x * y * (np.float32(-0.333332915) + y * (np.float32(0.133317179) + y * (
        np.float32(-0.053763738) + y * (np.float32(0.020720057) + y * np.float32(-0.00579782783)))))
    if a < np.float32(0.625):
        return small
    return big if x >= np.float32(0.0) else -big


_INV_SQRT2 = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


def _gelu(x):
    return 0.5 * x * (1.0 + math.erf(x * _INV_SQRT2))


def _gelu_grad(g, x):
    cdf = 0.5 * (1.0 + math.erf(x * _INV_SQRT2))
    pdf = _INV_SQRT_2PI * math.exp(-0.5 * x * x)
    return g * (cdf + x * pdf)


def _softplus(x):
    # log(1 + e^x) without overflow: max(x, 0) + log1p(e^-|x|)
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _softplus_grad(g, x):
    # g * sigmoid(x), written out: scalar functions cannot call plain Python helpers
    if x >= 0:
        return g / (1.0 + math.exp(-x))
    e = math.exp(x)
    return g * e / (1.0 + e)


def _silu(x):
    # x * sigmoid(x) (swish), with sigmoid's two branches so exp never overflows
    if x >= 0:
        return x / (1.0 + math.exp(-x))
    e = math.exp(x)
    return x * e / (1.0 + e)


def _silu_grad(g, x):
    # d/dx x s(x) = s(x) (1 + x (1 - s(x))); sigmoid written out as in _silu
    if x >= 0:
        s = 1.0 / (1.0 + math.exp(-x))
    else:
        e = math.exp(x)
        s = e / (1.0 + e)
    return g * s * (1.0 + x * (1.0 - s))


def _mul_scalar(x, c):
    return x * c


def _add_scalar(x, c):
    return x + c


def _cast(x):
    return x


def _eq(x, y):
    return x == y


def _ne(x, y):
    return x != y


def _lt(x, y):
    return x < y


def _le(x, y):
    return x <= y


def _gt(x, y):
    return x > y


def _ge(x, y):
    return x >= y


# ------------------------------------------------------------------ references


def _np_sigmoid(x):
    return special.expit(x).astype(x.dtype)


def _np_gelu(x):
    return (0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))).astype(x.dtype)


def _np_gelu_grad(g, x):
    cdf = 0.5 * (1.0 + special.erf(x / np.sqrt(2.0)))
    pdf = np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)
    return (g * (cdf + x * pdf)).astype(g.dtype)


def _np_softplus(x):
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype)


def _np_silu_grad(g, x):
    s = special.expit(x)
    return (g * s * (1 + x * (1 - s))).astype(g.dtype)


def _typed(fn):
    """Reference wrapper: keep the float dtype of the first input (NumPy 2 rules keep it)."""

    def ref(attrs, *xs):
        out = fn(*xs, **attrs)
        return np.asarray(out, dtype=xs[0].dtype if xs[0].dtype != bool else out.dtype)

    return ref


# ------------------------------------------------------------------ gradients


def _zero_like_scalar(g, dtype):
    return g.const(0.0, dtype)


def _g_add(g, attrs, ins, outs, gouts):
    return [gouts[0], gouts[0]]


def _g_sub(g, attrs, ins, outs, gouts):
    return [gouts[0], g.op("neg", gouts[0])]


def _g_mul(g, attrs, ins, outs, gouts):
    return [g.op("mul", gouts[0], ins[1]), g.op("mul", gouts[0], ins[0])]


def _g_div(g, attrs, ins, outs, gouts):
    ga = g.op("div", gouts[0], ins[1])
    # d(a/b)/db = -(a/b)/b
    gb = g.op("neg", g.op("div", g.op("mul", gouts[0], outs[0]), ins[1]))
    return [ga, gb]


def _g_neg(g, attrs, ins, outs, gouts):
    return [g.op("neg", gouts[0])]


def _g_exp(g, attrs, ins, outs, gouts):
    return [g.op("mul", gouts[0], outs[0])]


def _g_log(g, attrs, ins, outs, gouts):
    return [g.op("div", gouts[0], ins[0])]


def _g_sqrt(g, attrs, ins, outs, gouts):
    return [g.op("mul_scalar", g.op("div", gouts[0], outs[0]), c=0.5)]


def _g_square(g, attrs, ins, outs, gouts):
    return [g.op("mul_scalar", g.op("mul", gouts[0], ins[0]), c=2.0)]


def _g_pow(g, attrs, ins, outs, gouts):
    p = attrs["exponent"]
    d = g.op("mul_scalar", g.op("pow", ins[0], exponent=p - 1.0), c=p)
    return [g.op("mul", gouts[0], d)]


def _g_minmax(cmp):
    def rule(g, attrs, ins, outs, gouts):
        sel = g.op(cmp, ins[0], ins[1])  # ties go to the first input, as the scalar does
        zero = _zero_like_scalar(g, g.type_of(gouts[0]).dtype)
        return [g.op("where", sel, gouts[0], zero), g.op("where", sel, zero, gouts[0])]

    return rule


def _g_where(g, attrs, ins, outs, gouts):
    zero = _zero_like_scalar(g, g.type_of(gouts[0]).dtype)
    return [None, g.op("where", ins[0], gouts[0], zero), g.op("where", ins[0], zero, gouts[0])]


def _g_with_input(grad_op, **fixed):
    def rule(g, attrs, ins, outs, gouts):
        extra = {k: attrs[k] for k in fixed}
        return [g.op(grad_op, gouts[0], ins[0], **extra)]

    return rule


def _g_with_output(grad_op):
    def rule(g, attrs, ins, outs, gouts):
        return [g.op(grad_op, gouts[0], outs[0])]

    return rule


def _g_mul_scalar(g, attrs, ins, outs, gouts):
    return [g.op("mul_scalar", gouts[0], c=attrs["c"], div=attrs["div"])]


def _g_identity(g, attrs, ins, outs, gouts):
    return [gouts[0]]


def _g_cast(g, attrs, ins, outs, gouts):
    src = g.type_of(ins[0]).dtype
    return [g.op("cast", gouts[0], dtype=src)]


# ------------------------------------------------------------------ registrations

elementwise("add", _add, _typed(np.add), _g_add, nin=2, doc="x + y with broadcasting")
elementwise("sub", _sub, _typed(np.subtract), _g_sub, nin=2, doc="x - y")
elementwise("mul", _mul, _typed(np.multiply), _g_mul, nin=2, doc="x * y")
elementwise("div", _div, _typed(np.divide), _g_div, nin=2, doc="x / y")
elementwise("neg", _neg, _typed(np.negative), _g_neg, doc="-x")
elementwise("exp", _exp, _typed(np.exp), _g_exp, doc="e^x")
elementwise("log", _log, _typed(np.log), _g_log, doc="natural logarithm")
elementwise("sqrt", _sqrt, _typed(np.sqrt), _g_sqrt, doc="square root")
elementwise("square", _square, _typed(np.square), _g_square, doc="x * x")
elementwise(
    "pow",
    _pow,
    _typed(lambda x, exponent: np.power(x, x.dtype.type(exponent))),
    _g_pow,
    attrs={"exponent": Attr(float)},
    doc="x ** exponent (a scalar attribute)",
)
elementwise("maximum", _maximum, _typed(np.maximum), _g_minmax("ge"), nin=2,
            doc="the larger of x and y (the gradient goes to x on ties)")
elementwise("minimum", _minimum, _typed(np.minimum), _g_minmax("le"), nin=2,
            doc="the smaller of x and y (the gradient goes to x on ties)")
for _name, _fn, _np in (
    ("eq", _eq, np.equal),
    ("ne", _ne, np.not_equal),
    ("lt", _lt, np.less),
    ("le", _le, np.less_equal),
    ("gt", _gt, np.greater),
    ("ge", _ge, np.greater_equal),
):
    elementwise(
        _name,
        _fn,
        (lambda f: lambda attrs, x, y: f(x, y))(_np),  # noqa: PLC3002  (binds this _np)
        nin=2,
        out_dtype="bool",
        no_grad_reason="comparisons are piecewise constant",
        doc=f"elementwise comparison ({np.__name__}.{_np.__name__}), a bool tensor",
    )


def _infer_where(attrs, types):
    if types[0].dtype != "bool":
        raise ShapeError(f"where's condition must be bool, got {types[0].dtype}")
    shape = broadcast_shapes(broadcast_shapes(types[0].shape, types[1].shape) or (), types[2].shape)
    if shape is None or broadcast_shapes(types[0].shape, types[1].shape) is None:
        raise ShapeError("where's inputs cannot broadcast: " + ", ".join(str(t) for t in types))
    if types[1].dtype != types[2].dtype:
        raise ShapeError(f"where's branches differ in dtype: {types[1].dtype}, {types[2].dtype}")
    return [TensorType(shape, types[1].dtype)]


register(
    OpDef(
        name="where",
        inputs=("cond", "x", "y"),
        infer=_infer_where,
        reference=lambda attrs, c, x, y: np.where(c, x, y).astype(x.dtype),
        pattern=Pattern.BROADCAST,
        grad=_g_where,
        differentiable=(1, 2),
        scalar=_where,
        inplace_ok=(1, 2),
        doc="cond ? x : y",
    )
)

# relu's gradient reads its output (y > 0 exactly when x > 0), so the pre-activation has a
# single consumer and matmul + bias + relu fuse into one kernel
elementwise("relu", _relu, _typed(lambda x: np.maximum(x, 0)), _g_with_output("relu_grad"),
            doc="max(x, 0)")
elementwise(
    "relu_grad",
    _relu_grad,
    _typed(lambda g, x: np.where(x > 0, g, 0)),
    nin=2,
    no_grad_reason="second-order gradients of relu are zero almost everywhere",
    doc="g where the relu's input was positive, else 0",
)
_alpha = {"alpha": Attr(float, 0.01)}
elementwise(
    "leaky_relu",
    _leaky_relu,
    _typed(lambda x, alpha: np.where(x > 0, x, x * alpha)),
    _g_with_input("leaky_relu_grad", alpha=None),
    attrs=_alpha,
    doc="x, or alpha * x for x <= 0",
)
elementwise(
    "leaky_relu_grad",
    _leaky_relu_grad,
    _typed(lambda g, x, alpha: np.where(x > 0, g, g * alpha)),
    nin=2,
    attrs=_alpha,
    no_grad_reason="piecewise linear",
    doc="backward of leaky_relu from its input",
)
_elu_alpha = {"alpha": Attr(float, 1.0)}
elementwise(
    "elu",
    _elu,
    _typed(lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))),
    _g_with_input("elu_grad", alpha=None),
    attrs=_elu_alpha,
    doc="x, or alpha * (e^x - 1) for x <= 0",
)
elementwise(
    "elu_grad",
    _elu_grad,
    _typed(lambda g, x, alpha: np.where(x > 0, g, g * alpha * np.exp(np.minimum(x, 0)))),
    nin=2,
    attrs=_elu_alpha,
    no_grad_reason="second order not needed for training",
    doc="backward of elu from its input",
)
elementwise("sigmoid", _sigmoid, lambda attrs, x: _np_sigmoid(x), _g_with_output("sigmoid_grad"),
            doc="1 / (1 + e^-x), without overflow", scalar_f32=_sigmoid_f32)
elementwise(
    "sigmoid_grad",
    _sigmoid_grad,
    _typed(lambda g, y: g * y * (1 - y)),
    nin=2,
    no_grad_reason="second order not needed for training",
    doc="backward of sigmoid from its output y",
)
elementwise("tanh", _tanh, _typed(np.tanh), _g_with_output("tanh_grad"), doc="hyperbolic tangent",
            scalar_f32=_tanh_f32)
elementwise(
    "tanh_grad",
    _tanh_grad,
    _typed(lambda g, y: g * (1 - y * y)),
    nin=2,
    no_grad_reason="second order not needed for training",
    doc="backward of tanh from its output y",
)
elementwise("gelu", _gelu, lambda attrs, x: _np_gelu(x), _g_with_input("gelu_grad"),
            doc="x * Phi(x) (exact, with erf)")
elementwise(
    "gelu_grad",
    _gelu_grad,
    lambda attrs, g, x: _np_gelu_grad(g, x),
    nin=2,
    no_grad_reason="second order not needed for training",
    doc="backward of gelu from its input",
)
elementwise("softplus", _softplus, lambda attrs, x: _np_softplus(x), _g_with_input("softplus_grad"),
            doc="log(1 + e^x), without overflow")
elementwise(
    "softplus_grad",
    _softplus_grad,
    lambda attrs, g, x: (g * special.expit(x)).astype(g.dtype),
    nin=2,
    no_grad_reason="second order not needed for training",
    doc="backward of softplus from its input",
)
elementwise("silu", _silu, _typed(lambda x: x * special.expit(x)), _g_with_input("silu_grad"),
            doc="x * sigmoid(x) (swish)")
elementwise(
    "silu_grad",
    _silu_grad,
    lambda attrs, g, x: _np_silu_grad(g, x),
    nin=2,
    no_grad_reason="second order not needed for training",
    doc="backward of silu from its input",
)


def _dims_value(div, bindings):
    n = 1.0
    for d in div:
        n *= bindings[d] if isinstance(d, str) else d
    return n


def _ref_mul_scalar(attrs, x, bindings=None):
    scale = attrs["c"] / _dims_value(attrs["div"], bindings or {})
    return (x * x.dtype.type(scale)).astype(x.dtype)


register(
    OpDef(
        name="mul_scalar",
        inputs=("x",),
        infer=_infer_float_unary,
        reference=_ref_mul_scalar,
        pattern=Pattern.ELEMWISE,
        attrs={"c": Attr(float, 1.0), "div": Attr(tuple, ())},
        grad=_g_mul_scalar,
        scalar=_mul_scalar,
        scalar_attrs=("c",),  # the backend folds `div` (dims, maybe symbolic) into c
        inplace_ok=(0,),
        doc="x * c / prod(div): `div` lists dims (ints or symbols such as N), for means",
    )
)
elementwise(
    "add_scalar",
    _add_scalar,
    _typed(lambda x, c: x + x.dtype.type(c)),
    _g_identity,
    attrs={"c": Attr(float)},
    doc="x + c for a constant c",
)


def _infer_cast(attrs, types):
    return [types[0].with_dtype(attrs["dtype"])]


register(
    OpDef(
        name="cast",
        inputs=("x",),
        infer=_infer_cast,
        reference=lambda attrs, x: x.astype(attrs["dtype"]),
        pattern=Pattern.ELEMWISE,
        attrs={"dtype": Attr(str, allowed=("float32", "float64", "int64", "bool"))},
        grad=_g_cast,
        scalar=_cast,
        doc="convert dtype",
    )
)
