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

import numpy as np

from graphdl.errors import Diagnostic, GraphdlError, warn
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
    values: dict | None = None  # the model's inputs and the outputs of the layers so far

    def model_input(self, name: str, key: str) -> Value:
        """The model input ``name`` that the layer's key ``key`` names."""
        values = self.values or {}
        if name not in self.spec.model.inputs or name not in values:
            known = ", ".join(sorted(self.spec.model.inputs)) or "none"
            raise self.shape_error(f"{key}: '{name}' is not a model input (the model's inputs: "
                                   f"{known})", help=f"declare it under model.inputs, e.g. "
                                   f"'{name}: {{shape: [], dtype: int64}}'")
        return values[name]

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

    def param(self, suffix: str, shape: tuple, init: str, *, fan_in: int, fan_out: int, weight: bool,
              zero_row: int = -1):
        """A float32 parameter of the layer; ``zero_row`` >= 0 names a row that starts at
        zero whatever ``init`` draws (embedding's padding_idx, as PyTorch)."""
        layer = self.layer
        extra = {"zero_row": zero_row} if zero_row >= 0 else {}
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
            **extra,
        )

    def state(self, suffix: str, shape: tuple, init: str) -> Value:
        """A float32 state tensor of the layer (e.g. batch norm's running statistics)."""
        return self.g.state(f"{self.layer.name}.{suffix}", TensorType(tuple(shape), "float32"),
                            init=init)


def _draws(layer) -> bool:
    """Whether the layer draws random numbers in training (dropout; dropout between the
    layers of a stacked recurrent layer)."""
    if layer.type == "dropout":
        return True
    return bool(layer.params.get("dropout")) and (layer.params.get("num_layers") or 1) > 1


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
    if training and (augment or any(_draws(lay) for lay in spec.model.layers)):
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
                           frozen=layer.name in frozen, values=values)
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
                    f"cross_entropy needs the model output to be [classes] logits, got {fmt_shape(yt)}"
                    + (f" (a dense layer applies at every step of a [{yt.shape[1]}, ...] "
                       "input: one set of logits per step)" if yt.rank == 3 else ""),
                    file=spec.path,
                    line=line,
                    col=spec.loc("train", "loss").col,
                    help=("give the model one vector per sample before its last dense layer: "
                          "'- {type: flatten}', '- {type: seq_pool, mode: mean}' or a "
                          "recurrent layer with 'output: last'") if yt.rank == 3 else
                    "end the model with a dense layer whose units is the number of classes",
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
        if "accuracy" in train["metrics"]:
            correct_node = g.apply("count_correct", [y, labels],
                                   {"ignore_index": int(ignore) if ignore is not None else -100})
            g.outputs["correct"] = Value(correct_node, 0)
            g.outputs["count"] = Value(correct_node, 1)
    else:
        # the target has the output's type, but [N] for a one-unit output (one value per
        # sample, as every source gives it); the data's target is made this type before
        # training (`loss_target`), and every feed is checked by the program
        if yt.shape[1:] == (1,):
            tgt = g.op("reshape", g.input(target, TensorType(yt.shape[:1], "float32")),
                       shape=yt.shape)
        else:
            tgt = g.input(target, yt.with_dtype("float32"))
        op = "mse" if ltype == "mse" else "bce_with_logits"
        loss = g.op(op, y, tgt)
        if ltype == "bce_with_logits" and "accuracy" in train["metrics"]:
            # the share of output units whose decision (logit > 0) is the target's (> 0.5)
            hit = g.op("eq", g.op("gt", y, g.const(0.0)), g.op("gt", tgt, g.const(0.5)))
            g.outputs["accuracy"] = g.op("mean", g.op("cast", hit, dtype="float32"))
    if training:
        _warn_activation_before_loss(g, spec, y, ltype)
    g.outputs["data_loss"] = loss
    if not training:
        # every metric of a whole split is computed from these (graphdl.runtime.metrics)
        g.outputs["model_output"] = y
    if training:
        loss = _add_penalties(g, spec, loss)
    g.outputs["loss"] = loss


# the activation each loss applies to the model output itself
_LOSS_ACTIVATION = {"cross_entropy": "softmax", "bce_with_logits": "sigmoid"}


def _warn_activation_before_loss(g: Graph, spec, y: Value, ltype: str) -> None:
    """W301 when the model output is already softmax (sigmoid) and the loss applies it
    again: it trains, but on squashed logits (slower, worse); only for the train graph, so
    one compile warns once."""
    applied = _LOSS_ACTIVATION.get(ltype)
    node = g.node(y.node)
    if applied is None or node["op"] != applied:
        return
    layer = next((lay for lay in spec.model.layers if lay.name == node["layer"]), None)
    where = ({"line": layer.loc.line, "col": layer.loc.col, "path": layer.yaml_path}
             if layer is not None else {"line": spec.loc("train", "loss").line})
    warn(Diagnostic(
        "W301",
        f"the model output ('{node['layer']}') is already {applied}, and {ltype} applies "
        f"{applied} itself: it would train on {applied}({applied}(x))",
        file=spec.path,
        help=f"remove the {applied} activation: {ltype} takes logits (apply {applied} to the "
        "output yourself when you need probabilities)",
        **where,
    ))


