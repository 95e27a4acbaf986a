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
from dataclasses import dataclass, replace

import numpy as np

from graphdl.errors import Diagnostic, GraphdlError, warn
from graphdl.ir.graph import Graph, Provenance, Value
from graphdl.ir.types import TensorType
from graphdl.layers.augment import augment_inputs, build_augment
from graphdl.layers.catalog import LAYERS, LayerDef, fmt_shape
from graphdl.layers.decode import DecodePlan, decode_plan
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
    # sequence value -> its key mask [N, T] (1.0 real step, 0.0 padding): made by an
    # embedding with padding_idx, passed on by layers that keep [N, T], read by attention
    masks: dict | None = None
    decode: DecodeStep | None = None  # a decode_step program (graphdl.layers.decode)
    # the "attention" program: attention layers record their weights [N, heads, Tq, Tk]
    # here by layer name, with the values their queries and keys come from
    weights: dict | None = None

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
    layers of a stacked recurrent layer; attention's and positional_encoding's dropout)."""
    if layer.type == "dropout":
        return True
    if layer.type in ("rnn", "lstm", "gru"):
        return bool(layer.params.get("dropout")) and (layer.params.get("num_layers") or 1) > 1
    return bool(layer.params.get("dropout"))


def _pass_mask(g: Graph, masks: dict, inputs: list[Value], out: Value) -> None:
    """A layer's output [N, T, ...] keeps the key mask of its first input with the same
    [N, T] (a dense, dropout, layer_norm or residual add after an embedding)."""
    if out in masks:
        return
    ot = g.type_of(out)
    if ot.rank < 3:
        return
    for v in inputs:
        if v in masks and g.type_of(v).rank >= 3 and g.type_of(v).shape[:2] == ot.shape[:2]:
            masks[out] = masks[v]
            return


def frozen_layers(spec) -> set[str]:
    """Layers whose weights stay fixed: `trainable: false` or matched by `train.freeze`."""
    names = [layer.name for layer in spec.model.layers]
    frozen = {layer.name for layer in spec.model.layers if not layer.trainable}
    for glob in spec.train["freeze"] or []:
        frozen.update(fnmatch.filter(names, glob))
    return frozen


def lower(spec, mode: str = "train") -> Graph:
    """Build the graph for ``mode`` in {"train", "eval", "predict"} from a resolved spec, or
    one of the two decoding programs, "encode" and "decode_step" (graphdl.layers.decode)."""
    if mode in ("encode", "decode_step"):
        return _lower_decoding(spec, mode)
    if mode == "attention":
        return _lower_attention(spec)
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
    _lower_layers(g, spec, values, {}, training, seed)
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
    if training and spec.evaluate["decode"] != "none":
        # evaluate.decode: the model must decode (E306), found before it trains, not after
        _lower_decoding(spec, "decode_step")
    if training:
        # the resolved optimizer, every default filled: autodiff has no defaults of its own
        g.meta["optimizer"] = dict(spec.train["optimizer"])
        g.meta["gradient_clip"] = spec.train["gradient_clip"]
    return g


def _lower_layers(g: Graph, spec, values: dict, masks: dict, training: bool,
                  seed: Value | None, only: list[str] | None = None,
                  decode: DecodeStep | None = None, weights: dict | None = None) -> None:
    """Add the model's layers (those named in ``only``, if given) to ``g``: ``values`` holds
    the values by name (the model inputs at the start) and gets each layer's output."""
    frozen = frozen_layers(spec)
    keep = None if only is None else set(only)
    for i, layer in enumerate(spec.model.layers):
        if keep is not None and layer.name not in keep:
            continue
        g.provenance = Provenance(layer=layer.name, line=layer.loc.line)
        try:
            inputs = [values[n] for n in layer.inputs]
            definition = LAYERS.get(layer.type)
            if definition is None or definition.build is None:
                raise ShapeError(f"layer type {layer.type!r} has no lowering")
            ctx = LayerCtx(g, spec, layer, definition, training, seed, salt=i + 1,
                           frozen=layer.name in frozen, values=values, masks=masks,
                           decode=decode, weights=weights)
            values[layer.name] = definition.build(ctx, inputs)
            _pass_mask(g, masks, inputs, values[layer.name])
            g.meta.setdefault("layer_outputs", {})[layer.name] = list(values[layer.name])
        except ShapeError as e:
            raise GraphdlError([_shape_diag(spec, layer, e)], phase="shapes") from None


