"""Data sources: the built-in datasets, ``.npz`` archives, ``.csv`` files, image folders,
the synthetic sequence tasks and UEA/UCR ``.ts`` files.

A sequence source also gives a lengths field (int64 [N], named by data.source.lengths,
default ``lengths``); a ragged one (``.ts``, japanese_vowels, npz with ``sequences``) names
its padded fields in `RawData.ragged`, which `graphdl.data.loader` pads as data.source's
max_len, truncate and pad_value say.

Each loader returns a `RawData`: the arrays as stored (dtypes are normalised later by
`graphdl.data.loader`) plus what diagnostics need to point at a bad value.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graphdl.data._diag import did_you_mean, fail, name_list
from graphdl.data.ragged import DEFAULT_LENGTHS
from graphdl.data.sequences import (
    SEQUENCE_TASKS,
    TOKEN_TASKS,
    adding_problem,
    read_ts,
    sliding_windows,
    token_task,
)
from graphdl.spec.datatypes import spec_relative
from graphdl.spec.schema_gen import SOURCE, fill

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


@dataclass
class RawData:
    fields: dict[str, np.ndarray]
    description: str  # "the built-in dataset 'digits'", "npz file /abs/x.npz", ...
    num_classes: int | None = None  # known class count (built-ins)
    # field -> one name per column (csv features), for messages about a bad value
    column_names: dict[str, list[str]] = field(default_factory=dict)
    # sample index -> 1-based line in the csv file
    row_lines: np.ndarray | None = None
    # fields that were not asked for by name (npz default: every array in the file); such a
    # field is dropped, not reported, when it cannot be used (non-numeric, other length)
    optional: set[str] = field(default_factory=set)
    # class index -> name (image_folder: the class folder names, sorted)
    class_names: list[str] | None = None
    # sample index -> where it was read from (image files: the path within the folder)
    sample_names: list[str] | None = None
    # csv with data.source.categorical or missing: what was fitted (`csv_state`), which
    # goes into the preprocess state under "csv" so test_path and predict read rows alike
    csv_state: dict | None = None
    # sequence sources: the field holding each sample's length (int64 [N])
    lengths: str | None = None
    # the fields stored padded along axis 1 (with 0, to the longest) whose lengths vary:
    # padded per batch (.ts, japanese_vowels, npz with data.source.sequences)
    ragged: list[str] = field(default_factory=list)
    # a built-in's fixed test split (japanese_vowels), read with the same settings
    test: RawData | None = None
    # windows of one series (data.source.window): its horizon; the split keeps time order
    window_horizon: int | None = None
    # data.source.window.season: evaluation also scores the seasonal-naive forecast
    window_season: int | None = None
    # what the series' values are measured in, for the report in the series' units
    units: str | None = None


# --------------------------------------------------------------------------- built-ins


@dataclass(frozen=True)
class _Builtin:
    file: str
    num_classes: int | None
    summary: str


BUILTINS: dict[str, _Builtin] = {
    "digits": _Builtin(
        file="digits.npz",
        num_classes=10,
        summary="8x8 handwritten digits (UCI), x float32 [64] in 0..16, y int64 0..9, 1797 "
        "samples; with `as_images: true` image float32 [1, 8, 8] and label int64; with "
        "`as_sequence: true` x float32 [8, 8] (8 steps, one row of 8 pixels each) and y",
    ),
    "japanese_vowels": _Builtin(
        file="japanese_vowels.npz",
        num_classes=9,
        summary="UCI Japanese Vowels: 640 utterances of 7 to 29 frames of 12 LPC cepstrum "
        "coefficients by 9 speakers, x float32 [T, 12] (ragged), lengths int64, y int64 "
        "0..8 (the speaker); the standard split: 270 utterances (30 per speaker) for train "
        "and val, 370 for the test split",
    ),
    "airline": _Builtin(
        file="airline.npz",
        num_classes=None,
        summary="monthly international airline passengers 1949-1960 (Box & Jenkins series "
        "G, thousands, 144 months); with `window: {input, horizon}` x float32 [input, 1], "
        "y float32 [horizon] and lengths, split in time order; `season: 12` adds the "
        "seasonal-naive forecast to evaluation",
    ),
}


@functools.cache
def _read_builtin(filename: str) -> dict[str, np.ndarray]:
    with np.load(BUILTIN_DIR / filename, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    for arr in arrays.values():
        arr.flags.writeable = False  # cached: callers must copy (the loader always does)
    return arrays


def load_builtin(spec: Any, source: dict) -> RawData:
    name = source.get("name")
    if name not in BUILTINS:
        known = sorted(BUILTINS)
        raise fail(
            "E506",
            f"unknown built-in dataset '{name}'",
            spec,
            "data",
            "source",
            "name",
            help=f"built-in datasets: {name_list(known)}.{did_you_mean(str(name), known)}"
            " For your own data use `source: {type: npz, path: ...}` or "
            "`source: {type: csv, path: ..., target: ...}`",
        )
    entry = BUILTINS[name]
    for key in ("as_images", "as_sequence", "window"):
        if source.get(key) not in (None, False) and (key == "window") != (name == "airline"):
            raise fail("E508", f"data.source.{key} is not a setting of the built-in dataset "
                       f"'{name}'", spec, "data", "source", key,
                       help="as_images and as_sequence are for digits; window is for airline "
                       "(japanese_vowels is a sequence set as it is)")
    arrays = _read_builtin(entry.file)
    if name == "japanese_vowels":
        return _japanese_vowels(spec, source, arrays, entry)
    if name == "airline":
        return _airline(spec, source, arrays)
    as_images = source.get("as_images")
    as_images = False if as_images is None else as_images
    if not isinstance(as_images, bool):
        raise fail(
            "E508",
            f"data.source.as_images must be true or false, got {as_images!r}",
            spec,
            "data",
            "source",
            "as_images",
            help="`as_images: true` gives the digits as images [1, 8, 8] named image, with "
            "labels named label",
        )
    as_sequence = source.get("as_sequence")
    as_sequence = False if as_sequence is None else as_sequence
    if not isinstance(as_sequence, bool):
        message = f"data.source.as_sequence must be true or false, got {as_sequence!r}"
    elif as_sequence and as_images:
        message = "data.source.as_sequence and as_images are both true"
    else:
        message = None
    if message is not None:
        raise fail(
            "E508",
            message,
            spec,
            "data",
            "source",
            "as_sequence",
            help="`as_sequence: true` gives each digit as 8 steps of 8 features, x [8, 8]; "
            "`as_images: true` as an image [1, 8, 8]: choose one",
        )
    lengths = None
    if as_sequence:
        fields = {"x": arrays["x"].reshape(-1, 8, 8).astype(np.float32),
                  "y": arrays["y"].astype(np.int64)}
        lengths = _add_lengths(spec, source, fields, 8)
    elif as_images:
        fields = {
            "image": arrays["x"].reshape(-1, 1, 8, 8).astype(np.float32),
            "label": arrays["y"].astype(np.int64),
        }
    else:
        fields = {"x": arrays["x"].astype(np.float32), "y": arrays["y"].astype(np.int64)}
    if not as_sequence:
        _no_sequence_keys(spec, source, "the built-in digits (without as_sequence: true)")
    else:
        _no_padding_keys(spec, source, "digits as a sequence (8 steps each)")
    return RawData(
        fields=fields,
        description=f"the built-in dataset '{name}'",
        num_classes=entry.num_classes,
        lengths=lengths,
    )


def _lengths_name(spec: Any, source: dict, taken) -> str:
    """data.source.lengths (default "lengths"): the name of the lengths field, which must
    not be one of the fields ``taken`` (E508)."""
    name = source.get("lengths")
    if name is None:
        name = DEFAULT_LENGTHS
    if not isinstance(name, str) or not name:
        raise fail("E508", f"data.source.lengths must be a field name, got {name!r}", spec,
                   "data", "source", "lengths", help="e.g. `lengths: lengths`")
    if name in taken:
        raise fail("E508", f"data.source.lengths names the field '{name}', which the source "
                   "already has", spec, "data", "source", "lengths" if "lengths" in source
                   else "type", help=f"choose another name, e.g. `lengths: lengths` (fields: "
                   f"{name_list(taken)})")
    return name


def _add_lengths(spec: Any, source: dict, fields: dict, steps) -> str:
    """Add the lengths field of a sequence source to ``fields``: ``steps`` (one length for
    every sample, or an array of them) as int64 [N]; returns its name."""
    name = _lengths_name(spec, source, fields)
    n = len(next(iter(fields.values())))
    fields[name] = np.broadcast_to(np.asarray(steps, np.int64), (n,)).copy()
    return name


_PADDING_KEYS = ("max_len", "truncate", "pad_value")


def _no_padding_keys(spec: Any, source: dict, what: str) -> None:
    """E508 for max_len, truncate or pad_value on a source whose sequences all have one
    length (nothing to pad)."""
    for key in _PADDING_KEYS:
        if source.get(key) is not None:
            raise fail("E508", f"data.source.{key} pads ragged sequences, but {what} has "
                       "sequences of one length", spec, "data", "source", key,
                       help=f"remove {key}: every batch of this source has the same number "
                       "of steps")


def _no_sequence_keys(spec: Any, source: dict, what: str) -> None:
    """E508 for lengths, max_len, truncate or pad_value on a source without sequences."""
    for key in ("lengths", *_PADDING_KEYS):
        if source.get(key) is not None:
            raise fail("E508", f"data.source.{key} is for sequence data, and {what} gives "
                       "none", spec, "data", "source", key,
                       help=f"remove {key} (sequences come from .ts files, the synthetic "
                       "tasks, japanese_vowels, airline with window, digits with as_sequence "
                       "and npz files with sequences)")


def _japanese_vowels(spec: Any, source: dict, arrays: dict, entry: _Builtin) -> RawData:
    """The standard split: the 270 train utterances as the source (divided into train and
    val by data.split) and the 370 test utterances as its fixed test split."""
    parts = []
    for split in ("train", "test"):
        lengths = arrays[f"{split}_lengths"].astype(np.int64)
        frames = arrays[f"{split}_x"].astype(np.float64) / 1e6
        ends = np.cumsum(lengths)
        x = np.zeros((len(lengths), int(lengths.max()), frames.shape[1]), np.float32)
        for i, (end, length) in enumerate(zip(ends, lengths)):
            x[i, :length] = frames[end - length : end]
        fields = {"x": x, "y": arrays[f"{split}_y"].astype(np.int64)}
        name = _add_lengths(spec, source, fields, lengths)
        parts.append(RawData(
            fields=fields,
            description=f"the built-in dataset 'japanese_vowels' ({split} utterances)",
            num_classes=entry.num_classes,
            lengths=name,
            ragged=["x"],
        ))
    parts[0].test = parts[1]
    return parts[0]


def _airline(spec: Any, source: dict, arrays: dict) -> RawData:
    """Windows of the airline series (data.source.window), in time order."""
    window = source.get("window")
    if not isinstance(window, dict):
        raise fail("E508", "the built-in airline series needs data.source.window", spec,
                   "data", "source", "name", help="e.g. `window: {input: 24, horizon: 1}`: "
                   "24 months as x [24, 1], the next month as y [1]")
    sizes = {}
    for key, default in (("input", None), ("horizon", 1), ("season", None)):
        value = window.get(key, default)
        if key == "season" and value is None:
            continue
        if value is None or isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail("E508", f"data.source.window.{key} must be an integer >= 1, got "
                       f"{value!r}", spec, "data", "source", "window", key,
                       help="e.g. `window: {input: 24, horizon: 1}`")
        sizes[key] = value
    if sizes.get("season", 0) > sizes["input"]:
        raise fail("E508", f"data.source.window.season is {sizes['season']}, more than the "
                   f"{sizes['input']} input steps: the seasonal-naive forecast takes the value "
                   "one season back from the input window", spec, "data", "source", "window",
                   "season", help=f"use `input: {sizes['season']}` or more (e.g. `window: "
                   f"{{input: {2 * sizes['season']}, horizon: 1, season: {sizes['season']}}}`), "
                   "or a shorter season")
    series = arrays["passengers"]
    if sizes["input"] + sizes["horizon"] > len(series) - 2:
        raise fail("E508", f"data.source.window needs {sizes['input'] + sizes['horizon']} "
                   f"steps per window, and the airline series has {len(series)}", spec,
                   "data", "source", "window", help="use a shorter window, e.g. `{input: 24, "
                   "horizon: 1}`: a split needs windows of its own")
    fields = sliding_windows(series, sizes["input"], sizes["horizon"])
    lengths = _add_lengths(spec, source, fields, sizes["input"])
    _no_padding_keys(spec, source, "a window of the airline series")
    return RawData(fields=fields, description="the built-in dataset 'airline' (windows of "
                   f"{sizes['input']} + {sizes['horizon']} months)", lengths=lengths,
                   window_horizon=sizes["horizon"], window_season=sizes.get("season"),
                   units="thousands of passengers")


# --------------------------------------------------------------------------- files


def resolve_path(spec: Any, raw: Any) -> Path:
    """A data path from the spec; relative paths are relative to the spec file's directory."""
    return spec_relative(getattr(spec, "path", None), raw)


