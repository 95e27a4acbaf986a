"""Normalisation: batch norm (the training-mode op with batch statistics, its backward op
and the graph builders the batchnorm layer uses) and layer norm (below batch norm).

Batch norm: channels are axis 1: x is [N, C] (the 1-D form after dense layers) or
[N, C, H, W] (any rank >= 2 works: every axis but 1 is reduced). Kernels see x as a 3-D
view (A, C, B): A = the batch axis, B = the product of the axes after the channel (1 for
[N, C]).

- ``batch_norm_train(x, gamma, beta) -> (y, batch_mean, batch_var)``, attr ``eps``:
  y = (x - mean) / sqrt(var + eps) * gamma + beta with the per-channel batch mean and the
  *biased* batch variance (as PyTorch normalises). The kernel is two-pass with float64
  accumulators. Its gradient is the op ``batch_norm_train_grad`` (the full gradient through
  the batch statistics), plus elementwise terms when the statistics outputs themselves
  receive gradients.
- ``build_batch_norm(...)``: training mode adds ``batch_norm_train`` and the running
  statistics update (elementwise ops registered in ``g.updates``; the running variance gets
  the *unbiased* batch variance, see `unbiased_variance`); eval mode adds
  `batch_norm_inference`, an elementwise composition that fuses (into a matmul/conv
  epilogue when one precedes it) and that autodiff differentiates like any other ops, so a
  frozen batch norm still passes dx to earlier trainable layers.

Layer norm (as ``torch.nn.LayerNorm`` over the last axis): x is [..., D] (any rank >= 1),
each row of D values is normalised on its own; kernels see x as rows [R, D].

- ``layer_norm(x, gamma, beta) -> (y, mean, rstd)``, attr ``eps``: y = (x - mean) * rstd *
  gamma + beta with the row's mean and rstd = 1 / sqrt(biased variance + eps); mean and
  rstd ([...], x's leading shape) are what the backward op reads. Its gradient is the op
  ``layer_norm_grad(gy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta)``, plus elementwise
  terms when mean or rstd themselves receive gradients. A layer without affine parameters
  passes constant ones and zeros (one op, one kernel pair).
"""

from __future__ import annotations

import math

import numpy as np

from graphdl.ir.graph import Graph, Provenance, Value
from graphdl.ir.types import TensorType
from graphdl.ops.reduce import _prod
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

FLOATS = ("float32", "float64")

# ----------------------------------------------------------------------- shapes


def _channel_type(x: TensorType) -> TensorType:
    return TensorType((x.shape[1],), x.dtype)


def _check_x(x: TensorType) -> None:
    if x.rank < 2:
        raise ShapeError(
            f"batch norm expects x of rank >= 2 with channels on axis 1 ([N, C] or "
            f"[N, C, H, W]), got {x}",
            help="batch norm after a dense layer takes [N, C]; after a conv [N, C, H, W]",
        )
    if x.dtype not in FLOATS:
        raise ShapeError(f"batch norm expects a float tensor, got {x.dtype}")


def _check_per_channel(x: TensorType, named: list[tuple[str, TensorType]]) -> None:
    want = _channel_type(x)
    for name, t in named:
        if t.shape != want.shape:
            raise ShapeError(
                f"batch norm {name} has shape {list(t.shape)} but x {x} has "
                f"{x.shape[1]} channels (axis 1): expected [{x.shape[1]}]",
                help="gamma, beta and the running statistics hold one value per channel",
            )
        if t.dtype != x.dtype:
            raise ShapeError(f"batch norm {name} is {t.dtype} but x is {x.dtype}")


def _infer_train(attrs, types):
    x, gamma, beta = types
    _check_x(x)
    _check_per_channel(x, [("gamma", gamma), ("beta", beta)])
    if not attrs["eps"] > 0:
        raise ShapeError(f"batch norm eps must be > 0, got {attrs['eps']}")
    c = _channel_type(x)
    return [x, c, c]


def _infer_train_grad(attrs, types):
    gy, x, gamma, mean, var = types
    _check_x(x)
    if gy.shape != x.shape or gy.dtype != x.dtype:
        raise ShapeError(f"batch norm gradient {gy} does not match x {x}")
    _check_per_channel(x, [("gamma", gamma), ("batch_mean", mean), ("batch_var", var)])
    c = _channel_type(x)
    return [x, c, c]


