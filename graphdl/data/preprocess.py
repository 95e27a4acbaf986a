"""Preprocessing steps (data.preprocess): checked, fitted on the train split, built as ops.

A step becomes a JSON-serialisable *entry*, saved under ``"<op>.<i>"`` in the
preprocess state, holding everything needed to re-apply it (predict reads only the state)::

    "scale.0":         {"op": "scale", "factor": 0.0625, "fields": ["x"]}
    "normalize.1":     {"op": "normalize", "mode": "zscore", "fields": ["x"],
                        "stats": {"x": {"per": "feature", "mean": [...], "std": [...]}}}
    "normalize.2":     {"op": "normalize", "mode": "minmax", "fields": ["image"],
                        "stats": {"image": {"per": "channel", "min": [...], "max": [...]}}}
    "resize.3":        {"op": "resize", "size": [32, 32], "interpolation": "bilinear",
                        "fields": ["image"]}
    "select_channels.4": {"op": "select_channels", "channels": [0], "fields": ["image"]}
    "gaussian_blur.5": {"op": "gaussian_blur", "kernel": 3, "sigma": 0.8, "fields": [...]}
    "median_filter.6": {"op": "median_filter", "kernel": 3, "fields": [...]}
    "pca.7":           {"op": "pca", "components": 20, "whiten": false, "fields": ["x"],
                        "stats": {"x": {"features": 64, "pca": <graphdl.data.pca.fit_pca's state>}}}
    "normalize.8":     {"op": "normalize", "mode": "zscore", "fields": ["x"],
                        "stats": {"x": {"per": "step_feature", "mean": [...], "std": [...]}}}

(``grayscale`` and ``rgb_to_yuv`` carry only ``op`` and ``fields``.)

Statistics are fitted with NumPy in float64 on the train split as it is at that step:
normalize is per channel for images [C, H, W] (statistics of shape [C]), per feature of a
step for ragged sequences [T, ...] (``step_feature``: statistics shaped like one step,
over the steps the sequences really have, padding aside) and per feature otherwise
(statistics shaped like one sample; ``per`` absent means per feature). Every step
is applied by ops (graphdl.ops.image, elementwise) compiled by `graphdl.data.pipeline`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real
from typing import Any

import numpy as np

from graphdl.data._diag import did_you_mean, fail, name_list
from graphdl.data.pca import fit_pca, pca_transform_graph
from graphdl.data.ragged import Ragged, step_mask
from graphdl.ir.graph import Graph, Value
from graphdl.ir.types import TensorType
from graphdl.layers.schema import fill
from graphdl.ops.registry import ShapeError, get_op
from graphdl.spec.schema_gen import PREPROCESS

STD_FLOOR = 1e-8
RANGE_FLOOR = 1e-8
IMAGE_OPS = ("resize", "grayscale", "rgb_to_yuv", "select_channels", "gaussian_blur",
             "median_filter")
OPS = ("scale", "normalize", *IMAGE_OPS, "pca")
FITTED = ("normalize", "pca")  # steps whose statistics come from the train split
SEQUENCE_OPS = ("scale", "normalize")  # the steps that apply to ragged sequences
MODES = ("zscore", "minmax")
INTERPOLATIONS = ("bilinear", "nearest")

Shape = tuple[int, ...]
# builds the exception for a step that cannot apply to a field: (message, help) -> error
OnError = Callable[[str, str], Exception]


def steps_of(spec: Any) -> list[dict]:
    steps = (spec.data or {}).get("preprocess") or []
    return [dict(s) for s in steps]


def state_key(step: dict, i: int) -> str:
    return f"{step.get('op')}.{i}"


def _shape_str(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _given(step: dict, key: str) -> Any:
    """A step key, with the spec schema's default for it when absent or null (the one place
    preprocessing defaults are written: `graphdl.spec.schema_gen.PREPROCESS`)."""
    v = step.get(key)
    if v is None:
        v = fill(PREPROCESS.item, {"op": step.get("op")}).get(key)
    return v


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(float(v))


# --------------------------------------------------------------------------- checking


def _bad(spec: Any, i: int, key: str, message: str, help: str) -> Exception:
    return fail("E508", message, spec, "data", "preprocess", i, key, help=help)


def _odd_kernel(spec: Any, step: dict, i: int) -> int:
    k = step.get("kernel")
    if not _is_int(k) or k < 1 or k % 2 == 0:
        raise _bad(spec, i, "kernel", f"{step['op']} kernel must be an odd integer >= 1, got "
                   f"{k!r}", f"e.g. `{{op: {step['op']}, kernel: 3}}`: an odd window has a "
                   "centre pixel")
    return k


def check_step(spec: Any, step: dict, i: int) -> dict:
    """Check the settings of step ``i``; returns its entry without fields and statistics."""
    op = step.get("op")
    if op not in OPS:
        raise _bad(spec, i, "op", f"unknown preprocess op '{op}'",
                   f"preprocess ops: {name_list(OPS)}.{did_you_mean(str(op), OPS)}")
    entry: dict = {"op": op}
    if op == "scale":
        f = step.get("factor")
        if not _is_number(f):
            raise _bad(spec, i, "factor", f"preprocess step {i} (scale) needs a finite numeric "
                       f"'factor', got {f!r}",
                       "e.g. `{op: scale, factor: 0.0625}` multiplies the fields by 1/16")
        entry["factor"] = float(f)
    elif op == "normalize":
        mode = _given(step, "mode")
        if mode not in MODES:
            raise _bad(spec, i, "mode", f"unknown normalize mode '{mode}'",
                       f"modes: {name_list(MODES)}.{did_you_mean(str(mode), MODES)}")
        stats = _given(step, "stats")
        if stats != "from_train":
            raise _bad(spec, i, "stats", f"normalize stats '{stats}' is not supported",
                       "use `stats: from_train` (statistics fitted on the train split)")
        entry["mode"] = mode
    elif op == "resize":
        size = step.get("size")
        if _is_int(size):
            size = [size, size]
        if not (isinstance(size, (list, tuple)) and len(size) == 2
                and all(_is_int(s) and s >= 1 for s in size)):
            raise _bad(spec, i, "size", f"resize size must be a positive integer or "
                       f"[height, width], got {step.get('size')!r}",
                       "e.g. `size: 32` (square) or `size: [28, 32]`")
        interp = _given(step, "interpolation")
        if interp not in INTERPOLATIONS:
            raise _bad(spec, i, "interpolation", f"unknown resize interpolation '{interp}'",
                       f"interpolations: {name_list(INTERPOLATIONS)}."
                       f"{did_you_mean(str(interp), INTERPOLATIONS)}")
        entry.update(size=[int(size[0]), int(size[1])], interpolation=interp)
    elif op == "select_channels":
        chans = step.get("channels")
        if not (isinstance(chans, (list, tuple)) and chans
                and all(_is_int(c) and c >= 0 for c in chans)):
            raise _bad(spec, i, "channels", f"select_channels needs a non-empty list of channel "
                       f"indices, got {chans!r}", "e.g. `channels: [0]` keeps the first channel")
        entry["channels"] = [int(c) for c in chans]
    elif op == "gaussian_blur":
        entry["kernel"] = _odd_kernel(spec, step, i)
        sigma = step.get("sigma")
        if not _is_number(sigma) or sigma <= 0:
            raise _bad(spec, i, "sigma", f"gaussian_blur sigma must be a positive number, got "
                       f"{sigma!r}", "e.g. `{op: gaussian_blur, kernel: 3, sigma: 0.8}`")
        entry["sigma"] = float(sigma)
    elif op == "median_filter":
        entry["kernel"] = _odd_kernel(spec, step, i)
    elif op == "pca":
        k = step.get("components")
        if not _is_int(k) or k < 1:
            raise _bad(spec, i, "components", f"pca components must be a positive integer, got "
                       f"{k!r}", "e.g. `{op: pca, components: 20}`")
        whiten = _given(step, "whiten")
        if not isinstance(whiten, bool):
            raise _bad(spec, i, "whiten", f"pca whiten must be true or false, got {whiten!r}",
                       "`whiten: true` scales every component to unit variance")
        entry.update(components=k, whiten=whiten)
    return entry


def resolve_fields(
    spec: Any, step: dict, i: int, shapes: dict[str, Shape], floats: set[str],
    target: str | None,
) -> list[str]:
    """The fields step ``i`` applies to: its `fields`, else every float field but the target
    (image ops: every float image field [C, H, W])."""
    op = step.get("op")
    names = step.get("fields")
    if names is None:
        out = [k for k in shapes if k != target and k in floats]
        if op in IMAGE_OPS:
            out = [k for k in out if len(shapes[k]) == 3]
            if not out:
                found = ", ".join(f"'{k}' {_shape_str(shapes[k])}" for k in shapes
                                  if k in floats and k != target) or "none"
                raise _bad(spec, i, "op", f"preprocess step {i} ({op}) works on images "
                           f"[C, H, W], but the data has no float image field (float fields: "
                           f"{found})", "for the built-in digits set `as_images: true` on "
                           "data.source; store npz images as [N, C, H, W] (channels first)")
        return out
    if isinstance(names, str):
        names = [names]
    out = []
    for j, name in enumerate(names):
        name = str(name)
        where = ("data", "preprocess", i, "fields", j)
        if name not in shapes:
            raise fail("E508", f"preprocess step {i} ({op}) names the field '{name}', which "
                       "the data does not have", spec, *where,
                       help=f"data fields: {name_list(shapes)}.{did_you_mean(name, shapes)}")
        if name not in floats:
            raise fail("E508", f"preprocess step {i} ({op}) cannot transform the integer field "
                       f"'{name}'", spec, *where,
                       help="preprocessing applies to float fields; remove it from fields "
                       "(integer fields are labels or indices)")
        if op in IMAGE_OPS and len(shapes[name]) != 3:
            raise fail("E508", f"preprocess step {i} ({op}) works on images [C, H, W], but "
                       f"the field '{name}' has per-sample shape {_shape_str(shapes[name])}",
                       spec, *where, help="store images as [N, C, H, W] (channels first); for "
                       "the built-in digits set `as_images: true` on data.source")
        out.append(name)
    return out


# --------------------------------------------------------------------------- shapes


def _op_attrs(entry: dict) -> dict:
    op = entry["op"]
    if op == "resize":
        return {"size": tuple(entry["size"]), "interpolation": entry["interpolation"]}
    if op == "select_channels":
        return {"channels": tuple(entry["channels"])}
    if op == "gaussian_blur":
        return {"kernel": entry["kernel"], "sigma": entry["sigma"]}
    if op == "median_filter":
        return {"kernel": entry["kernel"]}
    return {}


def _stat_names(entry: dict) -> tuple[str, str]:
    return ("mean", "std") if entry.get("mode", "zscore") == "zscore" else ("min", "max")


def shape_after(entry: dict, field: str, shape: Shape, on_error: OnError) -> Shape:
    """The per-sample shape of ``field`` after the step; ``on_error`` makes the exception
    for a step that cannot apply (checked against fitted statistics when present)."""
    op = entry["op"]
    if op in IMAGE_OPS:
        opdef = get_op(op)
        try:
            (t,) = opdef.infer(opdef.check_attrs(_op_attrs(entry)),
                               [TensorType(("N", *shape), "float32")])
        except ShapeError as e:
            raise on_error(f"{e} (field '{field}', per-sample shape {_shape_str(shape)})",
                           e.help or "check the step against the data's shape") from None
        return tuple(t.shape[1:])
    stats = (entry.get("stats") or {}).get(field)
    if op == "normalize" and stats is not None:
        fitted = np.shape(stats[_stat_names(entry)[0]])
        if stats.get("per") == "channel":
            ok = len(shape) == 3 and shape[0] == fitted[0]
            fitted_desc = f"images with {fitted[0]} channels"
        elif stats.get("per") == "step_feature":
            fitted = tuple(stats.get("step", fitted))
            ok = len(shape) >= 1 and tuple(shape[1:]) == fitted
            fitted_desc = f"sequences of steps {_shape_str(fitted)}"
        else:
            ok = tuple(shape) == tuple(fitted)
            fitted_desc = f"per-sample shape {_shape_str(fitted)}"
        if not ok:
            raise on_error(f"normalize was fitted on {fitted_desc}, but the field '{field}' "
                           f"has per-sample shape {_shape_str(shape)}",
                           "pass data shaped like the training data")
    if op == "pca":
        features = int(np.prod(shape, dtype=np.int64))
        if entry["components"] > features:
            raise on_error(f"pca cannot keep {entry['components']} components of the field "
                           f"'{field}': it has {features} values per sample",
                           f"use at most {features} components")
        fitted = (stats or {}).get("features")
        if fitted is not None and int(fitted) != features:
            raise on_error(f"pca was fitted on {fitted} values per sample, but the field "
                           f"'{field}' has {features}", "pass data shaped like the training data")
        return (int(entry["components"]),)
    return tuple(shape)


# --------------------------------------------------------------------------- fitting


def fit_entry(spec: Any, entry: dict, i: int, train: dict[str, np.ndarray],
              ragged: Ragged | None = None) -> dict:
    """Fit the statistics of a normalize or pca step on the train fields it names (a
    ``ragged`` field over the steps its sequences really have)."""
    out = dict(entry)
    stats: dict[str, dict] = {}
    for name in entry["fields"]:
        x = train[name]
        if x.shape[0] == 0:
            raise fail("E507", f"cannot fit {entry['op']} statistics: the train split is empty",
                       spec, "data", "split", "train", help="give the train split more samples")
        if entry["op"] == "normalize" and ragged is not None and name in ragged.pads:
            steps = x[step_mask(train[ragged.lengths], x.shape[1])].astype(np.float64)
            lo, hi = _stat_names(entry)
            pair = ((steps.mean(axis=0), steps.std(axis=0)) if entry["mode"] == "zscore"
                    else (steps.min(axis=0), steps.max(axis=0)))
            stats[name] = {"per": "step_feature", "step": list(x.shape[2:]),
                           lo: np.asarray(pair[0]).tolist(), hi: np.asarray(pair[1]).tolist()}
        elif entry["op"] == "normalize":
            stats[name] = _fit_normalize(entry["mode"], x)
        else:
            stats[name] = _fit_pca(spec, entry, i, x)
    out["stats"] = stats
    return out


def _fit_normalize(mode: str, x: np.ndarray) -> dict:
    x = x.astype(np.float64)
    per = "channel" if x.ndim == 4 else "feature"
    axes = (0, 2, 3) if per == "channel" else 0
    if mode == "zscore":
        st = {"mean": x.mean(axis=axes).tolist(), "std": x.std(axis=axes).tolist()}
    else:
        st = {"min": x.min(axis=axes).tolist(), "max": x.max(axis=axes).tolist()}
    return {"per": per, **st}


def _fit_pca(spec: Any, entry: dict, i: int, x: np.ndarray) -> dict:
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    if entry["components"] > flat.shape[0]:
        raise fail("E508", f"pca cannot fit {entry['components']} components on "
                   f"{flat.shape[0]} training samples", spec, "data", "preprocess", i,
                   "components", help=f"use at most {flat.shape[0]} components, or more data")
    return {"features": int(flat.shape[1]),
            "pca": fit_pca(flat, entry["components"], entry["whiten"])}


# --------------------------------------------------------------------------- building


def build_entry(g: Graph, x: Value, entry: dict, field: str) -> Value:
    """Add the ops of one step for ``field`` to ``g``; ``x`` is float32 [N, *sample]."""
    op = entry["op"]
    if op == "scale":
        # in float64, rounded once to float32: the same numbers as x * factor in NumPy
        y = g.op("cast", x, dtype="float64")
        y = g.op("mul_scalar", y, c=float(entry["factor"]))
        return g.op("cast", y, dtype="float32")
    if op == "normalize":
        return _build_normalize(g, x, entry, field)
    if op == "pca":
        return pca_transform_graph(g, _flatten(g, x), entry["stats"][field]["pca"])
    return g.op(op, x, **_op_attrs(entry))


def _flatten(g: Graph, x: Value) -> Value:
    t = g.type_of(x)
    if t.rank == 2:
        return x
    return g.op("reshape", x, shape=(t.shape[0], int(np.prod(t.shape[1:], dtype=np.int64))))


def _build_normalize(g: Graph, x: Value, entry: dict, field: str) -> Value:
    st = entry["stats"][field]
    lo_name, hi_name = _stat_names(entry)
    a = np.asarray(st[lo_name], dtype=np.float64).reshape(-1)
    b = np.asarray(st[hi_name], dtype=np.float64).reshape(-1)
    # a feature constant in the train split is scaled by 1, as scikit-learn's scalers do:
    # dividing by a tiny floor turned a value never seen in training into ~1e7
    if entry["mode"] == "zscore":
        b = np.where(b < STD_FLOOR, 1.0, b)
    else:
        b = b - a
        b = np.where(b < RANGE_FLOOR, 1.0, b)
    t = g.type_of(x)
    per_channel = st.get("per") == "channel"
    if st.get("per") == "step_feature":  # the same statistics for every step
        a = np.tile(a, int(t.shape[1]))
        b = np.tile(b, int(t.shape[1]))
    y = x if per_channel else _flatten(g, x)
    y = g.op("normalize_channels", y, g.const(a, "float64"), g.const(b, "float64"))
    if g.type_of(y).shape != t.shape:
        y = g.op("reshape", y, shape=t.shape)
    return y
