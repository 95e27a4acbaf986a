"""Good specs: substitution, block expansion, references, names, defaults, loc, resolved YAML."""

import dataclasses

from spec_helpers import HEAD

from graphdl.spec import Location, load_spec, validate_file


def names(spec):
    return [layer.name for layer in spec.model.layers]


def graph(spec):
    return [(layer.name, layer.type, layer.inputs) for layer in spec.model.layers]


# --- the digits example ----------------------------------------------------------------


def test_digits_example(fixtures_dir):
    spec = load_spec(fixtures_dir / "digits_mlp.yaml")
    assert spec.name == "digits-mlp" and spec.seed == 42
    assert graph(spec) == [
        ("dense_1", "dense", ["x"]),
        ("dropout_1", "dropout", ["dense_1"]),
        ("dense_2", "dense", ["dropout_1"]),
        ("dense_3", "dense", ["dense_2"]),
    ]
    assert spec.model.outputs == ["dense_3"]
    x = spec.model.inputs["x"]
    assert (x.shape, x.dtype) == ((64,), "float32")
    assert spec.model.layers[0].params == {
        "units": 128, "activation": "relu", "use_bias": True,
        "kernel_init": "glorot_uniform", "bias_init": "zeros",
    }
    assert spec.model.layers[1].params == {"rate": 0.2}
    assert spec.model.layers[0].loc == Location(str(fixtures_dir / "digits_mlp.yaml"), 18, 7, 43)
    assert spec.model.layers[2].yaml_path == "model.layers[2]"
    assert spec.train["optimizer"] == {
        "type": "adam", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
    assert spec.train["early_stopping"] == {
        "monitor": "val_loss", "patience": 5, "min_delta": 0.0, "mode": "auto",
        "restore_best_weights": False}
    assert spec.train["checkpoint"] == {
        "dir": "runs/digits-mlp", "save": "best", "monitor": "val_accuracy"}
    assert spec.train["schedule"] == {"type": "constant"}
    assert spec.train["gradient_clip"] is None
    assert spec.evaluate == {"split": "test", "metrics": ["accuracy"], "decode": "none", "beam": 4, "eos": None, "decode_input": None}
    assert spec.data["preprocess"][1] == {
        "op": "normalize", "mode": "zscore", "stats": "from_train", "fields": None}
    assert validate_file(fixtures_dir / "digits_mlp.yaml") == spec


def test_load_from_text_without_a_file():
    spec = load_spec("virtual/my_model.yaml",
                     text=HEAD + "    - {type: dense, units: 3}\n")
    assert spec.name == "my_model" and spec.path == "virtual/my_model.yaml"
    assert spec.source_lines[7] == "    - {type: dense, units: 3}"


# --- defaults --------------------------------------------------------------------------


def test_top_level_and_train_defaults(load):
    spec = load(HEAD + "    - {type: dense, units: 3}\ntrain:\n  target: y\n  loss: {type: mse}\n",
                name="reg_model.yaml")
    assert spec.name == "reg_model" and spec.seed == 0 and spec.description == ""
    t = spec.train
    assert (t["epochs"], t["batch_size"], t["device"], t["shuffle"]) == (10, 32, "auto", True)
    assert t["loss"] == {"type": "mse"}
    assert t["optimizer"]["type"] == "adam"
    assert t["regularization"] == {"l1": 0.0, "l2": 0.0}
    assert t["early_stopping"] is None
    assert t["metrics"] == []  # not cross_entropy
    assert t["checkpoint"] == {"dir": "runs/reg_model", "save": "best", "monitor": "val_loss"}
    assert spec.evaluate == {"split": "test", "metrics": [], "decode": "none", "beam": 4, "eos": None, "decode_input": None}
    assert spec.data["split"] == {"train": 0.8, "val": 0.1, "test": 0.1, "shuffle": True,
                                  "stratify": False, "train_subsample": 1.0}


def test_cross_entropy_defaults_metrics_and_evaluate(load):
    spec = load(HEAD + "    - {type: dense, units: 3}\ntrain: {target: y}\n"
                "evaluate: {split: val}\n")
    assert spec.train["loss"] == {"type": "cross_entropy", "label_smoothing": 0.0,
                                  "ignore_index": None}
    assert spec.train["metrics"] == ["accuracy"]
    assert spec.evaluate == {"split": "val", "metrics": ["accuracy"], "decode": "none", "beam": 4, "eos": None, "decode_input": None}


def test_split_missing_fractions_share_the_rest(load):
    spec = load(HEAD.replace("  source: {type: builtin, name: digits}\n",
                             "  source: {type: builtin, name: digits}\n"
                             "  split: {train: 0.6}\n") + "    - {type: flatten}\n")
    assert spec.data["split"]["train"] == 0.6
    assert spec.data["split"]["val"] == spec.data["split"]["test"] == 0.2


def test_optimizer_variant_defaults_and_float_coercion(load):
    spec = load(HEAD + "    - {type: dropout, rate: 0}\ntrain:\n  target: y\n"
                "  optimizer: {type: momentum, lr: 1}\n"
                "  schedule: {type: step, step_size: 3}\n")
    assert spec.train["optimizer"] == {"type": "momentum", "lr": 1.0, "momentum": 0.9,
                                       "nesterov": False, "weight_decay": 0.0}
    assert isinstance(spec.train["optimizer"]["lr"], float)
    assert spec.train["schedule"] == {"type": "step", "step_size": 3, "gamma": 0.1,
                                      "interval": "step"}
    assert spec.model.layers[0].params == {"rate": 0.0}


def test_alpha_defaults(load):
    spec = load(HEAD + "    - {type: dense, units: 3, activation: leaky_relu}\n"
                "    - {type: activation, activation: elu}\n"
                "    - {type: activation, activation: leaky_relu, alpha: 0.2}\n"
                "    - {type: concat, inputs: [prev, x]}\n")
    p = [layer.params for layer in spec.model.layers]
    assert p[0]["alpha"] == 0.01
    assert p[1] == {"activation": "elu", "alpha": 1.0}
    assert p[2] == {"activation": "leaky_relu", "alpha": 0.2}
    assert p[3] == {"axis": -1}


# --- names, prev, references ------------------------------------------------------------


def test_default_names_count_per_type(load):
    spec = load(HEAD + "    - {type: dense, units: 8}\n    - {type: dropout, rate: 0.1}\n"
                "    - {type: dense, units: 8}\n    - {type: activation, activation: relu}\n"
                "    - {type: dense, units: 2}\n")
    assert names(spec) == ["dense_1", "dropout_1", "dense_2", "activation_1", "dense_3"]


def test_default_names_skip_explicit_names(load):
    spec = load(HEAD + "    - {type: dense, units: 8}\n"
                "    - {type: dense, units: 8, name: dense_1}\n"
                "    - {type: dense, units: 2}\n")
    assert names(spec) == ["dense_2", "dense_1", "dense_3"]


def test_prev_and_dag(load):
    spec = load(HEAD + "    - {type: dense, units: 8, name: a}\n"
                "    - {type: dense, units: 8, name: b, inputs: [x]}\n"
                "    - {type: concat, inputs: [a, prev]}\n"
                "    - {type: dense, units: 2, inputs: [prev]}\n"
                "    - {type: add, inputs: [a, b]}\n"
                "  outputs: [dense_3, add_1]\n")
    # the third dense layer is dense_3 even though the first two have names
    assert graph(spec) == [
        ("a", "dense", ["x"]),
        ("b", "dense", ["x"]),
        ("concat_1", "concat", ["a", "b"]),
        ("dense_3", "dense", ["concat_1"]),
        ("add_1", "add", ["a", "b"]),
    ]
    assert spec.model.outputs == ["dense_3", "add_1"]


def test_multi_input_model_with_explicit_inputs(load):
    spec = load("""
        graphdl: 1
        data: {source: {type: builtin, name: digits}}
        model:
          inputs:
            a: {shape: [4]}
            b: {shape: [4], dtype: int64}
          layers:
            - {type: concat, inputs: [a, b]}
            - {type: dense, units: 2}
        """)
    assert graph(spec) == [("concat_1", "concat", ["a", "b"]), ("dense_1", "dense", ["concat_1"])]
    assert spec.model.inputs["b"].dtype == "int64"
    assert spec.model.inputs["b"].loc.line == 6


def test_residual_expansion(load):
    spec = load(HEAD + "    - {type: dense, units: 8}\n"
                "    - type: residual\n"
                "      name: res\n"
                "      layers:\n"
                "        - {type: dense, units: 8, activation: relu}\n"
                "        - {type: dropout, rate: 0.1}\n"
                "    - {type: residual, layers: [{type: dense, units: 8}]}\n")
    assert graph(spec) == [
        ("dense_1", "dense", ["x"]),
        ("dense_2", "dense", ["dense_1"]),
        ("dropout_1", "dropout", ["dense_2"]),
        ("res", "add", ["dense_1", "dropout_1"]),
        ("dense_3", "dense", ["res"]),
        ("residual_2", "add", ["res", "dense_3"]),
    ]
    res = spec.model.layers[3]
    assert res.params == {} and res.loc.line == 9 and res.yaml_path == "model.layers[1]"
    assert spec.model.layers[1].yaml_path == "model.layers[1].layers[0]"
    assert spec.model.outputs == ["residual_2"]


# --- vars and blocks ----------------------------------------------------------------------


def test_vars_substitution(load):
    spec = load("""
        graphdl: 1
        name: $run
        vars:
          run: subst
          width: 32
          also_width: $width
          betas: [0.8, 0.9]
          act: gelu
        data: {source: {type: builtin, name: digits}}
        model:
          inputs: {x: {shape: [$width]}}
          layers:
            - {type: dense, units: $also_width, activation: $act, doc: "$width stays"}
        train:
          target: y
          optimizer: {type: adam, betas: $betas}
        """)
    assert spec.name == "subst"
    assert spec.model.inputs["x"].shape == (32,)
    assert spec.model.layers[0].params["units"] == 32
    assert spec.model.layers[0].params["activation"] == "gelu"
    assert spec.train["optimizer"]["betas"] == [0.8, 0.9]
    assert spec.raw["vars"]["also_width"] == 32
    assert spec.raw["model"]["layers"][0]["units"] == 32
    assert spec.raw["model"]["layers"][0]["doc"] == "$width stays"


def test_block_params_shadow_vars_and_defaults(load):
    spec = load("""
        graphdl: 1
        vars: {width: 100, rate: 0.3}
        blocks:
          mlp:
            params: {width: 8, act: relu}
            layers:
              - {type: dense, units: $width, activation: $act}
              - {type: dropout, rate: $rate}
        data: {source: {type: builtin, name: digits}}
        model:
          inputs: {x: {shape: [4]}}
          layers:
            - {type: mlp, name: first}
            - {type: mlp, width: 16, act: tanh}
            - {type: dense, units: $width, inputs: [first]}
        """)
    assert graph(spec) == [
        ("first.dense_1", "dense", ["x"]),
        ("first.dropout_1", "dropout", ["first.dense_1"]),
        ("mlp_2.dense_2", "dense", ["first.dropout_1"]),
        ("mlp_2.dropout_2", "dropout", ["mlp_2.dense_2"]),
        ("dense_3", "dense", ["first.dropout_1"]),
    ]
    p = [layer.params for layer in spec.model.layers]
    assert (p[0]["units"], p[0]["activation"]) == (8, "relu")
    assert (p[2]["units"], p[2]["activation"]) == (16, "tanh")
    assert p[1]["rate"] == p[3]["rate"] == 0.3
    assert p[4]["units"] == 100
    assert spec.model.layers[0].block == "first"
    assert spec.model.outputs == ["dense_3"]


def test_block_repeat_chains_first_input_and_shares_the_others(fixtures_dir):
    spec = load_spec(fixtures_dir / "blocks_model.yaml")
    g = {name: inputs for name, _, inputs in graph(spec)}
    # encoder: two copies, each chaining the previous one
    # (src_emb is dense number 1, so the block's first dense is dense_2)
    assert g["encoder.0.dense_2"] == ["src_emb"]
    assert g["encoder.0.residual_1"] == ["src_emb", "encoder.0.dropout_1"]
    assert g["encoder.0.out"] == ["encoder.0.residual_1"]
    assert g["encoder.1.dense_4"] == ["encoder.0.out"]
    # decoder: x is chained, memory (= the encoder's output) is shared by both copies
    assert g["decoder.0.concat_1"] == ["tgt_emb", "encoder.1.out"]
    assert g["decoder.1.concat_2"] == ["decoder.0.dense_7", "encoder.1.out"]
    assert g["logits"] == ["decoder.1.dense_8"]
    assert spec.model.outputs == ["logits"]
    layers = {layer.name: layer for layer in spec.model.layers}
    assert layers["encoder.0.dense_2"].params["units"] == 24  # use-site override
    assert layers["encoder.1.dense_5"].params["units"] == 16  # $d_model from vars
    assert layers["encoder.0.dropout_1"].params["rate"] == 0.2  # block default beats var
    assert layers["logits"].lr_mult == 0.5
    copy = layers["encoder.1.dense_4"]
    assert copy.block == "encoder.1"
    assert copy.yaml_path == "model.layers[1]" and copy.loc.line == 41
    assert copy.block_path == "blocks.encoder_layer.layers[0].layers[0]"
    assert copy.def_loc.line == 19
    assert len(spec.model.layers) == 17


def test_block_instance_names_resolve_to_outputs(load):
    spec = load("""
        graphdl: 1
        blocks:
          two:
            layers: [{type: dense, units: 4}, {type: dense, units: 4, name: last}]
        data: {source: {type: builtin, name: digits}}
        model:
          inputs: {x: {shape: [4]}}
          layers:
            - {type: two, name: stack, repeat: 3}
            - {type: concat, inputs: [stack.0, stack]}
          outputs: [stack.1, concat_1]
        """)
    assert spec.model.layers[-1].inputs == ["stack.0.last", "stack.2.last"]
    assert spec.model.outputs == ["stack.1.last", "concat_1"]
    assert [n for n in names(spec) if n.startswith("stack.2")] == ["stack.2.dense_5",
                                                                   "stack.2.last"]


def test_block_use_settings_apply_to_its_layers(load):
    spec = load("""
        graphdl: 1
        blocks:
          b:
            layers:
              - {type: dense, units: 4}
              - {type: dense, units: 4, lr_mult: 0.5, regularizer: {l1: 0.1}}
        data: {source: {type: builtin, name: digits}}
        model:
          inputs: {x: {shape: [4]}}
          layers:
            - {type: b, trainable: false, lr_mult: 0.1, regularizer: {l2: 0.01}}
            - {type: dense, units: 2}
        """)
    a, b, c = spec.model.layers
    assert (a.trainable, a.lr_mult, a.regularizer) == (False, 0.1, {"l1": 0.0, "l2": 0.01})
    assert (b.trainable, b.lr_mult, b.regularizer) == (False, 0.05, {"l1": 0.1, "l2": 0.0})
    assert (c.trainable, c.lr_mult, c.regularizer) == (True, 1.0, None)


def test_nested_blocks(load):
    spec = load("""
        graphdl: 1
        blocks:
          inner:
            params: {u: 2}
            layers: [{type: dense, units: $u}]
          outer:
            params: {width: 3}
            layers: [{type: inner, u: $width, name: core}, {type: dropout, rate: 0.1}]
        data: {source: {type: builtin, name: digits}}
        model:
          inputs: {x: {shape: [4]}}
          layers:
            - {type: outer, name: o, repeat: 2, width: 7}
        """)
    assert names(spec) == ["o.0.core.dense_1", "o.0.dropout_1", "o.1.core.dense_2",
                           "o.1.dropout_2"]
    assert spec.model.layers[0].params["units"] == 7
    assert spec.model.layers[2].inputs == ["o.0.dropout_1"]
    assert spec.model.layers[0].block == "o.0.core"


# --- loc() and resolved_yaml() -----------------------------------------------------------


def test_loc(fixtures_dir):
    path = str(fixtures_dir / "digits_mlp.yaml")
    spec = load_spec(path)
    lines = spec.source_lines

    def col(line, text):
        return lines[line - 1].index(text) + 1

    assert lines[7].startswith("  source: {type: builtin, name: digits}")
    assert spec.loc("data", "source", "name") == Location(path, 8, col(8, "digits"), 6)
    assert spec.loc("data", "source", "name", key=True) == Location(path, 8, col(8, "name"), 4)
    assert spec.loc("model.layers[1].rate") == Location(path, 19, col(19, "0.2"), 3)
    assert lines[27] == "  optimizer: {type: adam, lr: 1.0e-3}"
    assert spec.loc("train", "optimizer", "lr") == Location(path, 28, 31, 6)
    # falls back to the nearest existing parent (its key)
    assert spec.loc("train", "optimizer", "betas") == Location(path, 28, 3, 9)
    assert spec.loc(("seed",)) == Location(path, 5, 7, 2)
    assert spec.loc() == Location(path, 3, 1, 10)


def _comparable(spec):
    layers = [dataclasses.replace(layer, loc=None, yaml_path=None, block_path=None,
                                  def_loc=None, block=None) for layer in spec.model.layers]
    inputs = {n: (i.shape, i.dtype) for n, i in spec.model.inputs.items()}
    return (spec.name, spec.seed, spec.data, spec.train, spec.evaluate, layers, inputs,
            spec.model.outputs)


def test_resolved_yaml_round_trips(fixtures_dir, tmp_path):
    for fixture in ("digits_mlp.yaml", "blocks_model.yaml"):
        spec = load_spec(fixtures_dir / fixture)
        text = spec.resolved_yaml()
        assert "vars:" not in text and "blocks:" not in text and "$" not in text
        out = tmp_path / f"resolved_{fixture}"
        out.write_text(text)
        again = load_spec(out)
        assert _comparable(again) == _comparable(spec)
        assert again.resolved_yaml().splitlines()[1:] == text.splitlines()[1:]


def test_resolved_yaml_quotes_strings_that_look_like_other_types(load):
    spec = load(HEAD.replace("graphdl: 1\n", "graphdl: 1\nname: '010'\n"
                             "description: 'yes'\n") + "    - {type: dense, units: 2}\n")
    text = spec.resolved_yaml()
    assert "name: '010'" in text
    again = load_spec("r.yaml", text=text)
    assert again.name == "010" and again.description == "yes"
