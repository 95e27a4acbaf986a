"""Normalisation layers: batchnorm and layer_norm.

Each layer is defined once here: its keys (types, defaults, descriptions) and its lowering.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphdl.layers.catalog import fmt_shape, layer
from graphdl.layers.schema import boolean, number
from graphdl.ops.norm import build_batch_norm, build_layer_norm

if TYPE_CHECKING:
    from graphdl.ir.graph import Value
    from graphdl.layers.lower import LayerCtx


@layer("batchnorm", "batch normalisation over the channel axis ([C] features or [C, H, W] "
       "images): batch statistics in training, running statistics in evaluation (and when "
       "frozen)", {
    "momentum": number("weight of the new batch statistic in the running average (PyTorch "
                       "convention)", minimum=0, maximum=1, default=0.1),
    "eps": number("added to the variance", exclusive_minimum=0, default=1e-5),
})
def lower_batchnorm(ctx: LayerCtx, inputs: list[Value]) -> Value:
    t = ctx.g.type_of(inputs[0])
    if t.rank not in (2, 4):
        raise ctx.shape_error(f"batchnorm expects [C] features or [C, H, W] images, got "
                              f"{fmt_shape(t)}")
    c = t.shape[1]
    gamma = ctx.param("gamma", (c,), "ones", fan_in=c, fan_out=c, weight=False)
    beta = ctx.param("beta", (c,), "zeros", fan_in=c, fan_out=c, weight=False)
    mean = ctx.state("running_mean", (c,), init="zeros")
    var = ctx.state("running_var", (c,), init="ones")
    # a frozen batch norm keeps using its running statistics, as in evaluation
    return build_batch_norm(ctx.g, inputs[0], gamma, beta, mean, var,
                            training=ctx.training and not ctx.frozen,
                            momentum=float(ctx.arg("momentum")), eps=float(ctx.arg("eps")))


@layer("layer_norm", "layer normalisation over the last axis, as torch.nn.LayerNorm: each "
       "sample's [features], or each step's features of a [T, features] sequence; the same "
       "in training and evaluation", {
    "eps": number("added to the variance", exclusive_minimum=0, default=1e-5),
    "affine": boolean("learn a per-feature scale `weight` (starting at 1) and shift `bias` "
                      "(starting at 0), as torch's elementwise_affine", default=True),
})
def lower_layer_norm(ctx: LayerCtx, inputs: list[Value]) -> Value:
    t = ctx.g.type_of(inputs[0])
    if t.rank not in (2, 3):
        raise ctx.shape_error(f"layer_norm expects [features] or a sequence [T, features], got "
                              f"{fmt_shape(t)}", help="flatten images first: layer_norm "
                              "normalises the last axis")
    f = t.shape[-1]
    gamma = beta = None
    if ctx.arg("affine"):
        # torch.nn.LayerNorm's names, so its state_dict loads as is
        gamma = ctx.param("weight", (f,), "ones", fan_in=f, fan_out=f, weight=False)
        beta = ctx.param("bias", (f,), "zeros", fan_in=f, fan_out=f, weight=False)
    return build_layer_norm(ctx.g, inputs[0], gamma, beta, eps=float(ctx.arg("eps")))
