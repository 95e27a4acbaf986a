"""`load_data`: spec -> validated, filtered, split and preprocessed arrays; `apply_preprocess`
for predict.

Model inputs are checked against the data as data.preprocess leaves it (a resize changes
the image size), worked out from the steps before any data is transformed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from graphdl.data._diag import diag, did_you_mean, fail, locate, name_list
from graphdl.data.augment import check_augment
from graphdl.data.dataset import SPLIT_NAMES, Dataset, Splits
from graphdl.data.filter import apply_filter
from graphdl.data.forecast import baseline_of_split
from graphdl.data.pipeline import apply_entries, fit_and_apply, plan_state, plan_steps
from graphdl.data.ragged import Ragged
from graphdl.data.sequence_checks import (
    check_lengths_input,
    check_positions,
    check_token_ids,
    conform,
    conform_new_data,
    varying,
)
from graphdl.data.sources import (
    RawData,
    apply_fill,
    fit_fill,
    load_image_files,
    load_npz,
    load_source,
)
from graphdl.data.split import SplitConfig, split_config, split_indices, subsample
from graphdl.errors import Diagnostic, GraphdlError

# --------------------------------------------------------------------------- spec access


def _inputs(spec: Any) -> dict:
    model = getattr(spec, "model", None)
    return dict(getattr(model, "inputs", None) or {})


def _target(spec: Any) -> str | None:
    train = getattr(spec, "train", None)
    if train is None:
        return None
    t = train.get("target") if isinstance(train, dict) else getattr(train, "target", None)
    return None if t is None else str(t)


def _input_where(spec: Any, name: str, inp: Any) -> dict:
    return {"loc": getattr(inp, "loc", None)}


def _shape_str(shape: tuple) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _shape_matches(expected: tuple, actual: tuple) -> bool:
    """Whether a per-sample shape fits model.inputs' ``expected``; a first dimension T (a
    sequence's steps) fits any length."""
    if len(expected) != len(actual):
        return False
    return all(e is None or e == -1 or (e == "T" and j == 0)
               or (not isinstance(e, str) and int(e) == a)
               for j, (e, a) in enumerate(zip(expected, actual)))


