"""The `fused` op: a kernel made by the fuse pass from a group of member ops.

Its reference runs the members' references in order, so a fused graph runs in the
reference interpreter exactly like the graph before fusion.
"""

from __future__ import annotations

import numpy as np

from graphdl.ir.types import TensorType
from graphdl.ops.registry import Attr, OpDef, Pattern, get_op, register


def run_members(members: list[dict], inputs: list[np.ndarray], bindings: dict | None = None):
    """Evaluate a fused node's members with their references (the fused op's reference)."""
    vals: list[np.ndarray] = []
    for m in members:
        args = [inputs[r[1]] if r[0] == "input" else vals[r[1]] for r in m["inputs"]]
        opdef = get_op(m["op"])
        if opdef.takes_bindings:
            out = opdef.reference(m["attrs"], *args, bindings=bindings or {})
        else:
            out = opdef.reference(m["attrs"], *args)
        vals.append(np.asarray(out))
    return vals[-1]


def _infer_fused(attrs, types):
    return [TensorType.from_json(attrs["members"][-1]["type"])]


def _ref_fused(attrs, *inputs, bindings=None):
    return run_members(attrs["members"], list(inputs), bindings)


register(
    OpDef(
        name="fused",
        inputs=("xs",),
        variadic=True,
        infer=_infer_fused,
        reference=_ref_fused,
        pattern=Pattern.OPAQUE,
        attrs={"kind": Attr(str), "members": Attr(list)},
        no_grad_reason="fusion runs after autodiff",
        doc="a fused kernel: its members run as one generated loop (plus an epilogue head)",
    )
)
