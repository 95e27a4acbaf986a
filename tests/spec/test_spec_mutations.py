"""Mutations of the shipped specs (specs/*.yaml) of the kinds people make: a key dropped, a
value of the wrong type, a number with the wrong sign or scale, a key misspelt, a layer type
swapped, an input shape changed. `graphdl validate` and `graphdl compile --mode eval` must
answer each with exit 0, or exit 2 and a first error line located in the spec
(`file:line:col: error[Exxx]`); never a traceback.

Examples are derandomized so CI sees the same specs every run (and the kernels of the few
that compile come from the disk cache after the first).
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphdl.cli import main
from graphdl.layers.catalog import LAYERS

SPECS_DIR = Path(__file__).resolve().parents[2] / "specs"
SPECS = {
    p.name: yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(SPECS_DIR.glob("*.yaml"))
}

WRONG_TYPES = ["abc", 3, 0.5, -1, True, None, [], [1, "a"], {}, {"type": "dense"}]
SCALES = [-1.0, 0.0, 1e-3, 0.5, 10.0, 1e3]
DIMS = [0, 1, 3, 8, 28, 64]
TYPO_KINDS = ["drop_char", "swap_chars", "upper", "plural"]
KINDS = ["drop", "retype", "scale", "typo", "layer_type", "shape"]


def _paths(node, path=()):
    """Every (path, value) below ``node``, depth first."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for k, v in items:
        yield path + (k,), v
        yield from _paths(v, path + (k,))


def _parent(doc, path):
    for k in path[:-1]:
        doc = doc[k]
    return doc


def _typo(key: str, kind: str) -> str:
    if kind == "drop_char" and len(key) > 1:
        return key[:-1]
    if kind == "swap_chars" and len(key) > 2 and key[0] != key[1]:
        return key[1] + key[0] + key[2:]
    if kind == "upper":
        return key.capitalize() if key != key.capitalize() else key.upper() + "_"
    return key + "s"


@st.composite
def mutation(draw, names):
    """(spec name, mutated document, a description for the failure message)."""
    name = draw(st.sampled_from(names))
    doc = copy.deepcopy(SPECS[name])
    kind = draw(st.sampled_from(KINDS))
    paths = list(_paths(doc))
    if kind == "drop":
        keyed = [p for p, _ in paths if isinstance(p[-1], str)]
        path = draw(st.sampled_from(keyed))
        del _parent(doc, path)[path[-1]]
        return name, doc, f"drop {path}"
    if kind == "retype":
        path = draw(st.sampled_from([p for p, _ in paths]))
        value = draw(st.sampled_from(WRONG_TYPES))
        _parent(doc, path)[path[-1]] = value
        return name, doc, f"set {path} = {value!r}"
    if kind == "scale":
        numbers = [p for p, v in paths if isinstance(v, (int, float)) and not isinstance(v, bool)]
        path = draw(st.sampled_from(numbers))
        factor = draw(st.sampled_from(SCALES))
        old = _parent(doc, path)[path[-1]]
        new = old * factor
        _parent(doc, path)[path[-1]] = int(new) if isinstance(old, int) else new
        return name, doc, f"scale {path} by {factor}"
    if kind == "typo":
        keyed = [p for p, _ in paths if isinstance(p[-1], str)]
        path = draw(st.sampled_from(keyed))
        parent = _parent(doc, path)
        new_key = _typo(path[-1], draw(st.sampled_from(TYPO_KINDS)))
        # rebuilt in order, so the misspelt key stays where the user wrote it
        items = [(new_key if k == path[-1] else k, v) for k, v in parent.items()]
        parent.clear()
        parent.update(items)
        return name, doc, f"rename {path} to {new_key!r}"
    layers = doc["model"]["layers"]
    if kind == "layer_type":
        i = draw(st.integers(0, len(layers) - 1))
        new_type = draw(st.sampled_from(sorted(LAYERS)))
        layers[i]["type"] = new_type
        return name, doc, f"layer {i} type {new_type}"
    inputs = doc["model"]["inputs"]
    field = draw(st.sampled_from(sorted(inputs)))
    shape = list(inputs[field]["shape"])
    how = draw(st.sampled_from(["drop", "add", "change"]))
    dim = draw(st.sampled_from(DIMS))
    if how == "drop" and len(shape) > 1:
        shape.pop(draw(st.integers(0, len(shape) - 1)))
    elif how == "add" or not shape:  # a per-sample scalar ([]) has no dim to change
        shape.append(dim)
    else:
        shape[draw(st.integers(0, len(shape) - 1))] = dim
    inputs[field]["shape"] = shape
    return name, doc, f"input {field} shape {shape}"


def _check(argv_head: list[str], doc: dict, what: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        # specs/ sits beside the repository's runs/: keep relative paths pointing somewhere
        spec = Path(d) / "specs" / "mutated.yaml"
        spec.parent.mkdir()
        spec.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main([*argv_head, str(spec)])
        text = out.getvalue() + err.getvalue()
        context = f"{what}: {' '.join(argv_head)} exited {rc}\n{text}"
        assert "Traceback" not in text, context
        assert rc in (0, 2), context
        if rc == 2:
            first = next((line for line in err.getvalue().splitlines() if "error[" in line), "")
            assert re.match(rf"{re.escape(str(spec))}:\d+:\d+: error\[E\d+\]", first), context


@settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.data())
def test_validate_answers_every_mutation(data):
    for name in SPECS:
        _, doc, what = data.draw(mutation([name]), label=name)
        _check(["validate"], doc, f"{name}: {what}")


@settings(
    max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(mutation(sorted(SPECS)))
def test_compile_answers_every_mutation(case):
    name, doc, what = case
    _check(["compile", "--mode", "eval"], doc, f"{name}: {what}")