def _require_path(spec: Any, source: dict, kind: str, folder: bool = False) -> Path:
    """data.source.path resolved against the spec's directory: a file, or with ``folder``
    a directory (E508 when missing, E501 when it is not there)."""
    raw = source.get("path")
    if raw is None or str(raw) == "":
        example = ("images` (a folder holding one sub-folder per class)" if folder
                   else f"my_data.{kind}` (relative to the spec file's directory)")
        raise fail(
            "E508",
            f"data.source of type {kind} needs a 'path'",
            spec,
            "data",
            "source",
            help=f"add `path: {example}",
        )
    path = resolve_path(spec, raw)
    if not (path.is_dir() if folder else path.is_file()):
        if folder:
            what = "is a file, not a folder" if path.exists() else "does not exist"
            message = f"image folder '{path}' {what}"
        else:
            what = "is a directory, not a file" if path.is_dir() else "does not exist"
            message = f"data file '{path}' {what}"
        raise fail(
            "E501",
            message,
            spec,
            "data",
            "source",
            "path",
            help="fix data.source.path; relative paths are resolved against the directory "
            "of the spec file",
            extra={"resolved_path": str(path)},
        )
    return path


def _unreadable(spec: Any, path: Path, why: str, help: str) -> Exception:
    return fail(
        "E501",
        f"cannot read data file '{path}': {why}",
        spec,
        "data",
        "source",
        "path",
        help=help,
        extra={"resolved_path": str(path)},
    )


