"""Bad specs: every error code, with its line, column and message."""

import json

import pytest
from spec_helpers import HEAD

from graphdl.errors import GraphdlError
from graphdl.spec import load_spec


def only(err: GraphdlError, code: str | None = None):
    assert len(err.diagnostics) == 1, err.format()
    d = err.diagnostics[0]
    if code is not None:
        assert d.code == code, err.format()
    return d


def at(d, line, col):
    assert (d.line, d.col) == (line, col), d.format()


# ================================ E0xx: YAML =============================================


def test_e001_syntax_error(spec_error):
    err = spec_error(HEAD + "    - {type: dense, units: 10\ntrain: {target: y}\n", phase="yaml")
    d = only(err, "E001")
    at(d, 9, 6)
    assert d.message == "YAML syntax error: expected ',' or '}', but got ':'"
    assert "started at line 8" in d.note


def test_e001_tab_indentation(spec_error):
    d = only(spec_error("graphdl: 1\ndata:\n\tsource: 3\n", phase="yaml"), "E001")
    at(d, 3, 1)
    assert "'\\t'" in d.message
    assert d.help == "YAML does not allow tabs for indentation; use spaces"


def test_e001_empty_file(spec_error):
    d = only(spec_error("# nothing here\n", phase="yaml"), "E001")
    at(d, 1, 1)
    assert d.message == "the spec is empty: expected a mapping starting with 'graphdl: 1'"


def test_e001_missing_file(tmp_path):
    with pytest.raises(GraphdlError) as ei:
        load_spec(tmp_path / "nope.yaml")
    d = only(ei.value, "E001")
    assert ei.value.phase == "yaml"
    assert d.message.startswith("cannot read spec file") and "nope.yaml" in d.message


def test_e002_duplicate_keys_all_reported_in_order(spec_error):
    err = spec_error(
        """
        graphdl: 1
        data:
          source: {type: builtin, name: digits}
        model:
          inputs: {x: {shape: [2]}, x: {shape: [3]}}
          layers: [{type: dense, units: 2}]
        data: {}
        """,
        phase="yaml",
    )
    d1, d2 = err.diagnostics
    assert d1.code == d2.code == "E002"
    at(d1, 5, 29)
    assert d1.message == "duplicate key 'x' in model.inputs (first defined at line 5, column 12)"
    at(d2, 7, 1)
    assert d2.message == "duplicate key 'data' at the top level (first defined at line 2, column 1)"
    assert d2.note.startswith("the first 'data' is at line 2")


# ================================ E1xx: schema ===========================================


def test_e101_unknown_key_with_did_you_mean(spec_error):
    err = spec_error(HEAD + "    - {type: dense, units: 10, activaton: relu}\n"
                     "train: {target: y}\n", phase="schema")
    d = only(err, "E101")
    at(d, 8, 32)
    assert d.span == 9
    assert d.message == "unknown key 'activaton' in model.layers[0]"
    assert d.help == "did you mean 'activation'?"
    assert d.note.startswith("valid keys here: activation, alpha, bias_init, doc, inputs")
    assert d.path == "model.layers[0].activaton"
    lines = d.format().splitlines()
    assert lines[0] == f"{d.file}:8:32: error[E101]: unknown key 'activaton' in model.layers[0]"
    assert lines[2] == "8 |     - {type: dense, units: 10, activaton: relu}"
    assert lines[3] == "  |                                ^^^^^^^^^"


def test_e101_key_of_another_schedule_variant(spec_error):
    err = spec_error(
        HEAD + "    - {type: dense, units: 10}\ntrain:\n  target: y\n"
        "  schedule: {type: cosine, gamma: 0.1}\n",
        phase="schema",
    )
    d = only(err, "E101")
    at(d, 11, 28)
    assert d.message == "'gamma' has no effect for schedule type 'cosine'; it belongs to 'step' and 'exponential'"
    assert d.note == "valid keys here: interval, min_lr, type"


def test_e101_key_of_another_layer_type(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 10, rate: 0.5}\n"), "E101")
    at(d, 8, 32)
    assert d.message == "'rate' has no effect for layer type 'dense'; it belongs to 'dropout'"


def test_e101_key_of_two_other_optimizers(spec_error):
    d = only(spec_error(
        HEAD + "    - {type: dense, units: 2}\ntrain:\n  target: y\n"
        "  optimizer: {type: sgd, lr: 0.1, betas: [0.9, 0.99]}\n"), "E101")
    at(d, 11, 35)
    assert d.message == ("'betas' has no effect for optimizer type 'sgd'; "
                         "it belongs to 'adam' and 'adamw'")


