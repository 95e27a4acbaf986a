"""Sequence data: the seeded synthetic tasks (adding, copy, reverse, sort), the reader of
the UEA/UCR ``.ts`` time-series format (equal or unequal lengths), and the sliding window
that turns one series into forecasting samples.

Sequences of unequal lengths are stored padded (with 0) to the longest, with their lengths
beside them; `graphdl.data.ragged` pads them per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphdl.errors import Diagnostic, GraphdlError

SEQUENCE_TASKS = ("adding", "copy", "reverse", "sort")
TOKEN_TASKS = ("copy", "reverse", "sort")
PAD, BOS, EOS = 0, 1, 2
FIRST_TOKEN = 3  # tokens of copy/reverse/sort are drawn from [FIRST_TOKEN, vocab)


# --------------------------------------------------------------------------- synthetic


def adding_problem(length: int, samples: int, seed: int) -> dict[str, np.ndarray]:
    """The adding problem (Hochreiter & Schmidhuber 1997): ``x`` float32 [samples, length, 2]
    (channel 0 uniform(0, 1) values, channel 1 a marker that is 1 at exactly two steps, one
    in each half of the sequence) and ``y`` float32 [samples], the sum of the two marked
    values. Needs length >= 2."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, size=(samples, length)).astype(np.float32)
    half = length // 2
    first = rng.integers(0, half, size=samples)
    second = rng.integers(half, length, size=samples)
    rows = np.arange(samples)
    markers = np.zeros((samples, length), np.float32)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]
    return {"x": np.stack([values, markers], axis=2), "y": y.astype(np.float32)}


