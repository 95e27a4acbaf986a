"""The generated JSON Schema: committed copies, closed world, descriptions, $name values."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from graphdl.spec import schema_gen, schema_text
from graphdl.spec.loader import load_yaml

REPO = Path(__file__).resolve().parents[2]


def walk(schema, path=()):
    """Every sub-schema dict with its path."""
    if isinstance(schema, dict):
        yield schema, path
        for k, v in schema.items():
            if k in ("enum", "const", "default", "required"):
                continue
            yield from walk(v, path + (k,))
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            yield from walk(v, path + (i,))


def test_committed_schema_is_the_generated_one():
    generated = schema_gen.schema_json()
    assert (REPO / "schemas" / "model.schema.json").read_text() == generated
    assert (REPO / "graphdl" / "spec" / "model.schema.json").read_text() == generated
    assert schema_text() == generated


def test_schema_gen_check_command():
    proc = subprocess.run([sys.executable, "-m", "graphdl.spec.schema_gen", "--check"],
                          check=False, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_schema_is_draft07_and_valid():
    schema = json.loads(schema_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    Draft7Validator.check_schema(schema)


def test_every_property_has_a_description():
    schema = json.loads(schema_text())
    missing = [
        (path, name)
        for s, path in walk(schema)
        for name, prop in s.get("properties", {}).items()
        if isinstance(s.get("properties"), dict) and "description" not in prop
    ]
    assert missing == []


def test_closed_world_everywhere():
    schema = json.loads(schema_text())
    objects = [(s, p) for s, p in walk(schema) if isinstance(s.get("properties"), dict)
               and "type" in s]
    assert len(objects) > 30
    for s, path in objects:
        assert s.get("additionalProperties") is False, path


def test_layer_variants_carry_the_common_keys():
    schema = json.loads(schema_text())
    variants = schema["definitions"]["layer"]["anyOf"]
    types = [v["properties"]["type"].get("const") for v in variants]
    assert types == ["dense", "activation", "dropout", "flatten", "add", "concat", "conv2d",
                     "maxpool2d", "avgpool2d", "global_avgpool2d", "batchnorm", "layer_norm",
                     "residual", "embedding", "rnn", "lstm", "gru", "seq_pool",
                     "positional_encoding", "multihead_attention", "attention",
                     "additive_attention", None]  # the last: an editor-only stand-in for block uses
    for v in variants:
        for key in ("name", "inputs", "repeat", "trainable", "lr_mult", "regularizer", "doc"):
            assert key in v["properties"], (v["title"], key)
    dense = variants[0]
    assert set(dense["properties"]) == {
        "type", "name", "inputs", "repeat", "trainable", "lr_mult", "regularizer", "doc",
        "units", "activation", "alpha", "use_bias", "kernel_init", "bias_init"}
    assert dense["required"] == ["type", "units"]


@pytest.mark.parametrize(
    "union, tag, variants",
    [
        (("properties", "data", "properties", "source"), "type",
         ["builtin", "npz", "csv", "image_folder", "synthetic", "ts"]),
        (("properties", "train", "properties", "loss"), "type",
         ["cross_entropy", "mse", "bce_with_logits"]),
        (("properties", "train", "properties", "optimizer"), "type",
         ["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"]),
        (("properties", "train", "properties", "schedule"), "type",
         ["constant", "step", "exponential", "cosine", "warmup_cosine", "plateau", "one_cycle"]),
        (("properties", "data", "properties", "preprocess", "items"), "op",
         ["scale", "normalize", "resize", "grayscale", "rgb_to_yuv", "select_channels",
          "gaussian_blur", "median_filter", "pca"]),
        (("properties", "data", "properties", "augment", "items"), "op",
         ["random_rotation", "random_flip", "gaussian_noise", "salt_pepper_noise"]),
    ],
)
def test_tagged_unions(union, tag, variants):
    s = json.loads(schema_text())
    for k in union:
        s = s[k]
    assert [b["properties"][tag]["const"] for b in s["anyOf"]] == variants
    assert all(b["additionalProperties"] is False for b in s["anyOf"])


def test_top_level_keys():
    schema = json.loads(schema_text())
    assert list(schema["properties"]) == ["graphdl", "name", "description", "seed", "vars",
                                          "blocks", "data", "model", "train", "evaluate"]
    assert schema["required"] == ["graphdl", "data", "model"]


def _errors(text):
    schema = json.loads(schema_text())
    return list(Draft7Validator(schema).iter_errors(load_yaml("t.yaml", text).data))


def test_examples_validate_against_the_plain_schema(fixtures_dir):
    # what an editor sees: the committed schema, without graphdl's per-document block types
    for name in ("digits_mlp.yaml", "blocks_model.yaml"):
        assert _errors((fixtures_dir / name).read_text()) == []


def test_dollar_names_accepted_for_layer_params():
    base = ("graphdl: 1\ndata: {source: {type: builtin, name: digits}}\n"
            "model:\n  inputs: {x: {shape: [$d]}}\n  layers:\n")
    assert _errors(base + "    - {type: dense, units: $units, activation: $act}\n"
                   "    - {type: dropout, rate: $r}\n") == []
    assert len(_errors(base + "    - {type: dense, units: abc}\n")) == 1
    assert len(_errors(base + "    - {type: dense, units: $9}\n")) == 1


def test_importing_and_validating_does_not_import_numba(fixtures_dir):
    code = (
        "import sys; from graphdl.spec import load_spec; "
        f"load_spec({str(fixtures_dir / 'blocks_model.yaml')!r}); "
        "assert 'numba' not in sys.modules, 'numba imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
