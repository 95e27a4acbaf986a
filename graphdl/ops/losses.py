"""Losses (mean over the batch) and the accuracy count.

softmax_cross_entropy takes logits [..., C] and int64 labels [...]: [N, C] and [N] (one
class per sample), or [N, T, C] and [N, T] (one class per step), any leading dims. The loss
is the mean over the positions whose label is not ``ignore_index`` (PyTorch's
CrossEntropyLoss(ignore_index=..., label_smoothing=...) with reduction mean): an ignored
position contributes nothing, whatever its logits hold (padding, NaN). Its gradient is its
own op (softmax - smoothed one-hot) so it never differentiates through log(softmax).
count_correct counts the same positions. The kernels walk rows: the emitters flatten the
leading dims (the generated code reshapes to [N * T, C]; the IR's reshape cannot express a
product of symbols, so the ops themselves take the leading dims).
"""

from __future__ import annotations

import math

import numpy as np

from graphdl.ir.types import TensorType
from graphdl.ops.elementwise import exp_shifted, is_f32
from graphdl.ops.registry import Attr, OpDef, Pattern, ShapeError, cpu_kernel, register


def _check_ce(types):
    logits, labels = types[0], types[1]
    if logits.rank < 2:
        raise ShapeError(f"cross-entropy expects logits [N, classes] (or [N, T, classes], one "
                         f"set per step), got {logits}")
    if labels.dtype != "int64" or labels.shape != logits.shape[:-1]:
        lead = ", ".join(str(d) for d in logits.shape[:-1])
        raise ShapeError(f"cross-entropy expects int64 labels of shape [{lead}], got {labels} "
                         f"(one label per row of the logits {logits})")