def _lower_attention(spec) -> Graph:
    """The predict program plus the weights of every attention layer, as outputs
    ``attention.<layer>`` [N, heads, Tq, Tk] (graphdl predict --attention draws them);
    ``meta["attention"]`` says, per layer, its kind and the model values its queries and
    keys are computed from."""
    g = Graph()
    values: dict[str, Value] = {}
    for name, inp in spec.model.inputs.items():
        g.provenance = Provenance(layer=f"inputs.{name}", line=inp.loc.line)
        values[name] = g.input(name, TensorType(("N",) + tuple(inp.shape), inp.dtype))
    weights: dict = {}
    _lower_layers(g, spec, values, {}, False, None, weights=weights)
    for n in spec.model.outputs:
        g.outputs[n] = values[n]
    info = {}
    for name, (w, kind) in weights.items():
        g.outputs[f"attention.{name}"] = w
        info[name] = {"kind": kind}
    g.meta.update({"spec": spec.name, "mode": "attention", "attention": info,
                   "model_outputs": list(spec.model.outputs)})
    return g


@dataclass
class DecodeStep:
    """What the layers of a ``decode_step`` program see: the plan, the token's position
    ``pos`` ([N] int64), and the ``encode`` program built beside it, with its values by
    name, their key masks, and, for each value of the decode_step program that is an
    encoder value (``memory.<layer>``) or a model input, the encode program's value."""

    plan: DecodePlan
    pos: Value
    encode: Graph
    enc_values: dict
    enc_masks: dict
    encoded: dict  # decode_step value -> the same value in the encode program

    def from_encoder(self, *values: Value) -> bool:
        """Whether ``values`` are all computed once per batch (the encoder's, model inputs)."""
        return all(v in self.encoded for v in values)

    def per_batch(self, ctx: LayerCtx, build, *values: Value) -> dict[str, Value]:
        """Values a decoder layer computes from encoder values alone (a cross-attention's
        projected keys), computed once per batch instead of once per token:
        ``build(ctx, *values)`` returns them by part name, built in the encode program as
        the same layer (its parameters have the same names, so every program shares them)
        from the encode program's ``values``; the encode program outputs them as
        ``memory_kv.<layer>.<part>``, and this program reads them as inputs of those names.
        A part that is None is left out."""
        enc, layer = self.encode, ctx.layer
        enc.provenance = Provenance(layer=layer.name, line=layer.loc.line)
        ectx = replace(ctx, g=enc, values=self.enc_values, masks=self.enc_masks, decode=None,
                       weights=None)
        parts = build(ectx, *(self.encoded[v] for v in values))
        out = {}
        for part, v in parts.items():
            if v is not None:
                name = f"memory_kv.{layer.name}.{part}"
                enc.outputs[name] = v
                out[part] = ctx.g.input(name, enc.type_of(v))
        return out


