"""Loops: `scan` (a higher-order op: a body graph run once per time step, see
`graphdl.ir.scan`) and `seq_mask` (the time mask of per-sample lengths).

`scan`'s reference runs its body step by step with the body's ops' references (as the
`fused` op runs its members); it has no `grad` or kernel of its own: autodiff
differentiates it into a reverse scan (`graphdl.passes.scan_autodiff`) and each backend's
code generator writes its loop.
"""

from __future__ import annotations

import numpy as np

from graphdl.ir.graph import Graph, Value
from graphdl.ir.optable import lookup
from graphdl.ir.scan import body_inputs, body_output_names, split_inputs
from graphdl.ir.types import TensorType
from graphdl.ops.registry import Attr, OpDef, Pattern, ShapeError, cpu_kernel, register

SOURCES = ("input", "param", "state", "const")


def body_types(body: Graph) -> Graph:
    """``body`` (a copy) with every value typed from its input types, op by op."""
    body = body.copy()
    for nid in body.topo_order():
        nd = body.node(nid)
        if nd["op"] in SOURCES:
            continue
        in_types = [body.type_of(v) for v in body.inputs_of(nid)]
        nd["types"] = list(lookup(nd["op"]).infer(nd["attrs"], in_types))
    return body


def _infer_scan(attrs, types):
    body: Graph = attrs["body"]
    k, s = attrs["num_carry"], attrs["num_seq"]
    ids = body_inputs(body)
    if len(ids) != len(types):
        raise ShapeError(f"scan has {len(types)} inputs but its body takes {len(ids)}")
    if s < 1:
        raise ShapeError("scan needs at least one sequence input")
    seq_types = types[k:k + s]
    steps = seq_types[0].shape[0] if seq_types[0].rank else None
    for i, (nid, t) in enumerate(zip(ids, types)):
        want = body.type_of(Value(nid))
        got = t
        if k <= i < k + s:
            if t.rank == 0 or t.shape[0] != steps:
                raise ShapeError(f"scan sequence {i - k} is {t}: every sequence needs the "
                                 f"same leading time axis ({steps})")
            got = TensorType(t.shape[1:], t.dtype)
        if got != want:
            raise ShapeError(f"scan input {i} is {got} per step but the body takes {want}")
    typed = body_types(body)
    names = body_output_names(body, k)
    outs = []
    for i, name in enumerate(names):
        t = typed.type_of(typed.outputs[name])
        if i < k:
            if t != types[i]:
                raise ShapeError(f"scan carry {i} enters as {types[i]} but the body gives "
                                 f"{t} back")
            outs.append(t)
        else:
            outs.append(TensorType((steps,) + t.shape, t.dtype))
    return outs


def _run_body(body: Graph, feeds: list[np.ndarray], bindings: dict) -> dict[str, np.ndarray]:
    """One step of a body with its ops' references (as the fused op runs its members):
    ``feeds`` in the body's input order; returns its outputs by name."""
    values = dict(zip((Value(i) for i in body_inputs(body)), feeds))
    for nid in body.topo_order():
        nd = body.node(nid)
        if nd["op"] == "input":
            continue
        if nd["op"] == "const":
            values[Value(nid)] = np.asarray(nd["attrs"]["value"], dtype=nd["types"][0].dtype)
            continue
        opdef = lookup(nd["op"])
        args = [values[v] for v in body.inputs_of(nid)]
        out = (opdef.reference(nd["attrs"], *args, bindings=bindings) if opdef.takes_bindings
               else opdef.reference(nd["attrs"], *args))
        for i, o in enumerate(out if isinstance(out, tuple) else (out,)):
            values[Value(nid, i)] = np.asarray(o)
    return {name: values[v] for name, v in body.outputs.items()}


def _ref_scan(attrs, *args, bindings=None):
    """The body once per time step (from the end when ``reverse``), the carries passed on,
    the per-step outputs stacked in time order."""
    body: Graph = attrs["body"]
    k = attrs["num_carry"]
    carries, seqs, invs = split_inputs(attrs, list(args))
    names = body_output_names(body, k)
    steps = seqs[0].shape[0]
    if steps == 0:
        raise ValueError("a scan over 0 time steps")
    ys: list[list[np.ndarray]] = [[] for _ in names[k:]]
    for t in range(steps - 1, -1, -1) if attrs["reverse"] else range(steps):
        results = _run_body(body, carries + [s[t] for s in seqs] + invs, bindings or {})
        carries = [results[n] for n in names[:k]]
        for j, n in enumerate(names[k:]):
            ys[j].append(results[n])
    if attrs["reverse"]:
        ys = [y[::-1] for y in ys]
    return tuple(carries) + tuple(np.stack(y) for y in ys)


register(
    OpDef(
        name="scan",
        inputs=("args",),
        outputs=(),
        variadic=True,
        body=True,
        infer=_infer_scan,
        reference=_ref_scan,
        pattern=Pattern.OPAQUE,
        attrs={
            "body": Attr(Graph),
            "num_carry": Attr(int),
            "num_seq": Attr(int),
            "reverse": Attr(bool, False),
            "truncate": Attr(int, 0),
        },
        no_grad_reason="differentiated by autodiff as a reverse scan (passes/scan_autodiff.py)",
        doc="a loop over time: runs its body graph once per step on the carries and one "
            "slice of each sequence, stacking the per-step outputs (reverse: from the end)",
    )
)


# ------------------------------------------------------------------ seq_mask
# The time mask of per-sample lengths, time-major as the scan reads its sequences:
# mask[t, n, 0] = 1 where t < lengths[n], else 0.

