"""Attention on the CUDA backend (graphdl/backends/cuda/kernels/attention.py) against the ops'
NumPy references: on the simulator when there is no GPU (conftest.py).

Tiny shapes (every CUDA thread is a Python thread on the simulator) that still have more
rows than the simulator's threads (two blocks of two), so the grid-stride loops take
several rows each; Tq != Tk; key padding with a sample that is all padding; dropout with
the CPU kernel's hash.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_helpers import T, check_kernel, compile_single, reference, single_graph

from graphdl.compiler import compile_graph
from graphdl.ops.attention import visible

H, D, DV = 2, 3, 2
SEED_T = T(dtype="int64")


def _case(r, n, tq, tk, dtype="float32", empty=True):
    q = r.standard_normal((n, H, tq, D)).astype(dtype)
    k = r.standard_normal((n, H, tk, D)).astype(dtype)
    v = r.standard_normal((n, H, tk, DV)).astype(dtype)
    m = (r.random((n, tk)) < 0.7).astype(dtype)
    m[:, 0] = 1
    if empty:
        m[0] = 0  # sample 0 is all padding: its queries see no key
    return q, k, v, m


def _types(dtype, mask, seed):
    types = [T("N", H, "Tq", D, dtype=dtype), T("N", H, "Tk", D, dtype=dtype),
             T("N", H, "Tk", DV, dtype=dtype)]
    if mask:
        types.append(T("N", "Tk", dtype=dtype))
    if seed:
        types.append(SEED_T)
    return types


CASES = [
    # (N, Tq, Tk, causal, mask, rate, dtype)
    (2, 3, 4, False, False, 0.0, "float32"),
    (2, 3, 4, True, True, 0.0, "float32"),
    (2, 4, 3, True, True, 0.3, "float32"),  # Tq > Tk: early queries see no key
    (3, 2, 3, False, True, 0.5, "float64"),
]


def _inputs(case, seed):
    n, tq, tk, causal, mask, rate, dtype = case
    q, k, v, m = _case(np.random.default_rng(seed), n, tq, tk, dtype)
    ins = [q, k, v] + ([m] if mask else []) + ([np.asarray(13, np.int64)] if rate else [])
    attrs = {"causal": causal, "has_mask": mask, "rate": rate, "salt": 2}
    return ins, _types(dtype, mask, bool(rate)), attrs


@pytest.mark.parametrize("case", CASES, ids=[f"{c[1]}x{c[2]}-{c[6]}" for c in CASES])
def test_attention_forward(case):
    ins, types, attrs = _inputs(case, 1)
    out, lse = check_kernel("attention", types, ins, attrs, rtol=1e-5, atol=1e-6)
    assert np.isfinite(out).all() and not np.isnan(lse).any()


@pytest.mark.parametrize("glse", [False, True])
@pytest.mark.parametrize("case", CASES[1:], ids=[f"{c[1]}x{c[2]}-{c[6]}" for c in CASES[1:]])
def test_attention_backward(case, glse):
    """dq, dk, dv from the CPU reference's out and lse (the kernels recompute the weights
    and the dropout mask from them)."""
    ins, types, attrs = _inputs(case, 2)
    out, lse = reference("attention", ins, attrs, {})
    r = np.random.default_rng(3)
    dtype = str(out.dtype)
    gout = r.standard_normal(out.shape).astype(dtype)
    out_t = [T("N", H, "Tq", DV, dtype=dtype), T("N", H, "Tq", dtype=dtype)]
    g_ins = [gout, *ins, out, lse] + ([r.standard_normal(lse.shape).astype(dtype)] if glse else [])
    g_types = [out_t[0], *types, *out_t] + ([out_t[1]] if glse else [])
    check_kernel("attention_grad", g_types, g_ins, {**attrs, "has_glse": glse}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("causal,mask", [(False, False), (True, True)])
def test_attention_weights(causal, mask):
    q, k, _v, m = _case(np.random.default_rng(4), 2, 3, 4)
    ins = [q, k] + ([m] if mask else [])
    types = _types("float32", mask, False)
    del types[2]
    (p,) = check_kernel("attention_weights", types, ins, {"causal": causal, "has_mask": mask},
                        rtol=1e-5, atol=1e-6)
    seen = visible(3, 4, causal, m if mask else None).any(axis=-1)
    np.testing.assert_allclose(p.sum(axis=-1), np.broadcast_to(seen, (2, H, 3)).astype(float), rtol=1e-5)


@pytest.mark.parametrize("fill", ["-inf", "zero"])
def test_attention_mask(fill):
    r = np.random.default_rng(5)
    s = r.standard_normal((2, H, 3, 4)).astype(np.float32)
    m = np.array([[1, 0, 1, 1], [0, 0, 0, 0]], np.float32)
    check_kernel("attention_mask", [T("N", H, 3, 4), T("N", 4)], [s, m],
                 {"causal": True, "has_mask": True, "fill": fill})


def test_same_dropout_mask_as_the_cpu_kernel():
    """The CPU kernel and the CUDA kernel draw one mask from one seed (the references agree
    with both); here the two programs' outputs agree directly."""
    ins, types, attrs = _inputs((2, 3, 5, False, True, 0.4, "float32"), 6)
    ins[0][1] = 1.0  # flat scores: the mask shows plainly
    feeds = {f"x{i}": x for i, x in enumerate(ins)}
    cuda_out = compile_single("attention", types, attrs)(feeds)
    cpu = compile_graph(single_graph("attention", types, attrs), "cpu", title="attention_cpu")
    cpu.bind_params({}, {})
    np.testing.assert_allclose(cuda_out["out0"], cpu(feeds)["out0"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES[2:], ids=[f"{c[1]}x{c[2]}-{c[6]}" for c in CASES[2:]])
def test_heads_inner_layout(case):
    """layout="nthd" (q, k, v, out and gradients [N, T, H, D]): forward and backward against
    the reference, which transposes to [N, H, T, D] and back."""
    ins, types, attrs = _inputs(case, 4)
    inner = [np.ascontiguousarray(np.swapaxes(x, 1, 2)) for x in ins[:3]] + ins[3:]
    inner_types = [T("N", t.shape[2], H, t.shape[3], dtype=t.dtype) for t in types[:3]]
    inner_types += types[3:]
    attrs = {**attrs, "layout": "nthd"}
    out, lse = check_kernel("attention", inner_types, inner, attrs, rtol=1e-5, atol=1e-6)
    dtype = str(out.dtype)
    gout = np.random.default_rng(5).standard_normal(out.shape).astype(dtype)
    out_t = T("N", "Tq", H, DV, dtype=dtype)
    lse_t = T("N", H, "Tq", dtype=dtype)
    check_kernel("attention_grad", [out_t, *inner_types, out_t, lse_t, lse_t],
                 [gout, *inner, out, lse, np.zeros_like(lse)], {**attrs, "has_glse": True},
                 rtol=1e-5, atol=1e-6)
