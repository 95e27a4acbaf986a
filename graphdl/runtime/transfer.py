"""Transfer learning: initialise a model's weights from a checkpoint, by layer name.

`model.init` says which checkpoint, which layers (`include` / `exclude` globs), how
checkpoint layer names map to this model's (`rename`) and whether anything unmatched is an
error (`strict`, the default). Every tensor ends up in one of three lists, printed as the
load report: loaded, new (freshly initialised), ignored (in the checkpoint, not used). A
tensor of an excluded layer that the model also has is new only (marked excluded), not
also ignored. Optimiser state is never loaded: fine-tuning starts a fresh optimiser.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np

from graphdl.errors import Diagnostic, GraphdlError
from graphdl.runtime.checkpoint import load_checkpoint
from graphdl.spec.schema_gen import MODEL, fill


@dataclass
class InitReport:
    checkpoint: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    # the new tensors the checkpoint has too, left out by model.init include/exclude
    excluded: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"weights from {self.checkpoint}:"]
        for title, names in (("loaded", self.loaded), ("new", self.new), ("ignored", self.ignored)):
            shown = ", ".join(names) if names else "-"
            if title == "new" and self.excluded:
                shown += f"  ({len(self.excluded)} excluded by model.init: the checkpoint's are not used)"
            lines.append(f"  {title:<8} {len(names):>3}  {shown}")
        return "\n".join(lines)


def _layer_of(name: str) -> str:
    return name.rsplit(".", 1)[0]


def _matches(layer: str, globs) -> bool:
    return any(fnmatch.fnmatchcase(layer, g) for g in globs)


def apply_init(spec, params: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> InitReport | None:
    """Copy checkpoint tensors into ``params``/``state`` as ``model.init`` says."""
    init = (spec.raw.get("model") or {}).get("init")
    if not init:
        return None
    path = spec.file_path(init["checkpoint"])  # relative to the spec file, like every spec path
    loc = spec.loc("model", "init", "checkpoint")
    if not path.exists():
        raise GraphdlError(Diagnostic(
            "E401", f"model.init checkpoint {path} does not exist",
            file=loc.file, line=loc.line, col=loc.col, span=loc.span,
            help="train the source model first (graphdl run) or fix the path; a relative "
            "path is relative to the spec file's directory"), phase="weights")
    tensors, _meta = load_checkpoint(path)
    include = init.get("include") or ["*"]
    exclude = init.get("exclude") or []
    rename = init.get("rename") or {}
    strict = fill(MODEL.fields["init"], init)["strict"]  # the spec's default when left out
    layers = {layer.name: layer for layer in spec.model.layers}
    report = InitReport(str(path))
    errors: list[Diagnostic] = []
    targets = {**{("param", k): v for k, v in params.items()},
               **{("state", k): v for k, v in state.items() if not k.startswith("opt.")}}
    filled = set()
    mismatched = set()  # reported as E402: not also "not in the checkpoint"
    excluded = set()  # left out by include/exclude: fresh in the model
    skipped = []  # (name, target) of the excluded checkpoint tensors
    for key, value in sorted(tensors.items()):
        kind, _, name = key.partition("/")
        if kind not in ("param", "state") or name.startswith("opt."):
            continue
        layer = _layer_of(name)
        layer = rename.get(layer, layer)
        target = f"{layer}.{name.rsplit('.', 1)[1]}" if "." in name else layer
        if not _matches(layer, include) or _matches(layer, exclude):
            skipped.append((name, (kind, target)))
            continue
        if (kind, target) not in targets:
            report.ignored.append(name)
            if strict:
                errors.append(Diagnostic(
                    "E403", f"checkpoint tensor '{name}' has no place in this model",
                    file=loc.file, line=loc.line, col=loc.col,
                    help=f"add '{layer}' to model.init.exclude, map it with rename, "
                         "or set strict: false"))
            continue
        dest = targets[(kind, target)]
        if dest.shape != value.shape:
            lay = layers.get(layer)
            errors.append(Diagnostic(
                "E402", f"layer '{layer}': checkpoint tensor '{name}' has shape "
                f"{list(value.shape)}, this model's '{target}' has {list(dest.shape)}",
                file=spec.path, line=lay.loc.line if lay else loc.line,
                col=lay.loc.col if lay else loc.col,
                help=f"exclude '{layer}' in model.init to initialise it freshly"))
            mismatched.add((kind, target))
            continue
        dest[...] = value.astype(dest.dtype)
        filled.add((kind, target))
        report.loaded.append(target)
    for name, place in skipped:
        if place in targets:
            excluded.add(place)
        else:
            report.ignored.append(name)
    for (kind, target) in sorted(targets):
        if (kind, target) in filled or (kind, target) in mismatched:
            continue
        report.new.append(target)
        if (kind, target) in excluded:
            report.excluded.append(target)
            continue
        layer = _layer_of(target)
        if strict and not _matches(layer, exclude) and _matches(layer, include):
            lay = layers.get(layer)
            errors.append(Diagnostic(
                "E404", f"'{target}' is not in the checkpoint {path}",
                file=spec.path, line=lay.loc.line if lay else loc.line,
                col=lay.loc.col if lay else loc.col,
                help=f"add '{layer}' to model.init.exclude to initialise it freshly, "
                     "or set strict: false"))
    if errors:
        raise GraphdlError(errors, phase="weights")
    return report
