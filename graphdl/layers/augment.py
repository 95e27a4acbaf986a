"""data.augment -> random ops on a model input, in the train graph only.

The train-mode lowering calls `build_augment` on each input that `augment_inputs` names;
the eval and predict graphs (and so val/test) never augment. Each step becomes one op of
graphdl.ops.image with ``salt`` = its index in data.augment, drawing from the step's seed
input: the same seed gives the same batch, and the trainer varies the seed per step.

`AUGMENT`, the table of steps, is defined here beside the code that builds them; the spec
front end reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graphdl.layers.schema import MISSING, ListOf, Union, boolean, fraction, number
from graphdl.ops.registry import ShapeError

if TYPE_CHECKING:
    from graphdl.ir.graph import Graph, Value

IMAGE_ONLY = ("random_rotation", "random_flip", "salt_pepper_noise")

# The data.augment steps: keys, defaults and docs (the spec schema's data.augment is this).
_P_DOC = "probability that a sample is changed"
AUGMENT = ListOf(
    "random transforms of the training inputs, after preprocess; seeded (reproducible) and "
    "applied to the train split only, never to val/test or predict",
    Union(
        "an augmentation step",
        "op",
        {
            "random_rotation": (
                ("rotate about the image centre by an angle drawn from [-degrees, degrees] "
                 "(bilinear)"),
                {
                    "degrees": number("largest rotation, in degrees", minimum=0, maximum=180,
                                      required=True),
                    "fill": number("value of the pixels rotated in from outside the image",
                                   default=0.0),
                    "p": fraction(_P_DOC, 1.0),
                },
            ),
            "random_flip": (
                "mirror images left-right and/or top-bottom (each with its own draw)",
                {
                    "horizontal": boolean("flip left-right", default=True),
                    "vertical": boolean("flip top-bottom", default=False),
                    "p": fraction(_P_DOC + " (per direction)", 0.5),
                },
            ),
            "gaussian_noise": (
                "add Gaussian noise to every value (also for feature vectors)",
                {
                    "std": number("standard deviation of the noise", minimum=0,
                                  required=True),
                    "p": fraction(_P_DOC, 1.0),
                },
            ),
            "salt_pepper_noise": (
                "set a fraction of the pixels to the image's minimum or maximum (half each)",
                {
                    "amount": number("fraction of the pixels replaced", minimum=0, maximum=1,
                                     required=True),
                    "p": fraction(_P_DOC, 1.0),
                },
            ),
        },
    ),
    default=[],
)


def step_attrs(step: dict) -> tuple[str, dict]:
    """(op, attributes) of one augment step: its keys, with the spec tables' defaults for
    absent (or null) ones, numbers as floats."""
    variants = AUGMENT.item.variants
    op = step.get("op")
    if op not in variants:
        raise ValueError(f"unknown augment op {op!r}; ops: {', '.join(variants)}")
    attrs = {}
    for key, leaf in variants[op][1].items():
        value = step.get(key)
        if value is None:
            if leaf.default is MISSING:
                raise ValueError(f"augment op {op} needs '{key}'")
            value = leaf.default
        if leaf.schema.get("type") == "number":
            value = float(value)
        attrs[key] = value
    return op, attrs


def build_augment(g: Graph, x: Value, steps: list[dict], seed: Value) -> Value:
    """Add the augmentation steps to ``g`` on ``x`` (float [N, C, H, W], or [N, F] when
    every step is gaussian_noise); ``seed`` is an int64 scalar value (a graph input the
    trainer feeds per step). Step i uses salt i. Returns the augmented value."""
    t = g.type_of(x)
    for i, step in enumerate(steps):
        op, attrs = step_attrs(step)
        if op in IMAGE_ONLY and t.rank != 4:
            dims = ", ".join(str(d) for d in t.shape[1:])
            raise ShapeError(
                f"{op} augments images [C, H, W], but this input is [{dims}] per sample",
                help="only gaussian_noise applies to feature vectors; for the built-in digits "
                "set `as_images: true` on data.source and declare the input [1, 8, 8]",
            )
        x = g.op(op, x, seed, salt=i, **attrs)
    return x


def augment_inputs(spec: Any) -> list[str]:
    """The model inputs data.augment applies to: the float image inputs [C, H, W]; when
    there are none, every float input (only gaussian_noise can apply to those)."""
    inputs = dict(getattr(spec.model, "inputs", None) or {})
    floats = [n for n, i in inputs.items() if str(getattr(i, "dtype", "float32")).startswith(
        "float")]
    images = [n for n in floats if len(tuple(inputs[n].shape)) == 3]
    return images or floats
