"""autodiff: reverse-mode differentiation as a graph transform, then the optimiser's updates.

From ``outputs["loss"]`` it walks the forward graph in reverse topological order and asks
each op's `grad` rule to add the nodes computing its inputs' gradients. The driver (not
the rules) sums fan-out and un-broadcasts. Only trainable parameters get gradient nodes:
a frozen layer adds nothing to the backward graph. Then it adds gradient clipping by
global norm and one update op per parameter, so one graph is the whole training step.
"""

from __future__ import annotations

import networkx as nx

from graphdl.ir.graph import Graph, Provenance, Value
from graphdl.ir.types import TensorType
from graphdl.ops.registry import get_op
from graphdl.passes.scan_autodiff import scan_gradient
from graphdl.spec.schema_gen import OPTIMIZER, optimizer_settings


def unbroadcast(g: Graph, grad: Value, target: TensorType) -> Value:
    """Sum a gradient over the axes that broadcasting added, back to ``target``'s shape."""
    gt = g.type_of(grad)
    if gt.shape == target.shape:
        return grad
    lead = gt.rank - target.rank
    axes = list(range(lead))
    for i, d in enumerate(target.shape):
        if d == 1 and gt.shape[lead + i] != 1:
            axes.append(lead + i)
    if axes:
        grad = g.op("sum", grad, axes=tuple(axes), keepdims=False)
    if g.type_of(grad).shape != target.shape:
        grad = g.op("reshape", grad, shape=target.shape)
    return grad


def _sum_all(g: Graph, vals: list[Value]) -> Value:
    total = vals[0]
    for v in vals[1:]:
        total = g.op("add", total, v)
    return total


def trainable_params(g: Graph) -> list[int]:
    return sorted(
        nid for nid in g.nodes_by_op("param") if g.attrs(nid).get("trainable", True)
    )


def build_gradients(g: Graph, loss: Value, wrt: list[int]) -> dict[int, Value]:
    """Add backward nodes for d(loss)/d(param) for each param node in ``wrt``."""
    g.provenance = Provenance(layer="loss", phase="backward")
    return backprop(g, {loss: g.const(1.0, g.type_of(loss).dtype)}, wrt)


def backprop(g: Graph, seeds: dict[Value, Value], wrt: list[int]) -> dict[int, Value]:
    """Reverse-mode accumulation from ``seeds`` (value -> the gradient flowing into it) to
    the source nodes ``wrt``: adds the backward nodes, returns node id -> its gradient (a
    node no seed depends on has none). A scan is differentiated into a reverse scan
    (`graphdl.passes.scan_autodiff`)."""
    targets = set(wrt)
    needs = set()  # nodes that depend on a target and feed a seed
    ancestors = set()
    for v in seeds:
        ancestors |= nx.ancestors(g.nx, v.node) | {v.node}
    for t in targets:
        if t in ancestors:
            needs |= (nx.descendants(g.nx, t) | {t}) & ancestors
    forward_order = [n for n in g.topo_order() if n in needs]
    grads: dict[Value, list[Value]] = {v: [s] for v, s in seeds.items()}
    for nid in reversed(forward_order):
        nd = g.node(nid)
        if nd["op"] in ("param", "input", "state", "const"):
            continue
        outs = [Value(nid, i) for i in range(g.num_outputs(nid))]
        gouts = [_sum_all(g, grads[o]) if grads.get(o) else None for o in outs]
        if all(x is None for x in gouts):
            continue
        opdef = get_op(nd["op"])
        ins = g.inputs_of(nid)
        wanted = [v.node in needs for v in ins]
        g.provenance = Provenance(layer=nd["layer"], line=nd["line"], phase="backward")
        if opdef.body:
            in_grads = scan_gradient(g, nid, gouts, wanted, backprop)
        elif opdef.grad is None:
            raise ValueError(f"op {nd['op']} has no gradient ({opdef.no_grad_reason}) "
                             f"but {g.describe(nid)} lies between a parameter and the loss")
        else:
            in_grads = opdef.grad(g, nd["attrs"], ins, outs, gouts)
        for v, gv, want in zip(ins, in_grads, wanted):
            if gv is None or not want:
                continue
            grads.setdefault(v, []).append(unbroadcast(g, gv, g.type_of(v)))
    result = {}
    for t in wrt:
        gl = grads.get(Value(t))
        if gl:
            g.provenance = Provenance(layer=g.node(t)["layer"], phase="backward")
            result[t] = _sum_all(g, gl)
    return result