def count_dims(x: TensorType) -> tuple:
    """The dims batch statistics reduce over (ints or symbols): all but the channel axis.

    Their product is the per-channel sample count M (N for [N, C], N*H*W for images); pass
    the tuple as mul_scalar's ``div`` to divide by M when N is symbolic."""
    return (x.shape[0],) + tuple(x.shape[2:])


def _stat_axes(ndim: int) -> tuple[int, ...]:
    return (0,) + tuple(range(2, ndim))


def _per_channel_shape(ndim: int, c) -> tuple:
    return (1, c) + (1,) * (ndim - 2)


# ----------------------------------------------------------------------- references


def _ref_train(attrs, x, gamma, beta):
    axes = _stat_axes(x.ndim)
    bshape = _per_channel_shape(x.ndim, x.shape[1])
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes)
    var = ((x64 - mean.reshape(bshape)) ** 2).mean(axis=axes)
    inv = 1.0 / np.sqrt(var + attrs["eps"])
    xhat = (x64 - mean.reshape(bshape)) * inv.reshape(bshape)
    y = xhat * gamma.astype(np.float64).reshape(bshape) + beta.astype(np.float64).reshape(bshape)
    dt = x.dtype
    return y.astype(dt), mean.astype(dt), var.astype(dt)


def _ref_train_grad(attrs, gy, x, gamma, mean, var):
    axes = _stat_axes(x.ndim)
    bshape = _per_channel_shape(x.ndim, x.shape[1])
    m = x.size // x.shape[1] if x.shape[1] else 0
    g64 = gy.astype(np.float64)
    inv = (1.0 / np.sqrt(var.astype(np.float64) + attrs["eps"])).reshape(bshape)
    xhat = (x.astype(np.float64) - mean.astype(np.float64).reshape(bshape)) * inv
    dbeta = g64.sum(axis=axes)
    dgamma = (g64 * xhat).sum(axis=axes)
    k = gamma.astype(np.float64).reshape(bshape) * inv
    dx = k * (g64 - dbeta.reshape(bshape) / m - xhat * dgamma.reshape(bshape) / m)
    dt = x.dtype
    return dx.astype(dt), dgamma.astype(dt), dbeta.astype(dt)


# ----------------------------------------------------------------------- CPU kernels


@cpu_kernel
def batch_norm_fwd(x, gamma, beta, y, mean, var, eps):
    """x, y: (A, C, B) views. Two passes per channel with float64 accumulators."""
    na, nc, nb = x.shape
    cnt = na * nb
    for c in range(nc):
        s = 0.0
        for a in range(na):
            for b in range(nb):
                s += x[a, c, b]
        m = s / cnt
        s2 = 0.0
        for a in range(na):
            for b in range(nb):
                d = x[a, c, b] - m
                s2 += d * d
        v = s2 / cnt
        mean[c] = m
        var[c] = v
        scale = np.float64(gamma[c]) / math.sqrt(v + eps)
        shift = np.float64(beta[c])
        for a in range(na):
            for b in range(nb):
                y[a, c, b] = (x[a, c, b] - m) * scale + shift


@cpu_kernel
def batch_norm_bwd(gy, x, gamma, mean, var, dx, dgamma, dbeta, eps):
    """dx = gamma/sigma * (gy - mean(gy) - xhat * mean(gy * xhat)) per channel."""
    na, nc, nb = x.shape
    cnt = na * nb
    for c in range(nc):
        m = np.float64(mean[c])
        inv = 1.0 / math.sqrt(np.float64(var[c]) + eps)
        sg = 0.0
        sgx = 0.0
        for a in range(na):
            for b in range(nb):
                g = np.float64(gy[a, c, b])
                sg += g
                sgx += g * (x[a, c, b] - m)
        sgxh = sgx * inv  # sum(gy * xhat)
        dbeta[c] = sg
        dgamma[c] = sgxh
        k = np.float64(gamma[c]) * inv
        mg = sg / cnt
        mgx = sgxh / cnt
        for a in range(na):
            for b in range(nb):
                xh = (x[a, c, b] - m) * inv
                dx[a, c, b] = k * (gy[a, c, b] - mg - xh * mgx)


def _view3(ctx, v) -> str:
    shape = ctx.shape(v)
    return f"{ctx.var(v)}.reshape(({shape[0]}, {shape[1]}, {_prod(shape[2:])}))"


