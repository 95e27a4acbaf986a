"""A stand-in for graphdl.spec.Spec: just the attributes the data layer reads.

`make_spec(...)` renders the given (user-written) data settings as YAML text into
``tmp_path/spec.yaml`` and records where every key sits, so ``spec.loc(*path)`` behaves like
the real spec: keys the user wrote have a position, keys filled in by defaults do not
(``loc`` returns None for them).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from graphdl.errors import GraphdlError


@dataclass
class Location:
    file: str
    line: int
    col: int
    span: int = 1


@dataclass
class InputSpec:
    shape: tuple
    dtype: str = "float32"
    loc: Location | None = None


@dataclass
class Model:
    inputs: dict[str, InputSpec]


@dataclass
class FakeSpec:
    path: str
    seed: int
    data: dict
    model: Model
    train: dict
    positions: dict = field(default_factory=dict)

    def loc(self, *path):
        pos = self.positions.get(tuple(path))
        if pos is None:
            return None
        line, col, span = pos
        return Location(self.path, line, col, span)


def _render(value: Any, path: tuple, indent: int, lines: list[str], pos: dict) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for k, v in value.items():
            key_path = (*path, k)
            pos[key_path] = (len(lines) + 1, indent + 1, len(str(k)))
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                _render(v, key_path, indent + 2, lines, pos)
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            item_path = (*path, i)
            pos[item_path] = (len(lines) + 1, indent + 1, 1)
            if isinstance(item, dict) and item:
                lines.append(f"{pad}-")
                _render(item, item_path, indent + 2, lines, pos)
            else:
                lines.append(f"{pad}- {_scalar(item)}")


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return "{}" if isinstance(v, dict) else "[]"
    return str(v)


DEFAULT_SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1, "shuffle": True, "stratify": False}
SOURCE_DEFAULTS = {
    "csv": {"feature_field": "x", "delimiter": ","},
    "npz": {},
    "builtin": {},
}


@pytest.fixture
def make_spec(tmp_path: Path):
    """make_spec(source=..., split=..., preprocess=..., inputs={"x": ((64,), "float32")},
    target="y", seed=0, filter=..., augment=...) -> FakeSpec, with spec.yaml written in
    tmp_path."""

    def make(
        source: dict | None = None,
        split: dict | None = None,
        preprocess: list | None = None,
        inputs: dict | None = None,
        target: str | None = "y",
        seed: int = 0,
        spec_dir: Path | None = None,
        filter: dict | None = None,
        augment: list | None = None,
    ) -> FakeSpec:
        source = {"type": "builtin", "name": "digits"} if source is None else source
        inputs = {"x": ((64,), "float32")} if inputs is None else inputs
        written: dict = {"seed": seed, "model": {"inputs": {}}, "data": {"source": source}}
        for name, (shape, dtype) in inputs.items():
            written["model"]["inputs"][name] = {"shape": list(shape), "dtype": dtype}
        if filter is not None:
            written["data"]["filter"] = filter
        if split is not None:
            written["data"]["split"] = split
        if preprocess is not None:
            written["data"]["preprocess"] = preprocess
        if augment is not None:
            written["data"]["augment"] = augment
        written["train"] = {"target": target}

        lines: list[str] = []
        positions: dict = {}
        _render(written, (), 0, lines, positions)
        d = spec_dir or tmp_path
        d.mkdir(parents=True, exist_ok=True)
        spec_file = d / "spec.yaml"
        spec_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

        data = copy.deepcopy(written["data"])
        data["split"] = {**DEFAULT_SPLIT, **(split or {})}
        data["preprocess"] = list(preprocess or [])
        data["augment"] = list(augment or [])
        data["filter"] = filter
        data["source"] = {**SOURCE_DEFAULTS.get(source.get("type"), {}), **data["source"]}
        spec = FakeSpec(
            path=str(spec_file),
            seed=seed,
            data=data,
            model=Model(inputs={}),
            train={"target": target},
            positions=positions,
        )
        for name, (shape, dtype) in inputs.items():
            spec.model.inputs[name] = InputSpec(
                shape=tuple(shape), dtype=dtype, loc=spec.loc("model", "inputs", name)
            )
        return spec

    return make


@pytest.fixture
def expect_error():
    """expect_error(fn, code, spec, *yaml_path) -> the Diagnostic, checked to be located at
    spec.loc(*yaml_path) (file, line, col) and to carry a help text."""

    def check(fn, code: str, spec: FakeSpec, *yaml_path):
        with pytest.raises(GraphdlError) as info:
            fn()
        err = info.value
        codes = [d.code for d in err.diagnostics]
        assert code in codes, f"expected {code}, got {codes}: {err}"
        d = next(d for d in err.diagnostics if d.code == code)
        where = spec.loc(*yaml_path)
        assert where is not None, f"test bug: no position for {yaml_path}"
        assert (d.file, d.line, d.col) == (where.file, where.line, where.col), d
        assert d.help, "every data error should say how to fix it"
        err.format()  # renders with the source line, must not fail
        err.to_json()
        return d

    return check