def _lower_decoding(spec, mode: str) -> Graph:
    """The ``encode`` or ``decode_step`` program of a sequence-to-sequence model
    (graphdl.layers.decode). Both are built together: lowering the decoder for one token
    moves what it computes from the encoder alone into the encode program
    (`DecodeStep.per_batch`), and the encode program outputs an encoder value
    (``memory.<layer>``, ``memory_mask.<layer>``) only where the decoder still reads it."""
    plan = decode_plan(spec)
    declared = spec.model.inputs
    enc = Graph()
    enc_values: dict[str, Value] = {}
    enc_masks: dict[Value, Value] = {}
    for name, inp in declared.items():
        if name != plan.input:
            enc.provenance = Provenance(layer=f"inputs.{name}", line=inp.loc.line)
            enc_values[name] = enc.input(name, TensorType(("N",) + tuple(inp.shape), inp.dtype))
    encoder = [lay.name for lay in spec.model.layers if lay.name not in plan.decoder]
    _lower_layers(enc, spec, enc_values, enc_masks, False, None, only=encoder)

    g = Graph()
    values: dict[str, Value] = {}
    masks: dict[Value, Value] = {}
    encoded: dict[Value, Value] = {}
    raw: dict[str, tuple[Value, Value]] = {}  # encode output -> (its input here, its value)
    for name in plan.inputs:
        inp = declared[name]
        g.provenance = Provenance(layer=f"inputs.{name}", line=inp.loc.line)
        values[name] = g.input(name, TensorType(("N",) + tuple(inp.shape), inp.dtype))
        encoded[values[name]] = enc_values[name]
    inp = declared[plan.input]
    g.provenance = Provenance(layer=f"inputs.{plan.input}", line=inp.loc.line)
    values[plan.input] = g.input(plan.input, TensorType(("N", 1), inp.dtype))
    pos = g.input("decode.pos", TensorType(("N",), "int64"))
    for name in plan.memory:
        g.provenance = Provenance(layer=name)
        memory = enc_values[name]
        values[name] = g.input(f"memory.{name}", enc.type_of(memory))
        encoded[values[name]] = memory
        raw[f"memory.{name}"] = (values[name], memory)
        if memory in enc_masks:
            mask = enc_masks[memory]
            masks[values[name]] = g.input(f"memory_mask.{name}", enc.type_of(mask))
            raw[f"memory_mask.{name}"] = (masks[values[name]], mask)
    step = DecodeStep(plan, pos, enc, enc_values, enc_masks, encoded)
    _lower_layers(g, spec, values, masks, False, None, only=plan.decoder, decode=step)
    for n in spec.model.outputs:
        g.outputs[n] = values[n]
    # the encoder values the decoder still reads as they are (not only through what the
    # encode program computes from them) are the encode program's first outputs
    projected = dict(enc.outputs)
    enc.outputs = {}
    for name, (here, there) in raw.items():
        if g.consumers(here):
            enc.outputs[name] = there
        else:
            g.remove_node(here.node)
    enc.outputs.update(projected)
    for name in plan.inputs:  # a model input read only through the encode program
        if not g.consumers(values[name]):
            g.remove_node(values[name].node)
    enc.meta.update({"spec": spec.name, "mode": "encode", "model_outputs": []})
    g.meta.update({"spec": spec.name, "mode": "decode_step", "decode_input": plan.input,
                   "model_outputs": list(spec.model.outputs)})
    return enc if mode == "encode" else g