def _emit_train(ctx, attrs, ins, outs):
    x, gamma, beta = ins
    return [ctx.call("batch_norm_fwd", _view3(ctx, x), gamma, beta, _view3(ctx, outs[0]), outs[1],
                     outs[2], repr(attrs["eps"]))]


def _emit_train_grad(ctx, attrs, ins, outs):
    gy, x, gamma, mean, var = ins
    return [ctx.call("batch_norm_bwd", _view3(ctx, gy), _view3(ctx, x), gamma, mean, var,
                     _view3(ctx, outs[0]), outs[1], outs[2], repr(attrs["eps"]))]


# ----------------------------------------------------------------------- gradient


def _per_channel(g: Graph, v: Value, ndim: int) -> Value:
    """[C] -> a shape that broadcasts over x's channel axis ([C] already does for rank 2)."""
    if ndim == 2:
        return v
    return g.op("reshape", v, shape=_per_channel_shape(ndim, g.type_of(v).shape[0]))


def _g_train(g, attrs, ins, outs, gouts):
    x, gamma, _ = ins
    gy, gmean, gvar = gouts
    dx = dgamma = dbeta = None
    if gy is not None:
        nid = g.apply("batch_norm_train_grad", [gy, x, gamma, outs[1], outs[2]], {"eps": attrs["eps"]})
        dx, dgamma, dbeta = Value(nid, 0), Value(nid, 1), Value(nid, 2)
    if gmean is not None or gvar is not None:
        # the statistics' own gradients (they feed only the running-stat updates in a
        # model, so these terms appear when something differentiates the outputs directly):
        # d mean / dx = 1/M, d var / dx = 2 (x - mean) / M per channel
        xt = g.type_of(x)
        term = None
        if gvar is not None:
            centred = g.op("sub", x, _per_channel(g, outs[1], xt.rank))
            term = g.op("mul_scalar", g.op("mul", centred, _per_channel(g, gvar, xt.rank)), c=2.0)
        gm = None if gmean is None else _per_channel(g, gmean, xt.rank)
        dx = add_statistics_grad(g, dx, term, gm, xt, count_dims(xt))
    return [dx, dgamma, dbeta]


def add_statistics_grad(g: Graph, dx: Value | None, term: Value | None, gmean: Value | None,
                        xt: TensorType, count: tuple) -> Value:
    """dx + (term + gmean) / M: what reaches x through a norm's statistics outputs.

    ``term`` is the spread statistic's share (x's shape) or None; ``gmean`` the mean's
    gradient, shaped to broadcast over x, or None (not both None); ``count`` lists the dims
    whose product is M, the values each statistic is taken over (a symbol is bound at run
    time). ``dx`` is the gradient through y, or None."""
    if gmean is not None:
        term = g.op("broadcast_to", gmean, shape=xt.shape) if term is None else g.op("add", term, gmean)
    term = g.op("mul_scalar", term, c=1.0, div=tuple(count))
    return term if dx is None else g.op("add", dx, term)


register(
    OpDef(
        name="batch_norm_train",
        inputs=("x", "gamma", "beta"),
        outputs=("y", "batch_mean", "batch_var"),
        infer=_infer_train,
        reference=_ref_train,
        pattern=Pattern.OPAQUE,
        attrs={"eps": Attr(float, 1e-5)},
        grad=_g_train,
        emit_cpu=_emit_train,
        doc="training-mode batch norm over every axis but 1; batch_var is the biased variance",
    )
)

register(
    OpDef(
        name="batch_norm_train_grad",
        inputs=("gy", "x", "gamma", "batch_mean", "batch_var"),
        outputs=("dx", "dgamma", "dbeta"),
        infer=_infer_train_grad,
        reference=_ref_train_grad,
        pattern=Pattern.OPAQUE,
        attrs={"eps": Attr(float, 1e-5)},
        no_grad_reason="second order not needed for training",
        emit_cpu=_emit_train_grad,
        doc="backward of batch_norm_train through the batch statistics",
    )
)


# ----------------------------------------------------------------------- graph builders


