"""Preprocessing steps (data.preprocess): fitted on the train split, applied to every split.

Each step ``i`` leaves an entry ``"<op>.<i>"`` in the JSON-serialisable state, e.g.::

    "scale.0":     {"op": "scale", "factor": 0.0625, "fields": ["x"]}
    "normalize.1": {"op": "normalize", "mode": "zscore", "fields": ["x"],
                    "stats": {"x": {"mean": [...], "std": [...]}}}
    "normalize.2": {"op": "normalize", "mode": "minmax", "fields": ["x"],
                    "stats": {"x": {"min": [...], "max": [...]}}}

Statistics are per feature (over the sample axis only), shaped like one sample, and stored
as nested lists of Python floats (exact through JSON). Transforms are computed in float64
and stored as float32, identically at training and at predict time.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np

from graphdl.data._diag import did_you_mean, fail, name_list

STD_FLOOR = 1e-8
RANGE_FLOOR = 1e-8
OPS = ("scale", "normalize")
MODES = ("zscore", "minmax")


def steps_of(spec: Any) -> list[dict]:
    steps = (spec.data or {}).get("preprocess") or []
    return [dict(s) for s in steps]


def state_key(step: dict, i: int) -> str:
    return f"{step.get('op')}.{i}"


def _is_float(arr: np.ndarray) -> bool:
    return np.issubdtype(arr.dtype, np.floating)


def _check_step(spec: Any, step: dict, i: int) -> None:
    op = step.get("op")
    if op not in OPS:
        raise fail(
            "E508",
            f"unknown preprocess op '{op}'",
            spec,
            "data",
            "preprocess",
            i,
            "op",
            help=f"preprocess ops: {name_list(OPS)}.{did_you_mean(str(op), OPS)}",
        )
    if op == "scale":
        f = step.get("factor")
        if isinstance(f, bool) or not isinstance(f, Real) or not math.isfinite(float(f)):
            raise fail(
                "E508",
                f"preprocess step {i} (scale) needs a finite numeric 'factor', got {f!r}",
                spec,
                "data",
                "preprocess",
                i,
                "factor",
                help="e.g. `{op: scale, factor: 0.0625}` multiplies the fields by 1/16",
            )
    else:
        mode = step.get("mode", "zscore")
        if mode not in MODES:
            raise fail(
                "E508",
                f"unknown normalize mode '{mode}'",
                spec,
                "data",
                "preprocess",
                i,
                "mode",
                help=f"modes: {name_list(MODES)}.{did_you_mean(str(mode), MODES)}",
            )
        stats = step.get("stats", "from_train")
        if stats != "from_train":
            raise fail(
                "E508",
                f"normalize stats '{stats}' is not supported",
                spec,
                "data",
                "preprocess",
                i,
                "stats",
                help="use `stats: from_train` (statistics fitted on the train split)",
            )


def _resolve_fields(
    spec: Any, step: dict, i: int, fields: dict[str, np.ndarray], target: str | None
) -> list[str]:
    names = step.get("fields")
    if names is None:
        return [k for k, v in fields.items() if k != target and _is_float(v)]
    if isinstance(names, str):
        names = [names]
    out = []
    for j, name in enumerate(names):
        name = str(name)
        if name not in fields:
            raise fail(
                "E508",
                f"preprocess step {i} ({step.get('op')}) names the field '{name}', which the "
                "data does not have",
                spec,
                "data",
                "preprocess",
                i,
                "fields",
                j,
                help=f"data fields: {name_list(fields)}.{did_you_mean(name, fields)}",
            )
        if not _is_float(fields[name]):
            raise fail(
                "E508",
                f"preprocess step {i} ({step.get('op')}) cannot transform the integer field "
                f"'{name}' ({fields[name].dtype})",
                spec,
                "data",
                "preprocess",
                i,
                "fields",
                j,
                help="scale and normalize apply to float fields; remove it from fields "
                "(integer fields are labels or indices)",
            )
        out.append(name)
    return out


def fit_step(
    spec: Any, step: dict, i: int, train: dict[str, np.ndarray], target: str | None
) -> dict:
    """Check step ``i`` and fit its statistics on the train fields; returns its state entry."""
    _check_step(spec, step, i)
    names = _resolve_fields(spec, step, i, train, target)
    if step["op"] == "scale":
        return {"op": "scale", "factor": float(step["factor"]), "fields": names}
    mode = step.get("mode", "zscore")
    stats: dict[str, dict] = {}
    for name in names:
        x = train[name].astype(np.float64)
        if x.shape[0] == 0:
            raise fail(
                "E507",
                "cannot fit normalize statistics: the train split is empty",
                spec,
                "data",
                "split",
                "train",
                help="give the train split more samples",
            )
        if mode == "zscore":
            stats[name] = {"mean": x.mean(axis=0).tolist(), "std": x.std(axis=0).tolist()}
        else:
            stats[name] = {"min": x.min(axis=0).tolist(), "max": x.max(axis=0).tolist()}
    return {"op": "normalize", "mode": mode, "fields": names, "stats": stats}


def apply_step(
    entry: dict, fields: dict[str, np.ndarray], on_shape_error: Any = None
) -> dict[str, np.ndarray]:
    """Apply one fitted step to the fields it names that are present (others pass through)."""
    out = dict(fields)
    for name in entry["fields"]:
        if name not in out:
            continue
        x = out[name].astype(np.float64)
        if entry["op"] == "scale":
            y = x * entry["factor"]
        else:
            st = entry["stats"][name]
            if entry["mode"] == "zscore":
                a = np.asarray(st["mean"], dtype=np.float64)
                b = np.maximum(np.asarray(st["std"], dtype=np.float64), STD_FLOOR)
            else:
                a = np.asarray(st["min"], dtype=np.float64)
                b = np.maximum(np.asarray(st["max"], dtype=np.float64) - a, RANGE_FLOOR)
            if x.shape[1:] != a.shape:
                if on_shape_error is not None:
                    raise on_shape_error(name, x.shape[1:], a.shape)
                raise ValueError(f"field {name!r}: per-sample shape {x.shape[1:]} != {a.shape}")
            y = (x - a) / b
        out[name] = np.ascontiguousarray(y, dtype=np.float32)
    return out
