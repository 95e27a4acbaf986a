"""Core layers: dense, activation, dropout, flatten, add, concat (and the activation table).

Each layer is defined once here: its keys (types, defaults, descriptions) and its lowering.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphdl.layers.catalog import fmt_shape, layer
from graphdl.layers.schema import boolean, enum, integer, number

if TYPE_CHECKING:
    from graphdl.ir.graph import Value
    from graphdl.layers.lower import LayerCtx

ACTIVATIONS = [
    "linear", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "softplus", "silu",
    "softmax",
]
ALPHA_DEFAULTS = {"leaky_relu": 0.01, "elu": 1.0}  # activations that take `alpha`
KERNEL_INITS = ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "zeros"]
BIAS_INITS = ["zeros", "glorot_uniform", "glorot_normal", "he_uniform", "he_normal"]

ALPHA_DOC = (
    "negative slope for leaky_relu (default 0.01) or scale for elu (default 1.0); "
    "only with those two activations"
)
# keys shared by the layers that end in an activation and have a bias (dense, conv2d)
OUTPUT_ACTIVATION = {
    "activation": enum("activation applied to the output", ACTIVATIONS, default="linear"),
    "alpha": number(ALPHA_DOC, minimum=0),
}
BIAS_INIT = enum("bias initializer", BIAS_INITS, default="zeros")


def apply_activation(ctx: LayerCtx, x: Value) -> Value:
    """The layer's ``activation`` (with its ``alpha``) applied to ``x``."""
    name = ctx.arg("activation")
    if name == "linear":
        return x
    if name in ALPHA_DEFAULTS:
        alpha = ctx.arg("alpha")
        alpha = ALPHA_DEFAULTS[name] if alpha is None else alpha
        return ctx.g.op(name, x, alpha=float(alpha))
    if name == "softmax":
        return ctx.g.op("softmax", x, axis=-1)
    return ctx.g.op(name, x)


@layer("dense", "fully connected layer: activation(x W + b) over the last axis (at every "
       "step of a sequence [T, features])", {
    "units": integer("number of output features", minimum=1, required=True),
    **OUTPUT_ACTIVATION,
    "use_bias": boolean("add a learned bias", default=True),
    "kernel_init": enum("weight initializer", KERNEL_INITS, default="glorot_uniform"),
    "bias_init": BIAS_INIT,
})
def lower_dense(ctx: LayerCtx, inputs: list[Value]) -> Value:
    g, x = ctx.g, inputs[0]
    t = g.type_of(x)
    if t.rank < 2 or isinstance(t.shape[-1], str):
        raise ctx.shape_error(f"dense expects a feature vector, got {fmt_shape(t)}")
    if t.rank > 3:
        raise ctx.shape_error(
            f"dense expects a feature vector [features] or a sequence of them [T, features], "
            f"got {fmt_shape(t)}",
            help="add '- {type: flatten}' before it",
        )
    fan_in, units = t.shape[-1], int(ctx.arg("units"))
    w = ctx.param("kernel", (fan_in, units), ctx.arg("kernel_init"),
                  fan_in=fan_in, fan_out=units, weight=True)
    y = g.op("matmul", x, w)
    if ctx.arg("use_bias"):
        b = ctx.param("bias", (units,), ctx.arg("bias_init"), fan_in=fan_in, fan_out=units,
                      weight=False)
        y = g.op("add", y, b)
    return apply_activation(ctx, y)


@layer("activation", "element-wise activation function", {
    "activation": enum("the activation function", ACTIVATIONS, required=True),
    "alpha": number(ALPHA_DOC, minimum=0),
})
def lower_activation(ctx: LayerCtx, inputs: list[Value]) -> Value:
    return apply_activation(ctx, inputs[0])


@layer("dropout", "randomly zeroes a fraction of the inputs during training (inverted dropout)", {
    "rate": number("fraction of inputs to drop, in [0, 1)", minimum=0, exclusive_maximum=1,
                   required=True),
})
def lower_dropout(ctx: LayerCtx, inputs: list[Value]) -> Value:
    rate = float(ctx.arg("rate"))
    if not ctx.training or rate == 0.0:
        return inputs[0]
    return ctx.g.op("dropout", inputs[0], ctx.step_seed, rate=rate, salt=ctx.salt)


@layer("flatten", "flattens all axes but the batch axis")
def lower_flatten(ctx: LayerCtx, inputs: list[Value]) -> Value:
    t = ctx.g.type_of(inputs[0])
    if t.rank <= 2:
        return inputs[0]
    return ctx.g.op("reshape", inputs[0], shape=(t.shape[0], -1))


@layer("add", "element-wise sum of its inputs")
def lower_add(ctx: LayerCtx, inputs: list[Value]) -> Value:
    if len(inputs) < 2:
        raise ctx.shape_error("add needs at least two inputs", help="give it 'inputs: [a, b]'")
    types = [ctx.g.type_of(v) for v in inputs]
    if any(t.shape != types[0].shape for t in types):
        raise ctx.shape_error("add needs inputs of one shape, got "
                              + ", ".join(fmt_shape(t) for t in types))
    y = inputs[0]
    for v in inputs[1:]:
        y = ctx.g.op("add", y, v)
    return y


@layer("concat", "concatenates its inputs along an axis", {
    "axis": integer("axis to concatenate along (batch axis excluded from counting only for "
                    "negative axes)", default=-1),
})
def lower_concat(ctx: LayerCtx, inputs: list[Value]) -> Value:
    axis = int(ctx.arg("axis"))
    if axis >= 0:
        axis += 1  # the spec counts axes without the batch dim
    if len(inputs) == 1:
        return inputs[0]
    return ctx.g.op("concat", *inputs, axis=axis)