def _add_loss_and_metrics(g: Graph, spec, y: Value, training: bool) -> None:
    train = spec.train
    loss_cfg = train["loss"]
    target = train["target"]
    ltype = loss_cfg["type"]
    yt = g.type_of(y)
    line = spec.loc("train", "loss").line
    g.provenance = Provenance(layer="loss", line=line)
    if ltype == "cross_entropy":
        if yt.rank != 2 and not classes_per_step(spec, yt):
            raise _logits_not_per_sample(spec, yt)
        # [N] labels for [N, classes] logits; [N, T] for [N, T, classes] (one per step)
        labels = _target_value(g, spec, target, TensorType(yt.shape[:-1], "int64"))
        ignore = loss_cfg.get("ignore_index")
        ignore = int(ignore) if ignore is not None else IGNORE_INDEX
        loss = g.op(
            "softmax_cross_entropy",
            y,
            labels,
            label_smoothing=float(loss_cfg["label_smoothing"]),
            ignore_index=ignore,
        )
        if "accuracy" in train["metrics"]:
            correct_node = g.apply("count_correct", [y, labels], {"ignore_index": ignore})
            g.outputs["correct"] = Value(correct_node, 0)
            g.outputs["count"] = Value(correct_node, 1)
    else:
        # the target has the output's type, less a last dim of 1 ([N] for a one-unit
        # output: one value per sample, as every source gives it; [N, T] for one value per
        # step); the data's target is made this type before training (`loss_target`), and
        # every feed is checked by the program
        if yt.rank >= 2 and yt.shape[-1] == 1:
            tgt = g.op("reshape", _target_value(g, spec, target,
                                                TensorType(yt.shape[:-1], "float32")),
                       shape=yt.shape)
        else:
            tgt = _target_value(g, spec, target, yt.with_dtype("float32"))
        op = "mse" if ltype == "mse" else "bce_with_logits"
        lengths = step_lengths(spec, yt)
        mask = None if lengths is None else _step_mask(g, lengths, tgt, yt)
        if mask is None:
            loss = g.op(op, y, tgt)
        elif ltype == "mse":
            loss = _masked_mean(g, g.op("square", g.op("sub", y, tgt)), mask, yt)
        else:  # bce on logits x: softplus(x) - x t, whose gradient is sigmoid(x) - t
            per = g.op("sub", g.op("softplus", y), g.op("mul", y, tgt))
            loss = _masked_mean(g, per, mask, yt)
        if ltype == "bce_with_logits" and "accuracy" in train["metrics"]:
            # the share of output units whose decision (logit > 0) is the target's (> 0.5)
            hit = g.op("cast", g.op("eq", g.op("gt", y, g.const(0.0)), g.op("gt", tgt, g.const(0.5))),
                       dtype="float32")
            g.outputs["accuracy"] = (g.op("mean", hit) if mask is None
                                     else _masked_mean(g, hit, mask, yt))
    if training:
        _warn_activation_before_loss(g, spec, y, ltype)
    g.outputs["data_loss"] = loss
    g.meta["loss_output"] = [y.node, y.index]  # what the loss reads (`loss_target`)
    if not training:
        # every metric of a whole split is computed from these (graphdl.runtime.metrics)
        g.outputs["model_output"] = y
    if training:
        loss = _add_penalties(g, spec, loss)
    g.outputs["loss"] = loss


def _target_value(g: Graph, spec, target: str, want: TensorType) -> Value:
    """The target as the loss reads it: a graph input of type ``want``, or the model input
    of that name when the target is one of the model's inputs too (a copy task's src)."""
    nid = g.named("input").get(target)
    if nid is None:
        return g.input(target, want)
    have = g.type_of(Value(nid))
    if have.shape != want.shape:
        loc = spec.loc("train", "target")
        raise GraphdlError(Diagnostic(
            "E304", f"train.target '{target}' is a model input of shape {fmt_shape(have)}, but "
            f"the loss on the model output needs {fmt_shape(want)}", file=loc.file,
            line=loc.line, col=loc.col), phase="shapes")
    v = Value(nid)
    return v if have.dtype == want.dtype else g.op("cast", v, dtype=want.dtype)


# ------------------------------------------------------------------ per-step targets
#
# A model output with a time axis ([N, T, ...]: a recurrent layer's `output: sequence` and
# a dense layer applied at every step) can be trained against one target per step. Lowering
# reads the spec, never the data, so what it knows is:
#
# - cross_entropy takes [N, T] int64 labels (one class per step) when the source can give
#   a per-step integer target (`classes_per_step`); the data side pads a ragged one with
#   train.loss.ignore_index, which the loss, the accuracy count and the metrics skip;
# - mse and bce_with_logits compare per element whatever the rank, and where the model has
#   the lengths input (data.source.lengths, default `lengths`) and the output's steps are a
#   sequence input's steps, average over the steps each sample has (`step_lengths`):
#   padding is neither learnt nor scored, as PyTorch users do with a mask of the lengths.

IGNORE_INDEX = -100  # cross_entropy's ignore_index when the spec gives none (as PyTorch)
LENGTHS = "lengths"  # the lengths field when data.source.lengths names none (graphdl.data)
SYNTHETIC_SCALAR_TASKS = ("adding",)  # synthetic tasks whose target is one value per sample