def load_npz(spec: Any, source: dict, may_lack: tuple[str, ...] = ()) -> RawData:
    """The arrays of an npz file, named as data.source.fields maps them (default: as
    stored); a field in ``may_lack`` (the target, for predict) may be absent."""
    path = _require_path(spec, source, "npz")
    mapping = source.get("fields")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise _unreadable(
            spec,
            path,
            str(e) or type(e).__name__,
            "write the file with numpy.savez or savez_compressed",
        ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise _unreadable(
            spec,
            path,
            "it holds a single .npy array, not an .npz archive",
            "save the arrays with numpy.savez(path, x=..., y=...) so each has a name",
        )
    with loaded as npz:
        available = list(npz.files)
        if mapping:
            wanted = {str(k): str(v) for k, v in mapping.items()}
        else:
            wanted = {name: name for name in available}
        fields: dict[str, np.ndarray] = {}
        for graphdl_name, array_name in wanted.items():
            if array_name not in available and graphdl_name in may_lack:
                continue
            if array_name not in available:
                raise fail(
                    "E502",
                    f"npz file '{path}' has no array '{array_name}' "
                    f"(asked for by data.source.fields.{graphdl_name})",
                    spec,
                    "data",
                    "source",
                    "fields",
                    graphdl_name,
                    help=f"arrays in the file: {name_list(available)}."
                    f"{did_you_mean(array_name, available)}",
                )
            try:
                arr = npz[array_name]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                if not mapping and isinstance(e, ValueError) and "allow_pickle" in str(e):
                    continue  # an object array nobody asked for (e.g. class names): skip it
                raise _unreadable(
                    spec,
                    path,
                    f"array '{array_name}': {e}",
                    "store plain numeric arrays (object arrays need pickle, which graphdl "
                    "never loads)",
                ) from None
            fields[graphdl_name] = arr
    raw = RawData(
        fields=fields,
        description=f"npz file '{path}'",
        optional=set() if mapping else set(fields),
    )
    _npz_sequences(spec, source, raw, path, may_lack)
    return raw


def _npz_sequences(spec: Any, source: dict, raw: RawData, path: Path,
                   may_lack: tuple[str, ...]) -> None:
    """data.source.sequences of an npz source: the ragged fields (stored padded [N, T, ...])
    and the lengths field beside them (E502 when the file lacks one, E503 when a sequence
    field has no time axis)."""
    names = source.get("sequences")
    if names is None:
        _no_sequence_keys(spec, source, "an npz source without data.source.sequences")
        return
    names = [names] if isinstance(names, str) else list(names)
    lengths = source.get("lengths")
    lengths = DEFAULT_LENGTHS if lengths is None else str(lengths)
    for j, name in enumerate(names):
        if name not in raw.fields and name in may_lack:
            continue  # an absent target of new data (predict)
        arr = raw.fields.get(str(name))
        if arr is None:
            raise fail("E502", f"data.source.sequences names '{name}', which npz file "
                       f"'{path}' does not give", spec, "data", "source", "sequences", j,
                       help=f"fields: {name_list(raw.fields)}.{did_you_mean(str(name), raw.fields)}")
        if arr.ndim < 2:
            raise fail("E503", f"the sequence field '{name}' in npz file '{path}' has shape "
                       f"{list(arr.shape)}: it needs a time axis [N, T, ...]", spec, "data",
                       "source", "sequences", j, help="store each sequence padded to the "
                       "longest, [samples, steps, ...], with its length in the lengths array")
    if lengths not in raw.fields:
        raise fail("E502", f"npz file '{path}' gives no lengths field '{lengths}' for the "
                   "sequences", spec, "data", "source", "lengths" if "lengths" in source
                   else "sequences", help="store each sequence's length as an integer array "
                   "[N] and name it with data.source.lengths (default: lengths; map it with "
                   "data.source.fields)")
    raw.lengths = lengths
    raw.ragged = [str(n) for n in names if str(n) in raw.fields]
    raw.optional -= {lengths, *raw.ragged}


# --------------------------------------------------------------------------- csv


def _bad_csv(spec: Any, path: Path, message: str, help: str, line: int | None = None,
             code: str = "E505", **extra):
    ex = {"csv_file": str(path)}
    if line is not None:
        ex["csv_line"] = line
    ex.update(extra)
    return fail(
        code,
        message,
        spec,
        "data",
        "source",
        "path",
        help=help,
        note=f"in {path}" + (f":{line}" if line is not None else ""),
        extra=ex,
    )


def _parse_columns(
    spec: Any,
    path: Path,
    cells: np.ndarray,
    col_idx: list[int],
    header: list[str],
    lines: np.ndarray,
) -> np.ndarray:
    """cells[:, col_idx] as float64 [N, len(col_idx)], a missing cell (`MISSING_TOKENS`)
    as NaN; E505 naming the first bad cell."""
    sub = cells[:, col_idx]
    sub = np.where(_is_missing(sub), "nan", sub)
    try:
        return sub.astype(np.float64)
    except ValueError:
        pass
    # Slow path only to find the first offending cell (row-major order).
    best: tuple[int, int] | None = None
    for j in range(len(col_idx)):
        try:
            sub[:, j].astype(np.float64)
            continue
        except ValueError:
            pass
        for i in range(sub.shape[0]):
            if best is not None and i > best[0]:
                break
            try:
                float(sub[i, j])
            except ValueError:
                if best is None or (i, j) < best:
                    best = (i, j)
                break
    assert best is not None
    i, j = best
    value = str(sub[i, j])
    column = header[col_idx[j]]
    what = "an empty value" if value.strip() == "" else f"'{value}', which is not a number"
    raise _bad_csv(
        spec,
        path,
        f"csv line {int(lines[i])}, column '{column}': {what}",
        "every feature and target value must be numeric; encode categories as integers and "
        "fill or drop missing values",
        line=int(lines[i]),
        csv_column=column,
    )


def _read_header(spec: Any, path: Path, text: str, delimiter: str) -> tuple[list[str], int]:
    """The first non-blank row (stripped names) and its 1-based line number."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for row in reader:
            if row and not (len(row) == 1 and not row[0].strip()):
                return [c.strip() for c in row], reader.line_num
    except csv.Error as e:
        raise _bad_csv(
            spec, path, f"csv line {reader.line_num}: {e}", "fix the quoting", line=reader.line_num
        ) from None
    raise _bad_csv(spec, path, "csv file is empty", "a header row naming the columns is required")


def _fast_numeric(
    text: str, delimiter: str, header_line: int, ncols: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """All data rows as float64 via numpy's C parser, with their line numbers; None when the
    file needs the careful path (ragged rows, non-numeric cells, odd line endings...)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = np.loadtxt(
                io.StringIO(text),
                delimiter=delimiter,
                skiprows=header_line,
                dtype=np.float64,
                comments=None,
                quotechar='"',
                ndmin=2,
            )
    except (ValueError, TypeError, IndexError):
        return None
    physical = text.split("\n")
    lines = [i + 1 for i in range(header_line, len(physical)) if physical[i].strip()]
    if values.shape != (len(lines), ncols):
        return None
    return values, np.asarray(lines, dtype=np.int64)


def _careful_cells(
    spec: Any, path: Path, text: str, delimiter: str, header: list[str], header_line: int
) -> tuple[np.ndarray, np.ndarray]:
    """Data rows as a string array [N, C] with line numbers; E505 on a ragged row."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for row in reader:
            if reader.line_num <= header_line:
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != len(header):
                raise _bad_csv(
                    spec,
                    path,
                    f"csv line {reader.line_num} has {len(row)} values but the header "
                    f"(line {header_line}) has {len(header)} columns",
                    "give every row exactly one value per header column (check for stray or "
                    f"missing '{delimiter}' delimiters)",
                    line=reader.line_num,
                )
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as e:
        raise _bad_csv(
            spec, path, f"csv line {reader.line_num}: {e}", "fix the quoting", line=reader.line_num
        ) from None
    cells = np.array(rows, dtype=str).reshape(len(rows), len(header))
    return cells, np.asarray(lines, dtype=np.int64)


MISSING_TOKENS = ("", "na", "n/a", "nan", "-nan", "null", "none", "<na>", "#n/a")
CATEGORICAL_ENCODINGS = ("one_hot", "index")
FILL_RULES = ("mean", "median", "zero")


def _is_missing(cells: np.ndarray) -> np.ndarray:
    """Which csv cells are missing values (an empty cell, NA, N/A, NaN, null, None...)."""
    return np.isin(np.char.lower(np.char.strip(cells.astype(str))), MISSING_TOKENS)


def _csv_settings(spec: Any, source: dict, header: list[str], target: str | None,
                  missing_column) -> tuple[dict[str, str], Any, str]:
    """data.source.categorical (column -> encoding), missing.fill (None, a rule or a
    number) and unknown, checked (E508; E502 for a column not in the header)."""
    categorical = source.get("categorical") or {}
    if not isinstance(categorical, dict):
        raise fail("E508", "data.source.categorical must map column names to one_hot or index",
                   spec, "data", "source", "categorical",
                   help="e.g. `categorical: {color: one_hot, city: index}`")
    out: dict[str, str] = {}
    for column, encoding in categorical.items():
        column = str(column)
        where = ("data", "source", "categorical", column)
        if column not in header:
            raise missing_column(column, *where)
        if encoding not in CATEGORICAL_ENCODINGS:
            raise fail("E508", f"unknown categorical encoding '{encoding}' for column '{column}'",
                       spec, *where, help=f"encodings: {name_list(CATEGORICAL_ENCODINGS)}."
                       + did_you_mean(str(encoding), CATEGORICAL_ENCODINGS))
        if column == target and encoding != "index":
            raise fail("E508", f"the target column '{column}' can only be categorical `index` "
                       "(its categories become class labels 0..k-1)", spec, *where,
                       help=f"write `{column}: index`")
        out[column] = encoding
    fill_rule = (source.get("missing") or {}).get("fill")
    if fill_rule is not None and (isinstance(fill_rule, bool) or not (
            fill_rule in FILL_RULES or isinstance(fill_rule, (int, float)))):
        raise fail("E508", f"data.source.missing.fill must be mean, median, zero or a number, "
                   f"got {fill_rule!r}", spec, "data", "source", "missing", "fill",
                   help="e.g. `missing: {fill: median}`")
    unknown = source.get("unknown") or "error"
    if unknown not in ("error", "ignore"):
        raise fail("E508", f"data.source.unknown must be error or ignore, got {unknown!r}", spec,
                   "data", "source", "unknown", help="`unknown: ignore` encodes an unseen "
                   "category as all zeros (one_hot) or -1 (index)")
    return out, fill_rule, unknown


def _categories(values: np.ndarray) -> list[str]:
    """The distinct values of a column, sorted: as numbers when all are numbers, else as
    text (stable whatever the row order)."""
    distinct = set(values.tolist())
    if all(_is_number(v) for v in distinct):
        return sorted(distinct, key=lambda v: (float(v), v))
    return sorted(distinct)


def _encode_categories(spec: Any, path: Path, column: str, cells: np.ndarray, lines: np.ndarray,
                       categories: list[str] | None, encoding: str, unknown: str,
                       is_target: bool) -> tuple[np.ndarray, list[str]]:
    """A categorical column as float64 [N, k] (one_hot) or [N, 1] (index), and its
    categories (learned from ``cells`` when ``categories`` is None). E505 at the first
    missing cell, and at the first category not in ``categories`` unless ``unknown`` is
    ignore (all zeros / -1; never for the target)."""
    values = np.char.strip(cells.astype(str))
    missing = _is_missing(values)
    if missing.any():
        i = int(np.argmax(missing))
        raise _bad_csv(spec, path, f"csv line {int(lines[i])}, column '{column}': a missing "
                       f"value ('{values[i]}') in a categorical column", "write a category for "
                       "it (e.g. unknown); missing.fill fills numeric columns only",
                       line=int(lines[i]), csv_column=column)
    if categories is None:
        categories = _categories(values)
    position = {c: k for k, c in enumerate(categories)}
    index = np.fromiter((position.get(v, -1) for v in values.tolist()), np.int64, len(values))
    unseen = index < 0
    if unseen.any() and (unknown == "error" or is_target):
        i = int(np.argmax(unseen))
        raise _bad_csv(
            spec, path, f"csv line {int(lines[i])}, column '{column}': the category "
            f"'{values[i]}' is not in the training file (its categories: "
            f"{name_list(categories)})",
            ("add `unknown: ignore` to data.source (an unseen category becomes all zeros, or "
             "-1 for index), or " if not is_target else "")
            + "add rows with it to data.source.path and train again",
            line=int(lines[i]), csv_column=column)
    if encoding == "index":
        return index[:, None].astype(np.float64), categories
    onehot = np.zeros((len(values), len(categories)), np.float64)
    rows = np.flatnonzero(~unseen)
    onehot[rows, index[rows]] = 1.0
    return onehot, categories


def _first_nan(block: np.ndarray) -> tuple[int, int]:
    bad = np.isnan(block)
    i = int(np.argmax(bad.any(axis=1)))
    return i, int(np.argmax(bad[i]))


def load_csv(spec: Any, source: dict, target_optional: bool = False,
             fitted: dict | None = None) -> RawData:
    """A csv file as the feature field (float32 [N, F]) and the target column. Categorical
    columns are encoded with the categories of ``fitted`` (the "csv" preprocess state of
    training: test_path, predict) or learned from this file; a missing feature value is
    filled with ``fitted``'s train-split values, left NaN for the loader to fill (training
    with missing.fill), or an E505 at its line and column."""
    path = _require_path(spec, source, "csv")
    csv_keys = SOURCE.variants["csv"][1]
    delimiter = source.get("delimiter") or csv_keys["delimiter"].default
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise fail(
            "E508",
            f"data.source.delimiter must be a single character, got {delimiter!r}",
            spec,
            "data",
            "source",
            "delimiter",
            help='e.g. `delimiter: ","`, `delimiter: ";"` or `delimiter: "\\t"` for tabs',
        )
    feature_field = str(source.get("feature_field") or csv_keys["feature_field"].default)
    target = source.get("target")
    features = source.get("features")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise _unreadable(spec, path, str(e), "save the csv as UTF-8 text") from None

    header, header_line = _read_header(spec, path, text, delimiter)
    seen: set[str] = set()
    for name in header:
        if name == "" or name in seen:
            raise _bad_csv(
                spec,
                path,
                f"csv header (line {header_line}) has "
                + ("an empty column name" if name == "" else f"the column '{name}' twice"),
                "give every column a distinct name in the header row",
                line=header_line,
            )
        seen.add(name)

    looks_headerless = all(_is_number(c) for c in header)
    headerless_hint = (
        " (the first row looks like data: the csv needs a header row naming the columns)"
        if looks_headerless
        else ""
    )

    def _missing_column(name: str, *yaml_path: str | int) -> Exception:
        return fail(
            "E502",
            f"csv file '{path}' has no column '{name}'",
            spec,
            *yaml_path,
            help=f"columns in the header: {name_list(header)}.{did_you_mean(name, header)}"
            + headerless_hint,
        )

    if target is not None:
        target = str(target)
        if target == feature_field:
            raise fail(
                "E508",
                f"the csv target column '{target}' has the same name as the feature field",
                spec,
                "data",
                "source",
                "feature_field",
                help="set data.source.feature_field to another name (it names the float "
                "array that holds the feature columns)",
            )
        if target not in header:
            if not target_optional:
                raise _missing_column(target, "data", "source", "target")
            target = None  # new data for predict may come without the label column
    if not features:  # absent (or empty): every column except the target
        feat_cols = [c for c in header if c != source.get("target")]
    else:
        if isinstance(features, str):
            features = [features]
        feat_cols = [str(c) for c in features]
        for i, c in enumerate(feat_cols):
            if c not in header:
                raise _missing_column(c, "data", "source", "features", i)
    categorical, fill_rule, unknown = _csv_settings(spec, source, header, target,
                                                    _missing_column)
    learned = fitted is None
    state = dict(fitted) if fitted is not None else {
        "feature_field": feature_field, "categorical": {}, "fill": fill_rule, "fill_values": {}}

    col_of = {name: i for i, name in enumerate(header)}
    fast = None if categorical else _fast_numeric(text, delimiter, header_line, len(header))
    cells = None
    if fast is not None:
        values, line_arr = fast

        def column_block(idx: list[int]) -> np.ndarray:
            return values[:, idx]

    else:
        cells, line_arr = _careful_cells(spec, path, text, delimiter, header, header_line)

        def column_block(idx: list[int]) -> np.ndarray:
            return _parse_columns(spec, path, cells, idx, header, line_arr)

    if len(line_arr) == 0:
        raise _bad_csv(spec, path, "csv file has a header but no data rows", "add data rows")

    def categories_of(column: str) -> list[str] | None:
        if learned:
            return None
        known = state["categorical"].get(column)
        return None if known is None else list(known["categories"])

    def encode(column: str, is_target: bool) -> np.ndarray:
        block, cats = _encode_categories(spec, path, column, cells[:, col_of[column]], line_arr,
                                         categories_of(column), categorical[column], unknown,
                                         is_target)
        if learned:
            state["categorical"][column] = {"encoding": categorical[column], "categories": cats}
        return block

    fields: dict[str, np.ndarray] = {}
    names: list[str] = []
    class_names = None
    if feat_cols:
        numeric = [c for c in feat_cols if c not in categorical]
        block = column_block([col_of[c] for c in numeric]) if numeric else None
        if block is not None and np.isnan(block).any():
            i, j = _first_nan(block)
            fill_values = state.get("fill_values") or {}
            if state.get("fill") is None:
                cell = "NaN" if cells is None else str(cells[i, col_of[numeric[j]]]).strip()
                what = "an empty value" if cell == "" else f"'{cell}'"
                raise _bad_csv(
                    spec, path, f"csv line {int(line_arr[i])}, column '{numeric[j]}': {what} "
                    "(a missing value)",
                    "fill it in the file, or add `missing: {fill: mean}` to data.source (mean, "
                    "median, zero or a number; mean and median over the train split)",
                    line=int(line_arr[i]), csv_column=numeric[j],
                    # a NaN written as a number is non-finite data (E504); other gaps E505
                    code="E504" if cell.lower() in ("nan", "-nan") else "E505")
            if fill_values:  # test_path, predict: the values fitted on the train split
                fill = np.asarray([fill_values[c] for c in numeric], np.float64)
                block = np.where(np.isnan(block), fill[None, :], block)
        parts, k = [], 0
        state["numeric"] = {}  # numeric column -> its position in the feature field
        for c in feat_cols:
            if c in categorical:
                part = encode(c, is_target=False)
                cats = state["categorical"][c]["categories"]
                names += [f"{c}={v}" for v in cats] if categorical[c] == "one_hot" else [c]
            else:
                part = block[:, k:k + 1]
                k += 1
                state["numeric"][c] = len(names)
                names.append(c)
            parts.append(part)
        fields[feature_field] = np.ascontiguousarray(np.concatenate(parts, axis=1),
                                                     dtype=np.float32)
        state["columns"] = names
    if target is not None and target in categorical:
        fields[target] = encode(target, is_target=True)[:, 0].astype(np.int64)
        class_names = list(state["categorical"][target]["categories"])
    elif target is not None:
        y = column_block([col_of[target]])[:, 0]
        if np.isnan(y).any():
            i = int(np.argmax(np.isnan(y)))
            raise _bad_csv(spec, path, f"csv line {int(line_arr[i])}, column '{target}': a "
                           "missing target value", "remove the row or give it its target: "
                           "missing.fill fills features, never the target",
                           line=int(line_arr[i]), csv_column=target)
        if np.all(np.isfinite(y)) and np.all(y == np.round(y)) and np.all(np.abs(y) < 2**53):
            fields[target] = y.astype(np.int64)
        else:
            fields[target] = y.astype(np.float32)
    configured = bool(categorical) or fill_rule is not None
    return RawData(
        fields=fields,
        description=f"csv file '{path}'",
        column_names={feature_field: names},
        row_lines=line_arr,
        class_names=class_names,
        num_classes=None if class_names is None else len(class_names),
        csv_state=state if configured else None,
    )


def fit_fill(spec: Any, csv_state: dict, x: np.ndarray) -> dict[str, float]:
    """missing.fill's value for every numeric feature column, from ``x`` (the train split's
    feature field, NaN where a value is missing); E504 when a column has no value to take
    a mean or median of."""
    rule = csv_state["fill"]
    out: dict[str, float] = {}
    for column, j in csv_state["numeric"].items():
        col = x[:, j].astype(np.float64)
        present = col[~np.isnan(col)]
        if rule in ("mean", "median") and present.size == 0:
            raise fail("E504", f"csv column '{column}' has no value in the train split, so "
                       f"missing.fill: {rule} has nothing to compute", spec, "data", "source",
                       "missing", "fill", help="fill it with zero or a number, or drop the "
                       "column from data.source.features")
        if rule == "mean":
            out[column] = float(present.mean())
        elif rule == "median":
            out[column] = float(np.median(present))
        elif rule == "zero":
            out[column] = 0.0
        else:
            out[column] = float(rule)
    return out


def apply_fill(csv_state: dict, x: np.ndarray) -> np.ndarray:
    """``x`` (a feature field) with each NaN replaced by its column's fitted fill value."""
    values = np.full(x.shape[1], np.nan, np.float32)
    for column, j in csv_state["numeric"].items():
        values[j] = csv_state["fill_values"][column]
    return np.where(np.isnan(x), values[None, :], x).astype(np.float32)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- image folder

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_MODES = ("rgb", "grayscale")


