"""Source nodes: graph inputs, parameters, optimiser state and constants.

They carry their type on the node (set when built), so `infer` returns it unchanged.
"""

from __future__ import annotations

import numpy as np

from graphdl.ops.registry import OpDef, Pattern, register


def _no_infer(attrs, types):
    raise TypeError("source nodes are typed when they are built")


for _name in ("input", "param", "state"):
    register(
        OpDef(
            name=_name,
            inputs=(),
            infer=_no_infer,
            reference=lambda attrs: None,
            pattern=Pattern.OPAQUE,
            no_grad_reason="a source: the autodiff driver stops here",
            doc=f"a graph {_name}, fed by the runtime",
        )
    )

register(
    OpDef(
        name="const",
        inputs=(),
        infer=_no_infer,
        reference=lambda attrs: np.asarray(attrs["value"]),
        pattern=Pattern.OPAQUE,
        no_grad_reason="a constant",
        doc="a constant tensor (passed to kernels as an argument, never baked into source)",
    )
)
