"""Linear algebra: svd, eigh, eig (2-D matrices), and PCA fitting / applying through them.

- ``svd(a) -> (u, s, vt)``: the thin SVD (full_matrices=False) of a [M, K] matrix, with
  k = min(M, K): u [M, k], s [k] (descending), vt [k, K]. When one of M, K is symbolic
  (the batch N) and the other fixed, k is the fixed one: the symbolic dim is assumed to be
  the larger, and the kernel raises a clear error at run time when it is not.
- ``eigh(a) -> (w, v)``: eigen-decomposition of the symmetric matrix (a + a^T) / 2 (for a
  symmetric a exactly np.linalg.eigh(a)); w ascending, v's columns the eigenvectors.
- ``eig(a) -> (w, v)``: for real matrices with a *real spectrum* (e.g. similar to a
  symmetric matrix, triangular, stochastic): the real parts of the eigenvalues, sorted
  ascending, and of the unit eigenvectors (columns, sign fixed so each column's largest
  entry is positive). For a complex pair only the real parts come back; they do not
  form an eigendecomposition.

Kernels call np.linalg inside njit (LAPACK from SciPy), always in float64 (float32 inputs
are converted, as NumPy's linalg does), and store into the outputs' dtype. Singular
vectors and symmetric eigenvectors have arbitrary signs (whatever LAPACK returns).

Gradients are graph constructions from matmul and elementwise ops (no kernels of their
own): eigh for distinct eigenvalues, svd for distinct, non-zero singular values (the
standard formulas; tied values get no coupling term instead of a division by zero).
eig has none (see its `no_grad_reason`).

PCA (data preprocessing): `fit_pca` centres the training data and runs `svd` through a
compiled graph, returning a JSON-serialisable state; `pca_transform_graph` builds the
apply step from ops so the data pipeline runs it through the engine in batches.
"""

from __future__ import annotations

import numpy as np

from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.ops.registry import OpDef, Pattern, ShapeError, cpu_kernel, register

FLOATS = ("float32", "float64")

# ----------------------------------------------------------------------- shapes


def _check_matrix(op: str, t: TensorType) -> None:
    if t.rank != 2:
        raise ShapeError(f"{op} expects a 2-D matrix, got {t}",
                         help="reshape to [rows, cols] first (batched matrices are not supported)")
    if t.dtype not in FLOATS:
        raise ShapeError(f"{op} expects a float matrix, got {t.dtype}")


def _check_square(op: str, t: TensorType) -> None:
    _check_matrix(op, t)
    if t.shape[0] != t.shape[1]:
        raise ShapeError(f"{op} expects a square matrix, got {list(t.shape)}",
                         help=f"{op} decomposes [n, n] matrices; use svd for rectangular ones")


def min_dim(m, n):
    """min(M, K) statically: ints, the same symbol, or (one symbolic) the fixed one."""
    if m == n:
        return m
    if isinstance(m, int) and isinstance(n, int):
        return min(m, n)
    if isinstance(m, int):
        return m
    if isinstance(n, int):
        return n
    raise ShapeError(
        f"svd of a [{m}, {n}] matrix: the number of singular values min({m}, {n}) is unknown "
        "with two different symbolic dims",
        help="give one of the two dims a fixed size",
    )


def _infer_svd(attrs, types):
    a = types[0]
    _check_matrix("svd", a)
    m, n = a.shape
    k = min_dim(m, n)
    return [TensorType((m, k), a.dtype), TensorType((k,), a.dtype), TensorType((k, n), a.dtype)]


def _infer_eig(op):
    def infer(attrs, types):
        a = types[0]
        _check_square(op, a)
        n = a.shape[0]
        return [TensorType((n,), a.dtype), a]

    return infer


# ----------------------------------------------------------------------- references

def _ref_svd(attrs, a):
    u, s, vt = np.linalg.svd(a.astype(np.float64), full_matrices=False)
    return u.astype(a.dtype), s.astype(a.dtype), vt.astype(a.dtype)


def _ref_eigh(attrs, a):
    a64 = a.astype(np.float64)
    w, v = np.linalg.eigh(0.5 * (a64 + a64.T))
    return w.astype(a.dtype), v.astype(a.dtype)


