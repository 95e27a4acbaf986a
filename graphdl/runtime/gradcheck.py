"""Whole-spec gradient check: autodiff's gradients vs central finite differences, float64.

The training graph (forward, loss and penalties) is converted to float64 and run by the
reference interpreter, so the check tests the gradient *graph* that autodiff builds, on
the spec's own layers, on a small batch of the spec's own training data.
"""

from __future__ import annotations

import numpy as np

from graphdl.backends.reference import run_reference
from graphdl.ir.graph import Graph, Value
from graphdl.layers.lower import loss_target, lower
from graphdl.passes.autodiff import build_gradients, trainable_params
from graphdl.passes.infer_shapes import infer_shapes
from graphdl.runtime.params import init_params, init_state


def to_float64(graph: Graph) -> Graph:
    """``graph`` with every float32 value, dtype attribute (masks, casts) and scan body in
    float64, types inferred again."""
    return infer_shapes(_float64_types(graph))


def _float64_types(graph: Graph) -> Graph:
    g = graph.copy()
    for nid in g.nodes():
        nd = g.node(nid)
        nd["types"] = [t.with_dtype("float64") if t is not None and t.dtype == "float32" else t
                       for t in nd["types"]]
        if nd["attrs"].get("dtype") == "float32":
            nd["attrs"] = {**nd["attrs"], "dtype": "float64"}
        if isinstance(nd["attrs"].get("body"), Graph):
            nd["attrs"] = {**nd["attrs"], "body": _float64_types(nd["attrs"]["body"])}
    return g


def gradcheck_spec(spec, batch: int = 4, entries: int = 12, eps: float = 1e-5) -> dict[str, float]:
    from graphdl.data import load_data

    g = to_float64(lower(spec, "train"))
    loss = g.outputs["loss"]
    wrt = trainable_params(g)
    grads = build_gradients(g, loss, wrt)
    names = {nid: g.node(nid)["name"] for nid in wrt}
    for nid, v in grads.items():
        g.outputs[f"grad:{names[nid]}"] = v
    splits = load_data(spec)
    feeds = {}
    # the first samples, ragged sequences cut to their longest (as the trainer's batches)
    data = splits.train.batch(slice(0, batch), [n for n in g.named("input")
                                                if n in splits.train.fields])
    target = spec.train["target"]
    for name, nid in g.named("input").items():
        t = g.type_of(Value(nid))
        if name in data:
            arr = data[name]
            if name == target:  # as the trainer feeds it: the loss's target type
                arr = loss_target(spec, g, arr, "train")
            feeds[name] = arr.astype(np.float64) if arr.dtype.kind == "f" else arr
        elif name == "step_seed":
            feeds[name] = np.asarray(12345, np.int64)
        else:
            feeds[name] = np.zeros(t.shape, t.dtype)
    params = {k: v.astype(np.float64) for k, v in init_params(g, spec.seed).items()}
    # nudge biases off zero so a relu kink is not sat on exactly
    rng = np.random.default_rng(0)
    for k, v in params.items():
        params[k] = v + rng.standard_normal(v.shape) * 1e-2

    state = {k: v.astype(np.float64).reshape(g.type_of(Value(g.find("state", k))).shape)
             for k, v in init_state(g).items()}
    outs, _, _ = run_reference(g, feeds, params, state)

    def loss_at(p):
        o, _, _ = run_reference(g, feeds, p, state)
        return float(o["loss"])

    report = {}
    for nid in wrt:
        name = names[nid]
        analytic = outs[f"grad:{name}"]
        flat = params[name].reshape(-1)
        picks = rng.choice(flat.size, size=min(entries, flat.size), replace=False)
        worst = 0.0
        # entries whose gradient is tiny next to the parameter's largest one are judged
        # against that scale: there the difference quotient is mostly rounding noise
        floor = 1e-3 * float(np.max(np.abs(analytic))) + 1e-12
        for i in picks:
            old = flat[i]
            flat[i] = old + eps
            up = loss_at(params)
            flat[i] = old - eps
            down = loss_at(params)
            flat[i] = old
            numeric = (up - down) / (2 * eps)
            a = analytic.reshape(-1)[i]
            err = abs(a - numeric) / max(abs(a), abs(numeric), floor)
            worst = max(worst, err)
        report[name] = float(worst)
    return report