def _is_numeric(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "biuf"


# --------------------------------------------------------------------------- field checks


def _select_and_count(spec: Any, raw: RawData, required: list[str]) -> tuple[dict, int]:
    """Drop unusable optional fields; E503 when the used fields disagree on the sample count."""
    fields = dict(raw.fields)
    ref_names = [r for r in required if r in fields] or list(fields)
    counts = {name: fields[name].shape[0] for name in ref_names if fields[name].ndim > 0}
    n = max(set(counts.values()), key=list(counts.values()).count) if counts else 0
    for name in list(fields):
        arr = fields[name]
        usable = arr.ndim > 0 and arr.shape[0] == n and _is_numeric(arr)
        if usable:
            continue
        if name in raw.optional and name not in required:
            del fields[name]
            continue
        if arr.ndim == 0:
            raise fail(
                "E503",
                f"data field '{name}' in {raw.description} is a scalar, not an array of samples",
                spec,
                "data",
                "source",
                help="store one row per sample (first dimension = samples)",
            )
        if not _is_numeric(arr):
            raise fail(
                "E503",
                f"data field '{name}' in {raw.description} has dtype {arr.dtype}, which is not "
                "numeric",
                spec,
                "data",
                "source",
                help="store numbers (integers or floats); encode categories as integers",
            )
        sizes = ", ".join(f"'{k}' has {v.shape[0] if v.ndim else 'no'}" for k, v in fields.items())
        raise fail(
            "E503",
            f"data fields in {raw.description} have different numbers of samples: {sizes}",
            spec,
            "data",
            "source",
            help="every field must have one entry per sample along its first dimension",
        )
    return fields, n


def _check_required(spec: Any, fields: dict, require_target: bool) -> None:
    diags = []
    available = list(fields)
    hint = f"data fields: {name_list(available)}."
    for name, inp in _inputs(spec).items():
        if name not in fields:
            diags.append(
                diag(
                    "E502",
                    f"model input '{name}' has no matching field in the data",
                    spec,
                    "model",
                    "inputs",
                    name,
                    **_input_where(spec, name, inp),
                    help=f"{hint}{did_you_mean(name, available)} Rename the input, or map the "
                    "data to it (npz: data.source.fields, csv: data.source.feature_field)",
                )
            )
    target = _target(spec)
    if require_target and target is not None and target not in fields:
        diags.append(
            diag(
                "E502",
                f"the training target '{target}' has no matching field in the data",
                spec,
                "train",
                "target",
                help=f"{hint}{did_you_mean(target, available)} Set train.target to the label "
                "field (csv: the data.source.target column name)",
            )
        )
    if diags:
        raise GraphdlError(diags, phase="data")


def _canonical_dtypes(spec: Any, fields: dict) -> dict:
    """Model inputs get their declared dtype; other floats float32, other ints int64."""
    inputs = _inputs(spec)
    out = {}
    diags = []
    for name, arr in fields.items():
        declared = str(getattr(inputs.get(name), "dtype", "") or "") if name in inputs else ""
        if declared.startswith("float"):
            want = "float32"
        elif declared.startswith("int"):
            want = "int64"
        else:
            want = "float32" if arr.dtype.kind == "f" else "int64"
        if want == "int64" and arr.dtype.kind == "f":
            bad = ~(np.isfinite(arr) & (arr == np.round(arr)))
            if bad.any():
                first = int(np.argmax(bad.reshape(arr.shape[0], -1).any(axis=1)))
                diags.append(
                    diag(
                        "E503",
                        f"model.inputs.{name} has dtype int64 but the data field '{name}' "
                        f"holds non-integer values (first at sample {first})",
                        spec,
                        "model",
                        "inputs",
                        name,
                        **_input_where(spec, name, inputs[name]),
                        help="declare the input `dtype: float32`, or store integer values",
                    )
                )
                continue
        dtype = np.float32 if want == "float32" else np.int64
        with np.errstate(over="ignore", invalid="ignore"):
            out[name] = np.ascontiguousarray(arr, dtype=dtype)
    if diags:
        raise GraphdlError(diags, phase="data")
    return out


def _check_shapes(spec: Any, final: dict, stored: dict, padded: set | None = None,
                  lengths: dict | None = None) -> None:
    """E503 for each model input whose per-sample shape after data.preprocess (``final``)
    differs from model.inputs; ``stored`` holds the shapes before preprocessing. A field of
    ``padded`` (ragged sequences padded per batch; ``lengths`` their least and most steps)
    takes a first dimension T."""
    diags = []
    for name, inp in _inputs(spec).items():
        if name not in final:
            continue
        expected = tuple(getattr(inp, "shape", ()) or ())
        actual = tuple(final[name])
        if (padded and name in padded and expected[:1] != ("T",)
                and _shape_matches(expected[1:], actual[1:])):
            low, high = (lengths or {}).get(name, (None, actual[0]))
            steps = f"{low} to {high}" if low is not None else f"up to {high}"
            features = ", ".join(str(d) for d in actual[1:])
            diags.append(diag(
                "E503", f"model.inputs.{name} has shape {_shape_str(expected)}, but the data "
                f"field '{name}' holds ragged sequences of {steps} steps, each batch padded "
                "to its own longest", spec, "model", "inputs", name,
                **_input_where(spec, name, inp),
                help=f"declare the steps as T: shape: [T{', ' if features else ''}{features}]"
                f", or pad every batch to one length with data.source.max_len: {high}"))
            continue
        if _shape_matches(expected, actual):
            continue
        message = (f"model.inputs.{name} has shape {_shape_str(expected)} but the data field "
                   f"'{name}' has per-sample shape {_shape_str(actual)}")
        help_ = f"set model.inputs.{name}.shape to {_shape_str(actual)} to match the data"
        layout = _layout(expected, actual)
        if layout is not None:
            # a reshape would scramble the values: the axes are in another order
            message += f": the data is {_shape_str(actual)} ({layout})"
            if layout == "channels first":
                help_ += " (graphdl's image layers take channels first, [C, H, W])"
            elif layout == "channels last":
                first = _shape_str((actual[-1], *actual[:-1]))
                help_ = (f"graphdl's image layers take channels first [C, H, W]: store the data "
                         f"as [N, {first[1:-1]}] (NumPy: arr.transpose(0, 3, 1, 2)) and set "
                         f"model.inputs.{name}.shape to {first}")
        if tuple(stored[name]) != actual:
            message += f" after data.preprocess (stored: {_shape_str(stored[name])})"
            help_ += ", or change data.preprocess (e.g. the resize size)"
        elif layout is None and all(isinstance(e, int) and e > 0 for e in expected) and int(
            np.prod(expected, dtype=np.int64)
        ) == int(np.prod(actual, dtype=np.int64)):
            help_ += (
                f", or reshape the data to [N, {', '.join(str(e) for e in expected)}] "
                "(the number of values per sample agrees)"
            )
        diags.append(
            diag(
                "E503",
                message,
                spec,
                "model",
                "inputs",
                name,
                **_input_where(spec, name, inp),
                help=help_,
            )
        )
    if diags:
        raise GraphdlError(diags, phase="data")


def _layout(expected: tuple, actual: tuple) -> str | None:
    """How the data lays out the axes model.inputs declares in another order: "channels
    first" ([C, H, W], what graphdl's image layers take), "channels last" ([H, W, C]), or
    "the same sizes in another order"; None when the shapes are not permutations of each
    other (or are equal)."""
    if tuple(expected) == tuple(actual) or sorted(map(str, expected)) != sorted(map(str, actual)):
        return None
    if len(actual) == 3:
        if tuple(expected) == (*actual[1:], actual[0]):
            return "channels first"
        if tuple(expected) == (actual[-1], *actual[:-1]):
            return "channels last"
    return "the same sizes in another order"


def _shapes(fields: dict) -> dict:
    return {k: tuple(v.shape[1:]) for k, v in fields.items()}


def _floats(fields: dict) -> set:
    return {k for k, v in fields.items() if v.dtype.kind == "f"}


def _check_finite(spec: Any, fields: dict, raw: RawData | None, raw_fields: dict) -> None:
    for name, arr in fields.items():
        if arr.dtype.kind != "f" or arr.size == 0:
            continue
        finite = np.isfinite(arr)
        if finite.all():
            continue
        n = arr.shape[0]
        bad = ~finite.reshape(n, -1)
        sample = int(np.argmax(bad.any(axis=1)))
        flat_col = int(np.argmax(bad[sample]))
        per_sample = arr.shape[1:]
        value = arr.reshape(n, -1)[sample, flat_col]
        kind = "NaN" if np.isnan(value) else ("inf" if value > 0 else "-inf")
        where = f"sample {sample}"
        if raw is not None and raw.row_lines is not None:
            where += f" (csv line {int(raw.row_lines[sample])})"
        column: Any = None
        if len(per_sample) == 1:
            column = flat_col
            names = raw.column_names.get(name) if raw is not None else None
            col_desc = f"column {flat_col}"
            if names and flat_col < len(names):
                col_desc += f" ('{names[flat_col]}')"
            where += f", {col_desc}"
        elif len(per_sample) > 1:
            column = [int(i) for i in np.unravel_index(flat_col, per_sample)]
            where += f", position {column} within the sample"
        note = None
        src = raw_fields.get(name)
        if src is not None and src.dtype.kind in "f" and src.dtype != arr.dtype:
            orig = src.reshape(n, -1)[sample, flat_col]
            if np.isfinite(orig):
                note = f"the stored value {orig!r} is too large for float32"
        desc = raw.description if raw is not None else "the data"
        raise fail(
            "E504",
            f"data field '{name}' contains {kind} at {where}; "
            f"{int(bad.sum())} non-finite value(s) in all",
            spec,
            "data",
            "source",
            help=f"remove or fill the missing/invalid values in {desc}; graphdl does not "
            "impute data",
            note=note,
            extra={"field": name, "sample": sample, "column": column}
            | ({"csv_line": int(raw.row_lines[sample])} if raw is not None and raw.row_lines is not None
               else {}),
        )


def _prepare(spec: Any, raw: RawData, require_target: bool,
             split: str | None = None) -> tuple[dict, list, dict, Ragged | None]:
    """Checked canonical fields (ragged sequences padded as data.source says), the planned
    preprocess entries (nothing fitted), the per-sample shapes after preprocessing and the
    ragged fields' layout (None without any). ``split`` names the data in messages about
    a sample (the test split of a built-in)."""
    target = _target(spec)
    required = list(_inputs(spec)) + ([target] if (require_target and target) else [])
    if raw.lengths is not None and raw.ragged:
        required.append(raw.lengths)
    fields, _ = _select_and_count(spec, raw, required)
    _check_required(spec, fields, require_target)
    out = _canonical_dtypes(spec, fields)
    ragged = None
    present = [f for f in raw.ragged if f in out]
    if present and raw.lengths in out:
        ragged = conform(spec, out, raw.lengths, present, raw.description, raw.sample_names)
    check_lengths_input(spec, out, ragged, raw.lengths, raw.description)
    entries, final = plan_steps(spec, _shapes(out), _floats(out), target,
                                present_only=not require_target,
                                ragged=set(ragged.pads) if ragged else set())
    padded, spans = set(), {}
    if ragged is not None and ragged.max_len is None and varying(out, ragged):
        lengths = out[ragged.lengths]
        padded = set(ragged.pads)
        spans = {n: (int(lengths.min()), int(lengths.max())) for n in padded}
    _check_shapes(spec, final, _shapes(out), padded, spans)
    check_token_ids(spec, out, ragged, split, raw.sample_names)
    check_positions(spec, out, ragged, split, raw.sample_names)
    checked = dict(out)
    if raw.csv_state is not None and raw.csv_state.get("fill") is not None:
        ff = raw.csv_state["feature_field"]  # NaN there is a missing value, filled later
        if ff in checked:
            checked[ff] = np.nan_to_num(checked[ff], nan=0.0, posinf=np.inf, neginf=-np.inf)
    _check_finite(spec, checked, raw, fields)
    return out, entries, final, ragged


# --------------------------------------------------------------------------- public API


def read_fields(spec: Any, source: dict | None = None, *, require_target: bool = False) -> dict:
    """Load a data source (default: spec.data.source) as checked, canonical arrays, unsplit
    and not preprocessed (e.g. new data for predict; follow with `apply_preprocess`)."""
    if source is None:
        source = dict((spec.data or {}).get("source") or {})
    raw = load_source(spec, dict(source), target_optional=not require_target)
    return _prepare(spec, raw, require_target)[0]


@dataclass
class NewData:
    """New data for predict: checked, canonical arrays (not preprocessed) and, where the
    samples come from files (images), the file each one was read from."""

    fields: dict[str, np.ndarray]
    sample_names: list[str] | None
    description: str


def read_new_data(spec: Any, inputs: list[str | Path], state: dict | None = None) -> NewData:
    """New data for predict, read with the spec's data.source settings (the readers that
    training uses): a csv with the same columns (target optional), an npz with the same
    array names (data.source.fields), image files or folders (mode, size) for an
    image_folder spec, a UEA/UCR .ts file (x, lengths). A csv or npz file for a spec of
    another source type (e.g. a built-in) must name its arrays / columns as the model
    inputs. ``state`` is the
    preprocess state saved with the weights: a csv spec with data.source.categorical or
    missing encodes and fills new rows with its "csv" entry. Errors about the data
    (E501-E505) are located in the new file (csv: line and column), not in the spec."""
    paths = [Path(p).expanduser().resolve() for p in inputs]
    for path in paths:
        if not path.exists():
            raise _input_error("E501", f"input file '{path}' does not exist", path,
                               "check the path given to --input")
    source = dict((spec.data or {}).get("source") or {})
    kind = source.get("type")
    suffix = paths[0].suffix.lower()
    images = kind == "image_folder" and not (len(paths) == 1 and suffix == ".npz")
    if not images and (len(paths) != 1 or paths[0].is_dir()):
        raise _input_error("E501", f"predict reads one .csv, .npz or .ts file, got "
                           f"{_count(paths)}",
                           paths[0], "give one file to --input (a list of files or a folder "
                           "is for image_folder specs)")
    if not images and suffix not in (".csv", ".npz", ".ts"):
        raise _input_error("E501", f"input file '{paths[0]}' is not a .csv, .npz or .ts file",
                           paths[0], "predict reads a .csv file (the columns of data.source), "
                           "an .npz file (the arrays of data.source.fields, or the model "
                           "inputs) or a .ts file (x and lengths)")
    try:
        if images:
            raw = load_image_files(spec, source, paths)
        else:
            wanted = suffix.lstrip(".")
            if kind != wanted:  # another source type: the file names the model inputs
                source = ({"type": wanted, "target": _target(spec)} if wanted == "csv" else
                          {"type": wanted, "lengths": source.get("lengths")})
            source = {**source, "path": str(paths[0])}
            if source["type"] == "npz":
                raw = load_npz(spec, source, may_lack=(_target(spec),))
            else:
                raw = load_source(spec, source, target_optional=True,
                                  fitted=_csv_fitted(spec, source, kind, state))
        fields = _prepare(spec, raw, require_target=False)[0]
    except GraphdlError as e:
        raise _located_in_new_data(e, spec, paths, source) from None
    return NewData(fields=fields, sample_names=raw.sample_names, description=raw.description)


def _csv_fitted(spec: Any, source: dict, kind: str | None, state: dict | None) -> dict | None:
    """The "csv" entry of the saved preprocess state for new csv data of a csv spec (E508
    when the spec encodes or fills columns and the state lacks it)."""
    if kind != "csv":
        return None
    fitted = (state or {}).get("csv")
    needs = source.get("categorical") or source.get("missing")
    if fitted is None and needs:
        key = "categorical" if source.get("categorical") else "missing"
        raise fail("E508", "predict needs the csv categories and fill values fitted in "
                   "training, and none were given", spec, "data", "source", key,
                   help="read the new data with the state saved in the checkpoint: "
                   "read_new_data(spec, inputs, state=model.preprocess_state) after "
                   "model.load_weights(...)")
    return fitted


def _input_error(code: str, message: str, path: Path, help: str) -> GraphdlError:
    return GraphdlError(Diagnostic(code, message, file=str(path), help=help), phase="data")


def _count(paths: list[Path]) -> str:
    if len(paths) == 1:
        return f"the folder '{paths[0]}'"
    return f"{len(paths)} files"


def _located_in_new_data(error: GraphdlError, spec: Any, paths: list[Path], source: dict) -> GraphdlError:
    """``error`` (raised reading new data with the spec's settings) pointed at the new file:
    the file (csv: line, and column of the cell), with the spec setting involved in a
    note. Errors in the settings themselves (E508) stay located in the spec."""
    for d in error.diagnostics:
        if d.code == "E508":
            continue
        setting = d.path
        file = d.extra.get("resolved_path") or d.extra.get("csv_file") or str(paths[0])
        d.file, d.line, d.col, d.span, d.path = file, d.extra.get("csv_line"), None, 1, None
        column = d.extra.get("csv_column")
        if d.line is not None and column is not None:
            d.col, d.span = _csv_cell(Path(file), d.line, column, source)
        if len(paths) > 1 and file == str(paths[0]) and "resolved_path" not in d.extra:
            d.note = ((d.note + "; ") if d.note else "") + f"in the {len(paths)} input files"
        if setting and setting.startswith("data.source"):
            spec_file = getattr(spec, "path", None)
            where = f" ({spec_file})" if spec_file else ""
            d.note = ((d.note + "; ") if d.note else "") + f"read with the spec's {setting}{where}"
    return error


def _csv_cell(path: Path, line: int, column: str, source: dict) -> tuple[int | None, int]:
    """(1-based character column, width) of ``column``'s cell on ``line`` of a csv file;
    (None, 1) when the line cannot be split plainly (quoted cells)."""
    delimiter = source.get("delimiter") or ","
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return None, 1
    header = [c.strip() for c in lines[0].split(delimiter)] if lines else []
    if not (1 <= line <= len(lines)) or column not in header or '"' in lines[line - 1]:
        return None, 1
    cells = lines[line - 1].split(delimiter)
    j = header.index(column)
    if len(cells) != len(header):
        return None, 1
    start = sum(len(c) + 1 for c in cells[:j]) + 1
    return start, max(1, len(cells[j]))


def load_data(spec: Any) -> Splits:
    """Load spec.data.source, check it against model.inputs and train.target, keep the
    classes of data.filter, split it (deterministically from spec.seed), subsample the
    train split, and apply data.preprocess fitted on the train split. Windows of a series
    (data.source.window) are split in time order, and with window.season each split also
    gets its seasonal-naive forecast (`Splits.baselines`, `graphdl.data.forecast`); a
    built-in with a standard test split (japanese_vowels) gives its test split as
    test_path does."""
    cfg = split_config(spec)
    raw = load_source(spec, dict((spec.data or {}).get("source") or {}))
    if raw.window_horizon is not None:
        cfg = _chronological(spec, cfg)
    fields, entries, final, ragged = _prepare(spec, raw, require_target=True)
    floats = _floats(fields)
    check_augment(spec, {k: s for k, s in final.items() if k in _inputs(spec) and k in floats})
    target = _target(spec)
    y = fields.get(target) if target is not None else None

    num_classes = None
    if y is not None and y.dtype.kind == "i":
        if raw.num_classes is not None:
            num_classes = raw.num_classes
        elif y.size and int(y.min()) >= 0:
            num_classes = int(y.max()) + 1
    kept = apply_filter(spec, fields, target, num_classes, raw.class_names, raw.description)
    fields = kept.fields
    y = fields.get(target) if target is not None else None
    n = len(Dataset(fields))

    labels = None
    if cfg.stratify:
        if y is None or y.dtype.kind != "i" or y.ndim != 1:
            what = (
                "there is no target"
                if y is None
                else f"the target '{target}' is {y.dtype} with per-sample shape "
                f"{_shape_str(y.shape[1:])}"
            )
            raise fail(
                "E507",
                f"data.split.stratify needs an integer class label per sample, but {what}",
                spec,
                "data",
                "split",
                "stratify",
                help="set `stratify: false` (stratification is for classification targets)",
            )
        labels = y

    full = Dataset(fields, ragged)
    seed = int(getattr(spec, "seed", 0) or 0)
    idx = split_indices(n, cfg, seed, labels)
    if raw.window_horizon is not None and raw.window_horizon > 1:
        # no target step in two splits: val and test start horizon - 1 windows later
        idx[1], idx[2] = idx[1][raw.window_horizon - 1:], idx[2][raw.window_horizon - 1:]
    classes = y if (y is not None and y.dtype.kind == "i" and y.ndim == 1) else None
    idx[0] = subsample(idx[0], cfg.train_subsample, seed, classes)
    parts: list[Dataset | None] = [full.subset(i) for i in idx]
    if len(parts[0]) == 0:
        raise fail(
            "E507",
            f"the train split is empty ({raw.description} has {n} samples, train fraction "
            f"{cfg.fractions[0]:g})",
            spec,
            "data",
            "split",
            "train",
            help="use more data or a larger train fraction",
        )

    csv_state = raw.csv_state
    if csv_state is not None and csv_state.get("fill") is not None:
        ff = csv_state["feature_field"]  # missing.fill: values from the train split only
        csv_state["fill_values"] = fit_fill(spec, csv_state, parts[0].fields[ff])
        parts = [Dataset({**p.fields, ff: apply_fill(csv_state, p.fields[ff])}, p.ragged)
                 for p in parts]
    source = dict((spec.data or {}).get("source") or {})
    test_file = source.get("test_path") is not None or raw.test is not None
    if source.get("test_path") is not None:
        parts[2] = _read_test_file(spec, source, raw, fields, target, num_classes)
    elif raw.test is not None:
        parts[2] = _test_split(spec, raw.test, raw, fields, target, num_classes, "test")

    transformed, state = fit_and_apply(spec, entries, [p.fields for p in parts], ragged)
    if csv_state is not None:
        state = {"csv": csv_state, **state}
    before = parts
    parts = [Dataset(f, p.ragged) for f, p in zip(transformed, parts)]

    for k in (1, 2):
        if (cfg.fractions[k] == 0.0 and not (k == 2 and test_file)) or len(parts[k]) == 0:
            parts[k] = None
    baselines = {}
    if raw.window_season is not None and target == "y":
        # the seasonal-naive forecast of each split, from its windows before preprocessing
        for name, raw_part, part in zip(SPLIT_NAMES, before, parts):
            if part is not None:
                baselines[name] = baseline_of_split(raw_part.fields["x"], raw_part.fields["y"],
                                                    state, target, raw.window_season,
                                                    raw.units)
    split_locs = {name: _loc_kwargs(spec, "data", "split", name) for name in SPLIT_NAMES}
    split_locs["split"] = _loc_kwargs(spec, "data", "split")
    return Splits(
        train=parts[0],
        val=parts[1],
        test=parts[2],
        num_classes=kept.num_classes,
        preprocess_state=state,
        split_locs=split_locs,
        class_names=kept.class_names,
        baselines=baselines,
    )


def _read_test_file(spec: Any, source: dict, train: RawData, reference: dict,
                    target: str | None, num_classes: int | None) -> Dataset:
    """data.source.test_path read as data.source.path is (csv: with the categories and fill
    values fitted in training; image folder and .ts: classes matched by name), checked like
    it, cast to the dtypes of the path file's fields (``reference``) and filtered by
    data.filter: the test split. Errors in the file are located there (csv: line and
    column), others at data.source.test_path."""
    test_source = {**source, "path": source["test_path"]}
    try:
        raw = load_source(spec, test_source, fitted=train.csv_state)
        if train.class_names is not None and "label" in raw.fields and source.get("type") in (
                "image_folder", "ts"):
            raw.fields["label"] = _match_classes(spec, raw, train.class_names)
            raw.class_names, raw.num_classes = train.class_names, train.num_classes
        return _test_split(spec, raw, train, reference, target, num_classes)
    except GraphdlError as e:
        raise _located_in_test_file(e, spec, test_source) from None


def _test_split(spec: Any, raw: RawData, train: RawData, reference: dict, target: str | None,
                num_classes: int | None, split: str | None = None) -> Dataset:
    """The test split from ``raw`` (a test file, or a built-in's standard test split):
    checked like the source, cast to the dtypes of its fields (``reference``; a ragged
    field may have another number of steps) and filtered by data.filter."""
    fields, _, _, ragged = _prepare(spec, raw, require_target=True, split=split)
    for name, arr in fields.items():
        ref = reference.get(name)
        if ref is None:
            continue
        axis = 2 if ragged is not None and name in ragged.pads else 1
        if ref.shape[axis:] != arr.shape[axis:]:
            raise fail("E503", f"data field '{name}' has per-sample shape "
                       f"{_shape_str(arr.shape[1:])} in {raw.description} but "
                       f"{_shape_str(ref.shape[1:])} in data.source.path", spec, "data",
                       "source", "test_path", help="the test file must hold the same "
                       "fields as data.source.path (images: set data.source.size)")
        fields[name] = arr.astype(ref.dtype, copy=False)
    kept = apply_filter(spec, fields, target, num_classes, train.class_names,
                        raw.description)
    return Dataset(kept.fields, ragged)


def _chronological(spec: Any, cfg: SplitConfig) -> SplitConfig:
    """data.split for windows of a series: in time order (E507 where data.split asks to
    shuffle or stratify)."""
    for key in ("shuffle", "stratify"):
        if getattr(cfg, key) and ("data", "split", key) in (getattr(spec, "positions", None)
                                                            or {}):
            raise fail("E507", f"data.split.{key} is true, but windows of a series are split "
                       "in time order", spec, "data", "split", key,
                       help=f"remove {key}: the first windows train, the next validate and "
                       "the last test (train.shuffle still shuffles the train batches)")
    return replace(cfg, shuffle=False, stratify=False)


def _match_classes(spec: Any, raw: RawData, train_classes: list[str]) -> np.ndarray:
    """The test file's labels renumbered to the path file's classes, matched by name (image
    folders: the class folder names; .ts: the @classLabel labels); E501 for a class the
    path file lacks."""
    index = {name: k for k, name in enumerate(train_classes)}
    what = "class folder" if raw.description.startswith("image folder") else "class"
    for name in raw.class_names or []:
        if name not in index:
            raise fail("E501", f"{what} '{name}' of {raw.description} is not a class of "
                       "data.source.path", spec, "data", "source", "test_path",
                       help=f"classes of data.source.path: {name_list(train_classes)}."
                       + did_you_mean(name, train_classes))
    mapping = np.asarray([index[name] for name in raw.class_names or []], np.int64)
    return mapping[raw.fields["label"]]


def _located_in_test_file(error: GraphdlError, spec: Any, source: dict) -> GraphdlError:
    """``error`` (raised reading data.source.test_path with data.source's settings) pointed
    at the test file where it names a line of it, else at data.source.test_path."""
    at_key = locate(spec, "data", "source", "test_path")
    for d in error.diagnostics:
        line, file = d.extra.get("csv_line"), d.extra.get("csv_file")
        if line is not None and file is not None:
            d.file, d.line, d.col, d.span, d.path = file, line, None, 1, None
            column = d.extra.get("csv_column")
            if column is not None:
                d.col, d.span = _csv_cell(Path(file), line, column, source)
            d.note = "in data.source.test_path, read with data.source's settings"
        elif d.path is not None and d.path.startswith("data.source.path"):
            d.file, d.line, d.col, d.span = (at_key[k] for k in ("file", "line", "col", "span"))
            d.path = at_key["path"]
            if d.help:
                d.help = d.help.replace("data.source.path", "data.source.test_path")
    return error


def _loc_kwargs(spec: Any, *path: str) -> dict:
    return locate(spec, *path)


def apply_preprocess(
    spec: Any, fields: dict[str, np.ndarray], state: dict
) -> dict[str, np.ndarray]:
    """Re-apply data.preprocess to new data with the statistics fitted at training time.

    ``fields`` need not hold the target (or any field a step does not touch). Model inputs are
    cast to their declared dtype and shape-checked; other float fields become float32,
    integer fields int64. Sequence inputs (declared [T, ...]) given with the lengths field
    are padded as in training (`graphdl.data.sequence_checks.new_data_layout`). Returns new
    arrays (C-contiguous); the inputs are not modified.
    """
    arrays = {}
    for name, arr in fields.items():
        arr = np.asarray(arr)
        if not _is_numeric(arr) or arr.ndim == 0:
            raise fail(
                "E503",
                f"data field '{name}' must be a numeric array of samples, got "
                f"{arr.dtype} with shape {_shape_str(arr.shape)}",
                spec,
                "model",
                "inputs",
                name,
                help="pass one row per sample (first dimension = samples) of numbers",
            )
        arrays[name] = arr
    out = _canonical_dtypes(spec, arrays)
    inputs = _inputs(spec)

    def on_error(name: str, i: int):
        def make(message: str, help: str) -> Exception:
            where = ("model", "inputs", name) if name in inputs else ("data", "preprocess", i)
            return fail("E503", f"data field '{name}' does not fit data.preprocess[{i}]: "
                        f"{message}", spec, *where, help=help)

        return make

    ragged = conform_new_data(spec, out)
    entries, final = plan_state(spec, state, _shapes(out), on_error)
    padded = set()
    if ragged is not None and ragged.max_len is None and varying(out, ragged):
        padded = set(ragged.pads)
    _check_shapes(spec, final, _shapes(out), padded)
    check_token_ids(spec, out, ragged)
    check_positions(spec, out, ragged)
    _check_finite(spec, out, None, arrays)
    return apply_entries(entries, out, ragged)
