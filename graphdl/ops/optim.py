"""Optimiser update ops: sgd, momentum (nesterov), adam / adamw, rmsprop, adagrad.

Each takes a parameter, its gradient, its state and the learning rate (a graph input, so
a schedule changes it without recompiling) and returns the new parameter and state.
The CPU kernels update in place; `plan_memory` gives each output its input's buffer (and
where it cannot, the emitter copies the input into the output first). The CUDA kernels
(graphdl/backends/cuda/kernels/optim.py) repeat their arithmetic line for line, a
deliberate parallel: change both together.
"""

from __future__ import annotations

import numpy as np

from graphdl.ops.registry import (
    Attr,
    OpDef,
    Pattern,
    ShapeError,
    cpu_helper,
    cpu_kernel,
    register,
)


def _infer_update(n_state: int):
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
def sgd_flat(p, g, lr, wd, lr_mult):
    dt = p.dtype.type
    step = dt(lr[0] * lr_mult)
    wdf = dt(wd)
    for i in range(p.size):
        p[i] = p[i] - step * (g[i] + wdf * p[i])


def _inplace_outputs(ctx, ins, outs, pairs) -> list[str]:
    """Update kernels work in place; copy a state into its output first when the memory
    plan could not give the output the state's own buffer."""
    lines = []
    for out_i, in_i in pairs:
        if not ctx.same_buffer(outs[out_i], ins[in_i]):
            lines.append(f"{ctx.var(outs[out_i])}[...] = {ctx.var(ins[in_i])}")
    return lines


def _emit_sgd(ctx, attrs, ins, outs):
    g, lr = ctx.var(ins[1]), ctx.var(ins[2])
    return _inplace_outputs(ctx, ins, outs, [(0, 0)]) + [
        ctx.call("sgd_flat", f"{ctx.var(outs[0])}.ravel()", f"{g}.ravel()", lr,
                 repr(attrs["weight_decay"]), repr(attrs["lr_mult"]))
    ]


_COMMON = {"weight_decay": Attr(float, 0.0), "lr_mult": Attr(float, 1.0)}

