"""Runs data.preprocess through the engine: a small graph per field, compiled, in batches.

For each field a step list becomes a Graph (input ``x`` float32 [N, *sample] -> the steps'
ops -> output ``y``), planned by the usual passes and compiled into a `Program` (cached on
disk like every program, and in this process by graph). It runs over each split in
batches of `BATCH` samples.

A step fitted on the train split (normalize, pca) needs the train data as the steps before
it leave it, so the step list is cut into *segments*, a new one starting at each fitted
step: a segment runs on every split, the next fitted step is fitted on the train result,
and so on. The cut depends only on the step list, so predict (`apply_entries`) compiles
the very programs training compiled.

Ragged sequence fields (`graphdl.data.ragged`) take scale and normalize only: normalize's
statistics are per feature over the steps the sequences really have, and after the steps
every padded step is set back to the field's pad value.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from graphdl.compiler import compile_graph
from graphdl.data._diag import fail, name_list
from graphdl.data.preprocess import (
    FITTED,
    SEQUENCE_OPS,
    Shape,
    build_entry,
    check_step,
    fit_entry,
    resolve_fields,
    shape_after,
    state_key,
    steps_of,
)
from graphdl.data.ragged import Ragged, pad_to
from graphdl.ir.graph import Graph
from graphdl.ir.types import TensorType

BATCH = 512
_CACHE_SIZE = 32
_PROGRAMS: OrderedDict[str, Any] = OrderedDict()


# --------------------------------------------------------------------------- planning


def plan_steps(
    spec: Any, shapes: dict[str, Shape], floats: set[str], target: str | None,
    present_only: bool = False, ragged: set[str] = frozenset(),
) -> tuple[list[dict], dict[str, Shape]]:
    """Check every data.preprocess step against the fields' per-sample shapes, without
    touching the data. Returns the entries (fields resolved, nothing fitted yet) and the
    per-sample shapes after the last step. Errors are E508 at the step (a step other than
    scale or normalize on a ``ragged`` field among them). With ``present_only`` (new data
    for predict) a step's named fields that the data lacks are skipped instead of
    reported."""
    entries = []
    current = dict(shapes)
    for i, step in enumerate(steps_of(spec)):
        entry = check_step(spec, step, i)
        if present_only and step.get("fields") is not None:
            named = [step["fields"]] if isinstance(step["fields"], str) else step["fields"]
            step = {**step, "fields": [f for f in named if str(f) in current]}
        entry["fields"] = resolve_fields(spec, step, i, current, floats, target)

        def at_step(message: str, help: str, i=i, op=entry["op"]) -> Exception:
            return fail("E508", f"preprocess step {i} ({op}) cannot apply: {message}", spec,
                        "data", "preprocess", i, help=help)

        for name in entry["fields"]:
            if name in ragged and entry["op"] not in SEQUENCE_OPS:
                raise at_step(f"the field '{name}' holds ragged sequences (padded)",
                              f"ragged sequences take {' and '.join(SEQUENCE_OPS)} only; name "
                              "the other fields with fields: [...]")
            current[name] = shape_after(entry, name, current[name], at_step)
        entries.append(entry)
    return entries, current


def plan_state(
    spec: Any, state: dict, shapes: dict[str, Shape], on_error
) -> tuple[list[dict], dict[str, Shape]]:
    """The saved entries for data.preprocess (E508 when one is missing), each limited to the
    fields present, and the per-sample shapes after them. ``on_error(name, i)`` returns the
    OnError callback for a field that does not fit step ``i``."""
    entries = []
    current = dict(shapes)
    for i, step in enumerate(steps_of(spec)):
        key = state_key(step, i)
        entry = (state or {}).get(key)
        if entry is None:
            raise fail("E508", f"the saved preprocessing state has no entry '{key}' for "
                       f"data.preprocess[{i}]", spec, "data", "preprocess", i,
                       help="data.preprocess changed since training; restore it or re-train",
                       note=f"state entries: {name_list(state or {})}")
        entry = {**entry, "fields": [f for f in entry["fields"] if f in current]}
        for name in entry["fields"]:
            current[name] = shape_after(entry, name, current[name], on_error(name, i))
        entries.append(entry)
    return entries, current


def segments(entries: list[dict]) -> list[list[int]]:
    """Step indices cut before each fitted step: [[0, 1, 2], [3, 4], [5]]."""
    out: list[list[int]] = []
    for i, entry in enumerate(entries):
        if not out or entry["op"] in FITTED:
            out.append([])
        out[-1].append(i)
    return out


# --------------------------------------------------------------------------- running


def build_graph(entries: list[dict], field: str, sample_shape: Shape) -> Graph:
    """``y = steps(x)`` for one field; x is float32 [N, *sample_shape]."""
    g = Graph()
    v = g.input("x", TensorType(("N", *sample_shape), "float32"))
    for entry in entries:
        v = build_entry(g, v, entry, field)
    g.outputs["y"] = v
    return g


def preprocess_program(g: Graph):
    """The Program for a preprocessing graph (kept in this process, keyed by the graph)."""
    key = g.dumps()
    prog = _PROGRAMS.get(key)
    if prog is not None:
        _PROGRAMS.move_to_end(key)
        return prog
    prog = compile_graph(g, title="preprocess")
    prog.bind_params({}, {})
    _PROGRAMS[key] = prog
    while len(_PROGRAMS) > _CACHE_SIZE:
        _PROGRAMS.popitem(last=False)
    return prog


def run_graph(g: Graph, x: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """Run a preprocessing graph over the samples of ``x`` in batches of ``batch``."""
    out_t = g.type_of(g.outputs["y"])
    out = np.empty((x.shape[0], *out_t.shape[1:]), np.float32)
    if x.shape[0] == 0:
        return out
    prog = preprocess_program(g)
    for start in range(0, x.shape[0], batch):
        chunk = np.ascontiguousarray(x[start:start + batch], dtype=np.float32)
        out[start:start + batch] = prog({"x": chunk})["y"]
    return out


def apply_segment(entries: list[dict], fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Apply steps to the fields each names (one compiled graph per field)."""
    out = dict(fields)
    for name, x in fields.items():
        mine = [e for e in entries if name in e["fields"]]
        if mine:
            out[name] = run_graph(build_graph(mine, name, tuple(x.shape[1:])), x)
    return out


