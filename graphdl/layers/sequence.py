"""Sequence layers: embedding (int64 token ids [T] -> vectors [T, dim]).

Each layer is defined once here: its keys (types, defaults, descriptions) and its lowering.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphdl.layers.catalog import fmt_shape, layer
from graphdl.layers.schema import enum, integer

if TYPE_CHECKING:
    from graphdl.ir.graph import Value
    from graphdl.layers.lower import LayerCtx


@layer("embedding", "a learned vector per token id, as torch.nn.Embedding: int64 ids [T] "
       "-> [T, dim] (an id outside [0, vocab) gives a NaN row)", {
    "vocab": integer("number of token ids (rows of the table)", minimum=1, required=True),
    "dim": integer("length of each id's vector", minimum=1, required=True),
    "padding_idx": integer("an id whose row starts at zero and never gets a gradient "
                           "(e.g. the padding token), as in PyTorch", minimum=0),
    "init": enum("table initializer: normal is N(0, 1), as PyTorch", ["normal", "glorot_uniform"],
                 default="normal"),
})
def lower_embedding(ctx: LayerCtx, inputs: list[Value]) -> Value:
    g, ids = ctx.g, inputs[0]
    t = g.type_of(ids)
    if t.dtype != "int64":
        raise ctx.shape_error(f"embedding expects int64 token ids, got {t.dtype} {fmt_shape(t)}",
                              help="declare the model input with `dtype: int64`")
    vocab, dim = int(ctx.arg("vocab")), int(ctx.arg("dim"))
    pad = ctx.arg("padding_idx")
    if pad is not None and not 0 <= pad < vocab:
        raise ctx.shape_error(f"embedding padding_idx {pad} is outside [0, {vocab})",
                              help=f"give an id below vocab ({vocab})")
    pad = -1 if pad is None else int(pad)
    weight = ctx.param("weight", (vocab, dim), ctx.arg("init"), fan_in=vocab, fan_out=dim,
                       weight=True, zero_row=pad)
    return g.op("embedding", ids, weight, padding_idx=pad)
