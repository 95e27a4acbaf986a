"""Image layers on channels-first [C, H, W]: conv2d, maxpool2d, avgpool2d, global_avgpool2d.

Each layer is defined once here: its keys (types, defaults, descriptions) and its lowering.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphdl.layers.catalog import fmt_shape, layer, pair
from graphdl.layers.core import BIAS_INIT, KERNEL_INITS, OUTPUT_ACTIVATION, apply_activation
from graphdl.layers.schema import Leaf, boolean, enum, int_or_pair, integer
from graphdl.ops.conv import resolve_padding

if TYPE_CHECKING:
    from graphdl.ir.graph import Value
    from graphdl.layers.lower import LayerCtx


def check_image_input(ctx: LayerCtx, t) -> None:
    """An image layer's input must be [C, H, W] per sample."""
    if t.rank != 4:
        raise ctx.shape_error(
            f"{ctx.layer.type} expects [C, H, W] images, got {fmt_shape(t)}",
            help="give model.inputs an image shape [C, H, W]" if t.rank < 4
            else "reshape the input to [C, H, W]",
        )


@layer("conv2d", "2-D convolution over channels-first images [C, H, W], then an activation", {
    "filters": integer("number of output channels", minimum=1, required=True),
    "kernel": int_or_pair("kernel size: an int or [height, width]", required=True),
    "stride": int_or_pair("stride: an int or [height, width]", default=1),
    "padding": Leaf(
        {"oneOf": [
            {"type": "integer", "minimum": 0},
            {"type": "array", "items": {"type": "integer", "minimum": 0},
             "minItems": 2, "maxItems": 2},
            {"enum": ["same", "valid"]},
        ]},
        "zero padding: an int, [height, width], 'same' (output size = ceil(input / stride)) "
        "or 'valid' (none)",
        default="valid",
    ),
    "dilation": int_or_pair("spacing between kernel taps", default=1),
    "groups": integer("channel groups (filters and input channels must divide by it; "
                      "groups = channels is a depthwise convolution)", minimum=1, default=1),
    **OUTPUT_ACTIVATION,
    "use_bias": boolean("add a learned per-filter bias", default=True),
    "kernel_init": enum("weight initializer", KERNEL_INITS, default="he_uniform"),
    "bias_init": BIAS_INIT,
})
def lower_conv2d(ctx: LayerCtx, inputs: list[Value]) -> Value:
    g, x = ctx.g, inputs[0]
    t = g.type_of(x)
    check_image_input(ctx, t)
    c, h, w = t.shape[1:]
    kh, kw = pair(ctx.arg("kernel"))
    stride, dilation = pair(ctx.arg("stride")), pair(ctx.arg("dilation"))
    groups, filters = int(ctx.arg("groups")), int(ctx.arg("filters"))
    if c % groups or filters % groups:
        raise ctx.shape_error(f"conv2d groups={groups} must divide both the {c} input "
                              f"channels and the {filters} filters")
    padding = resolve_padding(ctx.arg("padding"), (kh, kw), stride, dilation, (h, w))
    fan_in = c // groups * kh * kw
    weight = ctx.param("kernel", (filters, c // groups, kh, kw), ctx.arg("kernel_init"),
                       fan_in=fan_in, fan_out=filters // groups * kh * kw, weight=True)
    args = [x, weight]
    if ctx.arg("use_bias"):
        args.append(ctx.param("bias", (filters,), ctx.arg("bias_init"),
                              fan_in=fan_in, fan_out=filters, weight=False))
    y = g.op("conv2d", *args, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return apply_activation(ctx, y)


def _lower_pool2d(ctx: LayerCtx, inputs: list[Value], op: str) -> Value:
    check_image_input(ctx, ctx.g.type_of(inputs[0]))
    kernel = pair(ctx.arg("kernel"))
    stride = kernel if ctx.arg("stride") is None else pair(ctx.arg("stride"))
    ph, pw = pair(ctx.arg("padding"))
    attrs = {"kernel": kernel, "stride": stride, "padding": (ph, ph, pw, pw)}
    if op == "avg_pool2d":
        attrs["count_include_pad"] = bool(ctx.arg("count_include_pad"))
    return ctx.g.op(op, inputs[0], **attrs)


@layer("maxpool2d", "max over each window of a [C, H, W] image (the gradient goes to the "
       "maximum)", {
    "kernel": int_or_pair("window size: an int or [height, width]", required=True),
    "stride": int_or_pair("stride (default: the window size)"),
    "padding": int_or_pair("padding on each side (padded cells never win)", minimum=0,
                           default=0),
})
def lower_maxpool2d(ctx: LayerCtx, inputs: list[Value]) -> Value:
    return _lower_pool2d(ctx, inputs, "max_pool2d")


@layer("avgpool2d", "mean over each window of a [C, H, W] image", {
    "kernel": int_or_pair("window size: an int or [height, width]", required=True),
    "stride": int_or_pair("stride (default: the window size)"),
    "padding": int_or_pair("zero padding on each side", minimum=0, default=0),
    "count_include_pad": boolean("divide by the full window size, padding included",
                                 default=True),
})
def lower_avgpool2d(ctx: LayerCtx, inputs: list[Value]) -> Value:
    return _lower_pool2d(ctx, inputs, "avg_pool2d")


@layer("global_avgpool2d", "mean over H and W: [C, H, W] -> [C]")
def lower_global_avgpool2d(ctx: LayerCtx, inputs: list[Value]) -> Value:
    check_image_input(ctx, ctx.g.type_of(inputs[0]))
    return ctx.g.op("global_avg_pool2d", inputs[0])
