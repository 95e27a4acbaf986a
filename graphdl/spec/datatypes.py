"""The resolved spec: what the rest of graphdl consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from graphdl.spec.loader import Pos, parse_path, resolve_plain


def spec_relative(spec_path: str | None, value: str | Path) -> Path:
    """A path written in a spec, as an absolute path: relative paths are relative to the
    directory of the spec file (``spec_path``; the working directory when there is none),
    never to the working directory, so a spec means the same wherever graphdl is started.
    ``~`` is expanded."""
    p = Path(str(value)).expanduser()
    if not p.is_absolute():
        base = Path(spec_path).resolve().parent if spec_path else Path.cwd()
        p = base / p
    return p.resolve()


@dataclass
class Location:
    file: str
    line: int
    col: int
    span: int = 1


@dataclass
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    loc: Location


@dataclass
class LayerSpec:
    name: str  # unique, final (e.g. "dense_1", "encoder.0.dense_1")
    type: str  # built-in layer type: dense, activation, dropout, flatten, add, concat
    inputs: list[str]  # names of model inputs or of earlier LayerSpecs
    params: dict  # layer-specific keys only, $-substituted, defaults filled
    loc: Location  # the layer mapping; for a block copy: the use site
    yaml_path: str  # e.g. "model.layers[2]" (for a block copy: the use site)
    trainable: bool = True
    lr_mult: float = 1.0
    regularizer: dict | None = None  # per-layer {l1, l2} override
    block: str | None = None  # e.g. "encoder.0" when made by a block copy
    block_path: str | None = None  # for a block copy: the definition, "blocks.enc.layers[0]"
    def_loc: Location | None = None  # for a block copy: position of the definition


@dataclass
class ModelSpec:
    inputs: dict[str, InputSpec]
    layers: list[LayerSpec]
    outputs: list[str]


@dataclass
class Spec:
    path: str
    name: str
    seed: int
    description: str
    data: dict  # the data section with defaults filled
    model: ModelSpec
    train: dict  # with defaults filled
    evaluate: dict  # with defaults filled
    raw: dict  # the whole document after $-substitution
    source_lines: list[str]
    positions: dict[tuple, Pos] = field(default_factory=dict, repr=False, compare=False)

    def loc(self, *yaml_path, key: bool = False) -> Location:
        """Position of a value (or of its key with ``key=True``), e.g.
        ``spec.loc("data", "source", "path")`` or ``spec.loc("model.layers[2].units")``.
        Falls back to the nearest existing parent."""
        if len(yaml_path) == 1 and isinstance(yaml_path[0], str) and (
            "." in yaml_path[0] or "[" in yaml_path[0]
        ):
            yaml_path = parse_path(yaml_path[0])
        elif len(yaml_path) == 1 and isinstance(yaml_path[0], tuple):
            yaml_path = yaml_path[0]
        path = tuple(yaml_path)
        while True:
            p = self.positions.get(path)
            if p is not None:
                line, col, span = p.key if (key and p.key is not None) else p.value
                return Location(self.path, line, col, span)
            if not path:
                return Location(self.path, 1, 1, 1)
            path = path[:-1]
            key = True  # the nearest existing parent: point at its key

    def file_path(self, value: str | Path) -> Path:
        """A path written in this spec (data.source.path, model.init.checkpoint,
        train.checkpoint.dir), resolved against the spec file's directory."""
        return spec_relative(self.path, value)

    def resolved_yaml(self) -> str:
        """The resolved spec (vars substituted, blocks expanded into a flat layer list, defaults
        filled) as YAML; loading it gives the same model, data, train and evaluate."""
        doc: dict = {"graphdl": 1, "name": self.name}
        if self.description:
            doc["description"] = self.description
        doc["seed"] = self.seed
        doc["data"] = _strip_none(self.data)
        layers = []
        for layer in self.model.layers:
            d: dict = {"name": layer.name, "type": layer.type, "inputs": list(layer.inputs)}
            d.update(layer.params)
            if not layer.trainable:
                d["trainable"] = False
            if layer.lr_mult != 1.0:
                d["lr_mult"] = layer.lr_mult
            if layer.regularizer is not None:
                d["regularizer"] = dict(layer.regularizer)
            layers.append(d)
        doc["model"] = {
            "inputs": {
                n: {"shape": list(i.shape), "dtype": i.dtype} for n, i in self.model.inputs.items()
            },
            "layers": layers,
            "outputs": list(self.model.outputs),
        }
        if "train" in self.raw:
            doc["train"] = _strip_none(self.train)
        doc["evaluate"] = _strip_none(self.evaluate)
        header = (
            f"# resolved from {self.path} by graphdl: vars substituted, blocks expanded, "
            "defaults filled\n"
        )
        return header + yaml.dump(
            doc, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=100
        )


def _strip_none(value):
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


class _Dumper(yaml.SafeDumper):
    """Quotes every string that graphdl's YAML 1.2 loader would read as something else."""


def _represent_str(dumper, value: str):
    style = None if isinstance(resolve_plain(value), str) else "'"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)
