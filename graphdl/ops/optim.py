"""Optimiser update ops: sgd, momentum (nesterov), adam / adamw.

Each takes a parameter, its gradient, its state and the learning rate (a graph input, so
a schedule changes it without recompiling) and returns the new parameter and state.
`plan_memory` makes these outputs alias their inputs, so the kernels update in place;
they read each element before writing it, so aliasing is safe.
"""

from __future__ import annotations

import math

import numpy as np

from graphdl.ops.registry import Attr, OpDef, Pattern, ShapeError, cpu_kernel, register


def _infer_update(n_state: int, has_step: bool):
    def infer(attrs, types):
        p = types[0]
        for t in types[1 : 2 + n_state]:
            if t.shape != p.shape or t.dtype != p.dtype:
                raise ShapeError(f"optimizer state {t} does not match parameter {p}")
        for t in types[2 + n_state :]:
            if t.rank != 0:
                raise ShapeError(f"learning rate / step must be scalars, got {t}")
        return [p] * (1 + n_state)

    return infer


# ------------------------------------------------------------------ sgd


def _ref_sgd(attrs, p, g, lr):
    lr = float(lr) * attrs["lr_mult"]
    d = g + attrs["weight_decay"] * p
    return (p - lr * d).astype(p.dtype)


@cpu_kernel
def sgd_flat(p, g, lr, out, wd, lr_mult):
    step = lr[0] * lr_mult
    for i in range(p.size):
        out[i] = p[i] - step * (g[i] + wd * p[i])


def _emit_sgd(ctx, attrs, ins, outs):
    p, g, lr = (ctx.var(v) for v in ins)
    return [
        f"{ctx.kernel('sgd_flat')}({p}.ravel(), {g}.ravel(), {lr}, {ctx.var(outs[0])}.ravel(), "
        f"{attrs['weight_decay']!r}, {attrs['lr_mult']!r})"
    ]


_COMMON = {"weight_decay": Attr(float, 0.0), "lr_mult": Attr(float, 1.0)}

register(
    OpDef(
        name="sgd_update",
        inputs=("param", "grad", "lr"),
        infer=_infer_update(0, False),
        reference=_ref_sgd,
        pattern=Pattern.OPAQUE,
        attrs=dict(_COMMON),
        no_grad_reason="optimiser updates end the training step",
        emit_cpu=_emit_sgd,
        inplace_ok=(0,),
    )
)

# ------------------------------------------------------------------ momentum


def _ref_momentum(attrs, p, g, buf, lr):
    lr = float(lr) * attrs["lr_mult"]
    mu = attrs["momentum"]
    d = g + attrs["weight_decay"] * p
    buf = mu * buf + d
    step = d + mu * buf if attrs["nesterov"] else buf
    return (p - lr * step).astype(p.dtype), buf.astype(p.dtype)


@cpu_kernel
def momentum_flat(p, g, buf, lr, p_out, buf_out, mu, nesterov, wd, lr_mult):
    rate = lr[0] * lr_mult
    for i in range(p.size):
        d = g[i] + wd * p[i]
        b = mu * buf[i] + d
        buf_out[i] = b
        if nesterov:
            p_out[i] = p[i] - rate * (d + mu * b)
        else:
            p_out[i] = p[i] - rate * b


def _emit_momentum(ctx, attrs, ins, outs):
    p, g, buf, lr = (ctx.var(v) for v in ins)
    po, bo = (ctx.var(v) for v in outs)
    return [
        f"{ctx.kernel('momentum_flat')}({p}.ravel(), {g}.ravel(), {buf}.ravel(), {lr}, "
        f"{po}.ravel(), {bo}.ravel(), {attrs['momentum']!r}, {attrs['nesterov']}, "
        f"{attrs['weight_decay']!r}, {attrs['lr_mult']!r})"
    ]


register(
    OpDef(
        name="momentum_update",
        inputs=("param", "grad", "velocity", "lr"),
        outputs=("param", "velocity"),
        infer=_infer_update(1, False),
        reference=_ref_momentum,
        pattern=Pattern.OPAQUE,
        attrs={"momentum": Attr(float, 0.9), "nesterov": Attr(bool, False), **_COMMON},
        no_grad_reason="optimiser updates end the training step",
        emit_cpu=_emit_momentum,
        inplace_ok=(0, 2),
    )
)

# ------------------------------------------------------------------ adam / adamw


def _ref_adam(attrs, p, g, m, v, lr, step):
    lr = float(lr) * attrs["lr_mult"]
    t = float(step)
    b1, b2, eps, wd = attrs["beta1"], attrs["beta2"], attrs["eps"], attrs["weight_decay"]
    p = p.astype(np.float64)
    if attrs["decoupled"]:
        p = p * (1 - lr * wd)
    else:
        g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat = m / (1 - b1**t)
    vhat = v / (1 - b2**t)
    p = p - lr * mhat / (np.sqrt(vhat) + eps)
    dt = g.dtype
    return p.astype(dt), m.astype(dt), v.astype(dt)


@cpu_kernel
def adam_flat(p, g, m, v, lr, step, p_out, m_out, v_out, b1, b2, eps, wd, decoupled, lr_mult):
    rate = lr[0] * lr_mult
    t = step[0]
    c1 = 1.0 / (1.0 - b1**t)
    c2 = 1.0 / (1.0 - b2**t)
    for i in range(p.size):
        w = p[i]
        d = g[i]
        if decoupled:
            w = w * (1.0 - rate * wd)
        else:
            d = d + wd * w
        mi = b1 * m[i] + (1.0 - b1) * d
        vi = b2 * v[i] + (1.0 - b2) * d * d
        m_out[i] = mi
        v_out[i] = vi
        p_out[i] = w - rate * (mi * c1) / (math.sqrt(vi * c2) + eps)


def _emit_adam(ctx, attrs, ins, outs):
    p, g, m, v, lr, step = (ctx.var(x) for x in ins)
    po, mo, vo = (ctx.var(x) for x in outs)
    return [
        f"{ctx.kernel('adam_flat')}({p}.ravel(), {g}.ravel(), {m}.ravel(), {v}.ravel(), "
        f"{lr}, {step}, {po}.ravel(), {mo}.ravel(), {vo}.ravel(), {attrs['beta1']!r}, "
        f"{attrs['beta2']!r}, {attrs['eps']!r}, {attrs['weight_decay']!r}, "
        f"{attrs['decoupled']}, {attrs['lr_mult']!r})"
    ]


register(
    OpDef(
        name="adam_update",
        inputs=("param", "grad", "m", "v", "lr", "step"),
        outputs=("param", "m", "v"),
        infer=_infer_update(2, True),
        reference=_ref_adam,
        pattern=Pattern.OPAQUE,
        attrs={
            "beta1": Attr(float, 0.9),
            "beta2": Attr(float, 0.999),
            "eps": Attr(float, 1e-8),
            "decoupled": Attr(bool, False),
            **_COMMON,
        },
        no_grad_reason="optimiser updates end the training step",
        emit_cpu=_emit_adam,
        inplace_ok=(0, 2, 3),
        doc="Adam (decoupled=True: AdamW); `step` is the 1-based step count after increment",
    )
)

