"""Sequence data against the spec: padding ragged fields as data.source says (max_len,
truncate, pad_value; a per-step integer target with train.loss.ignore_index), the lengths
input a model of ragged sequences needs, and token ids against the embedding layers that
read them. Each problem is a located error (the spec key, the sample)."""

from __future__ import annotations

from typing import Any

import numpy as np

from graphdl.data._diag import diag, fail
from graphdl.data.ragged import (
    DEFAULT_IGNORE_INDEX,
    DEFAULT_LENGTHS,
    Ragged,
    pad_to,
    step_mask,
    truncate,
)
from graphdl.errors import GraphdlError
from graphdl.spec.loader import parse_path


def _source(spec: Any) -> dict:
    return dict((spec.data or {}).get("source") or {})


def _inputs(spec: Any) -> dict:
    return dict(getattr(getattr(spec, "model", None), "inputs", None) or {})


def _target(spec: Any) -> str | None:
    train = getattr(spec, "train", None) or {}
    t = train.get("target") if isinstance(train, dict) else getattr(train, "target", None)
    return None if t is None else str(t)


def ignore_index(spec: Any) -> int:
    """train.loss.ignore_index, the pad of a per-step integer target (default -100, the
    loss's own default)."""
    train = getattr(spec, "train", None) or {}
    loss = (train.get("loss") if isinstance(train, dict) else None) or {}
    value = loss.get("ignore_index") if isinstance(loss, dict) else None
    return DEFAULT_IGNORE_INDEX if value is None else int(value)


def _sample(names: list[str] | None, i: int) -> str:
    where = f"sample {i}"
    if names is not None and i < len(names):
        where += f" ({names[i]})"
    return where


def padding_settings(spec: Any) -> tuple[int | None, str | None, float]:
    """data.source's max_len, truncate and pad_value, checked (E508)."""
    source = _source(spec)
    max_len, side, pad = source.get("max_len"), source.get("truncate"), source.get("pad_value")
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int)
                                or max_len < 1):
        raise fail("E508", f"data.source.max_len must be an integer >= 1, got {max_len!r}",
                   spec, "data", "source", "max_len", help="e.g. `max_len: 30`")
    if side is not None and side not in ("pre", "post"):
        raise fail("E508", f"data.source.truncate must be pre or post, got {side!r}", spec,
                   "data", "source", "truncate", help="pre drops a long sequence's first "
                   "steps, post its last")
    if side is not None and max_len is None:
        raise fail("E508", "data.source.truncate cuts sequences to max_len, and there is no "
                   "max_len", spec, "data", "source", "truncate",
                   help="add `max_len: <steps>`, or remove truncate")
    if pad is None:
        pad = 0.0
    elif isinstance(pad, bool) or not isinstance(pad, (int, float)) or not np.isfinite(pad):
        raise fail("E508", f"data.source.pad_value must be a number, got {pad!r}", spec,
                   "data", "source", "pad_value", help="e.g. `pad_value: 0`")
    return max_len, side, float(pad)


def conform(spec: Any, fields: dict[str, np.ndarray], lengths_name: str, ragged: list[str],
            description: str, sample_names: list[str] | None = None) -> Ragged:
    """Pad the ``ragged`` fields of ``fields`` (in place) to their longest sequence, or to
    data.source.max_len (cutting longer ones as data.source.truncate says; without it a
    longer sequence is E503 at max_len naming the sample): every step past a sample's
    length holds the pad value (a per-step integer target: train.loss.ignore_index).
    Checks the lengths field (integers from 1 to the stored steps, E503)."""
    max_len, side, pad = padding_settings(spec)
    lengths = np.asarray(fields[lengths_name])
    where = ("data", "source", "lengths" if "lengths" in _source(spec) else "type")
    if lengths.ndim != 1 or (lengths.dtype.kind == "f" and not np.all(lengths == np.round(lengths))):
        raise fail("E503", f"the lengths field '{lengths_name}' in {description} must hold "
                   f"one whole number per sample, got {lengths.dtype} {list(lengths.shape)}",
                   spec, *where, help="store each sequence's number of steps as an integer "
                   "array [N]")
    lengths = lengths.astype(np.int64)
    stored = min(fields[name].shape[1] for name in ragged) if ragged else 0
    bad = np.flatnonzero((lengths < 1) | (lengths > stored))
    if bad.size:
        i = int(bad[0])
        raise fail("E503", f"{_sample(sample_names, i)} of {description} has length "
                   f"{int(lengths[i])}, but its sequences are stored with {stored} steps",
                   spec, *where, help=f"every length must be between 1 and {stored} (the "
                   "steps stored for each sample)")
    if max_len is not None and (lengths > max_len).any():
        i = int(np.argmax(lengths > max_len))
        if side is None:
            raise fail("E503", f"{_sample(sample_names, i)} of {description} has "
                       f"{int(lengths[i])} steps, more than data.source.max_len "
                       f"({max_len}); the longest has {int(lengths.max())}", spec, "data",
                       "source", "max_len", help="add `truncate: post` (keep the first "
                       f"{max_len} steps) or `truncate: pre` (keep the last), or raise "
                       f"max_len to {int(lengths.max())}")
        for name in ragged:
            fields[name] = truncate(fields[name], lengths, max_len, side)
        lengths = np.minimum(lengths, max_len)
    steps = max_len if max_len is not None else int(lengths.max(initial=1))
    target = _target(spec)
    pads = {}
    for name in ragged:
        arr = fields[name]
        value = ignore_index(spec) if (name == target and arr.dtype.kind in "iu") else pad
        if arr.dtype.kind in "iu" and value != int(value):
            raise fail("E508", f"data.source.pad_value {value:g} cannot pad the integer "
                       f"field '{name}'", spec, "data", "source", "pad_value",
                       help="give a whole number")
        pads[name] = int(value) if arr.dtype.kind in "iu" else float(value)
        fields[name] = pad_to(arr, lengths, steps, pads[name])
    fields[lengths_name] = lengths
    return Ragged(lengths=lengths_name, pads=pads, max_len=max_len)