def _image_size(spec: Any, source: dict) -> tuple[int, int] | None:
    size = source.get("size")
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = [size, size]
    if not (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)
    ):
        raise fail(
            "E508",
            f"data.source.size must be [height, width] (positive integers), got {size!r}",
            spec,
            "data",
            "source",
            "size",
            help="e.g. `size: [32, 32]` resizes every image to 32x32 when it is read",
        )
    return int(size[0]), int(size[1])


def _list_images(spec: Any, root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted folder names) and (file, class index) pairs, in a stable order."""
    layout = "put the images in one folder per class: <path>/<class_name>/*.png (or .jpg)"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise fail(
            "E501",
            f"image folder '{root}' has no class folders",
            spec,
            "data",
            "source",
            "path",
            help=layout,
            extra={"resolved_path": str(root)},
        )
    files: list[tuple[Path, int]] = []
    for k, name in enumerate(classes):
        mine = sorted(
            p for p in (root / name).iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not mine:
            raise fail(
                "E501",
                f"class folder '{root / name}' holds no .png, .jpg or .jpeg images",
                spec,
                "data",
                "source",
                "path",
                help=layout + "; remove folders that are not classes",
                extra={"resolved_path": str(root / name)},
            )
        files += [(p, k) for p in mine]
    return classes, files


def _image_settings(spec: Any, source: dict) -> tuple[str, tuple[int, int] | None]:
    """data.source.mode and size of an image_folder source, checked (E508)."""
    mode = source.get("mode")
    mode = "rgb" if mode is None else mode
    if mode not in IMAGE_MODES:
        raise fail(
            "E508",
            f"unknown image mode '{mode}'",
            spec,
            "data",
            "source",
            "mode",
            help=f"modes: {name_list(IMAGE_MODES)}.{did_you_mean(str(mode), IMAGE_MODES)}",
        )
    return mode, _image_size(spec, source)


def _read_images(spec: Any, files: list[Path], mode: str, size: tuple[int, int] | None,
                 root: Path) -> np.ndarray:
    """The images ``files`` as float32 [N, C, H, W] in 0..255: converted to ``mode``,
    resized to ``size`` (bilinear) when given, all of one size (E503 naming two files of
    different sizes, relative to ``root``). Training and predict both read images here."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise fail(
            "E508",
            "reading images needs Pillow, which is not installed",
            spec,
            "data",
            "source",
            "type",
            help="pip install pillow",
        ) from None
    images = []
    first_size: dict[tuple[int, int], Path] = {}
    for path in files:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB" if mode == "rgb" else "L")
                if size is not None and im.size != (size[1], size[0]):
                    im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.float32)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise _unreadable(spec, path, str(e) or type(e).__name__,
                              "remove or replace the file (PNG and JPEG images are read)") from None
        first_size.setdefault(arr.shape[:2], path)
        images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    if len(first_size) > 1:
        (hw_a, path_a), (hw_b, path_b) = list(first_size.items())[:2]
        raise fail(
            "E503",
            f"images in '{root}' have different sizes: '{_relative(path_a, root)}' is "
            f"{hw_a[1]}x{hw_a[0]} (width x height), '{_relative(path_b, root)}' is "
            f"{hw_b[1]}x{hw_b[0]}",
            spec,
            "data",
            "source",
            help="add `size: [height, width]` to data.source to resize every image as it is "
            "read",
            note=f"{len(first_size)} different sizes in {len(files)} images",
            extra={"resolved_path": str(path_b)},
        )
    return np.ascontiguousarray(np.stack(images))


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def load_image_folder(spec: Any, source: dict) -> RawData:
    """``<path>/<class>/*.png|jpg|jpeg`` -> image float32 [N, C, H, W] in 0..255, label
    int64 (the index of the class folder among the sorted names)."""
    root = _require_path(spec, source, "image_folder", folder=True)
    mode, size = _image_settings(spec, source)
    classes, files = _list_images(spec, root)
    return RawData(
        fields={
            "image": _read_images(spec, [p for p, _ in files], mode, size, root),
            "label": np.asarray([k for _, k in files], dtype=np.int64),
        },
        description=f"image folder '{root}'",
        num_classes=len(classes),
        class_names=classes,
        sample_names=[p.relative_to(root).as_posix() for p, _ in files],
    )


