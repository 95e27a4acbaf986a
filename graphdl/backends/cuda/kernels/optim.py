"""CUDA kernels of the optimiser updates (graphdl/ops/optim.py): sgd, momentum, adam/adamw,
rmsprop, adagrad.

Grid-stride loops that update the parameter and its state in place, with the CPU kernels'
arithmetic (constants cast to the parameter's dtype, so float32 stays float32): a
deliberate parallel of graphdl/ops/optim.py, line for line, so that both backends take
the same steps; change both together. As on the
CPU, an output the memory plan could not put in its input's buffer gets a copy first.
"""

from __future__ import annotations

import math

from graphdl.backends.cuda.device import cuda, jit
from graphdl.backends.cuda.registry import cuda_emitter, cuda_kernel


@cuda_kernel
@jit
def sgd_flat(p, g, lr, wd, lr_mult):
    dt = p.dtype.type
    step = dt(lr[0] * lr_mult)
    wdf = dt(wd)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        p[i] = p[i] - step * (g[i] + wdf * p[i])


@cuda_kernel
@jit
def momentum_flat(p, g, buf, lr, mu, nesterov, wd, lr_mult):
    dt = p.dtype.type
    rate = dt(lr[0] * lr_mult)
    muf = dt(mu)
    wdf = dt(wd)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        d = g[i] + wdf * p[i]
        b = muf * buf[i] + d
        buf[i] = b
        if nesterov:
            p[i] = p[i] - rate * (d + muf * b)
        else:
            p[i] = p[i] - rate * b


@cuda_kernel
@jit
def adam_flat(p, g, m, v, lr, step, b1, b2, eps, wd, decoupled, lr_mult):
    dt = p.dtype.type
    rate = lr[0] * lr_mult
    t = step[0]
    c1 = dt(rate / (1.0 - b1**t))
    inv_c2 = dt(1.0 / (1.0 - b2**t))
    b1f = dt(b1)
    b2f = dt(b2)
    epsf = dt(eps)
    ob1 = dt(1.0 - b1)
    ob2 = dt(1.0 - b2)
    shrink = dt(1.0 - rate * wd) if decoupled else dt(1.0)
    wdf = dt(0.0) if decoupled else dt(wd)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        w = p[i] * shrink
        d = g[i] + wdf * p[i]
        mi = b1f * m[i] + ob1 * d
        vi = b2f * v[i] + ob2 * d * d
        m[i] = mi
        v[i] = vi
        p[i] = w - c1 * mi / (math.sqrt(vi * inv_c2) + epsf)


@cuda_kernel
@jit
def rmsprop_flat(p, g, sq, lr, alpha, eps, wd, lr_mult):
    dt = p.dtype.type
    rate = dt(lr[0] * lr_mult)
    af = dt(alpha)
    oa = dt(1.0 - alpha)
    epsf = dt(eps)
    wdf = dt(wd)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        d = g[i] + wdf * p[i]
        s = af * sq[i] + oa * d * d
        sq[i] = s
        p[i] = p[i] - rate * d / (math.sqrt(s) + epsf)


@cuda_kernel
@jit
def adagrad_flat(p, g, acc, lr, step, lr_decay, eps, initial, wd, lr_mult):
    # as on the CPU, `acc` starts at zero and initial_accumulator_value joins it in the root
    dt = p.dtype.type
    rate = dt(lr[0] * lr_mult / (1.0 + (step[0] - 1.0) * lr_decay))
    epsf = dt(eps)
    initf = dt(initial)
    wdf = dt(wd)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        d = g[i] + wdf * p[i]
        s = acc[i] + d * d
        acc[i] = s
        p[i] = p[i] - rate * d / (math.sqrt(s + initf) + epsf)


def _inplace_outputs(ctx, ins, outs, pairs) -> list[str]:
    lines = []
    for out_i, in_i in pairs:
        if not ctx.same_buffer(outs[out_i], ins[in_i]):
            lines += ctx.copy(ctx.var(ins[in_i]), ctx.var(outs[out_i]), ctx.size(outs[out_i]))
    return lines


@cuda_emitter("sgd_update")
def _emit_sgd(ctx, attrs, ins, outs):
    return _inplace_outputs(ctx, ins, outs, [(0, 0)]) + ctx.launch1d(
        ctx.kernel("sgd_flat"), ctx.size(outs[0]),
        [ctx.flat(outs[0]), ctx.flat(ins[1]), ctx.var(ins[2]),
         repr(float(attrs["weight_decay"])), repr(float(attrs["lr_mult"]))])


@cuda_emitter("momentum_update")
def _emit_momentum(ctx, attrs, ins, outs):
    return _inplace_outputs(ctx, ins, outs, [(0, 0), (1, 2)]) + ctx.launch1d(
        ctx.kernel("momentum_flat"), ctx.size(outs[0]),
        [ctx.flat(outs[0]), ctx.flat(ins[1]), ctx.flat(outs[1]), ctx.var(ins[3]),
         repr(float(attrs["momentum"])), str(bool(attrs["nesterov"])),
         repr(float(attrs["weight_decay"])), repr(float(attrs["lr_mult"]))])


@cuda_emitter("adam_update")
def _emit_adam(ctx, attrs, ins, outs):
    return _inplace_outputs(ctx, ins, outs, [(0, 0), (1, 2), (2, 3)]) + ctx.launch1d(
        ctx.kernel("adam_flat"), ctx.size(outs[0]),
        [ctx.flat(outs[0]), ctx.flat(ins[1]), ctx.flat(outs[1]), ctx.flat(outs[2]),
         ctx.var(ins[4]), ctx.var(ins[5]), repr(float(attrs["beta1"])), repr(float(attrs["beta2"])),
         repr(float(attrs["eps"])), repr(float(attrs["weight_decay"])),
         str(bool(attrs["decoupled"])), repr(float(attrs["lr_mult"]))])


@cuda_emitter("rmsprop_update")
def _emit_rmsprop(ctx, attrs, ins, outs):
    return _inplace_outputs(ctx, ins, outs, [(0, 0), (1, 2)]) + ctx.launch1d(
        ctx.kernel("rmsprop_flat"), ctx.size(outs[0]),
        [ctx.flat(outs[0]), ctx.flat(ins[1]), ctx.flat(outs[1]), ctx.var(ins[3]),
         repr(float(attrs["alpha"])), repr(float(attrs["eps"])),
         repr(float(attrs["weight_decay"])), repr(float(attrs["lr_mult"]))])


@cuda_emitter("adagrad_update")
def _emit_adagrad(ctx, attrs, ins, outs):
    return _inplace_outputs(ctx, ins, outs, [(0, 0), (1, 2)]) + ctx.launch1d(
        ctx.kernel("adagrad_flat"), ctx.size(outs[0]),
        [ctx.flat(outs[0]), ctx.flat(ins[1]), ctx.flat(outs[1]), ctx.var(ins[3]),
         ctx.var(ins[4]), repr(float(attrs["lr_decay"])), repr(float(attrs["eps"])),
         repr(float(attrs["initial_accumulator_value"])), repr(float(attrs["weight_decay"])),
         repr(float(attrs["lr_mult"]))])