def varying(fields: dict[str, np.ndarray], ragged: Ragged) -> bool:
    """Whether any sample is padded (a length short of the padded steps)."""
    lengths = fields[ragged.lengths]
    return bool(lengths.size) and bool((lengths < ragged.steps(lengths)).any())


def check_lengths_input(spec: Any, fields: dict[str, np.ndarray], ragged: Ragged | None,
                        lengths_name: str | None, description: str) -> None:
    """A model input that reads ragged sequences needs the lengths input beside it (E502 at
    the sequence input); a declared lengths input is int64 of shape [] (E503 at it)."""
    inputs = _inputs(spec)
    diags = []
    if ragged is not None and varying(fields, ragged):
        used = [name for name in ragged.pads if name in inputs]
        if used and ragged.lengths not in inputs:
            lengths = fields[ragged.lengths]
            name = used[0]
            diags.append(diag(
                "E502", f"model input '{name}' reads ragged sequences ({int(lengths.min())} "
                f"to {int(lengths.max())} steps in {description}, padded), but model.inputs "
                f"declares no lengths input '{ragged.lengths}'", spec, "model", "inputs",
                name, loc=getattr(inputs[name], "loc", None),
                help=f"add `{ragged.lengths}: {{shape: [], dtype: int64}}` to model.inputs "
                "and give it to the layers that read the sequences, so that padding is not "
                "read as data (data.source.lengths names the field)"))
    if lengths_name is not None and lengths_name in inputs:
        inp = inputs[lengths_name]
        shape, dtype = tuple(getattr(inp, "shape", ()) or ()), str(getattr(inp, "dtype", ""))
        if shape != () or dtype != "int64":
            diags.append(diag(
                "E503", f"model.inputs.{lengths_name} is the lengths of the sequences "
                f"(int64, one per sample), declared as {dtype} "
                f"[{', '.join(map(str, shape))}]", spec, "model", "inputs", lengths_name,
                loc=getattr(inp, "loc", None),
                help=f"declare it `{lengths_name}: {{shape: [], dtype: int64}}`"))
    if diags:
        raise GraphdlError(diags, phase="data")