def load_image_files(spec: Any, source: dict, paths: list[Path]) -> RawData:
    """New images for predict, read with the image_folder ``source``'s settings (mode,
    size): each path an image file or a folder (every image under it, in sorted order; any
    layout, class folders included). ``sample_names`` name each image: a file as given, an
    image in a folder relative to that folder. No labels."""
    mode, size = _image_settings(spec, source)
    files: list[Path] = []
    names: list[str] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            names.append(path.name)
            continue
        found = sorted(
            p for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not found:
            raise fail(
                "E501",
                f"folder '{path}' holds no .png, .jpg or .jpeg images",
                spec,
                "data",
                "source",
                "path",
                help="give an image file, several image files, or a folder of images",
                extra={"resolved_path": str(path)},
            )
        files += found
        names += [p.relative_to(path).as_posix() for p in found]
    root = paths[0] if len(paths) == 1 and paths[0].is_dir() else Path(os.path.commonpath(
        [str(p.parent) for p in files]))
    return RawData(
        fields={"image": _read_images(spec, files, mode, size, root)},
        description="images " + ", ".join(f"'{p}'" for p in paths[:3])
        + (f" and {len(paths) - 3} more" if len(paths) > 3 else ""),
        sample_names=names,
    )


# --------------------------------------------------------------------------- sequences


def load_synthetic(spec: Any, source: dict) -> RawData:
    """A seeded synthetic sequence task (graphdl.data.sequences), generated from spec.seed:
    adding (x [length, 2], y) or copy / reverse / sort (src [max_len], tgt_in and tgt_out
    [max_len + 1]; `length: L` is min_len = max_len = L)."""
    settings = fill(SOURCE, {**source, "type": "synthetic"})
    task = settings["task"]
    if task not in SEQUENCE_TASKS:
        raise fail("E508", f"unknown synthetic task '{task}'", spec, "data", "source", "task",
                   help=f"tasks: {name_list(SEQUENCE_TASKS)}.{did_you_mean(str(task), SEQUENCE_TASKS)}")
    _check_count(spec, source, settings, "samples", 1)
    vocab = settings["vocab"]
    seed = int(getattr(spec, "seed", 0) or 0)
    if task == "adding":
        for key in ("min_len", "max_len"):
            if source.get(key) is not None:
                raise fail("E508", f"data.source.{key} is for the copy, reverse and sort tasks; "
                           "the adding problem's sequences have one length", spec, "data",
                           "source", key, help="give `length: 50` instead")
        _check_count(spec, source, settings, "length", 2)
        if vocab is not None:
            raise fail("E508", "data.source.vocab is for the copy, reverse and sort tasks, not "
                       "adding", spec, "data", "source", "vocab",
                       help="remove vocab: the adding problem's values are real numbers")
        fields = adding_problem(settings["length"], settings["samples"], seed)
        lengths = _add_lengths(spec, source, fields, settings["length"])
        _no_padding_keys(spec, source, f"the synthetic {task} task")
        return RawData(fields=fields, description=f"the synthetic {task} task", lengths=lengths)
    if vocab is None or isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 4:
        raise fail("E508", f"the {task} task needs data.source.vocab, an integer >= 4 "
                   f"(tokens 0-2 are PAD, BOS, EOS), got {vocab!r}", spec, "data", "source",
                   "vocab" if "vocab" in source else "task",
                   help="e.g. `vocab: 12`: tokens 3..11")
    assert task in TOKEN_TASKS
    min_len, max_len = _token_lengths(spec, source, settings)
    fields, steps = token_task(task, vocab, min_len, max_len, settings["samples"], seed)
    lengths = _add_lengths(spec, source, fields, steps)
    for key in ("truncate", "pad_value"):
        if source.get(key) is not None:
            raise fail("E508", f"data.source.{key} pads ragged sequences, but the synthetic "
                       f"{task} task pads its sequences to max_len itself", spec, "data",
                       "source", key, help=f"remove {key}")
    return RawData(fields=fields, description=f"the synthetic {task} task", lengths=lengths)


def _check_count(spec: Any, source: dict, settings: dict, key: str, least: int) -> None:
    value = settings[key]
    if value is None or isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise fail("E508", f"data.source.{key} must be an integer >= {least}, got {value!r}",
                   spec, "data", "source", key if key in source else "task",
                   help=f"e.g. `{key}: {10000 if key == 'samples' else 50}`" + (
                       " (the adding problem puts one marker in each half)"
                       if key == "length" and least == 2 else ""))


def _token_lengths(spec: Any, source: dict, settings: dict) -> tuple[int, int]:
    """(min_len, max_len) of a token task: `length: L` (every sequence L tokens) or
    `min_len`/`max_len` (each sample's length drawn from [min_len, max_len], min_len
    defaulting to 1), never both."""
    ranged = [k for k in ("min_len", "max_len") if source.get(k) is not None]
    if settings["length"] is not None and ranged:
        raise fail("E508", f"data.source has both length and {ranged[0]}", spec, "data",
                   "source", ranged[0], help="give `length: L` for sequences of one length, or "
                   "`min_len` and `max_len` for lengths drawn from that range")
    if settings["length"] is not None:
        _check_count(spec, source, settings, "length", 1)
        return settings["length"], settings["length"]
    if source.get("max_len") is None:
        raise fail("E508", "the token tasks need data.source.length (one length) or max_len "
                   "(and min_len, default 1)", spec, "data", "source",
                   "min_len" if "min_len" in source else "task",
                   help="e.g. `min_len: 4, max_len: 12`")
    settings = {**settings, "min_len": source.get("min_len", 1)}
    _check_count(spec, source, settings, "max_len", 1)
    _check_count(spec, source, settings, "min_len", 1)
    if settings["min_len"] > settings["max_len"]:
        raise fail("E508", f"data.source.min_len ({settings['min_len']}) is above max_len "
                   f"({settings['max_len']})", spec, "data", "source", "min_len",
                   help="min_len <= max_len")
    return settings["min_len"], settings["max_len"]


def load_ts(spec: Any, source: dict) -> RawData:
    """A UEA/UCR ``.ts`` file: x float32 [T, C] (ragged: padded to the longest), its
    lengths, and label int64 (the index of the sample's class in @classLabel order) when
    the file declares class labels."""
    path = _require_path(spec, source, "ts")
    ts = read_ts(path)
    fields = {"x": ts.x}
    if ts.label is not None:
        fields["label"] = ts.label
    lengths = _add_lengths(spec, source, fields, ts.lengths)
    return RawData(
        fields=fields,
        description=f"ts file '{path}'",
        num_classes=None if ts.class_names is None else len(ts.class_names),
        class_names=ts.class_names,
        sample_names=[f"{path.name}:{line}" for line in ts.lines],
        lengths=lengths,
        ragged=["x"],
    )


SOURCE_TYPES = ("builtin", "npz", "csv", "image_folder", "synthetic", "ts")


def load_source(spec: Any, source: dict, target_optional: bool = False,
                fitted: dict | None = None) -> RawData:
    """Load ``source`` (a data.source mapping). With ``target_optional`` a csv file may lack
    its target column (new data for predict); ``fitted`` is the training's "csv" state (a
    csv read like the training file: test_path, predict)."""
    kind = source.get("type")
    if kind == "builtin":
        return load_builtin(spec, source)
    if kind == "npz":
        return load_npz(spec, source)
    if kind == "csv":
        return load_csv(spec, source, target_optional=target_optional, fitted=fitted)
    if kind == "image_folder":
        return load_image_folder(spec, source)
    if kind == "synthetic":
        return load_synthetic(spec, source)
    if kind == "ts":
        return load_ts(spec, source)
    raise fail(
        "E508",
        f"unknown data source type '{kind}'",
        spec,
        "data",
        "source",
        "type",
        help="use `type: builtin`, `npz`, `csv`, `image_folder`, `synthetic` or `ts`."
        + did_you_mean(str(kind), SOURCE_TYPES),
    )
