"""Padded sequences: which fields of a dataset are sequences of varying length, and how a
batch of them is cut.

A ragged field is stored padded along its first per-sample axis (the time axis, axis 1 of
the array) to at least its longest sequence, every step past a sample's length holding the
field's pad value; the lengths field holds each sample's number of steps (int64 [N]). A
batch is padded to its own longest sequence (the arrays are cut to T = max(lengths) of the
batch), or to ``max_len`` when the source sets one, so T changes from batch to batch and
the compiled programs take any T.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

DEFAULT_LENGTHS = "lengths"  # the lengths field's name when data.source.lengths is absent
DEFAULT_IGNORE_INDEX = -100  # a per-step integer target's pad, as the loss's default (torch)


@dataclass(frozen=True)
class Ragged:
    """The ragged fields of a dataset: ``pads`` maps each to its pad value (time on axis 1),
    ``lengths`` names the int64 field of lengths, ``max_len`` is the padded length of every
    batch (None: each batch's longest)."""

    lengths: str
    pads: dict[str, float] = field(default_factory=dict)
    max_len: int | None = None

    def steps(self, lengths: np.ndarray) -> int:
        """The padded length of a batch whose samples have ``lengths``."""
        if self.max_len is not None:
            return int(self.max_len)
        return max(1, int(lengths.max())) if lengths.size else 1


def step_mask(lengths: np.ndarray, steps: int) -> np.ndarray:
    """bool [N, steps]: True at the steps each sample really has."""
    return np.arange(steps)[None, :] < np.asarray(lengths).reshape(-1, 1)


def pad_to(x: np.ndarray, lengths: np.ndarray, steps: int, pad: float) -> np.ndarray:
    """``x`` [N, T, ...] as [N, steps, ...] (cut or extended along axis 1), every step at or
    past a sample's length set to ``pad``; a new C-contiguous array."""
    n = x.shape[0]
    out = np.full((n, steps, *x.shape[2:]), pad, dtype=x.dtype)
    keep = min(steps, x.shape[1])
    out[:, :keep] = x[:, :keep]
    invalid = ~step_mask(lengths, steps)
    out[invalid] = np.asarray(pad, dtype=x.dtype)
    return out


def truncate(x: np.ndarray, lengths: np.ndarray, max_len: int, side: str) -> np.ndarray:
    """``x`` [N, T, ...] with each sequence longer than ``max_len`` cut to its first
    (``side`` "post": the last steps are dropped) or its last (``"pre"``) max_len steps,
    shifted to start at step 0; shorter sequences are unchanged. [N, max(T, max_len), ...];
    the new lengths are min(lengths, max_len)."""
    out = x.copy()
    if side == "pre":
        for i in np.flatnonzero(lengths > max_len):
            start = int(lengths[i]) - max_len
            out[i, :max_len] = x[i, start : start + max_len]
    return out


def take(fields: dict[str, np.ndarray], idx, names: Iterable[str],
         ragged: Ragged | None) -> dict[str, np.ndarray]:
    """The feeds of one batch: each field of ``names`` at the samples ``idx`` (indices or a
    slice), C-contiguous; a ragged field cut to the batch's padded length."""
    steps = None
    if ragged is not None and ragged.lengths in fields:
        steps = ragged.steps(np.asarray(fields[ragged.lengths][idx]))
    out = {}
    for name in names:
        arr = fields[name][idx]
        if steps is not None and name in ragged.pads:
            if arr.shape[1] >= steps:
                arr = arr[:, :steps]
            else:  # stored shorter than max_len: extend with the pad value
                arr = pad_to(arr, np.asarray(fields[ragged.lengths][idx]), steps,
                             ragged.pads[name])
        out[name] = np.ascontiguousarray(arr)
    return out


def stack_steps(chunks: list[np.ndarray], pad: float = 0.0) -> np.ndarray:
    """Per-batch arrays concatenated along the samples. Outputs with a time axis differ in
    T from batch to batch: each is then padded with ``pad`` along axis 1 to the widest."""
    if not chunks:
        return np.zeros((0,), np.float32)
    if len({c.shape[1:] for c in chunks}) > 1 and all(c.ndim >= 2 for c in chunks) and len(
            {c.shape[2:] for c in chunks}) == 1:
        widest = max(c.shape[1] for c in chunks)
        chunks = [c if c.shape[1] == widest else np.concatenate(
            [c, np.full((c.shape[0], widest - c.shape[1], *c.shape[2:]), pad, c.dtype)], axis=1)
            for c in chunks]
    return np.concatenate(chunks)


def valid_steps(outputs: np.ndarray, targets: np.ndarray, lengths: np.ndarray,
                pad: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-step outputs [N, T', ...] and targets [N, T, ...] of ragged sequences as the
    steps the sequences really have: [M, ...] each (M = sum of lengths), for metrics."""
    steps = outputs.shape[1]
    targets = pad_to(targets, lengths, steps, pad) if targets.shape[1] != steps else targets
    mask = step_mask(lengths, steps)
    return outputs[mask], targets[mask]