def test_e101_misspelled_key_of_another_variant(spec_error):
    d = only(spec_error(
        HEAD + "    - {type: dense, units: 2}\ntrain:\n  target: y\n"
        "  schedule: {type: cosine, gama: 0.5}\n"), "E101")
    assert d.message == "unknown key 'gama' in train.schedule"
    assert d.help == ("did you mean 'gamma'? it belongs to schedule type 'step' and "
                      "'exponential', not 'cosine'")


def test_e101_unknown_top_level_key(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 2}\ntrian: {target: y}\n"), "E101")
    at(d, 9, 1)
    assert d.message == "unknown key 'trian' at the top level"
    assert d.help == "did you mean 'train'?"


def test_e101_alpha_without_leaky_relu(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 3, activation: relu, alpha: 0.2}\n"),
             "E101")
    at(d, 8, 49)
    assert d.message == ("'alpha' has no effect for activation 'relu'; "
                         "it is only for 'leaky_relu' and 'elu'")


def test_e101_unknown_key_on_block_use_lists_params(spec_error):
    d = only(spec_error(
        """
        graphdl: 1
        blocks:
          mlp:
            params: {width: 8}
            layers: [{type: dense, units: $width}]
        data: {source: {type: builtin, name: digits}}
        model:
          inputs: {x: {shape: [4]}}
          layers:
            - {type: mlp, widht: 3}
        """,
        phase="schema"), "E101")
    at(d, 10, 19)
    assert d.message == "unknown key 'widht' in model.layers[0]"
    assert d.help == "did you mean 'width'?"
    assert "width" in d.note and "repeat" in d.note


def test_e102_missing_layer_key(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, activation: relu}\n"), "E102")
    at(d, 8, 7)
    assert d.message == "missing required key 'units' in model.layers[0]"
    assert d.path == "model.layers[0].units"


def test_e102_missing_top_level_sections(spec_error):
    err = spec_error("graphdl: 1\nname: x\n", phase="schema")
    assert [d.code for d in err.diagnostics] == ["E102", "E102"]
    assert [d.message for d in err.diagnostics] == [
        "missing required key 'data' at the top level",
        "missing required key 'model' at the top level",
    ]
    at(err.diagnostics[0], 1, 1)


TYPES = ("dense, activation, dropout, flatten, add, concat, conv2d, maxpool2d, avgpool2d, "
         "global_avgpool2d, batchnorm, layer_norm, residual, embedding, rnn, lstm, gru, seq_pool, "
         "positional_encoding, multihead_attention, attention, additive_attention")


def test_e102_missing_layer_type_lists_types(spec_error):
    d = only(spec_error(HEAD + "    - {units: 3}\n"), "E102")
    at(d, 8, 7)
    assert d.message == "missing required key 'type' in model.layers[0]"
    assert d.note == "valid types: " + TYPES


def test_e102_empty_layer_list(spec_error):
    d = only(spec_error(HEAD.replace("  layers:\n", "  layers: []\n")), "E102")
    at(d, 7, 11)
    assert d.message == "'layers' in model is empty: it needs at least 1 item"


def test_e102_missing_optimizer_lr(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 2}\ntrain:\n  target: y\n"
                        "  optimizer: {type: sgd}\n"), "E102")
    at(d, 11, 3)
    assert d.message == "missing required key 'lr' in train.optimizer"


def test_e102_required_block_param(spec_error):
    d = only(spec_error(
        """
        graphdl: 1
        blocks:
          mlp:
            params: {width: null}
            layers: [{type: dense, units: $width}]
        data: {source: {type: builtin, name: digits}}
        model:
          inputs: {x: {shape: [4]}}
          layers:
            - {type: mlp}
        """), "E102")
    at(d, 10, 7)
    assert d.message == "missing required key 'width' in model.layers[0]"


def test_e103_unknown_layer_type_lists_blocks(spec_error):
    d = only(spec_error(
        """
        graphdl: 1
        blocks:
          my_block:
            layers: [{type: dense, units: 2}]
        data: {source: {type: builtin, name: digits}}
        model:
          inputs: {x: {shape: [4]}}
          layers:
            - {type: dnse, units: 3}
        """, phase="schema"), "E103")
    at(d, 9, 14)
    assert d.span == 4
    assert d.message == "unknown layer type 'dnse' in model.layers[0]"
    assert d.help == "did you mean 'dense'?"
    assert d.note == "valid types: " + TYPES + "; blocks: my_block"


