"""The image and transfer-learning specs of specs/: each runs as written (on a reduced
budget here), LeNet reaches its accuracy bar, and fine-tuning beats training from scratch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import graphdl
from graphdl.compiler import compile_spec
from graphdl.errors import GraphdlError
from graphdl.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "specs"


def reduced(tmp_path: Path, name: str, **train) -> Path:
    """specs/<name>.yaml with train overrides, written into tmp_path."""
    doc = yaml.safe_load((SPECS / f"{name}.yaml").read_text(encoding="utf-8"))
    doc["train"].update(train)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["lenet_bn_digits", "pca_mlp_digits"])
def test_spec_runs_on_a_reduced_budget(tmp_path, name):
    model = graphdl.load(reduced(tmp_path, name, epochs=2))
    history = model.fit(tmp_path / "run", progress=False)
    assert len(history) == 2
    assert history[-1]["train_loss"] < history[0]["train_loss"] * 1.5
    m = model.evaluate("test")
    assert 0.0 < m["accuracy"] <= 1.0 and np.isfinite(m["loss"])


@pytest.mark.slow
def test_lenet_digits_reaches_97_percent(tmp_path, cli):
    rc, _, err = cli("run", SPECS / "lenet_digits.yaml", "--run-dir", tmp_path / "run",
                     "--no-progress")
    assert rc == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test"]["accuracy"] >= 0.97, results


@pytest.mark.slow
def test_pca_mlp_reaches_93_percent(tmp_path):
    model = graphdl.load(SPECS / "pca_mlp_digits.yaml")
    model.fit(tmp_path / "run", progress=False)
    assert model.evaluate("test")["accuracy"] >= 0.93


def _finetune_doc(checkpoint: Path | None) -> dict:
    doc = yaml.safe_load((SPECS / "lenet_finetune_5to9.yaml").read_text(encoding="utf-8"))
    if checkpoint is None:  # the same spec from scratch: no init, nothing frozen
        del doc["model"]["init"]
        del doc["train"]["freeze"]
    else:
        doc["model"]["init"]["checkpoint"] = str(checkpoint)
    return doc


def _write(tmp_path: Path, name: str, doc: dict) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """specs/lenet_pretrain_0to4.yaml trained as written; its best checkpoint."""
    tmp = tmp_path_factory.mktemp("pretrain")
    model = graphdl.load(SPECS / "lenet_pretrain_0to4.yaml")
    model.fit(tmp / "run", progress=False)
    assert model.evaluate("test")["accuracy"] > 0.95
    return tmp / "run" / "best.ckpt"


@pytest.mark.slow
def test_finetuning_beats_training_from_scratch(tmp_path, pretrained, capsys):
    """specs/lenet_finetune_5to9.yaml as written vs the same spec from scratch (no init,
    nothing frozen), same budget, averaged over three seeds."""
    from graphdl.cli import main

    acc = {"fine": [], "scratch": []}
    for seed in (0, 1, 2):
        for kind in ("fine", "scratch"):
            doc = _finetune_doc(pretrained if kind == "fine" else None)
            doc["seed"] = seed
            spec = _write(tmp_path, f"{kind}{seed}.yaml", doc)
            run = tmp_path / f"{kind}{seed}"
            assert main(["run", str(spec), "--run-dir", str(run), "--no-progress"]) == 0
            out = capsys.readouterr().out
            if kind == "fine":
                assert "loaded" in out and "head.kernel" in out  # the load report
            acc[kind].append(json.loads((run / "results.json").read_text())["test"]["accuracy"])
    assert np.mean(acc["fine"]) > np.mean(acc["scratch"]), acc


def test_init_loads_by_name_and_reports(tmp_path, pretrained):
    model = graphdl.load(_write(tmp_path, "fine.yaml", _finetune_doc(pretrained)))
    model.compile(("eval",))
    report = model.init_report
    assert set(report.loaded) >= {"conv1.kernel", "conv1.bias", "conv2.kernel", "fc1.kernel"}
    assert set(report.new) == {"head.kernel", "head.bias"}
    # the excluded head is new (marked excluded), not also ignored
    assert set(report.excluded) == {"head.kernel", "head.bias"}
    assert not {"head.kernel", "head.bias"} & set(report.ignored)
    from graphdl.runtime.checkpoint import load_checkpoint

    tensors, _ = load_checkpoint(pretrained)
    assert np.array_equal(model.params["conv1.kernel"], tensors["param/conv1.kernel"])


def test_init_shape_mismatch_is_located_at_the_layer(tmp_path, pretrained):
    doc = _finetune_doc(pretrained)
    del doc["model"]["init"]["exclude"]  # head has 5 units in both: widen fc2 instead
    doc["model"]["layers"][6]["units"] = 90
    path = _write(tmp_path, "bad.yaml", doc)
    model = graphdl.load(path)
    with pytest.raises(GraphdlError) as e:
        model.compile(("eval",))
    d = e.value.diagnostics[0]
    assert d.code == "E402" and "fc2" in d.message
    assert d.line == model.spec.model.layers[6].loc.line


def test_strict_init_reports_unexpected_tensors(tmp_path, pretrained):
    doc = _finetune_doc(pretrained)
    del doc["model"]["init"]["exclude"]
    doc["model"]["layers"][-1]["name"] = "classifier"  # the checkpoint's head has no place
    model = graphdl.load(_write(tmp_path, "strict.yaml", doc))
    with pytest.raises(GraphdlError) as e:
        model.compile(("eval",))
    codes = {d.code for d in e.value.diagnostics}
    assert codes == {"E403", "E404"}
    doc["model"]["init"]["strict"] = False
    model = graphdl.load(_write(tmp_path, "lenient.yaml", doc))
    model.compile(("eval",))
    assert "head.kernel" in model.init_report.ignored
    assert "classifier.kernel" in model.init_report.new


def test_frozen_layers_get_no_gradient_nodes():
    spec = load_spec(SPECS / "lenet_finetune_5to9.yaml")
    frozen = compile_spec(spec, "train", warmup=False).graph
    doc = _finetune_doc(None)
    free_spec = load_spec(SPECS / "lenet_finetune_5to9.yaml",
                          text=yaml.safe_dump(doc, sort_keys=False))
    free = compile_spec(free_spec, "train", warmup=False).graph

    def backward(g):
        return [n for n in g.nodes() if g.node(n)["phase"] == "backward"]

    def grad_ops(g):
        ops = []
        for n in g.nodes():
            nd = g.node(n)
            names = [m["op"] for m in nd["attrs"]["members"]] if nd["op"] == "fused" else [nd["op"]]
            ops += names
        return ops

    assert len(backward(frozen)) < len(backward(free))
    assert "conv2d_grad_weight" not in grad_ops(frozen)
    assert "conv2d_grad_weight" in grad_ops(free)
    updated = {frozen.node(k)["name"] for k in frozen.updates}
    assert "conv1.kernel" not in updated and "fc1.kernel" in updated


def test_freeze_glob_matching_nothing_is_an_error(tmp_path):
    doc = _finetune_doc(None)
    doc["train"]["freeze"] = ["conv*", "bacthnorm*"]
    with pytest.raises(GraphdlError) as e:
        load_spec(_write(tmp_path, "typo.yaml", doc))
    d = e.value.diagnostics[0]
    assert d.code == "E207" and "bacthnorm*" in d.message and d.path == "train.freeze[1]"


def test_conv_shape_errors_are_located_with_a_fix(tmp_path):
    doc = yaml.safe_load((SPECS / "lenet_digits.yaml").read_text(encoding="utf-8"))
    del doc["model"]["layers"][4]  # the flatten before fc1
    with pytest.raises(GraphdlError) as e:
        compile_spec(load_spec(_write(tmp_path, "noflat.yaml", doc)), "eval", warmup=False)
    d = e.value.diagnostics[0]
    assert d.code == "E301" and "flatten" in (d.help or "") and "[16, 5, 5]" in d.message
    doc = yaml.safe_load((SPECS / "lenet_digits.yaml").read_text(encoding="utf-8"))
    doc["model"]["layers"][3]["kernel"] = 20  # pool window larger than its input
    with pytest.raises(GraphdlError) as e:
        compile_spec(load_spec(_write(tmp_path, "bigpool.yaml", doc)), "eval", warmup=False)
    d = e.value.diagnostics[0]
    assert d.code == "E301" and "pool2" in d.message
