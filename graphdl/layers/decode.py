"""Autoregressive decoding: which layers of a sequence-to-sequence model run once per output
token, and what they read.

A model decodes from one int64 model input, the *decode input* (a transformer's tgt_in:
the previous tokens). The layers that depend on it are the *decoder*; the others are the
*encoder*, run once per batch. Decoding lowers two programs from the spec
(`graphdl.layers.lower.lower`, which builds both together):

- ``encode``: the encoder layers, and what the decoder computes from the encoder alone:
  each decoder attention layer whose keys come from the encoder has its keys and values
  projected there, once per batch, with its own parameters (the same names as in every
  other program): ``memory_kv.<layer>.k`` / ``.v`` [N, Tk, heads, head_dim] for
  multihead_attention (split into heads, as the fused attention op reads them),
  ``memory_kv.<layer>.k`` [N, 1, Tk, units] (k W_k) for additive_attention, and the key
  mask ``memory_kv.<layer>.mask`` [N, Tk] when there is one. It outputs an encoder value
  itself (``memory.<layer>``) and its key mask (``memory_mask.<layer>``) only where the
  decoder still reads it as it is: a recurrent decoder's initial state, the values an
  additive attention weighs, a dot attention's (``attention``: no projection) keys and
  values;
- ``decode_step``: the decoder for ONE token: the decode input is [N, 1], ``decode.pos``
  [N] is the token's position, the ``memory_kv`` and ``memory`` values are inputs, and
  every causal self-attention reads and returns its keys and values so far
  (``cache.<layer>.k`` / ``.v`` [N, steps, heads, head_dim]) and every recurrent layer its
  state (``cache.<layer>.l<k>.c<j>``), so a token costs O(T), not a re-run of the prefix,
  and no GEMM of a token runs over the encoder's steps.

Only layers that act on each step alone, causal self-attention, attention whose keys come
from the encoder and forward recurrent layers can be in the decoder; anything else is E306
at the layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphdl.errors import Diagnostic, GraphdlError

# layer types that can run on the decoder's one new step
STEPWISE = ("embedding", "dense", "activation", "dropout", "layer_norm", "add", "concat",
            "positional_encoding", "multihead_attention", "attention", "additive_attention",
            "rnn", "lstm", "gru")
ATTENTION = ("multihead_attention", "attention", "additive_attention")
RECURRENT = ("rnn", "lstm", "gru")


@dataclass
class DecodePlan:
    input: str  # the model input fed back (previous tokens)
    steps: int  # tokens decoded: the decode input's declared length
    decoder: list[str] = field(default_factory=list)  # layers run once per token, in order
    memory: list[str] = field(default_factory=list)  # encoder layers the decoder reads
    inputs: list[str] = field(default_factory=list)  # other model inputs the decoder reads
    # causal self-attention and recurrent layers: they carry caches from token to token
    cached: list[str] = field(default_factory=list)


def _fail(spec, layer, message: str, help: str | None = None) -> GraphdlError:
    loc = layer.loc if layer is not None else spec.loc("evaluate", "decode")
    return GraphdlError(Diagnostic("E306", message, file=loc.file, line=loc.line, col=loc.col,
                                   help=help), phase="shapes")


def plan_for(spec, name: str) -> DecodePlan:
    """The decode plan for decode input ``name``; E306 (located at the first layer that
    cannot run one token at a time) when the model cannot decode from it."""
    inp = spec.model.inputs[name]
    if inp.dtype != "int64" or len(inp.shape) != 1:
        raise _fail(spec, None, f"the decode input '{name}' must be int64 token ids of shape "
                    f"[steps], got {inp.dtype} {list(inp.shape)}")
    plan = DecodePlan(name, int(inp.shape[0]))
    dep = {name}
    for layer in spec.model.layers:
        reads = [n for n in layer.inputs if n in dep]
        if not reads:
            continue
        dep.add(layer.name)
        plan.decoder.append(layer.name)
        where = (f"layer '{layer.name}' ({layer.type}) reads the decoded tokens (through "
                 f"'{reads[0]}')")
        if layer.type not in STEPWISE:
            raise _fail(spec, layer, f"{where} but cannot run one token at a time",
                        help="a decoder is built of embedding, positional_encoding, dense, "
                             "activation, dropout, layer_norm, add, concat, forward rnn, "
                             "lstm and gru, and attention (causal self-attention, or keys "
                             "from the encoder)")
        if layer.type in RECURRENT:
            if layer.params.get("bidirectional"):
                raise _fail(spec, layer, f"{where}, but it is bidirectional: its backward "
                            "direction would read tokens not decoded yet",
                            help="a decoder's recurrent layers run forward only")
            if layer.inputs[0] not in dep or any(n in dep for n in layer.inputs[1:]):
                raise _fail(spec, layer, f"{where} as its initial state, not as its sequence")
            plan.cached.append(layer.name)
        if layer.type == "concat" and layer.params.get("axis", -1) not in (-1, 1):
            raise _fail(spec, layer, f"{where} and joins along the time axis",
                        help="a decoder joins values along the feature axis (-1) only")
        if layer.type == "attention" and len(layer.inputs) == 1:
            raise _fail(spec, layer, f"{where} and pools it over time",
                        help="attention pooling reads the whole sequence: it cannot be in "
                             "a decoder")
        if layer.type in ATTENTION:
            q, k, v = (layer.inputs + layer.inputs[-1:] * 2)[:3] if len(layer.inputs) > 1 \
                else layer.inputs * 3
            if k in dep or v in dep:
                if not (q == k == v and layer.params.get("causal")):
                    raise _fail(spec, layer, f"{where}: attention over the decoded tokens "
                                "must be causal self-attention, or a token would see the "
                                "ones after it", help="set `causal: true`")
                plan.cached.append(layer.name)
            elif q not in dep:
                raise _fail(spec, layer, f"{where} as keys only")
        for n in layer.inputs:
            if n in dep:
                continue
            if n in spec.model.inputs:
                if n not in plan.inputs:
                    plan.inputs.append(n)
            elif n not in plan.memory:
                plan.memory.append(n)
    outputs = spec.model.outputs
    if outputs[0] not in dep:
        raise _fail(spec, None, f"the model output '{outputs[0]}' does not depend on the "
                    f"decode input '{name}'")
    return plan


def decode_plan(spec) -> DecodePlan:
    """The plan for evaluate.decode_input, or for the one int64 model input the model can
    decode from; E306 when there is none or several."""
    name = spec.evaluate.get("decode_input")
    if name is not None:
        if name not in spec.model.inputs:
            raise _fail(spec, None, f"evaluate.decode_input '{name}' is not a model input",
                        help="model inputs: " + ", ".join(spec.model.inputs))
        return plan_for(spec, name)
    plans, errors, tried = [], [], []
    for n, inp in spec.model.inputs.items():
        if inp.dtype != "int64" or len(inp.shape) != 1:
            continue
        tried.append(n)
        try:
            plans.append(plan_for(spec, n))
        except GraphdlError as e:
            errors.append(e)
    if len(plans) == 1:
        return plans[0]
    if not plans:
        if len(errors) == 1:  # say which input was tried, and why it cannot be decoded
            (d,) = errors[0].diagnostics
            d.message = f"evaluate.decode: the only token input, '{tried[0]}', cannot be " \
                f"decoded from: {d.message}"
            d.note = ("the decode input is the int64 [steps] model input fed back (the "
                      "previous tokens); name it with evaluate.decode_input")
            raise errors[0]
        if errors:
            # the input whose decoder gets furthest (its refused layer comes last) is
            # most likely the one meant
            best = max(range(len(errors)), key=lambda i: errors[i].diagnostics[0].line or 0)
            d = errors[best].diagnostics[0]
            d.message = f"evaluate.decode: no token input can be decoded from (tried " \
                f"{', '.join(tried)}); from '{tried[best]}': {d.message}"
            d.note = "name the decode input with evaluate.decode_input"
            raise errors[best]
        raise _fail(spec, None, "evaluate.decode needs a model input of int64 token ids "
                    "[steps] to feed back (the previous tokens)")
    raise _fail(spec, None, "the model can decode from " + " or ".join(p.input for p in plans)
                + ": say which", help=f"add `decode_input: {plans[0].input}` to evaluate")
