"""Lowering: a validated Spec -> a forward Graph of primitive ops with parameters.

Each spec layer type's `LayerDef` (graphdl.layers.catalog) has the builder that adds its
primitive ops, under the layer's provenance (name and YAML line); shapes are inferred as
ops are added, so a bad shape is a located E301 here. ``mode`` decides what the graph is
for:

- ``train``: forward in training mode (dropout on), the loss (plus L1/L2 penalties) and
  metrics as outputs; the autodiff pass later adds the backward and update parts;
- ``eval``: forward in inference mode, loss and metrics;
- ``predict``: forward in inference mode, the model outputs only.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from graphdl.errors import Diagnostic, GraphdlError
from graphdl.ir.graph import Graph, Provenance, Value
from graphdl.ir.types import TensorType
from graphdl.layers.augment import augment_inputs, build_augment
from graphdl.layers.catalog import LAYERS, LayerDef, fmt_shape
from graphdl.layers.schema import MISSING
from graphdl.ops.registry import ShapeError


@dataclass
class LayerCtx:
    """What a layer's builder gets: the graph, the layer and how to read its keys."""

    g: Graph
    spec: object
    layer: object  # LayerSpec
    definition: LayerDef
    training: bool
    step_seed: Value | None
    salt: int

    frozen: bool = False  # train.freeze / trainable: false

    def arg(self, key: str):
        """The layer's value for ``key``, else the key's declared default (None if it has
        none): builders never write a default of their own."""
        value = self.layer.params.get(key)
        if value is None:
            default = self.definition.default(key)
            value = None if default is MISSING else default
        return value

    def shape_error(self, message: str, help: str | None = None) -> ShapeError:
        """The error a builder raises for a bad input shape (it becomes a located E301)."""
        return ShapeError(message, help=help)

    def param(self, suffix: str, shape: tuple, init: str, *, fan_in: int, fan_out: int, weight: bool):
        layer = self.layer
        reg = layer.regularizer
        return self.g.param(
            f"{layer.name}.{suffix}",
            TensorType(tuple(shape), "float32"),
            init=init,
            fan_in=fan_in,
            fan_out=fan_out,
            weight=weight,  # L1/L2 penalties apply to weights only, not biases
            trainable=bool(layer.trainable) and not self.frozen,
            lr_mult=float(layer.lr_mult),
            layer_regularizer=dict(reg) if reg else None,
        )

    def state(self, suffix: str, shape: tuple, init: str) -> Value:
        """A float32 state tensor of the layer (e.g. batch norm's running statistics)."""
        return self.g.state(f"{self.layer.name}.{suffix}", TensorType(tuple(shape), "float32"),
                            init=init)


def frozen_layers(spec) -> set[str]:
    """Layers whose weights stay fixed: `trainable: false` or matched by `train.freeze`."""
    names = [layer.name for layer in spec.model.layers]
    frozen = {layer.name for layer in spec.model.layers if not layer.trainable}
    for glob in spec.train["freeze"] or []:
        frozen.update(fnmatch.filter(names, glob))
    return frozen