def _rows(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits [..., C] and labels [...] as rows: [M, C] and [M]."""
    return logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)


def _infer_ce(attrs, types):
    _check_ce(types)
    return [TensorType((), types[0].dtype)]


def _ref_ce(attrs, logits, labels):
    ls, ignore = attrs["label_smoothing"], attrs["ignore_index"]
    dtype = logits.dtype
    logits, labels = _rows(logits, labels)
    valid = labels != ignore
    logits = np.where(valid[:, None], logits, 0)  # an ignored row's logits are never read
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    c = logits.shape[1]
    inside = (labels >= 0) & (labels < c)
    safe = np.where(valid & inside, labels, 0)
    nll = np.where(inside, -logp[np.arange(len(labels)), safe], np.nan)  # as the kernel
    smooth = -logp.mean(axis=1)
    per = (1 - ls) * nll + ls * smooth
    count = max(int(valid.sum()), 1)
    return np.asarray(np.where(valid, per, 0.0).sum() / count, dtype=dtype)


def _ref_ce_grad(attrs, g, logits, labels):
    ls, ignore = attrs["label_smoothing"], attrs["ignore_index"]
    shape, dtype = logits.shape, logits.dtype
    logits, labels = _rows(logits, labels)
    valid = labels != ignore
    z = np.where(valid[:, None], logits, 0).astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n, c = logits.shape
    target = np.full((n, c), ls / c)
    target[np.arange(n), np.where(valid, labels, 0)] += 1 - ls
    count = max(int(valid.sum()), 1)
    grad = (p - target) * valid[:, None] * (float(g) / count)
    return grad.astype(dtype).reshape(shape)


# graphdl/backends/cuda/kernels/losses.py repeats the per-row arithmetic of these loss
# kernels (a deliberate parallel, so both backends agree to rounding): change both together.
# (softmax_ce_bwd repeats this row max and sum of exponentials: one kernel per direction)
@cpu_kernel
def softmax_ce_fwd(logits, labels, out, smoothing, ignore):
    n, c = logits.shape
    fast = is_f32(logits)  # float32: exponentials in float32 arithmetic (they vectorise)
    total = 0.0
    count = 0
    for i in range(n):
        lab = labels[i]
        if lab == ignore:
            continue
        if lab < 0 or lab >= c:  # a label past the row: NaN, never another row's logit
            total += math.nan
            count += 1
            continue
        m = logits[i, 0]
        for j in range(1, c):
            if logits[i, j] > m:  # noqa: PLR1730  (as the CUDA kernel: no max())
                m = logits[i, j]
        s = 0.0
        zsum = 0.0
        for j in range(c):
            z = logits[i, j] - m
            s += exp_shifted(z, fast)
            zsum += z
        lse = math.log(s)
        nll = lse - (logits[i, lab] - m)
        smooth = lse - zsum / c
        total += (1.0 - smoothing) * nll + smoothing * smooth
        count += 1
    out[0] = total / max(count, 1)


# The CUDA softmax_ce_bwd is its deliberate parallel (see above). Its row max and sum of
# exponentials parallel softmax_ce_fwd's: one kernel per direction, each a single pass.
@cpu_kernel
def softmax_ce_bwd(g, logits, labels, out, smoothing, ignore):
    n, c = logits.shape
    fast = is_f32(logits)  # as softmax_ce_fwd
    count = 0
    for i in range(n):
        if labels[i] != ignore:
            count += 1
    scale = g[0] / max(count, 1)
    off = smoothing / c
    for i in range(n):
        lab = labels[i]
        if lab == ignore:
            for j in range(c):
                out[i, j] = 0
            continue
        m = logits[i, 0]
        for j in range(1, c):
            if logits[i, j] > m:  # noqa: PLR1730  (as the CUDA kernel: no max())
                m = logits[i, j]
        s = 0.0
        for j in range(c):  # each exponential once, kept in the row of out
            e = exp_shifted(logits[i, j] - m, fast)
            out[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(c):
            t = off + (1.0 - smoothing) if j == lab else off
            out[i, j] = (out[i, j] * inv - t) * scale


_CE_ATTRS = {"label_smoothing": Attr(float, 0.0), "ignore_index": Attr(int, -100)}


def _g_ce(g, attrs, ins, outs, gouts):
    return [g.op("softmax_cross_entropy_grad", gouts[0], ins[0], ins[1], **attrs), None]


def _logit_rows(ctx, v) -> str:
    """Logits [..., C] (a value of the generated step) as a view [M, C], M the product of
    the leading dims, symbols included: ``x.reshape((sym_N * sym_T, 10))``; [M, C] as
    itself. Values are C-contiguous, so the view is written through for an output."""
    shape = ctx.shape(v)
    if len(shape) == 2:
        return ctx.var(v)
    return f"{ctx.var(v)}.reshape(({' * '.join(shape[:-1])}, {shape[-1]}))"


def _label_rows(ctx, v) -> str:
    """Labels [...] as a view [M], one per row of `_logit_rows`."""
    shape = ctx.shape(v)
    if len(shape) == 1:
        return ctx.var(v)
    return f"{ctx.var(v)}.reshape(({' * '.join(shape)},))"


def _emit_ce(ctx, attrs, ins, outs):
    return [ctx.call("softmax_ce_fwd", _logit_rows(ctx, ins[0]), _label_rows(ctx, ins[1]), outs[0],
                     repr(attrs["label_smoothing"]), attrs["ignore_index"])]


def _emit_ce_grad(ctx, attrs, ins, outs):
    return [ctx.call("softmax_ce_bwd", ins[0], _logit_rows(ctx, ins[1]), _label_rows(ctx, ins[2]),
                     _logit_rows(ctx, outs[0]), repr(attrs["label_smoothing"]),
                     attrs["ignore_index"])]


register(
    OpDef(
        name="softmax_cross_entropy",
        flops_per_element=5,
        inputs=("logits", "labels"),
        infer=_infer_ce,
        reference=_ref_ce,
        pattern=Pattern.OPAQUE,
        attrs=dict(_CE_ATTRS),
        grad=_g_ce,
        differentiable=(0,),
        emit_cpu=_emit_ce,
        doc="mean cross-entropy of softmax(logits) against integer labels, over the "
            "positions whose label is not ignore_index (logits [..., C], labels [...])",
    )
)


def _infer_ce_grad(attrs, types):
    _check_ce(types[1:])
    return [types[1]]


register(
    OpDef(
        name="softmax_cross_entropy_grad",
        flops_per_element=6,
        inputs=("g", "logits", "labels"),
        infer=_infer_ce_grad,
        reference=_ref_ce_grad,
        pattern=Pattern.OPAQUE,
        attrs=dict(_CE_ATTRS),
        no_grad_reason="second order not needed for training",
        emit_cpu=_emit_ce_grad,
        doc="d(loss)/d(logits) = (softmax - smoothed one-hot) * g / count",
    )
)


# ------------------------------------------------------------------ mse, bce_with_logits


def _infer_pair_loss(attrs, types):
    if not types[0].dtype.startswith("float"):
        raise ShapeError(f"prediction {types[0]} must be floating point")
    if types[0].shape != types[1].shape:
        raise ShapeError(f"prediction {types[0]} and target {types[1]} shapes differ")
    if types[0].dtype != types[1].dtype:
        raise ShapeError(f"prediction {types[0]} and target {types[1]} dtypes differ")
    return [TensorType((), types[0].dtype)]


def _ref_mse(attrs, p, t):
    return np.asarray(np.mean((p.astype(np.float64) - t) ** 2), dtype=p.dtype)


def _g_mse(g, attrs, ins, outs, gouts):
    shape = g.type_of(ins[0]).shape
    diff = g.op("sub", ins[0], ins[1])
    scaled = g.op("mul_scalar", diff, c=2.0, div=shape)
    gp = g.op("mul", scaled, gouts[0])
    return [gp, g.op("neg", gp)]


@cpu_kernel
def mse_fwd(p, t, out):
    s = 0.0
    for i in range(p.size):
        d = p[i] - t[i]
        s += d * d
    out[0] = s / p.size


def _emit_pair_loss(kernel: str):
    """Emitter of a loss over two same-shape tensors, flattened."""

    def emit(ctx, attrs, ins, outs):
        return [ctx.call(kernel, f"{ctx.var(ins[0])}.ravel()", f"{ctx.var(ins[1])}.ravel()", outs[0])]

    return emit


register(
    OpDef(
        name="mse",
        inputs=("prediction", "target"),
        infer=_infer_pair_loss,
        reference=_ref_mse,
        pattern=Pattern.REDUCTION,
        grad=_g_mse,
        emit_cpu=_emit_pair_loss("mse_fwd"),
        doc="mean squared error over all elements",
    )
)


def _ref_bce(attrs, x, t):
    x64 = x.astype(np.float64)
    per = np.maximum(x64, 0) - x64 * t + np.log1p(np.exp(-np.abs(x64)))
    return np.asarray(per.mean(), dtype=x.dtype)


@cpu_kernel
def bce_logits_fwd(x, t, out):
    s = 0.0
    for i in range(x.size):
        v = x[i]
        s += max(v, 0.0) - v * t[i] + math.log1p(math.exp(-abs(v)))
    out[0] = s / x.size


def _g_bce(g, attrs, ins, outs, gouts):
    # d/dx = (sigmoid(x) - t) / n: stable, no log of a probability
    shape = g.type_of(ins[0]).shape
    diff = g.op("sub", g.op("sigmoid", ins[0]), ins[1])
    return [g.op("mul", g.op("mul_scalar", diff, c=1.0, div=shape), gouts[0]), None]


register(
    OpDef(
        name="bce_with_logits",
        inputs=("logits", "target"),
        infer=_infer_pair_loss,
        reference=_ref_bce,
        pattern=Pattern.REDUCTION,
        grad=_g_bce,
        differentiable=(0,),
        emit_cpu=_emit_pair_loss("bce_logits_fwd"),
        doc="mean binary cross-entropy of sigmoid(logits) against targets in [0, 1]",
    )
)


# ------------------------------------------------------------------ metrics


def _infer_correct(attrs, types):
    _check_ce(types)
    return [TensorType((), "float32"), TensorType((), "float32")]


def _ref_correct(attrs, logits, labels):
    logits, labels = _rows(logits, labels)
    valid = labels != attrs["ignore_index"]
    hit = (logits.argmax(axis=1) == labels) & valid
    return np.asarray(hit.sum(), np.float32), np.asarray(valid.sum(), np.float32)


# Deliberate parallel of the CUDA count_correct_kernel (graphdl/backends/cuda/kernels/
# losses.py): the same row walk, so both backends count alike.
@cpu_kernel
def count_correct_kernel(logits, labels, correct, total, ignore):
    n, c = logits.shape
    hits = 0
    count = 0
    for i in range(n):
        if labels[i] == ignore:
            continue
        best = 0
        for j in range(1, c):
            if logits[i, j] > logits[i, best]:
                best = j
        count += 1
        if best == labels[i]:
            hits += 1
    correct[0] = hits
    total[0] = count


def _emit_correct(ctx, attrs, ins, outs):
    return [ctx.call("count_correct_kernel", _logit_rows(ctx, ins[0]), _label_rows(ctx, ins[1]),
                     outs[0], outs[1], attrs["ignore_index"])]


register(
    OpDef(
        name="count_correct",
        inputs=("logits", "labels"),
        outputs=("correct", "total"),
        infer=_infer_correct,
        reference=_ref_correct,
        pattern=Pattern.OPAQUE,
        attrs={"ignore_index": Attr(int, -100)},
        no_grad_reason="a count is piecewise constant",
        emit_cpu=_emit_correct,
        doc="how many positions have argmax(logits) == label, and how many count (labels "
            "other than ignore_index)",
    )
)
