"""Lowering: a validated Spec -> a forward Graph of primitive ops with parameters.

Each spec layer type has one builder that adds primitive ops under the layer's
provenance (name and YAML line). ``mode`` decides what the graph is for:

- ``train``: forward in training mode (dropout on), the loss (plus L1/L2 penalties) and
  metrics as outputs; the autodiff pass later adds the backward and update parts;
- ``eval``: forward in inference mode, loss and metrics;
- ``predict``: forward in inference mode, the model outputs only.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphdl.errors import Diagnostic, GraphdlError
from graphdl.ir.graph import Graph, Provenance, Value
from graphdl.ir.types import TensorType
from graphdl.ops.registry import ShapeError
from graphdl.spec import frozen_layers

ACTIVATIONS = ("linear", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "softplus", "softmax")


@dataclass
class LayerCtx:
    g: Graph
    spec: object
    layer: object  # LayerSpec
    training: bool
    step_seed: Value | None
    salt: int

    frozen: bool = False  # train.freeze / trainable: false

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


def _activation(ctx: LayerCtx, x: Value, name: str, params: dict) -> Value:
    g = ctx.g
    if name in (None, "linear"):
        return x
    if name == "leaky_relu":
        return g.op("leaky_relu", x, alpha=float(params.get("alpha", 0.01)))
    if name == "elu":
        return g.op("elu", x, alpha=float(params.get("alpha", 1.0)))
    if name == "softmax":
        return g.op("softmax", x, axis=-1)
    return g.op(name, x)


def _dense(ctx: LayerCtx, inputs: list[Value]) -> Value:
    g, p = ctx.g, ctx.layer.params
    x = inputs[0]
    t = g.type_of(x)
    if t.rank < 2 or isinstance(t.shape[-1], str):
        raise ShapeError(f"dense expects a feature vector, got {_fmt(t)}")
    if t.rank > 2:
        raise ShapeError(
            f"dense expects a 1-D feature vector, got {_fmt(t)}",
            help="add '- {type: flatten}' before it",
        )
    fan_in, units = t.shape[-1], int(p["units"])
    w = ctx.param("kernel", (fan_in, units), p.get("kernel_init", "glorot_uniform"),
                  fan_in=fan_in, fan_out=units, weight=True)
    y = g.op("matmul", x, w)
    if p.get("use_bias", True):
        b = ctx.param("bias", (units,), p.get("bias_init", "zeros"), fan_in=fan_in, fan_out=units, weight=False)
        y = g.op("add", y, b)
    return _activation(ctx, y, p.get("activation", "linear"), p)


def _activation_layer(ctx: LayerCtx, inputs: list[Value]) -> Value:
    return _activation(ctx, inputs[0], ctx.layer.params["activation"], ctx.layer.params)


def _dropout(ctx: LayerCtx, inputs: list[Value]) -> Value:
    rate = float(ctx.layer.params["rate"])
    if not ctx.training or rate == 0.0:
        return inputs[0]
    return ctx.g.op("dropout", inputs[0], ctx.step_seed, rate=rate, salt=ctx.salt)


def _flatten(ctx: LayerCtx, inputs: list[Value]) -> Value:
    t = ctx.g.type_of(inputs[0])
    if t.rank <= 2:
        return inputs[0]
    return ctx.g.op("reshape", inputs[0], shape=(t.shape[0], -1))


def _add(ctx: LayerCtx, inputs: list[Value]) -> Value:
    if len(inputs) < 2:
        raise ShapeError("add needs at least two inputs", help="give it 'inputs: [a, b]'")
    types = [ctx.g.type_of(v) for v in inputs]
    if any(t.shape != types[0].shape for t in types):
        raise ShapeError("add needs inputs of one shape, got " + ", ".join(_fmt(t) for t in types))
    y = inputs[0]
    for v in inputs[1:]:
        y = ctx.g.op("add", y, v)
    return y


def _concat(ctx: LayerCtx, inputs: list[Value]) -> Value:
    axis = int(ctx.layer.params.get("axis", -1))
    if axis >= 0:
        axis += 1  # the spec counts axes without the batch dim
    if len(inputs) == 1:
        return inputs[0]
    return ctx.g.op("concat", *inputs, axis=axis)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def _image_input(t: TensorType, layer_type: str) -> None:
    if t.rank != 4:
        raise ShapeError(
            f"{layer_type} expects [C, H, W] images, got {_fmt(t)}",
            help="give model.inputs an image shape [C, H, W]" if t.rank < 4
            else "reshape the input to [C, H, W]",
        )


def _conv2d(ctx: LayerCtx, inputs: list[Value]) -> Value:
    from graphdl.ops.conv import resolve_padding

    g, p = ctx.g, ctx.layer.params
    x = inputs[0]
    t = g.type_of(x)
    _image_input(t, "conv2d")
    c, h, w = t.shape[1:]
    kh, kw = _pair(p["kernel"])
    stride, dilation = _pair(p.get("stride", 1)), _pair(p.get("dilation", 1))
    groups, filters = int(p.get("groups", 1)), int(p["filters"])
    if c % groups or filters % groups:
        raise ShapeError(f"conv2d groups={groups} must divide both the {c} input channels "
                         f"and the {filters} filters")
    padding = resolve_padding(p.get("padding", "valid"), (kh, kw), stride, dilation, (h, w))
    fan_in = c // groups * kh * kw
    weight = ctx.param("kernel", (filters, c // groups, kh, kw), p.get("kernel_init", "he_uniform"),
                       fan_in=fan_in, fan_out=filters // groups * kh * kw, weight=True)
    args = [x, weight]
    if p.get("use_bias", True):
        args.append(ctx.param("bias", (filters,), p.get("bias_init", "zeros"),
                              fan_in=fan_in, fan_out=filters, weight=False))
    y = g.op("conv2d", *args, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return _activation(ctx, y, p.get("activation", "linear"), p)


def _pool2d(op: str):
    def build(ctx: LayerCtx, inputs: list[Value]) -> Value:
        p = ctx.layer.params
        t = ctx.g.type_of(inputs[0])
        _image_input(t, ctx.layer.type)
        kernel = _pair(p["kernel"])
        stride = _pair(p["stride"]) if p.get("stride") is not None else kernel
        ph, pw = _pair(p.get("padding", 0))
        attrs = {"kernel": kernel, "stride": stride, "padding": (ph, ph, pw, pw)}
        if op == "avg_pool2d":
            attrs["count_include_pad"] = bool(p.get("count_include_pad", True))
        return ctx.g.op(op, inputs[0], **attrs)

    return build


def _global_avgpool2d(ctx: LayerCtx, inputs: list[Value]) -> Value:
    _image_input(ctx.g.type_of(inputs[0]), "global_avgpool2d")
    return ctx.g.op("global_avg_pool2d", inputs[0])


def _batchnorm(ctx: LayerCtx, inputs: list[Value]) -> Value:
    from graphdl.ops.norm import build_batch_norm

    g, p, name = ctx.g, ctx.layer.params, ctx.layer.name
    t = g.type_of(inputs[0])
    if t.rank not in (2, 4):
        raise ShapeError(f"batchnorm expects [C] features or [C, H, W] images, got {_fmt(t)}")
    c = t.shape[1]
    gamma = ctx.param("gamma", (c,), "ones", fan_in=c, fan_out=c, weight=False)
    beta = ctx.param("beta", (c,), "zeros", fan_in=c, fan_out=c, weight=False)
    mean = g.state(f"{name}.running_mean", TensorType((c,), "float32"), init="zeros")
    var = g.state(f"{name}.running_var", TensorType((c,), "float32"), init="ones")
    # a frozen batch norm keeps using its running statistics, as in evaluation
    return build_batch_norm(g, inputs[0], gamma, beta, mean, var,
                            training=ctx.training and not ctx.frozen,
                            momentum=float(p.get("momentum", 0.1)), eps=float(p.get("eps", 1e-5)))


BUILDERS = {
    "conv2d": _conv2d,
    "maxpool2d": _pool2d("max_pool2d"),
    "avgpool2d": _pool2d("avg_pool2d"),
    "global_avgpool2d": _global_avgpool2d,
    "batchnorm": _batchnorm,
    "dense": _dense,
    "activation": _activation_layer,
    "dropout": _dropout,
    "flatten": _flatten,
    "add": _add,
    "concat": _concat,
}


def _fmt(t: TensorType) -> str:
    """A shape as the spec writes it: without the batch dim."""
    return str(list(t.shape[1:]))


def lower(spec, mode: str = "train") -> Graph:
    """Build the graph for ``mode`` in {"train", "eval", "predict"} from a resolved spec."""
    g = Graph()
    training = mode == "train"
    values: dict[str, Value] = {}
    for name, inp in spec.model.inputs.items():
        g.provenance = Provenance(layer=f"inputs.{name}", line=inp.loc.line)
        values[name] = g.input(name, TensorType(("N",) + tuple(inp.shape), inp.dtype))
    seed = None
    augment = (spec.data or {}).get("augment") or []
    if training and (augment or any(lay.type == "dropout" for lay in spec.model.layers)):
        # one seed per training step feeds every random op (dropout, augmentation)
        g.provenance = Provenance()
        seed = g.input("step_seed", TensorType((), "int64"))
    if training and augment:
        from graphdl.layers.augment import augment_inputs, build_augment

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
            builder = BUILDERS.get(layer.type)
            if builder is None:
                raise ShapeError(f"layer type {layer.type!r} has no builder")
            ctx = LayerCtx(g, spec, layer, training, seed, salt=i + 1, frozen=layer.name in frozen)
            values[layer.name] = builder(ctx, inputs)
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
        g.meta["optimizer"] = dict(spec.train.get("optimizer") or {"type": "adam", "lr": 1e-3})
        g.meta["gradient_clip"] = spec.train.get("gradient_clip")
    return g


def _add_loss_and_metrics(g: Graph, spec, y: Value, training: bool) -> None:
    train = spec.train
    loss_cfg = dict(train.get("loss") or {"type": "cross_entropy"})
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
                    f"cross_entropy needs the model output to be [classes] logits, got {_fmt(yt)}",
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
            label_smoothing=float(loss_cfg.get("label_smoothing", 0.0)),
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
    reg = spec.train.get("regularization") or {}
    g.provenance = Provenance(layer="regularization", line=spec.loc("train", "regularization").line)
    for name, nid in sorted(g.named("param").items()):
        attrs = g.attrs(nid)
        if not attrs.get("weight") or not attrs.get("trainable", True):
            continue
        lay = attrs.get("layer_regularizer") or {}
        l1 = float(lay.get("l1", reg.get("l1", 0.0)) or 0.0)
        l2 = float(lay.get("l2", reg.get("l2", 0.0)) or 0.0)
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
