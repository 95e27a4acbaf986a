"""A user's mistake must always be a GraphdlError with located diagnostics, never a crash."""

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spec_helpers import FIXTURES

from graphdl.errors import GraphdlError
from graphdl.spec import load_spec
from graphdl.spec.loader import load_yaml

DOCS = [load_yaml(f.name, f.read_text()).data
        for f in (FIXTURES / "digits_mlp.yaml", FIXTURES / "blocks_model.yaml")]
TEXTS = [(FIXTURES / n).read_text() for n in ("digits_mlp.yaml", "blocks_model.yaml")]

JUNK = [
    None, "", "abc", "$d_model", "$nope", "$ff", "$1", 0, -1, 1.5, 3, True, [], [1, "a"], {},
    {"type": "dense"}, {"type": "residual", "layers": []}, {"type": "encoder_layer"}, "prev",
    ["prev"], ["encoder"], ["src", "tgt"], {"type": "decoder_layer", "inputs": ["prev"]},
    {"type": "residual", "layers": [{"type": "dense", "units": "$x"}]}, "encoder.0",
    {"l1": -1}, ["x", "x"], {"type": "encoder_layer", "repeat": "$d_model"}, [16],
]
KEYS = ["name", "inputs", "repeat", "type", "zzz", "trainable", "ff", "memory", "x", "lr_mult"]


def _paths(d, p=()):
    yield p
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _paths(v, p + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _paths(v, p + (i,))


def _mutate(doc, edits):
    doc = copy.deepcopy(doc)
    for where, what, op, key in edits:
        paths = [p for p in _paths(doc) if p]
        path = paths[where % len(paths)]
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        value = copy.deepcopy(JUNK[what % len(JUNK)])
        if op == 0:
            parent[path[-1]] = value
        elif op == 1 and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[KEYS[key % len(KEYS)]] = value
        else:
            parent.insert(path[-1], value)
    return doc


def _check(text):
    try:
        spec = load_spec("fuzz.yaml", text=text)
    except GraphdlError as e:
        assert e.diagnostics and e.phase in ("yaml", "schema", "references")
        for d in e.diagnostics:
            assert d.code and d.line is not None and d.col is not None
            d.format(text.splitlines())
        return
    again = load_spec("resolved.yaml", text=spec.resolved_yaml())
    assert [la.name for la in again.model.layers] == [la.name for la in spec.model.layers]


edit = st.tuples(st.integers(0, 500), st.integers(0, 100), st.integers(0, 3),
                 st.integers(0, 20))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 1), st.lists(edit, min_size=1, max_size=4))
def test_structural_mutations_never_crash(which, edits):
    _check(yaml.safe_dump(_mutate(DOCS[which], edits), sort_keys=False))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 1), st.integers(0, 10_000), st.integers(0, 5),
       st.sampled_from(list("{}[]:,-#$&*!|>'\" \n\tab01.e~") + ["\n  ", "$d_model", "prev"]))
def test_text_mutations_never_crash(which, pos, cut, insert):
    text = TEXTS[which]
    pos %= len(text)
    _check(text[:pos] + insert + text[pos + cut:])
