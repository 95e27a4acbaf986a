"""data.augment: checks the augmentation steps (they are built by graphdl.layers.augment).

Augmentation is random and applies to the train split only, inside the train graph; this
module makes a bad step a located E508 when the data is loaded, before anything compiles.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from graphdl.data._diag import did_you_mean, fail, name_list
from graphdl.layers.augment import IMAGE_ONLY
from graphdl.spec import schema_gen as sg

Shape = tuple[int, ...]


def augment_steps(spec: Any) -> list[dict]:
    return [dict(s) for s in ((spec.data or {}).get("augment") or [])]


def _number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(float(v))


def check_augment(spec: Any, input_shapes: dict[str, Shape]) -> None:
    """Check data.augment against the float model inputs' per-sample shapes (after
    preprocessing). E508 at the offending key."""
    variants = sg.AUGMENT.item.variants
    for i, step in enumerate(augment_steps(spec)):
        op = step.get("op")

        def bad(key: str, message: str, help: str, i=i) -> Exception:
            return fail("E508", message, spec, "data", "augment", i, key, help=help)

        if op not in variants:
            raise bad("op", f"unknown augment op '{op}'",
                      f"augment ops: {name_list(variants)}.{did_you_mean(str(op), variants)}")
        for key, leaf in variants[op][1].items():
            value = step.get(key)
            if value is None:
                if leaf.default is sg.MISSING:
                    raise bad("op", f"augment step {i} ({op}) needs '{key}'",
                              f"add `{key}:` ({leaf.doc})")
                continue
            kind = leaf.schema.get("type")
            lo, hi = leaf.schema.get("minimum"), leaf.schema.get("maximum")
            if kind == "boolean" and not isinstance(value, bool):
                raise bad(key, f"augment step {i} ({op}): {key} must be true or false, got "
                          f"{value!r}", leaf.doc)
            if kind == "number" and (
                not _number(value)
                or (lo is not None and value < lo)
                or (hi is not None and value > hi)
            ):
                bounds = f" in [{lo}, {hi}]" if lo is not None and hi is not None else (
                    f" >= {lo}" if lo is not None else "")
                raise bad(key, f"augment step {i} ({op}): {key} must be a number{bounds}, got "
                          f"{value!r}", leaf.doc)
        if op == "random_flip" and step.get("horizontal") is False and not step.get("vertical"):
            raise bad("horizontal", f"augment step {i} (random_flip) flips nothing: horizontal "
                      "and vertical are both false", "set `horizontal: true` or `vertical: true`")
        if op in IMAGE_ONLY and not any(len(s) == 3 for s in input_shapes.values()):
            found = ", ".join(f"'{k}' [{', '.join(map(str, s))}]"
                              for k, s in input_shapes.items()) or "none"
            raise bad("op", f"augment step {i} ({op}) works on images [C, H, W], but no float "
                      f"model input is an image (float inputs: {found})",
                      "only gaussian_noise applies to feature vectors; for the built-in digits "
                      "set `as_images: true` on data.source and declare the input [1, 8, 8]")
