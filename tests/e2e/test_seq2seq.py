"""Sequence-to-sequence models (issue 12, item 3): teacher forcing in training, greedy and
beam decoding one token at a time with the encode and decode_step programs
(graphdl.layers.decode, graphdl.runtime.decode), the decode plan's located errors (E306),
and `graphdl predict` writing decoded sequences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import graphdl
from graphdl.errors import GraphdlError
from graphdl.ir.graph import Value
from graphdl.layers.decode import decode_plan
from graphdl.layers.lower import lower
from graphdl.runtime.decode import Decoder
from graphdl.spec import load_spec

REPO = Path(graphdl.__path__[0]).parent
GRU_SPEC = REPO / "specs" / "seq2seq_attention_reverse.yaml"
TRANSFORMER_SPEC = REPO / "specs" / "transformer_reverse.yaml"


def _doc(path: Path = GRU_SPEC) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _write(tmp_path: Path, doc: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _small(doc: dict, samples: int = 300, epochs: int = 1) -> dict:
    doc["data"]["source"]["samples"] = samples
    doc["train"]["epochs"] = epochs
    return doc


def _step_by_step(model, fields) -> np.ndarray:
    """The decode_step program fed the true previous tokens (teacher forcing), one token
    at a time with its caches: logits [N, steps, V]."""
    decoder = Decoder(model, decode_plan(model.spec))
    feeds, _first = decoder._start(fields)
    tgt = fields[decoder.plan.input]
    return np.stack([decoder._run(feeds, tgt[:, t], t) for t in range(tgt.shape[1])], axis=1)


@pytest.mark.parametrize("spec", [GRU_SPEC, TRANSFORMER_SPEC], ids=["gru", "transformer"])
def test_decoding_one_token_at_a_time_equals_the_whole_sequence(tmp_path, spec):
    """The caches carry exactly what the full forward pass computes: a GRU decoder's state
    (started from the encoder) and a transformer decoder's keys and values (causal
    self-attention), with attention over the encoder's steps and padded sources masked.
    Compared where the decoder's input is a real token: at padding the full pass masks
    the padded keys, which a decoder that has just fed them does not know are padding."""
    model = graphdl.load(_write(tmp_path, _small(_doc(spec), samples=1000)))
    fields = model.data().test.fields
    names = list(model.spec.model.inputs)
    feeds = {n: fields[n][:40] for n in names}
    whole = model.compiled("predict").program(feeds)["logits"]
    steps = _step_by_step(model, feeds)
    real = feeds["tgt_in"] != 0
    assert real.sum() > 200 and (~real).sum() > 20
    np.testing.assert_allclose(steps[real], whole[real], rtol=1e-4, atol=1e-5)


def test_decode_plan_of_the_gru_encoder_decoder():
    plan = decode_plan(load_spec(GRU_SPEC))
    assert plan.input == "tgt_in" and plan.steps == 13
    assert plan.decoder == ["tgt_emb", "decoder", "attend", "joined", "combine", "logits"]
    assert plan.memory == ["init", "encoder"]  # the initial state and the attended steps
    assert plan.cached == ["decoder"]


def _per_token(g) -> set:
    """The nodes of a decode_step graph that depend on the token fed (or its position, or
    the caches): what must run once per token."""
    todo = [nid for name, nid in g.named("input").items()
            if name in ("tgt_in", "decode.pos") or name.startswith("cache.")]
    seen = set(todo)
    while todo:
        for dst in g.nx.successors(todo.pop()):  # any output of a node (a scan has several)
            if dst not in seen:
                seen.add(dst)
                todo.append(dst)
    return seen


@pytest.mark.parametrize("spec, moved", [
    (REPO / "specs" / "bench_transformer.yaml",
     {"decoder.0.multihead_attention_4": ("k", "v"), "decoder.1.multihead_attention_6": ("k", "v")}),
    (GRU_SPEC, {"attend": ("k", "mask")}),
], ids=["transformer", "gru"])
def test_cross_attention_projects_the_encoder_output_once_per_batch(spec, moved):
    """What a decoder's attention computes from the encoder alone (its keys and values
    projected and split into heads, the additive score's W_k keys, the key mask) is
    computed by the encode program, once per batch, and read by decode_step as inputs
    memory_kv.<layer>.<part>: no matmul of decode_step runs on per-batch values only, and
    the encode program's projections use the parameters the other programs train."""
    s = load_spec(spec)
    enc, step, predict = (lower(s, m) for m in ("encode", "decode_step", "predict"))
    names = {f"memory_kv.{layer}.{part}" for layer, parts in moved.items() for part in parts}
    assert names <= set(enc.outputs)
    step_inputs = step.named("input")
    assert names <= set(step_inputs)
    for name in names:  # the same type on both sides: the layout the step reads
        assert enc.type_of(enc.outputs[name]) == step.type_of(Value(step_inputs[name]))
    per_token = _per_token(step)
    matmuls = step.nodes_by_op("matmul")
    assert matmuls and all(nid in per_token for nid in matmuls)
    # the heads layout [N, Tk, heads, head_dim] the fused attention op reads (nthd)
    if "transformer" in s.name:
        for name in names:
            assert enc.type_of(enc.outputs[name]).shape == ("N", 31, 4, 16)
        # the transformer's decoder reads the encoder only through its projections
        assert not any(n.startswith("memory.") for n in step_inputs)
        assert not any(n.startswith("memory.") for n in enc.outputs)
        assert not any(n.startswith("memory_mask.") for n in step_inputs)
    else:  # the GRU decoder starts from `init`; additive attention weighs the raw values
        assert {"memory.init", "memory.encoder"} <= set(step_inputs)
        assert "memory_mask.encoder" not in step_inputs
        assert "attend.key_kernel" in enc.named("param")
        assert "attend.key_kernel" not in step.named("param")
    # one set of parameters: every program's are the predict program's, by name and type
    shared = predict.named("param")
    for g in (enc, step):
        for name, nid in g.named("param").items():
            assert name in shared, name
            assert g.type_of(Value(nid)) == predict.type_of(Value(shared[name]))