def classes_per_step(spec, yt: TensorType) -> bool:
    """Whether cross_entropy on a model output of type ``yt`` takes one class label per step
    ([N, T] int64 labels for [N, T, classes] logits; any leading dims) instead of one per
    sample. Only an output with a time axis can, and only from a source that can give an
    integer target with steps: an npz file (when its `sequences` key is given, a field it
    lists, i.e. a ragged one), or a synthetic token task (copy, reverse, sort: every field
    is a token sequence). Any other source gives one label per sample, and such an output
    is E302 when the spec is validated. For an npz file the data has the last word:
    `loss_target` refuses a per-sample target [N] with the same E302."""
    if yt.rank < 3:
        return False
    source = (getattr(spec, "data", None) or {}).get("source") or {}
    kind = source.get("type")
    if kind == "npz":
        listed = source.get("sequences")
        return listed is None or spec.train["target"] in listed
    return kind == "synthetic" and source.get("task") not in SYNTHETIC_SCALAR_TASKS


def step_lengths(spec, yt: TensorType) -> str | None:
    """The model input holding each sample's number of steps that masks a per-step mse or
    bce loss on an output of type ``yt``, or None (a plain mean over every element): the
    output has a time axis whose size is a sequence input's steps (its first declared dim:
    T, or max_len's number), and model.inputs declares the lengths input
    (data.source.lengths, default `lengths`, int64 of shape [])."""
    if yt.rank < 3:
        return None
    source = (getattr(spec, "data", None) or {}).get("source") or {}
    name = source.get("lengths") or LENGTHS
    inputs = spec.model.inputs
    lengths = inputs.get(name)
    if lengths is None or tuple(lengths.shape) != () or lengths.dtype != "int64":
        return None
    steps = {inp.shape[0] for n, inp in inputs.items() if n != name and len(inp.shape)}
    return name if yt.shape[1] in steps else None


def _step_mask(g: Graph, lengths: str, tgt: Value, yt: TensorType) -> Value:
    """[N, T, 1, ...] (the output's rank): 1 at the steps each sample has, else 0."""
    tt = g.type_of(tgt)
    like = g.op("transpose", tgt, perm=(1, 0) + tuple(range(2, tt.rank)))  # [T, N, ...]
    mask = g.op("transpose", g.op("seq_mask", Value(g.find("input", lengths)), like,
                                  dtype=yt.dtype), perm=(1, 0, 2))  # [N, T, 1]
    if yt.rank > 3:
        mask = g.op("reshape", mask, shape=yt.shape[:2] + (1,) * (yt.rank - 2))
    return mask


def _masked_mean(g: Graph, per: Value, mask: Value, yt: TensorType) -> Value:
    """The mean of ``per`` (the output's shape) over the steps the mask keeps: every
    element of a kept step counts, a padded step's count nothing (0 when none is kept)."""
    total = g.op("sum", g.op("mul", per, mask))
    units = int(np.prod([d for d in yt.shape[2:]]))
    count = g.op("maximum", g.op("mul_scalar", g.op("sum", mask), c=float(units)),
                 g.const(1.0, yt.dtype))
    return g.op("div", total, count)