def test_e103_bad_enum_value(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 10, activation: relux}\n"), "E103")
    at(d, 8, 44)
    assert d.message == "bad value 'relux' for 'activation' in model.layers[0]"
    assert d.help == "did you mean 'relu'?"
    assert d.note.startswith("allowed values: linear, relu, leaky_relu")


def test_e103_bad_optimizer_type(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 2}\ntrain:\n  target: y\n"
                        "  optimizer: {type: adma, lr: 0.1}\n"), "E103")
    at(d, 11, 21)
    assert d.message == "unknown optimizer type 'adma' in train.optimizer"
    assert d.help == "did you mean 'adam'?"
    assert d.note == "valid types: sgd, momentum, adam, adamw, rmsprop, adagrad"


def test_e103_bad_preprocess_op(spec_error):
    d = only(spec_error(
        """
        graphdl: 1
        data:
          source: {type: builtin, name: digits}
          preprocess:
            - {op: normalise}
        model:
          inputs: {x: {shape: [4]}}
          layers: [{type: dense, units: 2}]
        """), "E103")
    at(d, 5, 12)
    assert d.message == "unknown preprocess op 'normalise' in data.preprocess[0]"
    assert d.help == "did you mean 'normalize'?"


def test_e103_unsupported_version(spec_error):
    d = only(spec_error(HEAD.replace("graphdl: 1", "graphdl: 2") +
                        "    - {type: dense, units: 2}\n"), "E103")
    at(d, 1, 10)
    assert d.message == "unsupported spec format version 2: this graphdl reads 'graphdl: 1'"


def test_e104_quoted_number_hint(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 2}\ntrain:\n  target: y\n"
                        "  optimizer: {type: adam, lr: '1e-3'}\n"), "E104")
    at(d, 11, 31)
    assert d.message == ("wrong type for 'lr' in train.optimizer: expected a number, "
                         "got the string '1e-3'")
    assert "remove the quotes: lr: 1e-3" in d.help


def test_e104_empty_value(spec_error):
    err = spec_error(
        """
        graphdl: 1
        data:
        source: {type: builtin, name: digits}
        model:
          inputs: {x: {shape: [4]}}
          layers: [{type: dense, units: 2}]
        """)
    codes = [(d.code, d.line) for d in err.diagnostics]
    assert codes == [("E104", 2), ("E101", 3)]
    d = err.diagnostics[0]
    at(d, 2, 1)
    assert d.message == ("the value is empty: check the indentation below "
                         "('data' at the top level expects a mapping)")


def test_e104_yes_is_not_a_boolean(spec_error):
    d = only(spec_error(
        """
        graphdl: 1
        data:
          source: {type: builtin, name: digits}
          split: {shuffle: yes}
        model:
          inputs: {x: {shape: [4]}}
          layers: [{type: dense, units: 2}]
        """), "E104")
    at(d, 4, 20)
    assert d.message == ("wrong type for 'shuffle' in data.split: expected a boolean "
                         "(true or false), got the string 'yes'")
    assert d.help == "only true and false are booleans (YAML 1.2)"


def test_e104_float_for_integer(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 12.0}\n"), "E104")
    at(d, 8, 28)
    assert d.message == ("wrong type for 'units' in model.layers[0]: expected an integer, "
                         "got the number 12.0")
    assert d.help == "write 12 without a decimal point"


def test_e104_invalid_layer_name(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 2, name: my-layer}\n"), "E104")
    at(d, 8, 37)
    assert d.message.startswith("invalid name 'my-layer' for 'name' in model.layers[0]")


def test_e104_invalid_reference_syntax(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: $1x}\n"), "E104")
    at(d, 8, 28)
    assert d.message.startswith("invalid reference '$1x' for 'units' in model.layers[0]")


def test_e104_layer_is_not_a_mapping(spec_error):
    d = only(spec_error(HEAD + "    - dense\n"), "E104")
    at(d, 8, 7)
    assert d.message == ("wrong type for model.layers[0]: expected a mapping like "
                         "{type: dense, ...}, got the string 'dense'")


def test_e105_out_of_range(spec_error):
    d = only(spec_error(HEAD + "    - {type: dropout, rate: 1.5}\n"), "E105")
    at(d, 8, 29)
    assert d.message == "'rate' in model.layers[0] is out of range: 1.5 is not < 1"
    assert d.help == "allowed range: [0, 1)"


def test_e105_exclusive_minimum(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 2}\ntrain:\n  target: y\n"
                        "  optimizer: {type: sgd, lr: 0}\n"), "E105")
    at(d, 11, 30)
    assert d.message == "'lr' in train.optimizer is out of range: 0 is not > 0"
    assert d.help == "allowed range: > 0"