@pytest.mark.parametrize("edit, layer, words", [
    (lambda d: d["model"]["layers"][5].update(bidirectional=True), "decoder",
     "bidirectional"),
    (lambda d: d["model"]["layers"].insert(6, {"type": "attention", "name": "pool",
                                               "inputs": ["decoder"]}), "pool",
     "pools it over time"),
    (lambda d: d["model"]["layers"][6].update(inputs=["decoder", "decoder"]), "attend",
     "must be causal self-attention"),
])
def test_a_model_that_cannot_decode_is_refused_before_training(tmp_path, edit, layer, words):
    doc = _doc()
    edit(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(GraphdlError) as e:
        graphdl.load(path).compiled("train", warmup=False)
    (d,) = e.value.diagnostics
    assert d.code == "E306" and words in d.message and f"'{layer}'" in d.message
    lines = path.read_text().splitlines()
    assert lines[d.line - 1].strip().startswith("- ")  # the layer's mapping
    assert any(f"name: {layer}" in line for line in lines[d.line - 1:d.line + 4])


def test_the_decode_input_must_be_named_when_two_could_be(tmp_path):
    doc = _doc()
    doc["model"]["inputs"]["src"]["shape"] = [13]
    doc["model"]["layers"] = [  # both token inputs are read step by step only
        {"type": "embedding", "name": "a", "inputs": ["src"], "vocab": 13, "dim": 8},
        {"type": "embedding", "name": "b", "inputs": ["tgt_in"], "vocab": 13, "dim": 8},
        {"type": "add", "name": "both", "inputs": ["a", "b"]},
        {"type": "dense", "name": "logits", "units": 13},
    ]
    with pytest.raises(GraphdlError) as e:
        decode_plan(load_spec(_write(tmp_path, doc)))
    (d,) = e.value.diagnostics
    assert d.code == "E306" and "src or tgt_in: say which" in d.message
    assert "decode_input: src" in d.help
    doc["evaluate"]["decode_input"] = "tgt_in"
    plan = decode_plan(load_spec(_write(tmp_path, doc)))
    assert plan.input == "tgt_in" and plan.memory == ["a"] and plan.decoder == ["b", "both",
                                                                                 "logits"]


@pytest.mark.parametrize("spec", [GRU_SPEC, TRANSFORMER_SPEC], ids=["gru", "transformer"])
def test_the_compiled_greedy_loop_equals_the_python_loop(tmp_path, spec):
    """On the CPU greedy decoding runs as a loop compiled beside the decode_step program
    (`CpuCodegen._greedy`): the same tokens as one program call per token from Python,
    without an end token and with one that ends some sequences early."""
    model = graphdl.load(_write(tmp_path, _small(_doc(spec), samples=300)))
    fields = {n: model.data().test.fields[n][:24] for n in model.spec.model.inputs}
    plain = Decoder(model, decode_plan(model.spec))
    assert hasattr(plain.step.module, "greedy")
    free = plain.greedy(fields)
    eos = int(np.bincount(free[:, 2]).argmax())  # a token some sequences emit early
    for eos_token in (None, eos):
        decoder = Decoder(model, decode_plan(model.spec), eos_token)
        compiled = decoder.greedy(fields)
        feeds, tok = decoder._start(fields)
        np.testing.assert_array_equal(compiled, decoder._greedy_loop(feeds, tok))
    ended = compiled == eos
    assert ended.any() and not ended.all()


def test_training_then_greedy_and_beam_decoding(tmp_path):
    """A CI-sized run of specs/seq2seq_attention_reverse.yaml (the full spec reaches 99 %
    exact sequences): teacher forcing trains it, greedy decoding scores it, beam search
    finds sequences at least as likely, and decoded sequences stop at EOS."""
    model = graphdl.load(_write(tmp_path, _small(_doc(), samples=4000, epochs=3)))
    model.fit(tmp_path / "run", progress=False)
    result = model.evaluate("test")
    assert result["sequence_accuracy"] > 0.6, result
    assert result["token_accuracy"] > 0.9, result
    ds = model.data().test
    greedy = model.decode(ds.fields)
    beam = model.decode(ds.fields, how="beam", beam=3)
    truth = ds.fields["tgt_out"]
    keep = truth != 0

    def exact(tokens):
        return np.mean([np.all((tokens[i] == truth[i])[keep[i]]) for i in range(len(truth))])

    assert exact(greedy) == pytest.approx(result["sequence_accuracy"])
    assert exact(beam) >= exact(greedy) - 0.02
    # after EOS (2) a decoded sequence only repeats it
    for row in greedy[:50]:
        ends = np.flatnonzero(row == 2)
        if ends.size:
            assert np.all(row[ends[0]:] == 2)


def test_predict_writes_the_decoded_sequences(tmp_path, cli):
    path = _write(tmp_path, _small(_doc()))
    rc, _out, err = cli("run", str(path), "--run-dir", str(tmp_path / "run"), "--no-progress")
    assert rc == 0, err
    src = np.array([[3, 4, 5, 6, 0, 0, 0, 0, 0, 0, 0, 0]], np.int64)
    tgt_in = np.zeros((1, 13), np.int64)
    tgt_in[0, 0] = 1  # BOS: the first token fed back
    np.savez(tmp_path / "new.npz", src=src, tgt_in=tgt_in)
    rc, out, err = cli("predict", str(path), "--weights", str(tmp_path / "run" / "best.ckpt"),
                       "--input", str(tmp_path / "new.npz"), "--format", "json",
                       "--attention", str(tmp_path / "att.html"))
    assert rc == 0, err
    assert "(1 sample, 1 attention layer)" in err and "attend" in (tmp_path / "att.html").read_text()
    tokens = json.loads(out)["tokens"]
    assert len(tokens) == 1 and all(isinstance(t, int) and 0 <= t < 13 for t in tokens[0])
    assert 2 not in tokens[0]  # cut before EOS
    rc, out, err = cli("predict", str(path), "--weights", str(tmp_path / "run" / "best.ckpt"),
                       "--input", str(tmp_path / "new.npz"), "--output",
                       str(tmp_path / "out.npz"))
    assert rc == 0, err
    saved = np.load(tmp_path / "out.npz")
    assert saved["tokens"].shape == (1, 13) and saved["lengths"][0] == len(tokens[0])


def test_predict_draws_the_attention_of_the_decoded_tokens(tmp_path):
    """Model.attention_maps decodes first, then reads the attention of the decoder fed its
    own tokens: rows labelled with the tokens produced, columns with the source's real
    tokens (padding cut), each row a distribution."""
    model = graphdl.load(_write(tmp_path, _small(_doc())))
    src = np.zeros((2, 12), np.int64)
    src[0, :5] = [3, 4, 5, 6, 7]
    src[1, :9] = [9, 8, 7, 6, 5, 4, 3, 12, 11]
    tgt_in = np.zeros((2, 13), np.int64)
    tgt_in[:, 0] = 1
    samples = model.attention_maps({"src": src, "tgt_in": tgt_in})
    assert [s["name"] for s in samples] == ["sample 0", "sample 1"]
    decoded = model.decode({"src": src, "tgt_in": tgt_in})
    for i, sample in enumerate(samples):
        (layer,) = sample["layers"]
        assert layer["name"] == "attend" and layer["kind"] == "cross"
        assert layer["key_tokens"] == [str(t) for t in src[i][src[i] != 0]]
        rows = layer["query_tokens"]
        assert rows == [str(t) for t in decoded[i][:len(rows)]]
        w = layer["weights"]
        assert w.shape == (1, len(rows), len(layer["key_tokens"]))
        np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-5)