def lower(spec, mode: str = "train") -> Graph:
    """Build the graph for ``mode`` in {"train", "eval", "predict"} from a resolved spec."""
    g = Graph()
    training = mode == "train"
    values: dict[str, Value] = {}
    for name, inp in spec.model.inputs.items():
        g.provenance = Provenance(layer=f"inputs.{name}", line=inp.loc.line)
        values[name] = g.input(name, TensorType(("N",) + tuple(inp.shape), inp.dtype))
    seed = None
    augment = spec.data["augment"]
    if training and (augment or any(lay.type == "dropout" for lay in spec.model.layers)):
        # one seed per training step feeds every random op (dropout, augmentation)
        g.provenance = Provenance()
        seed = g.input("step_seed", TensorType((), "int64"))
    if training and augment:
        loc = spec.loc("data", "augment")
        names = augment_inputs(spec)
        if not names:
            raise GraphdlError(Diagnostic("E304", "data.augment needs a float model input",
                                          file=loc.file, line=loc.line, col=loc.col),
                               phase="shapes")
        g.provenance = Provenance(layer="augment", line=loc.line)
        for name in names:
            try:
                values[name] = build_augment(g, values[name], augment, seed)
            except ShapeError as e:
                raise GraphdlError(Diagnostic("E304", f"data.augment on '{name}': {e}",
                                              file=loc.file, line=loc.line, col=loc.col,
                                              help=e.help), phase="shapes") from None
    frozen = frozen_layers(spec)
    errors: list[Diagnostic] = []
    for i, layer in enumerate(spec.model.layers):
        g.provenance = Provenance(layer=layer.name, line=layer.loc.line)
        try:
            inputs = [values[n] for n in layer.inputs]
            definition = LAYERS.get(layer.type)
            if definition is None or definition.build is None:
                raise ShapeError(f"layer type {layer.type!r} has no lowering")
            ctx = LayerCtx(g, spec, layer, definition, training, seed, salt=i + 1,
                           frozen=layer.name in frozen)
            values[layer.name] = definition.build(ctx, inputs)
            g.meta.setdefault("layer_outputs", {})[layer.name] = list(values[layer.name])
        except ShapeError as e:
            errors.append(_shape_diag(spec, layer, e))
            break
    if errors:
        raise GraphdlError(errors, phase="shapes")
    outputs = [values[n] for n in spec.model.outputs]
    g.provenance = Provenance(layer="loss", phase="forward")
    if mode == "predict":
        for n, v in zip(spec.model.outputs, outputs):
            g.outputs[n] = v
    else:
        _add_loss_and_metrics(g, spec, outputs[0], training)
    g.meta.update(
        {
            "spec": spec.name,
            "mode": mode,
            "model_outputs": list(spec.model.outputs),
        }
    )
    if training:
        # the resolved optimizer, every default filled: autodiff has no defaults of its own
        g.meta["optimizer"] = dict(spec.train["optimizer"])
        g.meta["gradient_clip"] = spec.train["gradient_clip"]
    return g


def _add_loss_and_metrics(g: Graph, spec, y: Value, training: bool) -> None:
    train = spec.train
    loss_cfg = train["loss"]
    target = train["target"]
    ltype = loss_cfg["type"]
    yt = g.type_of(y)
    line = spec.loc("train", "loss").line
    g.provenance = Provenance(layer="loss", line=line)
    if ltype == "cross_entropy":
        labels = g.input(target, TensorType(("N",), "int64"))
        if yt.rank != 2:
            raise GraphdlError(
                Diagnostic(
                    "E302",
                    f"cross_entropy needs the model output to be [classes] logits, got {fmt_shape(yt)}",
                    file=spec.path,
                    line=line,
                    col=spec.loc("train", "loss").col,
                    help="end the model with a dense layer whose units is the number of classes",
                ),
                phase="shapes",
            )
        ignore = loss_cfg.get("ignore_index")
        loss = g.op(
            "softmax_cross_entropy",
            y,
            labels,
            label_smoothing=float(loss_cfg["label_smoothing"]),
            ignore_index=int(ignore) if ignore is not None else -100,
        )
        correct_node = g.apply("count_correct", [y, labels], {"ignore_index": int(ignore) if ignore is not None else -100})
        g.outputs["correct"] = Value(correct_node, 0)
        g.outputs["count"] = Value(correct_node, 1)
    else:
        tgt = g.input(target, yt.with_dtype("float32"))
        op = "mse" if ltype == "mse" else "bce_with_logits"
        loss = g.op(op, y, tgt)
    g.outputs["data_loss"] = loss
    if training:
        loss = _add_penalties(g, spec, loss)
    g.outputs["loss"] = loss


def _add_penalties(g: Graph, spec, loss: Value) -> Value:
    """L1/L2 loss penalties on weights (not biases); a layer's own regularizer wins."""
    reg = spec.train["regularization"]
    g.provenance = Provenance(layer="regularization", line=spec.loc("train", "regularization").line)
    for name, nid in sorted(g.named("param").items()):
        attrs = g.attrs(nid)
        if not attrs.get("weight") or not attrs.get("trainable", True):
            continue
        penalty = attrs.get("layer_regularizer") or reg  # both filled with their defaults
        l1, l2 = float(penalty["l1"]), float(penalty["l2"])
        w = Value(nid)
        if l2:
            loss = g.op("add", loss, g.op("mul_scalar", g.op("sum", g.op("square", w)), c=l2))
        if l1:
            # |w| as max(w, -w): its gradient is sign(w), from the maximum rule
            absw = g.op("maximum", w, g.op("neg", w))
            loss = g.op("add", loss, g.op("mul_scalar", g.op("sum", absw), c=l1))
    return loss


def _shape_diag(spec, layer, e: ShapeError) -> Diagnostic:
    return Diagnostic(
        "E301",
        f"{layer.type} layer '{layer.name}': {e}",
        file=spec.path,
        line=layer.loc.line,
        col=layer.loc.col,
        path=layer.yaml_path,
        help=e.help,
    )