def unbiased_variance(g: Graph, batch_var: Value, count: tuple) -> Value:
    """batch_var * M / (M - 1), the unbiased variance PyTorch keeps in running_var.

    ``count`` lists the dims whose product is M (see `count_dims`; symbols such as N are
    bound at run time). Built as batch_var / (1 - 1/M) from elementwise ops, where 1/M is
    mul_scalar's ``div`` on a constant 1, so it fuses with the running-stat update. M = 1
    (one sample per channel) gives a non-finite value, as the unbiased estimate is undefined.
    """
    dt = g.type_of(batch_var).dtype
    inv_m = g.op("mul_scalar", g.const(1.0, dt), c=1.0, div=tuple(count))
    return g.op("div", batch_var, g.op("add_scalar", g.op("neg", inv_m), c=1.0))


def running_update(g: Graph, running: Value, batch_stat: Value, momentum: float) -> Value:
    """(1 - momentum) * running + momentum * batch_stat (PyTorch's momentum convention)."""
    return g.op(
        "add",
        g.op("mul_scalar", running, c=1.0 - momentum),
        g.op("mul_scalar", batch_stat, c=momentum),
    )


def batch_norm_inference(
    g: Graph, x: Value, gamma: Value, beta: Value, running_mean: Value, running_var: Value,
    *, eps: float = 1e-5,
) -> Value:
    """Eval-mode batch norm as elementwise ops: (x - rm) * (gamma / sqrt(rv + eps)) + beta.

    The [C] tensors are reshaped to [1, C, 1, ...] to broadcast over x; the per-channel
    scale is a tiny [C] kernel and the rest fuses into one loop over x (or into the epilogue
    of the matmul/conv producing x). Autodiff differentiates it through the elementwise
    rules: dx = gy * scale (so a frozen batch norm passes gradients on), and gamma, beta
    (and the running statistics, if they were params) get theirs too."""
    xt = g.type_of(x)
    _check_x(xt)
    _check_per_channel(
        xt,
        [("gamma", g.type_of(gamma)), ("beta", g.type_of(beta)),
         ("running_mean", g.type_of(running_mean)), ("running_var", g.type_of(running_var))],
    )
    scale = g.op("div", gamma, g.op("sqrt", g.op("add_scalar", running_var, c=float(eps))))
    centred = g.op("sub", x, _per_channel(g, running_mean, xt.rank))
    return g.op(
        "add",
        g.op("mul", centred, _per_channel(g, scale, xt.rank)),
        _per_channel(g, beta, xt.rank),
    )


