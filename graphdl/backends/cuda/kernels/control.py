"""CUDA kernels of the loop family's mask ops (graphdl/ops/control.py): seq_mask and
truncate_mask. `scan` itself has no kernel: the code generator writes its host loop
(graphdl/backends/cuda/codegen.py)."""

from __future__ import annotations

from graphdl.backends.cuda.device import cuda, jit
from graphdl.backends.cuda.registry import cuda_emitter, cuda_kernel


@cuda_kernel
@jit
def seq_mask_fill(lengths, out, n, last):
    """out (flat [T * N]) [t * n + i] = 1 where t < lengths[i] (last: where t ==
    lengths[i] - 1), else 0."""
    one = out.dtype.type(1)
    zero = out.dtype.type(0)
    for j in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        t = j // n
        length = lengths[j - t * n]
        inside = t == length - 1 if last else t < length
        out[j] = one if inside else zero


@cuda_kernel
@jit
def truncate_mask_fill(out, k, from_end):
    """out[t] = 1 for the k steps nearest the end (from_end) or the start, else 0."""
    steps = out.size
    one = out.dtype.type(1)
    zero = out.dtype.type(0)
    for t in range(cuda.grid(1), steps, cuda.gridsize(1)):
        inside = t >= steps - k if from_end else t < k
        out[t] = one if inside else zero


@cuda_kernel
@jit
def truncate_mask_per_sample(mask, out, n, k, from_end):
    """out[t, i] (flat [T * N]) = 1 while fewer than k real steps (mask > 0) of sample i lie
    after t (from_end) or before it: one thread per sample walks its steps."""
    steps = out.size // n
    one = out.dtype.type(1)
    zero = out.dtype.type(0)
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        seen = 0
        for j in range(steps):
            t = steps - 1 - j if from_end else j
            out[t * n + i] = one if seen < k else zero
            if mask[t * n + i] > 0:
                seen += 1


@cuda_emitter("seq_mask")
def _emit_seq_mask(ctx, attrs, ins, outs):
    n = ctx.shape(ins[0])[0]
    return ctx.launch1d(ctx.kernel("seq_mask_fill"), ctx.size(outs[0]),
                        [ctx.var(ins[0]), ctx.flat(outs[0]), n, str(bool(attrs["last"]))])


@cuda_emitter("truncate_mask")
def _emit_truncate_mask(ctx, attrs, ins, outs):
    if attrs["per_sample"]:
        n = ctx.shape(ins[0])[1]
        return ctx.launch1d(ctx.kernel("truncate_mask_per_sample"), n,
                            [ctx.flat(ins[0]), ctx.flat(outs[0]), n, str(int(attrs["k"])),
                             str(bool(attrs["from_end"]))])
    return ctx.launch1d(ctx.kernel("truncate_mask_fill"), ctx.size(outs[0]),
                        [ctx.var(outs[0]), str(int(attrs["k"])), str(bool(attrs["from_end"]))])