def check_token_ids(spec: Any, fields: dict[str, np.ndarray], ragged: Ragged | None,
                    split: str | None = None, sample_names: list[str] | None = None) -> None:
    """Every token id that an embedding layer reads straight from a model input lies in
    [0, vocab): else E509 at the layer's vocab naming the sample and step, or, for the
    padding of a ragged field, E508 at data.source.pad_value (a padded step is looked up
    too, and a NaN row there would reach the masked sums of the layers after it)."""
    inputs = _inputs(spec)
    layers = getattr(getattr(spec, "model", None), "layers", None) or []
    for layer in layers:
        if getattr(layer, "type", None) != "embedding" or not getattr(layer, "inputs", None):
            continue
        name = layer.inputs[0]
        if name not in inputs or name not in fields:
            continue
        ids = np.asarray(fields[name])
        if ids.dtype.kind not in "iu" or ids.size == 0:
            continue
        vocab = int(layer.params["vocab"])
        bad = (ids < 0) | (ids >= vocab)
        if not bad.any():
            continue
        real = np.ones_like(bad)
        if ragged is not None and name in ragged.pads and ids.ndim >= 2:
            mask = step_mask(fields[ragged.lengths], ids.shape[1])
            real = np.broadcast_to(mask.reshape(mask.shape + (1,) * (ids.ndim - 2)), ids.shape)
        if not (bad & real).any():
            pad = ragged.pads[name]
            raise fail("E508", f"data.source.pad_value {pad} pads the token ids of '{name}', "
                       f"but embedding layer '{layer.name}' has ids 0..{vocab - 1} (vocab "
                       f"{vocab})", spec, "data", "source", "pad_value",
                       help="pad with a token id, e.g. `pad_value: 0` (and give the "
                       "embedding `padding_idx: 0`)")
        bad &= real
        first = np.unravel_index(int(np.argmax(bad)), ids.shape)
        i, at = int(first[0]), [int(v) for v in first[1:]]
        step = f", step {at[0]}" if len(at) == 1 else (f", position {at}" if at else "")
        count = int(bad.sum())
        in_split = f" of the {split} split" if split else ""
        path = parse_path(getattr(layer, "block_path", None) or layer.yaml_path) + ("vocab",)
        raise fail("E509", f"token id {int(ids[first])} in {_sample(sample_names, i)}"
                   f"{in_split}{step} of data field '{name}' is outside the vocabulary of "
                   f"embedding layer '{layer.name}' (vocab {vocab}: ids 0..{vocab - 1}); "
                   f"{count} id(s) in all", spec, *path,
                   help=f"raise vocab above the largest id ({int(ids[bad].max())}), or fix "
                   "the data (ids are rows of the embedding table)")


def _new_data_sequences(spec: Any, fields: dict[str, np.ndarray]) -> tuple[str, list[str]] | None:
    name = _source(spec).get("lengths") or DEFAULT_LENGTHS
    if name not in fields:
        return None
    ragged = [k for k, inp in _inputs(spec).items() if k in fields
              and tuple(getattr(inp, "shape", ()) or ())[:1] == ("T",)]
    return (name, ragged) if ragged else None


def new_data_layout(spec: Any, fields: dict[str, np.ndarray]) -> Ragged | None:
    """The ragged fields of new data (predict): the model inputs declared [T, ...], when the
    lengths field (data.source.lengths, default lengths) is given; None otherwise."""
    found = _new_data_sequences(spec, fields)
    if found is None:
        return None
    max_len, _, pad = padding_settings(spec)
    pads = {k: int(pad) if fields[k].dtype.kind in "iu" else pad for k in found[1]}
    return Ragged(lengths=found[0], pads=pads, max_len=max_len)


def conform_new_data(spec: Any, fields: dict[str, np.ndarray]) -> Ragged | None:
    """`conform` for new data (predict): its `new_data_layout` fields padded (in place) as
    in training (max_len, truncate, pad_value)."""
    found = _new_data_sequences(spec, fields)
    if found is None:
        return None
    return conform(spec, fields, found[0], found[1], "the new data")


def check_positions(spec: Any, fields: dict[str, np.ndarray], ragged: Ragged | None,
                    split: str | None = None, sample_names: list[str] | None = None) -> None:
    """Every sequence a positional_encoding layer reads (through the layers before it, from
    a ragged model input) has at most its max_len steps: else E503 at the layer's max_len
    naming the longest sample (the layer has no position for the steps past it; a fixed
    number of steps is checked with the shapes, when the spec is lowered)."""
    if ragged is None:
        return
    layers = getattr(getattr(spec, "model", None), "layers", None) or []
    by_name = {layer.name: layer for layer in layers}
    for layer in layers:
        if getattr(layer, "type", None) != "positional_encoding":
            continue
        source = layer.inputs[0]
        while source in by_name:
            source = by_name[source].inputs[0]
        if source not in ragged.pads or ragged.lengths not in fields:
            continue
        lengths = np.asarray(fields[ragged.lengths])
        rows = int(layer.params["max_len"])
        if lengths.size == 0 or int(lengths.max()) <= rows:
            continue
        i = int(np.argmax(lengths))
        in_split = f" of the {split} split" if split else ""
        path = parse_path(getattr(layer, "block_path", None) or layer.yaml_path) + ("max_len",)
        raise fail("E503", f"{_sample(sample_names, i)}{in_split} of data field '{source}' has "
                   f"{int(lengths[i])} steps, but positional_encoding layer '{layer.name}' has "
                   f"positions for {rows} (max_len); {int((lengths > rows).sum())} sample(s) "
                   "are longer", spec, *path,
                   help=f"raise max_len to at least {int(lengths.max())}, or cut the "
                   "sequences (data.source.max_len with truncate)")
