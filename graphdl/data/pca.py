"""PCA through the engine: `fit_pca` compiles a centre -> svd graph and runs it on the
training data once; `pca_transform_graph` adds the fitted projection to a preprocessing
graph (the `pca` preprocessing step, graphdl/data/preprocess.py)."""

from __future__ import annotations

import numpy as np

from graphdl.compiler import compile_graph
from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.ops.linalg import FLOATS
from graphdl.ops.registry import ShapeError


def _flatten_samples(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"PCA expects samples x features (or samples x any shape), got {x.shape}")
    return x.reshape(x.shape[0], -1)


def fit_pca(x_train: np.ndarray, components: int, whiten: bool = False) -> dict:
    """Fit PCA on training data through the engine (a compiled centre -> svd graph).

    ``x_train`` is [N, features] (higher-rank samples are flattened). Returns a
    JSON-serialisable state with ``mean`` [F], ``components`` [k, F] (rows are the
    principal axes; signs fixed as scikit-learn >= 1.5 does: each row's largest |entry|
    positive), ``explained_variance`` [k] (s^2 / (N - 1)), ``explained_variance_ratio``,
    ``singular_values``, ``noise_variance``, ``whiten``, and the shapes. Matches
    sklearn.decomposition.PCA(n_components=k, whiten=whiten, svd_solver="full").
    """
    x = np.ascontiguousarray(_flatten_samples(x_train), dtype=np.float64)
    n, f = x.shape
    if isinstance(components, bool) or not isinstance(components, (int, np.integer)):
        raise TypeError(f"PCA components must be an integer, got {components!r}")
    if not 1 <= components <= min(n, f):
        raise ValueError(
            f"PCA components must be in [1, min(samples, features)] = [1, {min(n, f)}] for "
            f"training data of shape {tuple(np.shape(x_train))}, got {components}"
        )
    if n < 2:
        raise ValueError("PCA needs at least 2 training samples")
    if not np.all(np.isfinite(x)):
        raise ValueError("PCA training data contains NaN or infinite values")

    # a symbolic batch dim keeps one compiled program for every dataset size with N >= F
    rows = "N" if n >= f else n
    g = Graph()
    xin = g.input("x", TensorType((rows, f), "float64"))
    mean = g.op("mean", xin, axes=(0,), keepdims=True)
    svd = g.apply("svd", [g.op("sub", xin, mean)])
    g.outputs["mean"] = mean
    g.outputs["s"] = Value(svd, 1)
    g.outputs["vt"] = Value(svd, 2)
    prog = compile_graph(g, title="pca_fit")
    prog.bind_params({}, {})
    res = prog({"x": x})

    s = np.asarray(res["s"], np.float64)
    vt = np.array(res["vt"], np.float64)
    k = int(components)
    for i in range(vt.shape[0]):  # deterministic signs: largest |entry| of each row positive
        j = int(np.argmax(np.abs(vt[i])))
        if vt[i, j] < 0:
            vt[i] = -vt[i]
    var_all = s**2 / (n - 1)
    total = float(var_all.sum())
    ev = var_all[:k]
    noise = float(var_all[k:].mean()) if k < min(n, f) else 0.0
    return {
        "type": "pca",
        "n_samples": int(n),
        "n_features": int(f),
        "sample_shape": [int(d) for d in np.shape(x_train)[1:]],
        "n_components": k,
        "whiten": bool(whiten),
        "mean": np.asarray(res["mean"], np.float64).reshape(f).tolist(),
        "components": vt[:k].tolist(),
        "explained_variance": ev.tolist(),
        "explained_variance_ratio": (ev / total if total > 0 else np.zeros(k)).tolist(),
        "singular_values": s[:k].tolist(),
        "noise_variance": noise,
    }


def pca_transform_graph(g: Graph, x: Value, state: dict) -> Value:
    """Add the PCA apply step to ``g``: (x - mean) @ components^T, divided by
    sqrt(explained_variance) when ``state["whiten"]``. x is [N, F] (or [N, ...] with F
    elements per sample, flattened here); the result is [N, k] in x's dtype. The fitted
    arrays are graph constants (kernel arguments, never baked into source)."""
    xt = g.type_of(x)
    f, k = int(state["n_features"]), int(state["n_components"])
    if xt.dtype not in FLOATS:
        raise ShapeError(f"PCA expects float data, got {xt.dtype}", help="add a cast or scale step first")
    if xt.rank < 2:
        raise ShapeError(f"PCA expects [N, features] data, got {xt}")
    if xt.rank > 2:
        tail = xt.shape[1:]
        if not all(isinstance(d, int) for d in tail):
            raise ShapeError(f"PCA cannot flatten {xt}: the per-sample dims must be fixed")
        x = g.op("reshape", x, shape=(xt.shape[0], int(np.prod(tail))))
        xt = g.type_of(x)
    if xt.shape[1] != f:
        raise ShapeError(
            f"PCA was fitted on {f} features per sample but the data has {xt.shape[1]} ({xt})",
            help="apply PCA to data shaped like the training split it was fitted on",
        )
    dt = xt.dtype
    mean = g.const(np.asarray(state["mean"], np.float64).reshape(f), dt)
    comp_t = g.const(np.ascontiguousarray(np.asarray(state["components"], np.float64).reshape(k, f).T), dt)
    y = g.op("matmul", g.op("sub", x, mean), comp_t)
    if state.get("whiten"):
        ev = np.asarray(state["explained_variance"], np.float64).reshape(k)
        floor = max(float(ev.max(initial=0.0)) * 1e-12, np.finfo(np.float64).tiny)
        y = g.op("mul", y, g.const(1.0 / np.sqrt(np.maximum(ev, floor)), dt))
    return y
