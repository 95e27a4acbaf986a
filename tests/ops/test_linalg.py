"""Linear algebra (graphdl/ops/linalg.py): svd, eigh, eig kernels against NumPy (vectors up
to sign), gradients by finite differences with sign-invariant losses, symbolic shapes, bad
inputs, and PCA fitted and applied through the engine against scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import (
    T,
    compile_single,
    gradcheck,
    graph_gradcheck,
    infer,
    reference,
    rng,
    run_compiled,
)

from graphdl.compiler import compile_graph
from graphdl.data.pca import fit_pca, pca_transform_graph
from graphdl.ir.graph import Graph, Value
from graphdl.ops.registry import ShapeError, get_op

KERNEL_COVERED = {"svd", "eigh", "eig"}
GRAD_COVERED = {"svd", "eigh"}


def _weighted(g, v, seed, square=False):
    """sum(W * v) (or sum(W * v^2), invariant to the sign of singular/eigen vectors)."""
    t = g.type_of(v)
    w = np.random.default_rng(seed).uniform(-1, 1, size=t.shape)
    if square:
        v = g.op("square", v)
    return g.op("sum", g.op("mul", v, g.const(w, t.dtype)))


def _add_all(g, terms):
    total = terms[0]
    for t in terms[1:]:
        total = g.op("add", total, t)
    return total


def assert_columns_match_up_to_sign(got, want, rtol=1e-5, atol=1e-5, err_msg=""):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    signs = np.sign(np.sum(got * want, axis=0))
    signs[signs == 0] = 1
    np.testing.assert_allclose(got * signs, want, rtol=rtol, atol=atol, err_msg=err_msg)
    return signs


def _symmetric(r, n, spread=1.0):
    """A symmetric matrix with well-separated eigenvalues."""
    q, _ = np.linalg.qr(r.standard_normal((n, n)))
    w = np.arange(1, n + 1) * spread + r.uniform(-0.2, 0.2, size=n)
    return (q * w) @ q.T


# ----------------------------------------------------------------------- svd


@pytest.mark.parametrize("shape,n", [(("N", 4), 7), (("N", 4), 4), ((3, 5), None)],
                         ids=["tall", "square", "wide"])
def test_svd_kernel(shape, n):
    r = rng(1)
    a = r.standard_normal(tuple(n if d == "N" else d for d in shape)).astype(np.float32)
    prog, _ = compile_single("svd", [T(*shape)])
    u, s, vt = run_compiled(prog, [a])
    k = min(a.shape)
    assert (u.shape, s.shape, vt.shape) == ((a.shape[0], k), (k,), (k, a.shape[1]))
    assert u.dtype == s.dtype == vt.dtype == np.float32
    ur, sr, vtr = reference("svd", [a])
    np.testing.assert_allclose(s, sr, rtol=1e-5, atol=1e-6)
    signs = assert_columns_match_up_to_sign(u, ur, err_msg="u")
    np.testing.assert_allclose(vt * signs[:, None], vtr, rtol=1e-5, atol=1e-5, err_msg="vt")
    np.testing.assert_allclose((u * s) @ vt, a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(u.T @ u, np.eye(k), atol=1e-5)
    assert np.all(np.diff(s) <= 0)


def test_svd_symbolic_dim_smaller_than_fixed_is_a_runtime_error():
    prog, _ = compile_single("svd", [T("N", 4)])
    with pytest.raises(ValueError, match="fewer rows/cols along its symbolic dim"):
        run_compiled(prog, [np.ones((3, 4), np.float32)])


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)], ids=["tall", "wide", "square"])
def test_svd_grad(shape):
    # singular vectors through their squares: a loss the arbitrary signs cannot change
    a = rng(2).standard_normal(shape)

    def build(g, p):
        nid = g.apply("svd", [p["a"]])
        return _add_all(g, [
            _weighted(g, Value(nid, 1), 1),
            _weighted(g, Value(nid, 0), 2, square=True),
            _weighted(g, Value(nid, 2), 3, square=True),
        ])

    graph_gradcheck(build, {"a": a}, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("output", [0, 1, 2], ids=["u", "s", "vt"])
def test_svd_grad_single_output(output):
    a = rng(3).standard_normal((5, 3))

    def build(g, p):
        nid = g.apply("svd", [p["a"]])
        return _weighted(g, Value(nid, output), 4, square=output != 1)

    graph_gradcheck(build, {"a": a}, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------- eigh


@pytest.mark.parametrize("n", [5, 3])
def test_eigh_kernel(n):
    r = rng(n)
    a = _symmetric(r, n).astype(np.float32)
    prog, _ = compile_single("eigh", [T("M", "M")])
    w, v = run_compiled(prog, [a])
    assert w.dtype == v.dtype == np.float32 and w.shape == (n,) and v.shape == (n, n)
    wr, vr = reference("eigh", [a])
    np.testing.assert_allclose(w, wr, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(a.astype(np.float64)), rtol=1e-5, atol=1e-5)
    assert_columns_match_up_to_sign(v, vr, atol=1e-4)
    np.testing.assert_allclose(a @ v, v * w, atol=1e-4)
    assert np.all(np.diff(w) > 0)


def test_eigh_uses_the_symmetric_part():
    r = rng(4)
    a = r.standard_normal((5, 5)).astype(np.float32)
    prog, _ = compile_single("eigh", [T("M", "M")])
    w, v = run_compiled(prog, [a])
    sym = 0.5 * (a + a.T).astype(np.float64)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(sym), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sym @ v, v * w, atol=1e-4)


def test_eigh_eigenvalue_grad():
    # the standard helper: a random (non-symmetric) input, loss weights w and v linearly
    gradcheck("eigh", [_symmetric(rng(5), 4) + 0.1 * rng(6).standard_normal((4, 4))])


@pytest.mark.parametrize("outputs", [(0,), (1,), (0, 1)], ids=["w", "v", "both"])
def test_eigh_grad(outputs):
    a = _symmetric(rng(7), 4) + 0.1 * rng(8).standard_normal((4, 4))

    def build(g, p):
        nid = g.apply("eigh", [p["a"]])
        return _add_all(g, [_weighted(g, Value(nid, i), 9 + i, square=i == 1) for i in outputs])

    out = graph_gradcheck(build, {"a": a})
    np.testing.assert_allclose(out["grad_a"], out["grad_a"].T, atol=1e-12)  # symmetric


# ----------------------------------------------------------------------- eig


def _real_spectrum(r, n):
    """P diag(d) P^-1: non-symmetric, real distinct eigenvalues d."""
    p = r.standard_normal((n, n)) + n * np.eye(n)
    d = np.sort(r.uniform(-3, 3, size=n)) + np.arange(n)
    return p @ np.diag(d) @ np.linalg.inv(p), d


@pytest.mark.parametrize("n", [4, 6])
def test_eig_kernel(n):
    r = rng(10 + n)
    a64, d = _real_spectrum(r, n)
    a = a64.astype(np.float32)
    w_np, v_np = np.linalg.eig(a64)
    assert np.abs(np.imag(w_np)).max() < 1e-9 and np.abs(np.imag(v_np)).max() < 1e-9
    prog, _ = compile_single("eig", [T("M", "M")])
    w, v = run_compiled(prog, [a])
    wr, vr = reference("eig", [a])
    assert w.dtype == v.dtype == np.float32
    np.testing.assert_allclose(w, wr, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w, d, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(v, vr, rtol=1e-4, atol=1e-5)  # canonical signs: no flip
    np.testing.assert_allclose(np.linalg.norm(v, axis=0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(a.astype(np.float64) @ v, v * w, atol=1e-3)
    assert np.all(v[np.abs(v).argmax(axis=0), np.arange(n)] > 0)


def test_eig_returns_real_parts_of_a_complex_pair():
    prog, _ = compile_single("eig", [T("M", "M")])
    rot = np.array([[2.0, -1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, -1.0]], np.float32)
    w, _ = run_compiled(prog, [rot])  # eigenvalues -1 and 2 +- 1j
    np.testing.assert_allclose(w, [-1.0, 2.0, 2.0], atol=1e-6)


def test_eig_has_no_gradient_and_says_why():
    op = get_op("eig")
    assert op.grad is None and "use eigh" in op.no_grad_reason


# ----------------------------------------------------------------------- shapes and errors


def test_infer_symbolic():
    assert infer("svd", [T("N", 4)]) == [T("N", 4), T(4), T(4, 4)]
    assert infer("svd", [T(4, "N")]) == [T(4, 4), T(4), T(4, "N")]
    assert infer("svd", [T("N", "N", dtype="float64")]) == [
        T("N", "N", dtype="float64"), T("N", dtype="float64"), T("N", "N", dtype="float64")]
    assert infer("svd", [T(3, 5)]) == [T(3, 3), T(3), T(3, 5)]
    assert infer("eigh", [T("M", "M")]) == [T("M"), T("M", "M")]
    assert infer("eig", [T(3, 3, dtype="float64")]) == [T(3, dtype="float64"), T(3, 3, dtype="float64")]


@pytest.mark.parametrize(
    "op,types,match",
    [
        ("eigh", [T(3, 4)], r"square matrix, got \[3, 4\]"),
        ("eigh", [T("N", 4)], "square matrix"),
        ("eig", [T(4, 3)], "square matrix"),
        ("eigh", [T(2, 3, 3)], "2-D matrix"),
        ("svd", [T(5)], "2-D matrix"),
        ("svd", [T(3, 3, dtype="int64")], "float matrix"),
        ("svd", [T("N", "M")], r"min\(N, M\) is unknown"),
    ],
)
def test_infer_rejects_bad_inputs(op, types, match):
    with pytest.raises(ShapeError, match=match):
        infer(op, types)


# ----------------------------------------------------------------------- PCA


def _transform(state, x, shape=None):
    """Run pca_transform_graph through a compiled program (batch dim symbolic)."""
    g = Graph()
    xin = g.input("x", T("N", *(shape or x.shape[1:]), dtype=str(x.dtype)))
    g.outputs["y"] = pca_transform_graph(g, xin, state)
    prog = compile_graph(g, title="pca_apply")
    prog.bind_params({}, {})
    return prog({"x": x})["y"]


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    x = datasets.load_digits().data.astype(np.float64)
    return x[:1200], x[1200:]


@pytest.mark.parametrize("whiten", [False, True])
def test_pca_matches_sklearn_on_digits(digits, whiten):
    decomposition = pytest.importorskip("sklearn.decomposition")
    train, test = digits
    state = fit_pca(train, 20, whiten)
    assert json.loads(json.dumps(state)) == state
    sk = decomposition.PCA(n_components=20, whiten=whiten, svd_solver="full").fit(train)
    np.testing.assert_allclose(state["mean"], sk.mean_, rtol=1e-12, atol=1e-12)
    comp = np.asarray(state["components"])
    signs = assert_columns_match_up_to_sign(comp.T, sk.components_.T, rtol=1e-7, atol=1e-9)
    for key in ("explained_variance", "explained_variance_ratio", "singular_values"):
        np.testing.assert_allclose(state[key], getattr(sk, key + "_"), rtol=1e-9, err_msg=key)
    np.testing.assert_allclose(state["noise_variance"], sk.noise_variance_, rtol=1e-9)
    # the pipeline applies it in float32, in batches, to every split
    y = _transform(state, test.astype(np.float32))
    assert y.dtype == np.float32 and y.shape == (len(test), 20)
    np.testing.assert_allclose(y * signs, sk.transform(test), rtol=1e-4, atol=1e-4)
    y64 = _transform(state, train[:50])
    np.testing.assert_allclose(y64 * signs, sk.transform(train[:50]), rtol=1e-9, atol=1e-9)


def test_pca_fewer_samples_than_features_and_image_samples():
    decomposition = pytest.importorskip("sklearn.decomposition")
    r = rng(12)
    x = r.standard_normal((6, 1, 3, 3)) * np.arange(1, 10).reshape(1, 1, 3, 3)
    state = fit_pca(x, 4, whiten=True)
    assert state["n_features"] == 9 and state["sample_shape"] == [1, 3, 3]
    flat = x.reshape(6, 9)
    sk = decomposition.PCA(n_components=4, whiten=True, svd_solver="full").fit(flat)
    signs = assert_columns_match_up_to_sign(np.asarray(state["components"]).T, sk.components_.T,
                                            rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(state["explained_variance"], sk.explained_variance_, rtol=1e-9)
    y = _transform(state, x)  # [N, 1, 3, 3] samples are flattened by the graph
    np.testing.assert_allclose(y * signs, sk.transform(flat), rtol=1e-8, atol=1e-8)


def test_pca_bad_inputs():
    x = rng(13).standard_normal((10, 4))
    with pytest.raises(ValueError, match=r"components must be in \[1, min\(samples, features\)\] = \[1, 4\]"):
        fit_pca(x, 5, False)
    with pytest.raises(TypeError, match="must be an integer"):
        fit_pca(x, 2.5, False)
    with pytest.raises(ValueError, match="NaN"):
        fit_pca(np.full((3, 2), np.nan), 1, False)
    state = {"n_features": 4, "n_components": 2, "mean": [0.0] * 4,
             "components": np.eye(2, 4).tolist(), "whiten": False}
    g = Graph()
    with pytest.raises(ShapeError, match="fitted on 4 features per sample but the data has 5"):
        pca_transform_graph(g, g.input("x", T("N", 5)), state)
