"""Autoregressive decoding, greedy or beam search, with the model's ``encode`` and
``decode_step`` programs (`graphdl.layers.decode`).

The encoder runs once per batch, with the cross-attention keys and values it projects for
the decoder (``memory_kv.<layer>.*``). Then one ``decode_step`` call per output token
feeds the previous token (the first one is the decode input's first column in the data:
BOS), the token's position, those per-batch values and every causal self-attention's
keys and values so far, and returns the next token's logits and the caches grown by one
position: a token costs O(T). The feeds are buffers made once per batch and refilled in
place (the caches copied back from the program's outputs), so a token allocates nothing
and the program's check of its feeds takes its fast path.

Beam search keeps, per sample, the ``beam`` most likely sequences by the sum of their
tokens' log-probabilities; a sequence that has emitted ``eos`` is finished (it adds
nothing more to its score and keeps emitting ``eos``). Without ``eos`` every sequence runs
the decode input's whole length.
"""

from __future__ import annotations

import numpy as np

from graphdl.layers.decode import DecodePlan


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


class Decoder:
    """Decodes batches of a model's inputs with its encode and decode_step programs."""

    def __init__(self, model, plan: DecodePlan, eos: int | None = None):
        self.plan = plan
        self.eos = eos
        self.encode = model.compiled("encode").program
        self.step = model.compiled("decode_step").program
        self.output = model.spec.model.outputs[0]
        self.caches = [i for i in self.step.inputs if i.name.startswith("cache.")]

    def _start(self, fields: dict, expand: int = 1):
        """The decode_step program's feeds for a batch (each sample repeated ``expand``
        times, for beams): the encoder's outputs, the other inputs the decoder reads,
        empty caches, and buffers for the token and its position. Each is an array of the
        input's declared dtype that stays the same from token to token (`_run` refills it
        in place), so the program's check of its feeds takes its fast path (same arrays,
        shapes and strides as the last call) and no token allocates them again."""
        enc_names = [i.name for i in self.encode.inputs]
        enc = self.encode({n: fields[n] for n in enc_names}) if enc_names else {}
        n0 = len(fields[self.plan.input])
        n = n0 * expand
        feeds = {}
        for info in self.step.inputs:
            shape = tuple(n if isinstance(d, str) else d for d in info.shape)
            buf = np.zeros(shape, info.dtype)
            src = enc.get(info.name)
            if src is None and info.name in self.plan.inputs:
                src = fields[info.name]
            if src is not None:  # each sample's rows, repeated for its beams
                buf.reshape((n0, expand) + shape[1:])[...] = np.asarray(src)[:, None]
            feeds[info.name] = buf
        first = np.repeat(np.asarray(fields[self.plan.input])[:, :1], expand, axis=0)
        return feeds, first.astype(np.int64)

    def _run(self, feeds: dict, tokens: np.ndarray, t: int) -> np.ndarray:
        """One step: the logits [N, V] of the next token; updates the caches in ``feeds``
        (copied into the feeds' own buffers: the program reuses its output buffers)."""
        feeds[self.plan.input][:, 0] = tokens.reshape(-1)
        feeds["decode.pos"].fill(t)
        out = self.step(feeds)
        for info in self.caches:
            np.copyto(feeds[info.name], out[info.name])
        return np.array(out[self.output]).reshape(len(tokens), -1)

    def greedy(self, fields: dict) -> np.ndarray:
        """The most likely token at each step, fed back: int64 [N, steps]. On the CPU the
        loop over tokens is compiled with the decode_step program (`Program.greedy`);
        elsewhere it runs here, one program call per token."""
        feeds, tok = self._start(fields)
        if hasattr(self.step.module, "greedy"):
            return self.step.greedy(feeds, tok.reshape(-1), self.plan.steps, self.eos)
        return self._greedy_loop(feeds, tok)

    def _greedy_loop(self, feeds: dict, tok: np.ndarray) -> np.ndarray:
        """`greedy` one program call per token, from the feeds and first tokens of `_start`."""
        n, steps = len(tok), self.plan.steps
        out = np.zeros((n, steps), np.int64)
        done = np.zeros(n, bool)
        for t in range(steps):
            nxt = self._run(feeds, tok, t).argmax(axis=-1)
            if self.eos is not None:
                nxt = np.where(done, self.eos, nxt)
                done |= nxt == self.eos
            out[:, t] = nxt
            tok = nxt
            if self.eos is not None and done.all():
                out[:, t + 1:] = self.eos
                break
        return out

    def beam_search(self, fields: dict, beam: int) -> np.ndarray:
        """The most likely sequence found by a beam of ``beam``: int64 [N, steps]."""
        n0 = len(fields[self.plan.input])
        feeds, tok = self._start(fields, expand=beam)
        steps = self.plan.steps
        scores = np.full((n0, beam), -np.inf)
        scores[:, 0] = 0.0  # all beams start as one: expand only the first
        done = np.zeros((n0, beam), bool)
        history = np.zeros((n0, beam, 0), np.int64)
        rows = np.arange(n0)[:, None]
        for t in range(steps):
            logp = _log_softmax(self._run(feeds, tok, t)).reshape(n0, beam, -1)
            vocab = logp.shape[-1]
            total = scores[:, :, None] + logp
            if self.eos is not None and done.any():
                # a finished sequence only continues with eos, at no cost
                total[done] = -np.inf
                total[done, self.eos] = scores[done]
            flat = total.reshape(n0, beam * vocab)
            best = np.argsort(-flat, axis=1, kind="stable")[:, :beam]
            src, nxt = best // vocab, best % vocab
            scores = np.take_along_axis(flat, best, axis=1)
            history = np.concatenate([history[rows, src], nxt[:, :, None]], axis=2)
            done = done[rows, src]
            if self.eos is not None:
                done |= nxt == self.eos
            order = (rows * beam + src).reshape(-1)
            for info in self.caches:
                cache = feeds[info.name]
                cache[...] = cache[order]
            tok = nxt.reshape(-1)
            if self.eos is not None and done.all():
                break
        best = scores.argmax(axis=1)
        out = history[np.arange(n0), best]
        if out.shape[1] < steps:
            out = np.concatenate([out, np.full((n0, steps - out.shape[1]), self.eos)], axis=1)
        return out

    def __call__(self, fields: dict, how: str = "greedy", beam: int = 4,
                 batch_size: int = 256) -> np.ndarray:
        n = len(fields[self.plan.input])
        chunks = []
        for s in range(0, n, batch_size):
            part = {k: v[s:s + batch_size] for k, v in fields.items()}
            chunks.append(self.greedy(part) if how == "greedy" else self.beam_search(part, beam))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.plan.steps), np.int64)


def one_hot(tokens: np.ndarray, vocab: int) -> np.ndarray:
    """Decoded tokens as scores whose argmax is the token (for the classification metrics)."""
    out = np.zeros(tokens.shape + (vocab,), np.float32)
    np.put_along_axis(out, tokens[..., None], 1.0, axis=-1)
    return out