def _logits_not_per_sample(spec, yt: TensorType) -> GraphdlError:
    """E302 at train.loss: cross_entropy on a model output that is not [classes] logits
    per sample, with one label per sample to learn."""
    loc = spec.loc("train", "loss")
    steps = yt.rank == 3
    return GraphdlError(
        Diagnostic(
            "E302",
            f"cross_entropy needs the model output to be [classes] logits, got {fmt_shape(yt)}"
            + (f" (a dense layer applies at every step of a [{yt.shape[1]}, ...] "
               "input: one set of logits per step)" if steps else ""),
            file=spec.path,
            line=loc.line,
            col=loc.col,
            help=("give the model one vector per sample before its last dense layer: "
                  "'- {type: flatten}', '- {type: seq_pool, mode: mean}' or a "
                  "recurrent layer with 'output: last'") if steps else
            "end the model with a dense layer whose units is the number of classes",
            note=("one class per step needs a target with one label per step: an int64 "
                  "[N, T] field of an npz file (listed in data.source.sequences when ragged) "
                  "or a synthetic copy, reverse or sort task") if yt.rank >= 3 else None,
        ),
        phase="shapes",
    )


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
      integer class index per sample, or per step where the graph takes labels per step
      (`classes_per_step`: [N, T] for [N, T, classes] logits, T the output's steps);
      mse and bce_with_logits a number per output element (integers are made float32; an
      output whose last dim is 1 takes the target with or without it: [N] or [N, 1] for
      one unit, [N, T] or [N, T, 1] for one unit per step);
    - E302 at ``train.loss`` for one label per sample where the graph takes labels per step
      (an npz source: lowering cannot tell which the file holds), as lowering says it for
      the other sources;
    - E509 for a class label outside the model output's classes (its last dim, whatever
      layer makes it), at the output layer; or a bce target outside [0, 1], at train.loss.
      A per-step target's padding (train.loss.ignore_index, default -100) is no label.
    """
    train = spec.train
    loss_cfg, target = train["loss"], train["target"]
    ltype = loss_cfg["type"]
    want = graph.type_of(Value(graph.find("input", target)))
    node, index = graph.meta["loss_output"]
    out = graph.type_of(Value(node, index))
    data = TensorType(("N",) + y.shape[1:], str(y.dtype))
    sample, declared = tuple(data.shape[1:]), tuple(out.shape[1:])
    is_int = y.dtype.kind in "iub"
    what = f"the model output is {out}, the target '{target}' is {data}"
    loc = spec.loc("train", "loss")
    at_loss = {"file": spec.path, "line": loc.line, "col": loc.col, "path": "train.loss"}
    if ltype == "cross_entropy":
        steps = tuple(want.shape[1:])  # () one label per sample; (T, ...) one per step
        if steps and is_int and not sample:
            raise _logits_not_per_sample(spec, out)
        if not (is_int and _dims_fit(steps, sample)):
            if steps:
                message = (f"cross_entropy takes one integer class index per step of the "
                           f"model output: {what}")
                help_ = (f"give '{target}' one label per output step: "
                         f"{TensorType(want.shape, 'int64')} (classes 0..{out.shape[-1] - 1}, "
                         "padding train.loss.ignore_index), or make the model's steps the "
                         "target's")
            else:
                message = f"cross_entropy takes one integer class index per sample: {what}"
                help_ = (f"make '{target}' integer class labels (0..{out.shape[-1] - 1}), or use "
                         "mse for real-valued targets")
            raise GraphdlError(Diagnostic("E305", message, help=help_, **at_loss), phase="shapes")
        ignore = loss_cfg.get("ignore_index")
        if steps and ignore is None:
            ignore = IGNORE_INDEX  # the pad of a per-step target
        _check_class_labels(spec, y, int(out.shape[-1]), ignore, split)
    else:
        # [N] for [N, 1], [N, T] for [N, T, 1]
        fits = _dims_fit(declared, sample) or (declared[-1:] == (1,)
                                                and _dims_fit(declared[:-1], sample))
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
    # a symbol (T: the steps) takes the data's size, which the feed binds per batch
    shape = tuple(y.shape[1 + i] if isinstance(d, str) else d for i, d in enumerate(want.shape[1:]))
    return np.ascontiguousarray(y.reshape((len(y),) + shape), dtype=want.dtype)


def _dims_fit(declared: tuple, actual: tuple) -> bool:
    """Whether per-sample dims ``actual`` (ints) fit ``declared`` (ints and symbols, a
    symbol taking any size)."""
    return len(declared) == len(actual) and all(
        isinstance(d, str) or d == a for d, a in zip(declared, actual))


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


def penalty_graph(spec, train_graph: Graph) -> Graph | None:
    """The L1/L2 penalty of ``train_graph``'s weights alone (output ``penalty``), as
    `_add_penalties` adds it to the loss: what the trainer reports as train_penalty,
    computed when reported rather than in every step. None when no weight is penalised."""
    g = Graph()
    for name, nid in sorted(train_graph.named("param").items()):
        g.param(name, train_graph.type_of(Value(nid)), **train_graph.attrs(nid))
    zero = g.const(0.0)
    penalty = _add_penalties(g, spec, zero)
    if penalty == zero:
        return None
    g.outputs["penalty"] = penalty
    return g


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