def _canonical_eig(w: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real parts, sorted ascending (stable), each column's largest |entry| positive."""
    order = np.argsort(w.real, kind="stable")
    wr = w.real[order]
    vr = v.real[:, order].copy()
    for j in range(vr.shape[1]):
        i = int(np.argmax(np.abs(vr[:, j])))
        if vr[i, j] < 0:
            vr[:, j] = -vr[:, j]
    return wr, vr


def _ref_eig(attrs, a):
    w, v = np.linalg.eig(a.astype(np.complex128))
    wr, vr = _canonical_eig(w, v)
    return wr.astype(a.dtype), vr.astype(a.dtype)


# ----------------------------------------------------------------------- CPU kernels


@cpu_kernel
def svd_thin(a, u, s, vt):
    """Thin SVD in float64; checks at run time that the declared k is min(M, K)."""
    if s.shape[0] != min(a.shape[0], a.shape[1]):
        raise ValueError("svd: the matrix has fewer rows/cols along its symbolic dim than "
                         "the fixed dim, so min(M, K) singular values do not fit the "
                         "declared shape")
    uu, ss, vv = np.linalg.svd(a.astype(np.float64), full_matrices=False)
    u[:, :] = uu
    s[:] = ss
    vt[:, :] = vv


@cpu_kernel
def eigh_sym(a, w, v):
    """Eigen-decomposition of (a + a^T) / 2 in float64 (LAPACK syevd: w ascending)."""
    n = a.shape[0]
    sym = np.empty((n, n), np.float64)
    for i in range(n):
        for j in range(n):
            sym[i, j] = 0.5 * (np.float64(a[i, j]) + np.float64(a[j, i]))
    ww, vv = np.linalg.eigh(sym)
    w[:] = ww
    v[:, :] = vv


@cpu_kernel
def eig_real(a, w, v):
    """Eigenvalues/vectors via complex LAPACK geev; real parts, sorted, signs fixed."""
    n = a.shape[0]
    ac = np.empty((n, n), np.complex128)
    for i in range(n):
        for j in range(n):
            ac[i, j] = np.float64(a[i, j])
    ww, vv = np.linalg.eig(ac)
    order = np.argsort(ww.real, kind="mergesort")
    for k in range(n):
        j = order[k]
        w[k] = ww[j].real
        big = 0
        for i in range(1, n):
            if abs(vv[i, j].real) > abs(vv[big, j].real):
                big = i
        sign = -1.0 if vv[big, j].real < 0 else 1.0
        for i in range(n):
            v[i, k] = sign * vv[i, j].real


def _emit(kernel):
    def emit(ctx, attrs, ins, outs):
        return [ctx.call(kernel, *ins, *outs)]

    return emit


# ----------------------------------------------------------------------- gradients
# Built from matmul and elementwise ops; each rule handles any subset of output gradients.


def _row(g: Graph, v: Value) -> Value:
    return g.op("reshape", v, shape=(1, g.type_of(v).shape[0]))


def _col(g: Graph, v: Value) -> Value:
    return g.op("reshape", v, shape=(g.type_of(v).shape[0], 1))


def _inv_differences(g: Graph, lam: Value) -> Value:
    """F[i, j] = 1 / (lam[j] - lam[i]) off the diagonal, 0 where lam[j] == lam[i]."""
    dt = g.type_of(lam).dtype
    zero, one = g.const(0.0, dt), g.const(1.0, dt)
    diff = g.op("sub", _row(g, lam), _col(g, lam))
    tie = g.op("eq", diff, zero)
    safe = g.op("where", tie, one, diff)
    return g.op("where", tie, zero, g.op("div", one, safe))


def _skew(g: Graph, m: Value) -> Value:
    """m - m^T."""
    return g.op("sub", m, g.op("transpose", m, perm=(1, 0)))


def _sum_values(g: Graph, vals: list[Value]) -> Value | None:
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    total = vals[0]
    for v in vals[1:]:
        total = g.op("add", total, v)
    return total


def _g_eigh(g, attrs, ins, outs, gouts):
    # A = V diag(w) V^T: dA = V (diag(gw) + F o (M - M^T) / 2) V^T, M = V^T gV,
    # F[i, j] = 1 / (w[j] - w[i]) (symmetric: the op decomposes (a + a^T) / 2)
    w, v = outs
    gw, gv = gouts
    left = []
    if gw is not None:
        left.append(g.op("mul", v, _row(g, gw)))  # V diag(gw)
    if gv is not None:
        m = g.op("matmul", v, gv, transpose_a=True)
        inner = g.op("mul", _inv_differences(g, w), g.op("mul_scalar", _skew(g, m), c=0.5))
        left.append(g.op("matmul", v, inner))
    return [g.op("matmul", _sum_values(g, left), v, transpose_b=True)]


def _g_svd(g, attrs, ins, outs, gouts):
    # A = U diag(s) Vt (Townsend, "Differentiating the singular value decomposition"):
    # dA = U [J S + S K + diag(gs)] Vt + (gU - U U^T gU) S^-1 Vt + U S^-1 (gVt - gVt Vt^T Vt)
    # J = F o (U^T gU - gU^T U), K = F o (Vt gVt^T - gVt Vt^T), F[i, j] = 1 / (s_j^2 - s_i^2)
    u, s, vt = outs
    gu, gs, gvt = gouts
    dt = g.type_of(s).dtype
    f = _inv_differences(g, g.op("square", s)) if (gu is not None or gvt is not None) else None
    inv_s = g.op("div", g.const(1.0, dt), s) if (gu is not None or gvt is not None) else None
    core, left, right = [], [], None
    if gu is not None:
        mu = g.op("matmul", u, gu, transpose_a=True)  # U^T gU  [k, k]
        core.append(g.op("mul", g.op("mul", f, _skew(g, mu)), _row(g, s)))  # J S
        proj = g.op("sub", gu, g.op("matmul", u, mu))  # (I - U U^T) gU
        left.append(g.op("mul", proj, _row(g, inv_s)))
    if gvt is not None:
        mv = g.op("matmul", vt, gvt, transpose_b=True)  # Vt gVt^T = V^T gV  [k, k]
        core.append(g.op("mul", _col(g, s), g.op("mul", f, _skew(g, mv))))  # S K
        proj = g.op("sub", gvt, g.op("matmul", mv, vt, transpose_a=True))  # gVt (I - V V^T)
        right = g.op("matmul", g.op("mul", u, _row(g, inv_s)), proj)
    if gs is not None:
        left.append(g.op("mul", u, _row(g, gs)))  # U diag(gs)
    core_sum = _sum_values(g, core)
    if core_sum is not None:
        left.append(g.op("matmul", u, core_sum))
    ga = g.op("matmul", _sum_values(g, left), vt) if left else None
    return [_sum_values(g, [ga, right])]


# ----------------------------------------------------------------------- registration

register(
    OpDef(
        name="svd",
        inputs=("a",),
        outputs=("u", "s", "vt"),
        infer=_infer_svd,
        reference=_ref_svd,
        pattern=Pattern.OPAQUE,
        grad=_g_svd,
        emit_cpu=_emit("svd_thin"),
        doc="thin SVD of a [M, K] matrix: u [M, k], s [k] descending, vt [k, K], k = min(M, K)",
    )
)

register(
    OpDef(
        name="eigh",
        inputs=("a",),
        outputs=("w", "v"),
        infer=_infer_eig("eigh"),
        reference=_ref_eigh,
        pattern=Pattern.OPAQUE,
        grad=_g_eigh,
        emit_cpu=_emit("eigh_sym"),
        doc="eigenvalues (ascending) and eigenvectors (columns) of (a + a^T) / 2",
    )
)

register(
    OpDef(
        name="eig",
        inputs=("a",),
        outputs=("w", "v"),
        infer=_infer_eig("eig"),
        reference=_ref_eig,
        pattern=Pattern.OPAQUE,
        no_grad_reason=(
            "the non-symmetric eigendecomposition has no gradient here (it needs V^-1 and "
            "complex arithmetic); use eigh for symmetric matrices, which has one"
        ),
        emit_cpu=_emit("eig_real"),
        doc="real parts of eigenvalues (ascending) and eigenvectors of a matrix with a real "
        "spectrum; each eigenvector column has unit norm and its largest entry positive",
    )
)