def token_task(task: str, vocab: int, min_len: int, max_len: int, samples: int,
               seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """copy / reverse / sort: ``src`` int64 [samples, max_len] with tokens in [3, vocab) and
    each sample's length drawn uniformly from [min_len, max_len] (PAD after it), the target
    (src itself, reversed, or sorted ascending, over the sample's own tokens) as ``tgt_in``
    = BOS + target and ``tgt_out`` = target + EOS, both int64 [samples, max_len + 1] and
    PAD-filled after (PAD 0, BOS 1, EOS 2); and each sample's length, int64 [samples]. With
    min_len = max_len every sequence has that length and nothing is padded."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(FIRST_TOKEN, vocab, size=(samples, max_len), dtype=np.int64)
    lengths = (np.full(samples, max_len, np.int64) if min_len == max_len
               else rng.integers(min_len, max_len + 1, size=samples, dtype=np.int64))
    steps = np.arange(max_len)[None, :]
    valid = steps < lengths[:, None]
    src = np.where(valid, tokens, PAD)
    if task == "copy":
        target = src.copy()
    elif task == "reverse":
        # position t of the target holds the token at length - 1 - t
        idx = np.clip(lengths[:, None] - 1 - steps, 0, max_len - 1)
        target = np.where(valid, np.take_along_axis(src, idx, axis=1), PAD)
    else:
        # PAD sorts last when it is given a key above every token
        keyed = np.where(valid, src, vocab)
        target = np.sort(keyed, axis=1)
        target = np.where(target == vocab, PAD, target)
    tgt_in = np.full((samples, max_len + 1), PAD, np.int64)
    tgt_in[:, 0] = BOS
    tgt_in[:, 1:] = target
    tgt_out = np.full((samples, max_len + 1), PAD, np.int64)
    tgt_out[:, :max_len] = target
    tgt_out[np.arange(samples), lengths] = EOS
    return {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}, lengths


# --------------------------------------------------------------------------- windows


def sliding_windows(series: np.ndarray, inputs: int, horizon: int) -> dict[str, np.ndarray]:
    """Forecasting samples from one univariate series (float [L]), in time order: window i
    has ``x`` float32 [inputs, 1] = series[i : i + inputs] (one feature per step) and ``y``
    float32 [horizon] = series[i + inputs : i + inputs + horizon], the steps that follow.
    L - inputs - horizon + 1 windows (none when the series is too short)."""
    series = np.asarray(series, np.float64).reshape(-1)
    count = max(0, len(series) - inputs - horizon + 1)
    start = np.arange(count)[:, None]
    x = series[start + np.arange(inputs)[None, :]]
    y = series[start + inputs + np.arange(horizon)[None, :]]
    return {"x": x.reshape(count, inputs, 1).astype(np.float32),
            "y": y.reshape(count, horizon).astype(np.float32)}


# --------------------------------------------------------------------------- .ts files


@dataclass
class TsData:
    """A ``.ts`` file: ``x`` float32 [N, T, C], padded with 0 after each sample's last step
    to the longest (T); ``lengths`` int64 [N] the steps of each sample; ``label`` int64 [N]
    (index in the @classLabel list) when the file has class labels; ``lines`` the 1-based
    line of each sample."""

    x: np.ndarray
    label: np.ndarray | None
    class_names: list[str] | None
    lines: np.ndarray
    lengths: np.ndarray


_TS_HELP = ("see the UEA/UCR .ts format (timeseriesclassification.com): @-header lines, then "
            "@data and one sample per line, dimensions separated by ':', values by ',', the "
            "class label last")
_SAME_LENGTH = ("the dimensions of one sample are steps of the same time axis: give each of "
                "them the same number of values (samples may differ in length)")


def _ts_error(path: Path, line: int, message: str, col: int | None = None, span: int = 1,
              help: str = _TS_HELP) -> GraphdlError:
    return GraphdlError(Diagnostic("E505", message, file=str(path), line=line, col=col,
                                   span=span, help=help, extra={"resolved_path": str(path)}),
                        phase="data")


def _header_flag(path: Path, number: int, words: list[str]) -> bool:
    if len(words) != 2 or words[1].lower() not in ("true", "false"):
        raise _ts_error(path, number, f"{words[0]} takes true or false, got "
                        f"'{' '.join(words[1:])}'", col=1)
    return words[1].lower() == "true"


def read_ts(path: Path) -> TsData:
    """Parse the UEA/UCR ``.ts`` file ``path`` (univariate or multivariate, of equal or
    unequal lengths, with or without @classLabel). A malformed line, a sample whose
    dimensions differ in length or number, time stamps or a regression target are E505
    errors at their file:line(:col)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise GraphdlError(Diagnostic("E501", f"cannot read data file '{path}': {e}",
                                      file=str(path), help="give a UTF-8 text .ts file",
                                      extra={"resolved_path": str(path)}),
                           phase="data") from None
    classes: list[str] | None = None
    in_data = False
    series: list[np.ndarray] = []
    labels: list[int] = []
    lines: list[int] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            classes, in_data = _header_line(path, number, raw, classes)
            continue
        values, label = _data_line(path, number, raw, classes)
        if series and values.shape[1] != series[0].shape[1]:
            raise _ts_error(path, number, f"this sample has {values.shape[1]} dimensions but "
                            f"the sample on line {lines[0]} has {series[0].shape[1]}", col=1,
                            help="give every sample the same dimensions, separated by ':'")
        series.append(values)
        lines.append(number)
        if label is not None:
            labels.append(label)
    if not in_data:
        raise _ts_error(path, max(1, len(text.splitlines())), "the .ts file has no @data line")
    if not series:
        raise _ts_error(path, max(1, len(text.splitlines())), "the .ts file has no samples "
                        "after @data", help="add one line per sample after @data")
    lengths = np.asarray([len(v) for v in series], np.int64)
    x = np.zeros((len(series), int(lengths.max()), series[0].shape[1]), np.float32)
    for i, values in enumerate(series):
        x[i, : len(values)] = values
    return TsData(
        x=x,
        label=None if classes is None else np.asarray(labels, np.int64),
        class_names=classes,
        lines=np.asarray(lines, np.int64),
        lengths=lengths,
    )


def _header_line(path: Path, number: int, raw: str,
                 classes: list[str] | None) -> tuple[list[str] | None, bool]:
    """(the class names so far, whether @data was reached) after header line ``raw``."""
    words = raw.split()
    key = words[0].lower()
    if not key.startswith("@"):
        raise _ts_error(path, number, f"expected an @-header line or @data before the data, "
                        f"got '{raw.strip()[:40]}'", col=raw.index(words[0]) + 1,
                        span=len(words[0]))
    if key == "@data":
        return classes, True
    if key == "@equallength":
        _header_flag(path, number, words)  # either: lengths are read from the samples
    if key == "@timestamps" and _header_flag(path, number, words):
        raise _ts_error(path, number, "time-stamped .ts files are not supported",
                        col=raw.index(words[0]) + 1,
                        help="write the values without time stamps (@timeStamps false)")
    if key == "@targetlabel" and _header_flag(path, number, words):
        raise _ts_error(path, number, "regression .ts files (@targetlabel true) are not "
                        "supported yet", col=raw.index(words[0]) + 1,
                        help="only classification files (@classLabel true ...) are read")
    if key == "@classlabel":
        if len(words) < 2 or words[1].lower() not in ("true", "false"):
            raise _ts_error(path, number, "@classLabel takes true followed by the class "
                            "labels, or false", col=raw.index(words[0]) + 1)
        if words[1].lower() == "true":
            names = words[2:]
            if not names:
                raise _ts_error(path, number, "@classLabel true lists no class labels",
                                col=raw.index(words[0]) + 1,
                                help="list the labels: @classLabel true 1 2 3")
            if len(set(names)) != len(names):
                twice = next(n for n in names if names.count(n) > 1)
                raise _ts_error(path, number, f"@classLabel lists '{twice}' twice",
                                col=raw.index(twice, len(words[0])) + 1, span=len(twice))
            return names, False
        return None, False
    return classes, False  # @problemName, @univariate, @seriesLength, @dimensions, ...


def _data_line(path: Path, number: int, raw: str,
               classes: list[str] | None) -> tuple[np.ndarray, int | None]:
    """One sample: its values float32 [T, C] ('?' is NaN) and its class index."""
    parts = raw.rstrip().split(":")
    starts = np.cumsum([0] + [len(p) + 1 for p in parts[:-1]]) + 1  # 1-based column of each
    label = None
    if classes is not None:
        if len(parts) < 2:
            raise _ts_error(path, number, "a sample line needs its values and a class label "
                            "separated by ':'", col=1)
        name = parts[-1].strip()
        if name not in classes:
            col = int(starts[-1]) + len(parts[-1]) - len(parts[-1].lstrip())
            raise _ts_error(path, number, f"class label '{name}' is not declared by "
                            "@classLabel", col=col, span=max(1, len(name)),
                            help=f"@classLabel declares {', '.join(classes)}")
        label = classes.index(name)
        parts, starts = parts[:-1], starts[:-1]
    dims = []
    for part, start in zip(parts, starts):
        cells = part.split(",")
        column = int(start)
        values = []
        for cell in cells:
            token = cell.strip()
            if token == "?":
                values.append(np.nan)
            else:
                try:
                    values.append(float(token))
                except ValueError:
                    what = "an empty value" if token == "" else f"'{token}', which is not a number"
                    col = column + len(cell) - len(cell.lstrip())
                    raise _ts_error(path, number, f"{what}", col=col,
                                    span=max(1, len(token))) from None
            column += len(cell) + 1
        dims.append(values)
    lengths = {len(d) for d in dims}
    if len(lengths) > 1:
        raise _ts_error(path, number, "the dimensions of this sample have different lengths "
                        f"({', '.join(str(len(d)) for d in dims)})", col=1, help=_SAME_LENGTH)
    return np.asarray(dims, np.float32).T.copy(), label
