import math

import pytest

from graphdl.errors import GraphdlError
from graphdl.spec.loader import format_path, load_yaml, parse_path, resolve_plain


def data(text: str):
    return load_yaml("t.yaml", text).data


# --- the YAML 1.2 core-schema rules ------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [("1e-3", 0.001), ("1.0e-3", 0.001), (".5", 0.5), ("-2E+3", -2000.0), ("+5.", 5.0),
     ("1e3", 1000.0)],
)
def test_exponent_and_dot_floats(text, value):
    v = data(f"v: {text}\n")["v"]
    assert isinstance(v, float) and v == value


@pytest.mark.parametrize("text, value", [("010", 10), ("0", 0), ("-7", -7), ("+12", 12)])
def test_ints_are_decimal_only(text, value):
    v = data(f"v: {text}\n")["v"]
    assert type(v) is int and v == value


@pytest.mark.parametrize("text", ["0x10", "0o17", "1_000"])
def test_non_decimal_int_forms_stay_strings(text):
    assert data(f"v: {text}\n")["v"] == text


@pytest.mark.parametrize(
    "text, value",
    [("true", True), ("True", True), ("TRUE", True), ("false", False), ("False", False),
     ("FALSE", False)],
)
def test_booleans(text, value):
    assert data(f"v: {text}\n")["v"] is value


@pytest.mark.parametrize("text", ["yes", "no", "on", "off", "Yes", "y", "n"])
def test_yaml11_booleans_stay_strings(text):
    assert data(f"v: {text}\n")["v"] == text


@pytest.mark.parametrize("text", ["null", "Null", "NULL", "~", ""])
def test_nulls(text):
    assert data(f"v: {text}\n")["v"] is None


def test_quoted_scalars_are_strings():
    d = data("a: '1e-3'\nb: \"true\"\nc: '010'\nd: ''\n")
    assert d == {"a": "1e-3", "b": "true", "c": "010", "d": ""}


def test_inf_nan_and_explicit_tags():
    d = data("a: .inf\nb: -.Inf\nc: .nan\nd: !!str 010\ne: !!float 3\n")
    assert d["a"] == math.inf and d["b"] == -math.inf and math.isnan(d["c"])
    assert d["d"] == "010"
    assert d["e"] == 3.0 and isinstance(d["e"], float)


def test_resolve_plain_agrees_with_loader():
    for text in ["1e-3", "010", "yes", "null", "abc", "True"]:
        loaded = data(f"v: {text}\n")["v"]
        assert loaded == resolve_plain(text) or loaded is resolve_plain(text)


# --- positions -----------------------------------------------------------------------------


def test_positions_of_keys_and_values():
    text = "train:\n  optimizer: {type: adam, lr: 1.0e-3}\n  items:\n    - a\n    - bb\n"
    y = load_yaml("t.yaml", text)
    p = y.positions[("train", "optimizer", "lr")]
    assert p.key == (2, 27, 2)
    assert p.value == (2, 31, 6)
    item = y.positions[("train", "items", 1)]
    assert item.key is None and item.value == (5, 7, 2)
    assert y.positions[("train",)].key == (1, 1, 5)
    assert y.source_lines[1] == "  optimizer: {type: adam, lr: 1.0e-3}"


def test_format_and_parse_path():
    path = ("model", "layers", 0, "units")
    assert format_path(path) == "model.layers[0].units"
    assert parse_path("model.layers[0].units") == path
    assert format_path(()) == ""


# --- errors --------------------------------------------------------------------------------


def test_duplicate_key_reports_both_positions():
    text = "a: 1\nb:\n  c: 2\n  d: 3\n  c: 4\n"
    with pytest.raises(GraphdlError) as ei:
        load_yaml("t.yaml", text)
    (d,) = ei.value.diagnostics
    assert ei.value.phase == "yaml"
    assert d.code == "E002"
    assert (d.line, d.col) == (5, 3)
    assert d.message == "duplicate key 'c' in b (first defined at line 3, column 3)"
    assert "line 3" in d.note
    assert d.extra == {"first_line": 3, "first_col": 3}


def test_syntax_error_has_line_and_column():
    with pytest.raises(GraphdlError) as ei:
        load_yaml("t.yaml", "a: 1\nb: [1, 2\nc: 3\n")
    (d,) = ei.value.diagnostics
    assert d.code == "E001" and (d.line, d.col) == (3, 2)
    assert d.message.startswith("YAML syntax error: expected ',' or ']'")


def test_unsupported_tag_is_e001():
    with pytest.raises(GraphdlError) as ei:
        load_yaml("t.yaml", "a: !!python/name:os.system x\n")
    (d,) = ei.value.diagnostics
    assert d.code == "E001" and "unsupported YAML tag" in d.message and (d.line, d.col) == (1, 4)