def test_e105_list_length(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 2}\ntrain:\n  target: y\n"
                        "  optimizer: {type: adam, betas: [0.9, 0.99, 0.5]}\n"), "E105")
    at(d, 11, 34)
    assert d.message == "'betas' in train.optimizer has 3 items: expected exactly 2"


def test_e105_split_fractions_sum(spec_error):
    d = only(spec_error(
        """
        graphdl: 1
        data:
          source: {type: builtin, name: digits}
          split: {train: 0.8, val: 0.2, test: 0.2}
        model:
          inputs: {x: {shape: [4]}}
          layers: [{type: dense, units: 2}]
        """), "E105")
    at(d, 4, 10)
    assert d.message == "data.split fractions sum to 1.2; they must sum to 1"


def test_e106_repeat_on_builtin_layer(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 10, repeat: 3}\n"), "E106")
    at(d, 8, 32)
    assert d.message == "repeat is only for block layers; 'dense' is a built-in layer"


def test_schema_errors_all_reported_in_file_order(spec_error):
    err = spec_error(
        HEAD + "    - {type: dense, units: 0}\n    - {type: dropout, rate: 1.5}\n"
        "    - {type: dense, unit: 2}\ntrain:\n  target: y\n  epochs: ten\n",
        phase="schema",
    )
    assert [(d.code, d.line) for d in err.diagnostics] == [
        ("E105", 8), ("E105", 9), ("E102", 10), ("E101", 10), ("E104", 13)]


def test_errors_capped_at_20(spec_error):
    layers = "".join(f"    - {{type: dense, units: 2, bad{i}: 1}}\n" for i in range(25))
    err = spec_error(HEAD + layers)
    assert len(err.diagnostics) == 20
    assert err.diagnostics[-1].extra == {"more_errors": 5}
    assert [d.line for d in err.diagnostics] == list(range(8, 28))


def test_no_schema_dump_in_messages(spec_error):
    err = spec_error(HEAD + "    - {type: dense, units: [1], foo: 1}\n    - {type: flatten, x: 1}\n"
                     "train: {target: y, loss: {type: mse, label_smoothing: 0.1}}\n")
    text = err.format() + err.to_json()
    assert "anyOf" not in text and "is not valid under any" not in text
    assert "'properties'" not in text
    payload = json.loads(err.to_json())
    assert payload["phase"] == "schema"
    assert {e["code"] for e in payload["errors"]} == {"E101", "E104"}


# ============================ E2xx: references ===========================================


def test_e201_unknown_var(spec_error):
    d = only(spec_error(
        """
        graphdl: 1
        vars: {width: 16}
        data: {source: {type: builtin, name: digits}}
        model:
          inputs: {x: {shape: [4]}}
          layers:
            - {type: dense, units: $widht}
        """, phase="references"), "E201")
    at(d, 7, 28)
    assert d.span == 6
    assert d.message == "unknown reference '$widht': there is no var 'widht'"
    assert d.help == "did you mean '$width'?"
    assert d.note == "vars: width"


def test_e201_unknown_name_in_block(spec_error):
    d = only(spec_error(
        """
        graphdl: 1
        vars: {depth: 2}
        blocks:
          mlp:
            params: {width: 8}
            layers: [{type: dense, units: $wdth}]
        data: {source: {type: builtin, name: digits}}
        model:
          inputs: {x: {shape: [4]}}
          layers: [{type: mlp}]
        """, phase="references"), "E201")
    at(d, 6, 35)
    assert d.message == ("unknown reference '$wdth': block 'mlp' has no parameter 'wdth' "
                         "and there is no var 'wdth'")
    assert d.help == "did you mean '$width'?"


def test_e201_var_uses_later_var(spec_error):
    d = only(spec_error(
        """
        graphdl: 1
        vars:
          a: $b
          b: 3
        data: {source: {type: builtin, name: digits}}
        model:
          inputs: {x: {shape: [4]}}
          layers: [{type: dense, units: $a}]
        """, phase="references"), "E201")
    at(d, 3, 6)
    assert d.message == "'$b' is defined later in vars; a var can only use vars above it"


def test_e202_unknown_reference(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 4, name: hidden}\n"
                        "    - {type: dense, units: 2, inputs: [hiden]}\n", phase="references"),
             "E202")
    at(d, 9, 40)
    assert d.message == "unknown reference 'hiden': no input or layer above has this name"
    assert d.help == "did you mean 'hidden'?"
    assert d.note == "known here: prev, x, hidden"