def loss_target(spec, graph: Graph, y: np.ndarray, split: str) -> np.ndarray:
    """The target array ``y`` of data split ``split`` as the loss of the lowered ``graph``
    takes it (its target input's type), or a located error:

    - E305 at ``train.loss`` when its type cannot feed the loss: cross_entropy takes one
      integer class index per sample; mse and bce_with_logits a number per output element
      (integers are made float32; a one-unit output takes [N] or [N, 1], made [N]);
    - E509 for a class label outside the model output's classes (its last dim, whatever
      layer makes it), at the output layer; or a bce target outside [0, 1], at train.loss.
    """
    train = spec.train
    loss_cfg, target = train["loss"], train["target"]
    ltype = loss_cfg["type"]
    want = graph.type_of(Value(graph.find("input", target)))
    out = graph.type_of(graph.inputs_of(graph.outputs["data_loss"].node)[0])
    data = TensorType(("N",) + y.shape[1:], str(y.dtype))
    sample, declared = tuple(data.shape[1:]), tuple(out.shape[1:])
    is_int = y.dtype.kind in "iub"
    what = f"the model output is {out}, the target '{target}' is {data}"
    loc = spec.loc("train", "loss")
    at_loss = {"file": spec.path, "line": loc.line, "col": loc.col, "path": "train.loss"}
    if ltype == "cross_entropy":
        if not (is_int and not sample):
            raise GraphdlError(Diagnostic(
                "E305", f"cross_entropy takes one integer class index per sample: {what}",
                help=f"make '{target}' integer class labels (0..{out.shape[-1] - 1}), or use "
                "mse for real-valued targets", **at_loss), phase="shapes")
        _check_class_labels(spec, y, int(out.shape[-1]), loss_cfg.get("ignore_index"), split)
    else:
        fits = sample == declared or (not sample and declared == (1,))  # [N] for [N, 1]
        if not (fits and (is_int or y.dtype.kind == "f")):
            if ltype == "bce_with_logits":
                message = f"bce_with_logits needs one output unit per binary target: {what}"
                units = int(np.prod(sample)) if sample else 1
                help_ = (f"end the model with {units} unit{'s' if units > 1 else ''} (one "
                         "logit per binary target), or use cross_entropy for integer class "
                         "labels")
            else:
                message = f"mse compares the model output with the target element by element: {what}"
                shape = list(sample) or [1]
                help_ = (f"use cross_entropy for integer class labels (the output's "
                         f"{out.shape[-1]} units are the classes), or end the model with "
                         f"{shape} outputs per sample to regress on the labels"
                         if is_int and not sample and out.shape[-1] != 1 else
                         f"end the model with {shape} outputs per sample, the target's shape")
            raise GraphdlError(Diagnostic("E305", message, help=help_, **at_loss),
                               phase="shapes")
        if ltype == "bce_with_logits" and y.size and (y.min() < 0 or y.max() > 1):
            bad = y.min() if y.min() < 0 else y.max()
            raise GraphdlError(Diagnostic(
                "E509", f"target {bad:g} in the {split} split is out of range for "
                f"bce_with_logits, whose targets lie between 0 and 1 ('{target}' is {data})",
                help="use 0/1 labels (or probabilities), or cross_entropy for class labels",
                **at_loss), phase="data")
    return np.ascontiguousarray(y.reshape((len(y),) + tuple(want.shape[1:])), dtype=want.dtype)


def _check_class_labels(spec, y: np.ndarray, classes: int, ignore, split: str) -> None:
    """E509 at the output layer for a label outside 0..classes-1 (``ignore`` is allowed)."""
    valid = y[y != ignore] if ignore is not None else y
    if not valid.size or (valid.min() >= 0 and valid.max() < classes):
        return
    bad = int(valid.max() if valid.max() >= classes else valid.min())
    out = spec.model.outputs[0]
    last = next((lay for lay in spec.model.layers if lay.name == out), spec.model.layers[-1])
    sized = next((lay.name for lay in reversed(spec.model.layers)
                  if lay.params.get("units") is not None), None)
    need = int(valid.max()) + 1
    fix = f"set units of '{sized}' to at least {need}" if sized else f"make the model output {need} classes"
    raise GraphdlError(Diagnostic(
        "E509",
        f"label {bad} in the {split} split is out of range for the loss: the model output "
        f"('{last.name}') has {classes} classes (0..{classes - 1})",
        file=spec.path, line=last.loc.line, col=last.loc.col, path=last.yaml_path,
        help=f"{fix}, or fix the labels"), phase="data")


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