def _infer_seq_mask(attrs, types):
    lengths, like = types
    if lengths.rank != 1 or lengths.dtype != "int64":
        raise ShapeError(f"seq_mask lengths must be int64 [N], got {lengths}")
    if like.rank < 2 or like.shape[1] != lengths.shape[0]:
        raise ShapeError(f"seq_mask needs a time-major sequence [T, N, ...] with N = "
                         f"{lengths.shape[0]}, got {like}")
    return [TensorType((like.shape[0], like.shape[1], 1), attrs["dtype"])]


def _ref_seq_mask(attrs, lengths, like):
    t = np.arange(like.shape[0])[:, None]
    mask = (t == lengths[None, :] - 1) if attrs["last"] else (t < lengths[None, :])
    return mask[:, :, None].astype(attrs["dtype"])


@cpu_kernel
def seq_mask_fill(lengths, last, out):
    """out[t, n, 0] = 1 where t < lengths[n] (last: where t == lengths[n] - 1), else 0."""
    steps, n = out.shape[0], out.shape[1]
    for t in range(steps):
        for i in range(n):
            inside = t == lengths[i] - 1 if last else t < lengths[i]
            out[t, i, 0] = 1.0 if inside else 0.0


def _emit_seq_mask(ctx, attrs, ins, outs):
    return [ctx.call("seq_mask_fill", ins[0], ctx.runtime(attrs["last"]), outs[0])]


register(
    OpDef(
        name="seq_mask",
        inputs=("lengths", "like"),
        infer=_infer_seq_mask,
        reference=_ref_seq_mask,
        pattern=Pattern.OPAQUE,
        attrs={"dtype": Attr(str, "float32", ("float32", "float64")), "last": Attr(bool, False)},
        grad=lambda g, attrs, ins, outs, gouts: [None, None],
        differentiable=(),
        flops_per_element=0,
        emit_cpu=_emit_seq_mask,
        doc="the time mask of per-sample lengths: [T, N, 1], 1 where t < lengths[n] (last: "
            "only at t = lengths[n] - 1)",
    )
)


# ------------------------------------------------------------------ truncate_mask
# Truncated BPTT (graphdl.passes.scan_autodiff): per step, whether the carries' gradient may
# still flow into it: the k steps nearest where the backward loop starts. With
# `per_sample`, `like` is a time mask [T, N, 1] (seq_mask) and the k steps are each sample's
# own real ones: keep[t, n] = 1 while fewer than k real steps of sample n lie beyond t
# (from_end) or before it.

def _infer_truncate_mask(attrs, types):
    (like,) = types
    if like.rank < 1:
        raise ShapeError(f"truncate_mask needs a time-major sequence [T, ...], got {like}")
    if attrs["k"] < 1:
        raise ShapeError(f"truncate_mask needs k >= 1, got {attrs['k']}")
    if attrs["per_sample"]:
        if like.rank != 3 or like.shape[2] != 1:
            raise ShapeError(f"truncate_mask per sample needs a time mask [T, N, 1], got {like}")
        return [TensorType(like.shape, attrs["dtype"])]
    return [TensorType((like.shape[0],), attrs["dtype"])]


def _ref_truncate_mask(attrs, like):
    steps, k = like.shape[0], attrs["k"]
    if attrs["per_sample"]:
        real = like[:, :, 0] > 0
        before = np.cumsum(real, axis=0) - real  # real steps before t
        beyond = real.sum(axis=0, keepdims=True) - before - real  # real steps after t
        keep = (beyond if attrs["from_end"] else before) < k
        return keep[:, :, None].astype(attrs["dtype"])
    t = np.arange(steps)
    keep = t >= steps - k if attrs["from_end"] else t < k
    return keep.astype(attrs["dtype"])


@cpu_kernel
def truncate_mask_fill(k, from_end, out):
    steps = out.shape[0]
    for t in range(steps):
        inside = t >= steps - k if from_end else t < k
        out[t] = 1.0 if inside else 0.0


@cpu_kernel
def truncate_mask_per_sample(mask, k, from_end, out):
    """out[t, n, 0] = 1 while fewer than k real steps (mask > 0) of sample n lie after t
    (from_end) or before t, else 0."""
    steps, n = mask.shape[0], mask.shape[1]
    for i in range(n):
        seen = 0
        for j in range(steps):
            t = steps - 1 - j if from_end else j
            out[t, i, 0] = 1.0 if seen < k else 0.0
            if mask[t, i, 0] > 0:
                seen += 1


def _emit_truncate_mask(ctx, attrs, ins, outs):
    if attrs["per_sample"]:
        return [ctx.call("truncate_mask_per_sample", ins[0],
                         ctx.runtime(attrs["k"], attrs["from_end"]), outs[0])]
    return [ctx.call("truncate_mask_fill", ctx.runtime(attrs["k"], attrs["from_end"]), outs[0])]


register(
    OpDef(
        name="truncate_mask",
        inputs=("like",),
        infer=_infer_truncate_mask,
        reference=_ref_truncate_mask,
        pattern=Pattern.OPAQUE,
        attrs={"k": Attr(int), "from_end": Attr(bool, True), "per_sample": Attr(bool, False),
               "dtype": Attr(str, "float32", ("float32", "float64"))},
        grad=lambda g, attrs, ins, outs, gouts: [None],
        differentiable=(),
        flops_per_element=0,
        emit_cpu=_emit_truncate_mask,
        doc="[T]: 1 for the k steps nearest the end (from_end) or the start, else 0 "
            "(truncated backpropagation through time); per_sample: [T, N, 1] from a time "
            "mask, each sample's own k real steps",
    )
)