def test_e202_first_layer_of_multi_input_model(spec_error):
    d = only(spec_error(
        """
        graphdl: 1
        data: {source: {type: builtin, name: digits}}
        model:
          inputs:
            a: {shape: [4]}
            b: {shape: [4]}
          layers:
            - {type: dense, units: 2}
        """, phase="references"), "E202")
    at(d, 8, 7)
    assert d.message == ("this layer has no input: the model has 2 inputs (a, b), so the first "
                         "layer must say which it reads")


def test_e202_unknown_output(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 2, name: logits}\n"
                        "  outputs: [logit]\n"), "E202")
    at(d, 9, 13)
    assert d.message == "unknown output 'logit': no layer has this name"
    assert d.help == "did you mean 'logits'?"


def test_e203_forward_reference(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 4, inputs: [later]}\n"
                        "    - {type: dense, units: 2, name: later}\n", phase="references"),
             "E203")
    at(d, 8, 40)
    assert d.message == ("forward reference to 'later', which is defined at line 9; a layer can "
                         "only use inputs and the layers above it")


def test_e204_duplicate_name(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 4, name: h}\n"
                        "    - {type: dropout, rate: 0.1}\n"
                        "    - {type: dense, units: 2, name: h}\n", phase="references"), "E204")
    at(d, 10, 37)
    assert d.message == "duplicate name 'h': already a layer defined at line 8"
    assert "line 8" in d.note


def test_e204_layer_named_like_input(spec_error):
    d = only(spec_error(HEAD + "    - {type: dense, units: 4, name: x}\n"), "E204")
    at(d, 8, 37)
    assert d.message == "duplicate name 'x': already an input defined at line 6"


def test_e204_block_named_like_builtin(spec_error):
    err = spec_error(
        """
        graphdl: 1
        blocks:
          dense:
            layers: [{type: flatten}]
        data: {source: {type: builtin, name: digits}}
        model:
          inputs: {x: {shape: [4]}}
          layers: [{type: flatten}]
        """)
    d = only(err, "E204")
    at(d, 3, 3)
    assert d.message == "block 'dense' has the name of the built-in layer type 'dense'"


def test_e205_recursive_block(spec_error):
    d = only(spec_error(
        """
        graphdl: 1
        blocks:
          a:
            layers: [{type: dense, units: 2}, {type: b}]
          b:
            layers: [{type: a}]
        data: {source: {type: builtin, name: digits}}
        model:
          inputs: {x: {shape: [4]}}
          layers: [{type: a}]
        """, phase="references"), "E205")
    at(d, 6, 21)
    assert d.message == "block 'a' uses itself (a -> b -> a)"


def test_e206_block_input_count(spec_error):
    d = only(spec_error(
        """
        graphdl: 1
        blocks:
          pair:
            inputs: [x, memory]
            layers: [{type: concat, inputs: [x, memory]}]
        data: {source: {type: builtin, name: digits}}
        model:
          inputs: {x: {shape: [4]}}
          layers:
            - {type: dense, units: 4}
            - {type: pair}
        """, phase="references"), "E206")
    at(d, 11, 7)
    assert d.message == "block 'pair' takes 2 inputs (x, memory), got 1"


def test_substituted_value_checked_at_its_use_site(spec_error):
    err = spec_error(
        """
        graphdl: 1
        vars: {r: 2.0}
        blocks:
          drop:
            params: {rate: 0.1}
            layers: [{type: dropout, rate: $rate}]
        data: {source: {type: builtin, name: digits}}
        model:
          inputs: {x: {shape: [4]}}
          layers:
            - {type: dropout, rate: $r}
            - {type: drop, rate: 1.5}
        """, phase="references")
    d1, d2 = err.diagnostics
    assert d1.code == d2.code == "E105"
    at(d1, 11, 29)
    assert d1.message == "'rate' in model.layers[0] is out of range: 2.0 is not < 1"
    assert d1.note == "the value comes from $r = 2.0, vars.r (line 2)"
    at(d2, 12, 26)
    assert d2.message == "'rate' in blocks.drop.layers[0] is out of range: 1.5 is not < 1"
    assert d2.note == "'rate' is used in block 'drop' at blocks.drop.layers[0].rate (line 6)"


def test_reference_errors_all_reported(spec_error):
    err = spec_error(HEAD + "    - {type: dense, units: 4, inputs: [nope]}\n"
                     "    - {type: dense, units: $nothing}\n"
                     "    - {type: concat, inputs: [prev, later]}\n"
                     "    - {type: dense, units: 2, name: later}\n", phase="references")
    assert [(d.code, d.line) for d in err.diagnostics] == [
        ("E202", 8), ("E201", 9), ("E203", 10)]