def _mlp_digits_doc() -> dict:
    return yaml.safe_load((REPO / "specs" / "mlp_digits.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", ["heads", "max_len", "not_seq2seq", "no_tokens"])
def test_errors_are_located_without_a_traceback(tmp_path, cli, case):
    if case == "heads":
        doc = _doc(TRANSFORMER_SPEC)
        doc["blocks"]["encoder_layer"]["params"]["heads"] = 5
        code, words = "E301", "dim 64 is not a multiple of heads 5"
    elif case == "max_len":
        doc = _doc(TRANSFORMER_SPEC)
        doc["model"]["layers"][1]["max_len"] = 8
        code, words = "E301", "12 steps but positions are defined for 8"
    elif case == "not_seq2seq":
        doc = _mlp_digits_doc()
        doc["evaluate"] = {"decode": "greedy"}
        code, words = "E306", "needs a model input of int64 token ids"
    else:  # a decoder whose token input is declared as floats
        doc = _doc()
        doc["model"]["inputs"]["tgt_in"]["dtype"] = "float32"
        doc["model"]["layers"][4] = {"type": "dense", "name": "tgt_emb", "inputs": ["tgt_in"],
                                     "units": 32}
        doc["model"]["inputs"]["tgt_in"]["shape"] = [13, 1]
        code, words = "E306", "the only token input, 'src', cannot be decoded from"
    path = _write(tmp_path, doc)
    rc, out, err = cli("validate", str(path))
    assert rc == 2, out + err
    assert f"error[{code}]" in err and words in err, err
    assert "Traceback" not in err
    if case == "heads":
        assert "heads that divide dim 64: 1, 2, 4, 8, 16, 32, 64" in err