def fit_and_apply(
    spec: Any, entries: list[dict], parts: list[dict[str, np.ndarray]],
    ragged: Ragged | None = None,
) -> tuple[list[dict[str, np.ndarray]], dict]:
    """Fit the steps on ``parts[0]`` (the train split) and apply them to every part.
    Returns the transformed parts and the preprocess state. The ``ragged`` fields are fitted
    on their real steps and padded again afterwards."""
    state: dict = {}
    for seg in segments(entries):
        first = entries[seg[0]]
        if first["op"] in FITTED:
            entries[seg[0]] = first = fit_entry(spec, first, seg[0], parts[0], ragged)
        for i in seg:
            state[state_key(entries[i], i)] = entries[i]
        parts = [apply_segment([entries[i] for i in seg], p) for p in parts]
    return [repad(p, ragged) for p in parts], state


def apply_entries(entries: list[dict], fields: dict[str, np.ndarray],
                  ragged: Ragged | None = None) -> dict[str, np.ndarray]:
    """Apply fitted entries (from `plan_state`) to new data, segment by segment as in
    training, so the same compiled programs serve; ``ragged`` fields are padded again."""
    for seg in segments(entries):
        fields = apply_segment([entries[i] for i in seg], fields)
    return repad(fields, ragged)


def repad(fields: dict[str, np.ndarray], ragged: Ragged | None) -> dict[str, np.ndarray]:
    """``fields`` with every padded step of the ragged fields set to its pad value again
    (a step may have changed it: normalize moves 0)."""
    if ragged is None or ragged.lengths not in fields:
        return fields
    out = dict(fields)
    for name, pad in ragged.pads.items():
        if name in out:
            out[name] = pad_to(out[name], out[ragged.lengths], out[name].shape[1], pad)
    return out