register(
    OpDef(
        name="sgd_update",
        flops_per_element=3,
        inputs=("param", "grad", "lr"),
        infer=_infer_update(0),
        reference=_ref_sgd,
        pattern=Pattern.OPAQUE,
        attrs=dict(_COMMON),
        no_grad_reason="optimiser updates end the training step",
        emit_cpu=_emit_sgd,
        inplace_ok=(0,),
        doc="param - lr * lr_mult * (grad + weight_decay * param), in place",
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
def momentum_flat(p, g, buf, lr, mu, nesterov, wd, lr_mult):
    dt = p.dtype.type
    rate = dt(lr[0] * lr_mult)
    muf, wdf = dt(mu), dt(wd)
    for i in range(p.size):
        d = g[i] + wdf * p[i]
        b = muf * buf[i] + d
        buf[i] = b
        if nesterov:
            p[i] = p[i] - rate * (d + muf * b)
        else:
            p[i] = p[i] - rate * b


def _emit_momentum(ctx, attrs, ins, outs):
    g, lr = ctx.var(ins[1]), ctx.var(ins[3])
    po, bo = (ctx.var(v) for v in outs)
    return _inplace_outputs(ctx, ins, outs, [(0, 0), (1, 2)]) + [
        ctx.call("momentum_flat", f"{po}.ravel()", f"{g}.ravel()", f"{bo}.ravel()", lr,
                 repr(attrs["momentum"]), attrs["nesterov"], repr(attrs["weight_decay"]),
                 repr(attrs["lr_mult"]))
    ]


register(
    OpDef(
        name="momentum_update",
        flops_per_element=5,
        inputs=("param", "grad", "velocity", "lr"),
        outputs=("param", "velocity"),
        infer=_infer_update(1),
        reference=_ref_momentum,
        pattern=Pattern.OPAQUE,
        attrs={"momentum": Attr(float, 0.9), "nesterov": Attr(bool, False), **_COMMON},
        no_grad_reason="optimiser updates end the training step",
        emit_cpu=_emit_momentum,
        inplace_ok=(0, 2),
        doc="SGD with momentum (PyTorch's form; nesterov optional): updates param and velocity",
    )
)

# ------------------------------------------------------------------ adam / adamw


def _ref_adam(attrs, p, g, m, v, lr, step):
    lr = float(lr) * attrs["lr_mult"]
    t = float(step)
    b1, b2, eps, wd = attrs["beta1"], attrs["beta2"], attrs["eps"], attrs["weight_decay"]
    dt = p.dtype
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
    return p.astype(dt), m.astype(dt), v.astype(dt)


@cpu_helper
def _adam_constants(p, lr, step, b1, b2, eps, wd, decoupled, lr_mult):
    """Adam's per-step constants in the parameters' dtype (the element loop vectorises)."""
    dt = p.dtype.type
    rate = lr[0] * lr_mult
    t = step[0]
    c1 = dt(rate / (1.0 - b1**t))
    inv_c2 = dt(1.0 / (1.0 - b2**t))
    shrink = dt(1.0 - rate * wd) if decoupled else dt(1.0)
    wdf = dt(0.0) if decoupled else dt(wd)
    return c1, inv_c2, dt(b1), dt(b2), dt(eps), dt(1.0 - b1), dt(1.0 - b2), shrink, wdf


@cpu_helper
def _adam_elements(p, g, m, v, c1, inv_c2, b1f, b2f, epsf, ob1, ob2, shrink, wdf):
    for i in range(p.size):
        w = p[i] * shrink
        d = g[i] + wdf * p[i]
        mi = b1f * m[i] + ob1 * d
        vi = b2f * v[i] + ob2 * d * d
        m[i] = mi
        v[i] = vi
        p[i] = w - c1 * mi / (np.sqrt(vi * inv_c2) + epsf)


@cpu_kernel
def adam_flat(p, g, m, v, lr, step, b1, b2, eps, wd, decoupled, lr_mult):
    # in place, and constants in the parameters' dtype: the loop vectorises (measured
    # 7x faster than writing separate output arrays in float64 arithmetic)
    c = _adam_constants(p, lr, step, b1, b2, eps, wd, decoupled, lr_mult)
    _adam_elements(p, g, m, v, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8])


@cpu_kernel
def adam_multi(ps, gs, ms, vs, lr, step, b1, b2, eps, wd, decoupled, lr_mult):
    """`adam_flat` over many parameters in one call (PyTorch's foreach Adam): tuples of
    flat parameters, gradients and moments; the same arithmetic, element for element."""
    c = _adam_constants(ps[0], lr, step, b1, b2, eps, wd, decoupled, lr_mult)
    for k in range(len(ps)):
        _adam_elements(ps[k], gs[k], ms[k], vs[k], c[0], c[1], c[2], c[3], c[4], c[5], c[6],
                       c[7], c[8])


def _emit_adam(ctx, attrs, ins, outs):
    g, lr, step = ctx.var(ins[1]), ctx.var(ins[4]), ctx.var(ins[5])
    po, mo, vo = (ctx.var(x) for x in outs)
    return _inplace_outputs(ctx, ins, outs, [(0, 0), (1, 2), (2, 3)]) + [
        ctx.call("adam_flat", f"{po}.ravel()", f"{g}.ravel()", f"{mo}.ravel()", f"{vo}.ravel()",
                 lr, step, repr(attrs["beta1"]), repr(attrs["beta2"]), repr(attrs["eps"]),
                 repr(attrs["weight_decay"]), attrs["decoupled"], repr(attrs["lr_mult"]))
    ]


def _emit_adam_group(ctx, attrs, group):
    """One `adam_multi` call for several adam_update nodes of one step (same attributes,
    learning rate and step count; every output in its input's buffer): ``group`` holds
    each node's (inputs, outputs)."""
    ins0 = group[0][0]

    def flat(slot: int, outputs: bool) -> str:
        return "(" + "".join(f"{ctx.var(outs[slot] if outputs else ins[slot])}.ravel(), "
                             for ins, outs in group) + ")"

    return [ctx.call("adam_multi", flat(0, True), flat(1, False), flat(1, True), flat(2, True),
                     ins0[4], ins0[5], repr(attrs["beta1"]), repr(attrs["beta2"]),
                     repr(attrs["eps"]), repr(attrs["weight_decay"]), attrs["decoupled"],
                     repr(attrs["lr_mult"]))]


register(
    OpDef(
        name="adam_update",
        flops_per_element=12,
        inputs=("param", "grad", "m", "v", "lr", "step"),
        outputs=("param", "m", "v"),
        infer=_infer_update(2),
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
        emit_cpu_group=_emit_adam_group,
        group_by=(4, 5),
        inplace_ok=(0, 2, 3),
        doc="Adam (decoupled=True: AdamW); `step` is the 1-based step count after increment",
    )
)


# ------------------------------------------------------------------ rmsprop


def _ref_rmsprop(attrs, p, g, sq, lr):
    lr = float(lr) * attrs["lr_mult"]
    a, eps = attrs["alpha"], attrs["eps"]
    dt = p.dtype
    p = p.astype(np.float64)
    d = g + attrs["weight_decay"] * p
    sq = a * sq + (1 - a) * d * d
    p = p - lr * d / (np.sqrt(sq) + eps)
    return p.astype(dt), sq.astype(dt)


@cpu_kernel
def rmsprop_flat(p, g, sq, lr, alpha, eps, wd, lr_mult):
    dt = p.dtype.type
    rate = dt(lr[0] * lr_mult)
    af, oa, epsf, wdf = dt(alpha), dt(1.0 - alpha), dt(eps), dt(wd)
    for i in range(p.size):
        d = g[i] + wdf * p[i]
        s = af * sq[i] + oa * d * d
        sq[i] = s
        p[i] = p[i] - rate * d / (np.sqrt(s) + epsf)


def _emit_rmsprop(ctx, attrs, ins, outs):
    g, lr = ctx.var(ins[1]), ctx.var(ins[3])
    po, so = (ctx.var(x) for x in outs)
    return _inplace_outputs(ctx, ins, outs, [(0, 0), (1, 2)]) + [
        ctx.call("rmsprop_flat", f"{po}.ravel()", f"{g}.ravel()", f"{so}.ravel()", lr,
                 repr(attrs["alpha"]), repr(attrs["eps"]), repr(attrs["weight_decay"]),
                 repr(attrs["lr_mult"]))
    ]


register(
    OpDef(
        name="rmsprop_update",
        flops_per_element=9,
        inputs=("param", "grad", "square_avg", "lr"),
        outputs=("param", "square_avg"),
        infer=_infer_update(1),
        reference=_ref_rmsprop,
        pattern=Pattern.OPAQUE,
        attrs={"alpha": Attr(float, 0.99), "eps": Attr(float, 1e-8), **_COMMON},
        no_grad_reason="optimiser updates end the training step",
        emit_cpu=_emit_rmsprop,
        inplace_ok=(0, 2),
        doc="RMSprop (PyTorch's form, no momentum, not centred): updates param and square_avg",
    )
)

# ------------------------------------------------------------------ adagrad


def _ref_adagrad(attrs, p, g, acc, lr, step):
    # `acc` sums the squared gradients from zero; PyTorch's state_sum is
    # initial_accumulator_value + acc (added inside the square root, so the state can start
    # at zeros like every other optimiser state)
    rate = float(lr) * attrs["lr_mult"] / (1.0 + (float(step) - 1.0) * attrs["lr_decay"])
    dt = p.dtype
    p = p.astype(np.float64)
    d = g + attrs["weight_decay"] * p
    acc = acc + d * d
    p = p - rate * d / (np.sqrt(acc + attrs["initial_accumulator_value"]) + attrs["eps"])
    return p.astype(dt), acc.astype(dt)


@cpu_kernel
def adagrad_flat(p, g, acc, lr, step, lr_decay, eps, initial, wd, lr_mult):
    dt = p.dtype.type
    rate = dt(lr[0] * lr_mult / (1.0 + (step[0] - 1.0) * lr_decay))
    epsf, initf, wdf = dt(eps), dt(initial), dt(wd)
    for i in range(p.size):
        d = g[i] + wdf * p[i]
        s = acc[i] + d * d
        acc[i] = s
        p[i] = p[i] - rate * d / (np.sqrt(s + initf) + epsf)


def _emit_adagrad(ctx, attrs, ins, outs):
    g, lr, step = ctx.var(ins[1]), ctx.var(ins[3]), ctx.var(ins[4])
    po, ao = (ctx.var(x) for x in outs)
    return _inplace_outputs(ctx, ins, outs, [(0, 0), (1, 2)]) + [
        ctx.call("adagrad_flat", f"{po}.ravel()", f"{g}.ravel()", f"{ao}.ravel()", lr, step,
                 repr(attrs["lr_decay"]), repr(attrs["eps"]),
                 repr(attrs["initial_accumulator_value"]), repr(attrs["weight_decay"]),
                 repr(attrs["lr_mult"]))
    ]


register(
    OpDef(
        name="adagrad_update",
        flops_per_element=8,
        inputs=("param", "grad", "sum", "lr", "step"),
        outputs=("param", "sum"),
        infer=_infer_update(1),
        reference=_ref_adagrad,
        pattern=Pattern.OPAQUE,
        attrs={
            "lr_decay": Attr(float, 0.0),
            "eps": Attr(float, 1e-10),
            "initial_accumulator_value": Attr(float, 0.0),
            **_COMMON,
        },
        no_grad_reason="optimiser updates end the training step",
        emit_cpu=_emit_adagrad,
        inplace_ok=(0, 2),
        doc="Adagrad (PyTorch's form): updates param and the sum of squared gradients; "
            "`step` is the 1-based step count after increment",
    )
)