def build_batch_norm(
    g: Graph,
    x: Value,
    gamma: Value,
    beta: Value,
    running_mean: Value,
    running_var: Value,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Value:
    """Add a batch norm over axis 1 of ``x`` and return its output.

    training=True: ``batch_norm_train`` normalises with the batch statistics, and the
    running statistics (``state`` nodes) are updated through ``g.updates``:
    running_mean <- (1 - momentum) * running_mean + momentum * batch_mean, and
    running_var <- (1 - momentum) * running_var + momentum * unbiased(batch_var)
    (the update nodes are in the ``update`` phase, with the current layer and line).
    training=False: `batch_norm_inference` with the running statistics, no updates.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"batch norm momentum must be in [0, 1], got {momentum}")
    if not eps > 0:
        raise ValueError(f"batch norm eps must be > 0, got {eps}")
    if not training:
        return batch_norm_inference(g, x, gamma, beta, running_mean, running_var, eps=eps)
    for name, v in (("running_mean", running_mean), ("running_var", running_var)):
        if g.op_of(v.node) not in ("state", "param"):
            raise ValueError(f"batch norm {name} must be a state node, got {g.describe(v.node)}")
    nid = g.apply("batch_norm_train", [x, gamma, beta], {"eps": float(eps)})
    y, batch_mean, batch_var = Value(nid, 0), Value(nid, 1), Value(nid, 2)
    saved = g.provenance
    g.provenance = Provenance(layer=saved.layer, line=saved.line, phase="update")
    try:
        unbiased = unbiased_variance(g, batch_var, count_dims(g.type_of(x)))
        g.updates[running_mean.node] = running_update(g, running_mean, batch_mean, momentum)
        g.updates[running_var.node] = running_update(g, running_var, unbiased, momentum)
    finally:
        g.provenance = saved
    return y


# ======================================================================= layer norm
# Rows are independent, so the kernels split them into at most PAR_BLOCKS blocks run with
# `prange` (as the convolutions split the batch, graphdl/ops/conv.py "Threads"), each block
# by a jitted helper. How many blocks depends on the shape only, never on the thread count:
# dx and y are per row anyway, and dgamma / dbeta are summed per block, then the blocks in
# order, so every result is the same on any number of threads. A block gets at least
# LN_BLOCK_ELEMS elements (about 35 us forward, 45 us backward on one core), so smaller
# inputs stay on the calling thread. Measured on a shared 2-core machine (load 5-10), where
# an empty parallel region cost 14-30 us: [1664, 64] float32 in 13 blocks ran 1.2-1.5x
# slower on two threads than on one (best of 800 calls); [8192, 256] ran from 1.4x faster
# to 5 % slower, depending on what else ran.
# The per-row arithmetic has a deliberate parallel in the CUDA kernels
# (backends/cuda/kernels/layernorm.py), to change together.

LN_BLOCK_ELEMS = 1 << 16


def _ln_rows_type(x: TensorType) -> TensorType:
    return TensorType(tuple(x.shape[:-1]), x.dtype)


def _check_ln_x(x: TensorType) -> None:
    if x.rank < 1:
        raise ShapeError(
            f"layer norm expects x of rank >= 1 ([..., D]: it normalises the last axis), got {x}",
            help="give it a vector of features [D] or rows of them [..., D]",
        )
    if x.dtype not in FLOATS:
        raise ShapeError(f"layer norm expects a float tensor, got {x.dtype}")
    if x.shape[-1] == 0:
        raise ShapeError(f"layer norm of x {x}: the last axis is empty, there is nothing to normalise")


def _check_ln_named(x: TensorType, named: list[tuple[str, TensorType, tuple]]) -> None:
    for name, t, want in named:
        if t.shape != want:
            raise ShapeError(
                f"layer norm {name} has shape {list(t.shape)} but x is {x}: expected {list(want)}",
                help="gamma and beta hold one value per feature (x's last axis); mean and "
                     "rstd one per row (x's leading axes)",
            )
        if t.dtype != x.dtype:
            raise ShapeError(f"layer norm {name} is {t.dtype} but x is {x.dtype}")


def _infer_ln(attrs, types):
    x, gamma, beta = types
    _check_ln_x(x)
    d = (x.shape[-1],)
    _check_ln_named(x, [("gamma", gamma, d), ("beta", beta, d)])
    if not attrs["eps"] > 0:
        raise ShapeError(f"layer norm eps must be > 0, got {attrs['eps']}")
    rows = _ln_rows_type(x)
    return [x, rows, rows]


def _infer_ln_grad(attrs, types):
    gy, x, gamma, mean, rstd = types
    _check_ln_x(x)
    if gy.shape != x.shape or gy.dtype != x.dtype:
        raise ShapeError(f"layer norm gradient {gy} does not match x {x}")
    lead = tuple(x.shape[:-1])
    _check_ln_named(x, [("gamma", gamma, (x.shape[-1],)), ("mean", mean, lead), ("rstd", rstd, lead)])
    return [x, TensorType((x.shape[-1],), x.dtype), TensorType((x.shape[-1],), x.dtype)]


def _ref_ln(attrs, x, gamma, beta):
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)  # two-pass: no cancellation
    rstd = 1.0 / np.sqrt(var + attrs["eps"])
    y = (x64 - mean) * rstd * gamma.astype(np.float64) + beta.astype(np.float64)
    dt = x.dtype
    return y.astype(dt), mean[..., 0].astype(dt), rstd[..., 0].astype(dt)


def _ref_ln_grad(attrs, gy, x, gamma, mean, rstd):
    d = x.shape[-1]
    g64 = gy.astype(np.float64)
    inv = rstd.astype(np.float64)[..., None]
    xhat = (x.astype(np.float64) - mean.astype(np.float64)[..., None]) * inv
    lead = tuple(range(x.ndim - 1))
    dgamma = (g64 * xhat).sum(axis=lead)
    dbeta = g64.sum(axis=lead)
    gg = g64 * gamma.astype(np.float64)
    dx = inv * (gg - gg.sum(axis=-1, keepdims=True) / d
                - xhat * (gg * xhat).sum(axis=-1, keepdims=True) / d)
    dt = x.dtype
    return dx.astype(dt), dgamma.astype(dt), dbeta.astype(dt)


@cpu_helper
def _ln_blocks(rows, d):
    """How many row blocks the layer norm kernels use (a function of the shape alone)."""
    return max(1, min(PAR_BLOCKS, rows, rows * d // LN_BLOCK_ELEMS))


@cpu_helper
def _ln_fwd_rows(x, gamma, beta, y, mean, rstd, eps, r0, r1):
    """Rows r0..r1 of layer_norm: two passes over each row with float64 accumulators, then
    y in x's dtype (float32 loops are twice as wide). Rows are indexed in place, not taken
    as views: a view costs two atomic reference-count updates."""
    d = x.shape[1]
    dt = x.dtype.type
    for r in range(r0, r1):
        s = 0.0
        for j in range(d):
            s += x[r, j]
        m = s / d
        s2 = 0.0
        for j in range(d):
            c = x[r, j] - m
            s2 += c * c
        inv = 1.0 / math.sqrt(s2 / d + eps)
        mean[r] = m
        rstd[r] = inv
        mf = dt(m)
        invf = dt(inv)
        for j in range(d):
            y[r, j] = (x[r, j] - mf) * invf * gamma[j] + beta[j]


@cpu_kernel(parallel=True)
def layer_norm_fwd(x, gamma, beta, y, mean, rstd, eps):
    """x, y: [R, D] views; mean, rstd: [R]."""
    rows, d = x.shape
    nblk = _ln_blocks(rows, d)
    if nblk == 1:  # a small input: no thread hand-off
        _ln_fwd_rows(x, gamma, beta, y, mean, rstd, eps, 0, rows)
        return
    for t in prange(nblk):
        _ln_fwd_rows(x, gamma, beta, y, mean, rstd, eps, rows * t // nblk, rows * (t + 1) // nblk)


@cpu_helper
def _ln_bwd_rows(gy, x, gamma, mean, rstd, dx, acc_gamma, acc_beta, r0, r1):
    """Rows r0..r1 of layer_norm_grad: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
    with g = gy * gamma, the row sums in float64; the rows' shares of dgamma / dbeta are
    added into the float64 accumulators. xhat and g * gamma are computed once per element
    (in x's dtype), and rows are indexed in place (a view costs two atomic reference-count
    updates)."""
    d = x.shape[1]
    dt = x.dtype.type
    xh = np.empty(d, x.dtype)
    gg = np.empty(d, x.dtype)
    for r in range(r0, r1):
        m = dt(mean[r])
        inv = dt(rstd[r])
        for j in range(d):
            xh[j] = (x[r, j] - m) * inv
            gg[j] = gy[r, j] * gamma[j]
        # the row sums alone: a pure reduction vectorises
        sg = 0.0
        sgx = 0.0
        for j in range(d):
            sg += gg[j]
            sgx += gg[j] * xh[j]
        mg = dt(sg / d)
        mgx = dt(sgx / d)
        for j in range(d):
            dx[r, j] = inv * (gg[j] - mg - xh[j] * mgx)
        for j in range(d):
            g = gy[r, j]
            acc_gamma[j] += g * xh[j]
            acc_beta[j] += g


@cpu_kernel(parallel=True)
def layer_norm_bwd(gy, x, gamma, mean, rstd, dx, dgamma, dbeta):
    """gy, x, dx: [R, D] views; mean, rstd: [R]; dgamma, dbeta: [D]."""
    rows, d = x.shape
    nblk = _ln_blocks(rows, d)
    acc = np.zeros((nblk, 2, d))  # each block's float64 shares of dgamma and dbeta
    if nblk == 1:
        _ln_bwd_rows(gy, x, gamma, mean, rstd, dx, acc[0, 0], acc[0, 1], 0, rows)
    else:
        for t in prange(nblk):
            _ln_bwd_rows(gy, x, gamma, mean, rstd, dx, acc[t, 0], acc[t, 1],
                         rows * t // nblk, rows * (t + 1) // nblk)
    for j in range(d):
        sg = 0.0
        sb = 0.0
        for t in range(nblk):  # the blocks in order: the same sums on any number of threads
            sg += acc[t, 0, j]
            sb += acc[t, 1, j]
        dgamma[j] = sg
        dbeta[j] = sb


def _rows2(ctx, v) -> str:
    """A [..., D] value as rows [R, D]."""
    shape = ctx.shape(v)
    return f"{ctx.var(v)}.reshape(({_prod(shape[:-1])}, {shape[-1]}))"


def _rows1(ctx, v) -> str:
    """A [...] value (one number per row) as [R]."""
    return f"{ctx.var(v)}.reshape(({_prod(ctx.shape(v))},))"


def _emit_ln(ctx, attrs, ins, outs):
    x, gamma, beta = ins
    return [ctx.call("layer_norm_fwd", _rows2(ctx, x), gamma, beta, _rows2(ctx, outs[0]),
                     _rows1(ctx, outs[1]), _rows1(ctx, outs[2]), repr(attrs["eps"]))]


def _emit_ln_grad(ctx, attrs, ins, outs):
    gy, x, gamma, mean, rstd = ins
    return [ctx.call("layer_norm_bwd", _rows2(ctx, gy), _rows2(ctx, x), gamma, _rows1(ctx, mean),
                     _rows1(ctx, rstd), _rows2(ctx, outs[0]), outs[1], outs[2])]


def _per_row(g: Graph, v: Value, xt: TensorType) -> Value:
    """[...] -> [..., 1], which broadcasts along x's last axis."""
    return g.op("reshape", v, shape=tuple(xt.shape[:-1]) + (1,))


def _g_ln(g, attrs, ins, outs, gouts):
    x, gamma, _ = ins
    gy, gmean, grstd = gouts
    dx = dgamma = dbeta = None
    if gy is not None:
        nid = g.apply("layer_norm_grad", [gy, x, gamma, outs[1], outs[2]], {})
        dx, dgamma, dbeta = Value(nid, 0), Value(nid, 1), Value(nid, 2)
    if gmean is not None or grstd is not None:
        # the statistics' own gradients (nothing in a model reads them but the backward op;
        # they appear when something differentiates the outputs directly):
        # d mean / dx = 1/D, d rstd / dx = -rstd^3 (x - mean) / D along each row
        xt = g.type_of(x)
        term = None
        if grstd is not None:
            rstd = outs[2]
            coef = g.op("neg", g.op("mul", grstd, g.op("mul", rstd, g.op("mul", rstd, rstd))))
            centred = g.op("sub", x, _per_row(g, outs[1], xt))
            term = g.op("mul", centred, _per_row(g, coef, xt))
        gm = None if gmean is None else _per_row(g, gmean, xt)
        dx = add_statistics_grad(g, dx, term, gm, xt, (xt.shape[-1],))
    return [dx, dgamma, dbeta]


register(
    OpDef(
        name="layer_norm",
        inputs=("x", "gamma", "beta"),
        outputs=("y", "mean", "rstd"),
        infer=_infer_ln,
        reference=_ref_ln,
        pattern=Pattern.OPAQUE,
        attrs={"eps": Attr(float, 1e-5)},
        grad=_g_ln,
        emit_cpu=_emit_ln,
        flops_per_element=8,  # sum, centred square-add, (x - mean) * rstd * gamma + beta
        doc="layer norm over the last axis; mean and rstd = 1/sqrt(biased var + eps) per row",
    )
)

register(
    OpDef(
        name="layer_norm_grad",
        inputs=("gy", "x", "gamma", "mean", "rstd"),
        outputs=("dx", "dgamma", "dbeta"),
        infer=_infer_ln_grad,
        reference=_ref_ln_grad,
        pattern=Pattern.OPAQUE,
        no_grad_reason="second order not needed for training",
        emit_cpu=_emit_ln_grad,
        flops_per_element=16,  # xhat, the row sums, dgamma / dbeta and dx
        doc="backward of layer_norm: dx through the row statistics, dgamma and dbeta",
    )
)


def build_layer_norm(
    g: Graph, x: Value, gamma: Value | None = None, beta: Value | None = None, *, eps: float = 1e-5,
) -> Value:
    """Add a layer norm over the last axis of ``x`` and return y.

    ``gamma`` and ``beta`` ([D]) are the learned scale and shift; None (a layer without
    affine parameters) passes constant ones and zeros, so there is one op either way."""
    xt = g.type_of(x)
    _check_ln_x(xt)
    d = xt.shape[-1]
    if (gamma is None or beta is None) and not isinstance(d, int):
        raise ShapeError(f"layer norm of x {xt} without gamma / beta needs a fixed last axis")
    if gamma is None:
        gamma = g.const([1.0] * d, xt.dtype)
    if beta is None:
        beta = g.const([0.0] * d, xt.dtype)
    nid = g.apply("layer_norm", [x, gamma, beta], {"eps": float(eps)})
    return Value(nid, 0)
