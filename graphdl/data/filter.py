"""data.filter: keep only some classes (optionally renumbered 0..k-1), before splitting.

``{classes: [5, 6, 7, 8, 9], relabel: true}`` keeps the samples whose target is one of the
listed classes and, with ``relabel``, maps them to 0..k-1 in the listed order. With an
image_folder source a class may also be given by its folder name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from graphdl.data._diag import did_you_mean, fail, name_list


@dataclass
class Filtered:
    fields: dict[str, np.ndarray]
    num_classes: int | None
    class_names: list[str] | None


def _config(spec: Any) -> dict | None:
    cfg = (spec.data or {}).get("filter")
    return None if cfg is None else cfg


def apply_filter(
    spec: Any,
    fields: dict[str, np.ndarray],
    target: str | None,
    num_classes: int | None,
    class_names: list[str] | None,
    description: str,
) -> Filtered:
    """Apply data.filter (if any) to the unsplit fields; E508 on a bad setting."""
    cfg = _config(spec)
    if cfg is None:
        return Filtered(fields, num_classes, class_names)
    where = ("data", "filter")
    if not isinstance(cfg, dict):
        raise fail("E508", "data.filter must be a mapping with 'classes'", spec, *where,
                   help="e.g. `filter: {classes: [5, 6, 7, 8, 9], relabel: true}`")
    classes = cfg.get("classes")
    if not isinstance(classes, (list, tuple)) or not classes:
        raise fail("E508", "data.filter needs a non-empty list 'classes'", spec, *where,
                   help="e.g. `filter: {classes: [5, 6, 7, 8, 9], relabel: true}`")
    relabel = cfg.get("relabel")
    relabel = False if relabel is None else relabel
    if not isinstance(relabel, bool):
        raise fail("E508", f"data.filter.relabel must be true or false, got {relabel!r}", spec,
                   *where, "relabel", help="`relabel: true` renumbers the kept classes 0..k-1")
    y = fields.get(target) if target is not None else None
    if y is None or y.dtype.kind != "i" or y.ndim != 1:
        what = "there is no target" if y is None else (
            f"the target '{target}' is {y.dtype} with per-sample shape {list(y.shape[1:])}")
        raise fail("E508", f"data.filter needs an integer class label per sample, but {what}",
                   spec, *where, help="filter classes of a classification target (train.target)")

    values: list[int] = []
    for j, c in enumerate(classes):
        at = (*where, "classes", j)
        if isinstance(c, str) and class_names is not None:
            if c not in class_names:
                raise fail("E508", f"data.filter: unknown class '{c}'", spec, *at,
                           help=f"classes: {name_list(class_names)}."
                           f"{did_you_mean(c, class_names)}")
            value = class_names.index(c)
        elif isinstance(c, int) and not isinstance(c, bool):
            value = int(c)
        else:
            raise fail("E508", f"data.filter.classes[{j}] must be a class number"
                       + (" or a class folder name" if class_names else "") + f", got {c!r}",
                       spec, *at, help="list the class labels to keep, e.g. [5, 6, 7, 8, 9]")
        if value in values:
            raise fail("E508", f"data.filter lists class {c!r} twice", spec, *at,
                       help="list each class once")
        if not np.any(y == value):
            raise fail("E508", f"data.filter: class {c!r} has no samples in {description}",
                       spec, *at, help=f"labels in the data: "
                       f"{name_list(str(v) for v in np.unique(y))}")
        values.append(value)

    keep = np.isin(y, values)
    out = {k: np.ascontiguousarray(v[keep]) for k, v in fields.items()}
    if not relabel:
        # the labels keep their values: the classes they index run up to the largest kept
        return Filtered(out, max(values) + 1 if min(values) >= 0 else num_classes, class_names)
    kept = out[target]
    relabelled = np.empty_like(kept)
    for new, value in enumerate(values):
        relabelled[kept == value] = new
    out[target] = relabelled
    names = [class_names[v] for v in values] if class_names is not None else None
    return Filtered(out, len(values), names)