def _clip(g: Graph, grads: dict[int, Value], max_norm: float) -> dict[int, Value]:
    g.provenance = Provenance(layer="gradient_clip", phase="update")
    total = None
    for v in grads.values():
        sq = g.op("sum", g.op("square", v))
        total = sq if total is None else g.op("add", total, sq)
    norm = g.op("sqrt", total)
    limit = g.const(max_norm, g.type_of(total).dtype)
    coef = g.op("div", limit, g.op("maximum", norm, limit))  # min(1, max_norm / norm)
    g.outputs["grad_norm"] = norm
    return {k: g.op("mul", v, coef) for k, v in grads.items()}


def autodiff(graph: Graph) -> Graph:
    """Add the backward graph from outputs['loss'] and the optimiser's update ops."""
    g = graph.copy()
    if "loss" not in g.outputs:
        raise ValueError("autodiff needs a graph with a 'loss' output")
    wrt = trainable_params(g)
    grads = build_gradients(g, g.outputs["loss"], wrt)
    if "data_loss" in g.outputs and g.outputs["loss"] != g.outputs["data_loss"]:
        # the loss is the data loss plus L1/L2 penalties: the step returns the data loss
        # alone, so the penalties' values (a pass over every weight) are not computed in
        # every step; their gradients do not read them. The trainer reports the penalty
        # once per epoch (`graphdl.layers.lower.penalty_graph`).
        del g.outputs["loss"]
    clip = g.meta.get("gradient_clip")
    if clip and grads:
        grads = _clip(g, grads, float(clip["max_norm"]))
    optimizer = g.meta.get("optimizer")
    if not optimizer:
        # no default here: lowering passes the spec's train.optimizer, defaults filled
        raise ValueError("autodiff needs the optimizer in graph.meta['optimizer'] "
                         "(a train.optimizer mapping, e.g. {'type': 'sgd', 'lr': 0.1})")
    _add_updates(g, grads, optimizer)
    return g


def _add_updates(g: Graph, grads: dict[int, Value], opt: dict) -> None:
    g.provenance = Provenance(layer="optimizer", phase="update")
    lr = g.input("lr", TensorType((), "float32"))
    kind = opt.get("type")
    if kind not in OPTIMIZER.variants:
        raise ValueError(f"unknown optimizer {kind!r}")
    opt = optimizer_settings(opt)  # the spec's defaults for the keys a caller left out
    wd = float(opt["weight_decay"])
    op, state_names, attrs, takes_step = _update_rule(kind, opt)
    step = None
    if takes_step:  # the step count, shared by every parameter's update
        step_state = g.state("opt.step", TensorType((), "float32"), init="zeros")
        step = g.op("add_scalar", step_state, c=1.0)
        g.updates[step_state.node] = step
    for pid, grad in sorted(grads.items()):
        pnode = g.node(pid)
        name = pnode["name"]
        t = g.type_of(Value(pid))
        g.provenance = Provenance(layer=pnode["layer"], line=pnode["line"], phase="update")
        common = {"weight_decay": wd, "lr_mult": float(pnode["attrs"].get("lr_mult", 1.0))}
        states = [g.state(f"opt.{s}.{name}", t, init="zeros") for s in state_names]
        ins = [Value(pid), grad, *states, lr] + ([step] if takes_step else [])
        nid = g.apply(op, ins, {**attrs, **common})
        g.updates[pid] = Value(nid, 0)
        for k, st in enumerate(states, start=1):
            g.updates[st.node] = Value(nid, k)


def _update_rule(kind: str, opt: dict) -> tuple[str, tuple[str, ...], dict, bool]:
    """The update op of optimiser ``kind``: (op name, its optimiser state tensors in input
    order (each also an output, after the parameter), its attributes, whether it takes the
    step count)."""
    if kind == "sgd":
        return "sgd_update", (), {}, False
    if kind == "momentum":
        return "momentum_update", ("velocity",), {
            "momentum": float(opt["momentum"]), "nesterov": bool(opt["nesterov"])}, False
    if kind in ("adam", "adamw"):
        b1, b2 = opt["betas"]
        return "adam_update", ("m", "v"), {
            "beta1": float(b1), "beta2": float(b2), "eps": float(opt["eps"]),
            "decoupled": kind == "adamw"}, True
    if kind == "rmsprop":
        return "rmsprop_update", ("square_avg",), {
            "alpha": float(opt["alpha"]), "eps": float(opt["eps"])}, False
    return "adagrad_update", ("sum",), {
        "lr_decay": float(opt["lr_decay"]), "eps": float(opt["eps"]),
        "initial_accumulator_value": float(opt["initial_accumulator_value"])}, True
