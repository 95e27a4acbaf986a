"""Deterministic train/val/test splitting (optionally stratified by an integer target), and
the seeded train subsample (data.split.train_subsample)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from graphdl.data._diag import fail
from graphdl.data.dataset import SPLIT_NAMES
from graphdl.spec.schema_gen import SPLIT, fixed_test_split

DEFAULT_FRACTIONS = {name: SPLIT.fields[name].default for name in SPLIT_NAMES}
SUM_TOLERANCE = 1e-6
_SPLIT_STREAM = 0x53504C54  # keeps the split's random stream apart from other uses of the seed
_SUBSAMPLE_STREAM = 0x53554253  # and the train subsample's


@dataclass(frozen=True)
class SplitConfig:
    fractions: tuple[float, float, float]  # train, val, test
    shuffle: bool
    stratify: bool
    train_subsample: float = 1.0  # fraction of the train split kept (after splitting)

    @property
    def covers_all(self) -> bool:
        return abs(sum(self.fractions) - 1.0) <= SUM_TOLERANCE


def split_config(spec: Any) -> SplitConfig:
    """Read and check data.split (E507 on a bad fraction or a sum above 1, or a test fraction
    beside data.source.test_path, which is the test split)."""
    cfg = dict((spec.data or {}).get("split") or {})
    fracs = []
    for name in SPLIT_NAMES:
        v = cfg.get(name, DEFAULT_FRACTIONS[name])
        if v is None:
            v = 0.0
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v)):
            raise fail(
                "E507",
                f"data.split.{name} must be a number between 0 and 1, got {v!r}",
                spec,
                "data",
                "split",
                name,
                help=f"write a fraction such as `{name}: {DEFAULT_FRACTIONS[name]}`",
            )
        v = float(v)
        if not 0.0 <= v <= 1.0:
            raise fail(
                "E507",
                f"data.split.{name} is {v:g}; a split fraction must be between 0 and 1",
                spec,
                "data",
                "split",
                name,
                help="fractions are shares of the samples, e.g. train: 0.8, val: 0.1, test: 0.1",
            )
        fracs.append(v)
    total = sum(fracs)
    if total > 1.0 + SUM_TOLERANCE:
        raise fail(
            "E507",
            f"data.split fractions add up to {total:g} (train {fracs[0]:g} + val {fracs[1]:g} "
            f"+ test {fracs[2]:g}), more than 1",
            spec,
            "data",
            "split",
            help="make train + val + test at most 1 (samples left over are not used)",
        )
    fixed = fixed_test_split((spec.data or {}).get("source"))
    if fracs[2] > 0.0 and fixed is not None:
        path = fixed == "data.source.test_path"
        raise fail(
            "E507",
            f"data.split.test is {fracs[2]:g}, but {fixed} gives the test split",
            spec,
            "data",
            "split",
            "test",
            help="remove data.split.test (or write `test: 0`): with "
            + ("a test_path, data.split divides data.source.path" if path else
               "it, data.split divides the rest of the data")
            + " into train and val only",
        )
    if fracs[0] <= 0.0:
        raise fail(
            "E507",
            "data.split.train is 0: there would be nothing to train on",
            spec,
            "data",
            "split",
            "train",
            help="give the train split a positive fraction, e.g. `train: 0.8`",
        )
    sub = cfg.get("train_subsample")
    sub = SPLIT.fields["train_subsample"].default if sub is None else sub
    if (isinstance(sub, bool) or not isinstance(sub, Real) or not math.isfinite(float(sub))
            or not 0.0 < float(sub) <= 1.0):
        raise fail(
            "E507",
            f"data.split.train_subsample must be a fraction in (0, 1], got {sub!r}",
            spec,
            "data",
            "split",
            "train_subsample",
            help="e.g. `train_subsample: 0.1` trains on a seeded, stratified 10 % of the "
            "train split",
        )
    return SplitConfig(
        fractions=(fracs[0], fracs[1], fracs[2]),
        shuffle=bool(cfg.get("shuffle", SPLIT.fields["shuffle"].default)),
        stratify=bool(cfg.get("stratify", SPLIT.fields["stratify"].default)),
        train_subsample=float(sub),
    )


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def allocate(n: int, fractions: tuple[float, ...], covers_all: bool) -> list[int]:
    """Split ``n`` items into counts of about ``frac * n`` each.

    Boundaries are rounded on the cumulative fractions, so each count is within one of
    ``frac * n`` and, when the fractions sum to 1, the counts sum to exactly ``n``.
    """
    counts = []
    cum = 0.0
    prev = 0
    for k, f in enumerate(fractions):
        cum += f
        b = n if (covers_all and k == len(fractions) - 1) else min(n, _round_half_up(cum * n))
        b = max(b, prev)
        counts.append(b - prev)
        prev = b
    return counts


def _fill_empty(counts: list[int], fractions: tuple[float, ...]) -> list[tuple[int, int]]:
    """Moves (donor split, receiver split) so no split with a positive fraction is empty."""
    moves = []
    for k, f in enumerate(fractions):
        if f > 0 and counts[k] == 0:
            donor = max(range(len(counts)), key=lambda d: counts[d])
            if counts[donor] <= 1:
                break  # not enough data to give every split a sample
            counts[donor] -= 1
            counts[k] += 1
            moves.append((donor, k))
    return moves


def split_indices(
    n: int, cfg: SplitConfig, seed: int, labels: np.ndarray | None = None
) -> list[np.ndarray]:
    """Index arrays (int64) for train, val and test; deterministic for a given seed.

    With ``labels`` (an integer target) the split is stratified: each class is shuffled and
    divided on its own, so every split keeps the class proportions (within one sample per
    class). Samples beyond the fractions' sum are left out.
    """
    rng = np.random.default_rng(
        np.random.SeedSequence(int(seed) & 0xFFFF_FFFF_FFFF_FFFF, spawn_key=(_SPLIT_STREAM,))
    )
    fr = cfg.fractions
    if labels is None:
        order = rng.permutation(n) if cfg.shuffle else np.arange(n)
        counts = allocate(n, fr, cfg.covers_all)
        _fill_empty(counts, fr)
        bounds = np.cumsum([0, *counts])
        return [order[bounds[k] : bounds[k + 1]].astype(np.int64) for k in range(len(fr))]

    labels = np.asarray(labels).reshape(n)
    classes, inverse = np.unique(labels, return_inverse=True)
    by_class = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[by_class], np.arange(len(classes) + 1))
    per_class: list[list[np.ndarray]] = []  # [class][split] -> indices
    for c in range(len(classes)):
        members = by_class[starts[c] : starts[c + 1]]
        if cfg.shuffle:
            members = members[rng.permutation(len(members))]
        counts = allocate(len(members), fr, cfg.covers_all)
        bounds = np.cumsum([0, *counts])
        per_class.append([members[bounds[k] : bounds[k + 1]] for k in range(len(fr))])

    totals = [sum(len(pc[k]) for pc in per_class) for k in range(len(fr))]
    for donor, receiver in _fill_empty(totals, fr):
        # take one sample from the class that has the most in the donor split
        c = max(range(len(per_class)), key=lambda i: len(per_class[i][donor]))
        moved = per_class[c][donor][-1:]
        per_class[c][donor] = per_class[c][donor][:-1]
        per_class[c][receiver] = np.concatenate([per_class[c][receiver], moved])

    out = []
    for k in range(len(fr)):
        parts = [pc[k] for pc in per_class]
        idx = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        idx = rng.permutation(idx) if cfg.shuffle else np.sort(idx)
        out.append(idx.astype(np.int64))
    return out


def subsample(
    idx: np.ndarray, fraction: float, seed: int, labels: np.ndarray | None = None
) -> np.ndarray:
    """A seeded ``fraction`` of the indices ``idx``, in their original order.

    With ``labels`` (the integer target of every sample) it is stratified: each class keeps
    about ``fraction`` of its members, and at least one.
    """
    if fraction >= 1.0 or len(idx) == 0:
        return idx
    rng = np.random.default_rng(
        np.random.SeedSequence(int(seed) & 0xFFFF_FFFF_FFFF_FFFF, spawn_key=(_SUBSAMPLE_STREAM,))
    )
    if labels is None:
        groups = [np.arange(len(idx))]
    else:
        own = np.asarray(labels)[idx]
        groups = [np.flatnonzero(own == c) for c in np.unique(own)]
    chosen = []
    for members in groups:
        k = max(1, _round_half_up(fraction * len(members)))
        chosen.append(rng.choice(members, size=k, replace=False))
    keep = np.sort(np.concatenate(chosen))
    return idx[keep]
