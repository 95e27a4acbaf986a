"""Every spec in specs/ on the CUDA backend (the simulator where there is no GPU).

- `graphdl compile SPEC --device cuda` succeeds for every spec: kernels generated for every
  op, the module loaded, every launch configured (on a GPU: compiled by a warm-up);
- an op without a CUDA kernel is E708 from that command, naming the op and the spec line,
  exit code 2, no traceback;
- the first training step's loss (``data_loss``, which every train step returns; a step with
  penalties does not compute their value) on the device equals the CPU's semantics for every spec,
  and LeNet, LeNet + batch norm and the augmentation spec (lenet_digits augments with
  random rotations and Gaussian noise) give the same loss at each of 3 steps.

The oracle is the reference interpreter (graphdl/backends/reference.py: each op's NumPy
reference, the ground truth the CPU backend is itself tested against) run on the same
train graph (as autodiff builds it) with the same feeds, parameters and step seeds, its updates applied
between steps. Compiling every spec's CPU step with Numba would take minutes; the reference
takes milliseconds. The batches are tiny (1 image, 2 of anything else) and short (the
shortest sequences of a ragged split, cut to MAX_STEPS steps where the label is one per
sequence; the last MAX_STEPS steps of a window) because the
simulator runs every CUDA thread as Python; the programs are compiled for a symbolic batch
and sequence length, so the spec's sizes are only overridden, not changed in the graph.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SPECS_DIR = Path(__file__).resolve().parents[2] / "specs"
SPECS = sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))
# LeNet, LeNet + batch norm; lenet_digits is also the augmentation spec
THREE_STEPS = ("lenet_digits", "lenet_bn_digits")
FINETUNE = "lenet_finetune_5to9"
# Specs with fixed sequence lengths, from a copy with shorter ones; the benchmark twins
# (random inputs of the declared shapes; the LSTM also narrower): the same layers and ops over 4 steps, not 32 (the LSTM's scans of
# 32 steps each way, in two layers, forward and backward, take minutes of Python threads)
SHRINK = {
    "bench_lstm": [("x: {shape: [32, 16]", "x: {shape: [4, 16]"), ("hidden: 128", "hidden: 16")],
    "bench_transformer": [("src:    {shape: [31]", "src:    {shape: [3]"),
                          ("tgt_in: {shape: [32]", "tgt_in: {shape: [4]")],
    # the reversal task's synthetic sequences of at most 5 tokens, not 12
    **{name: [("max_len: 12", "max_len: 5"), ("src:    {shape: [12]", "src:    {shape: [5]"),
              ("tgt_in: {shape: [13]", "tgt_in: {shape: [6]")]
       for name in ("seq2seq_attention_reverse", "transformer_reverse")},
}
MAX_STEPS = 4  # a sequence input of symbolic length keeps its last steps (windows of a series)  # model.init reads the pretraining run's checkpoint


def _batch_size(spec) -> int:
    images = any(len(inp.shape) == 3 for inp in spec.model.inputs.values())
    return 1 if images else 2


@pytest.fixture
def simulator_env(monkeypatch, cuda_device):
    if cuda_device.SIMULATOR:
        monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")  # an explicit cuda may use it now


@pytest.mark.parametrize("name", SPECS)
def test_graphdl_compile_for_cuda(name, capsys):
    from graphdl.cli import main

    rc = main(["compile", str(SPECS_DIR / f"{name}.yaml"), "--device", "cuda", "--format", "json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["device"] == "cuda" and summary["fused_kernels"] > 0


def test_compile_for_cuda_as_a_person_runs_it(tmp_path):
    """A fresh process without NUMBA_ENABLE_CUDASIM: on a machine with no NVIDIA driver the
    command picks the simulator itself (before numba.cuda loads) and says so."""
    from graphdl.backends.cuda import _no_driver_here

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["GRAPHDL_CACHE_DIR"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "graphdl.cli", "compile", str(SPECS_DIR / "mlp_digits.yaml"),
         "--device", "cuda"],
        cwd=SPECS_DIR.parent, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    first = out.stdout.splitlines()[0]
    assert first.startswith("device: cuda (")
    assert ("CUDA simulator" in first) == _no_driver_here()
    assert list(tmp_path.glob("cuda/gdl_*.py"))  # the generated CUDA module


def test_an_op_without_a_cuda_kernel_is_e708_at_its_spec_line(capsys, monkeypatch):
    from graphdl.backends.cuda.registry import CUDA_EMITTERS, load_all
    from graphdl.cli import main

    load_all()
    monkeypatch.delitem(CUDA_EMITTERS, "batch_norm_train")
    path = SPECS_DIR / "lenet_bn_digits.yaml"
    rc = main(["compile", str(path), "--device", "cuda"])
    err = capsys.readouterr().err
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "name: bn1" in text)
    assert rc == 2
    assert "E708" in err and "no CUDA kernel for op batch_norm_train" in err
    assert f"lenet_bn_digits.yaml:{line}" in err
    assert "Traceback" not in err


def _spec_at(name: str, tmp_path: Path):
    """The spec, loaded where its paths resolve (a SHRINK spec from a copy with shorter
    sequences). The fine-tuning spec's model.init reads
    ``../runs/lenet-pretrain-0to4/best.ckpt``: it is copied into ``tmp_path`` beside such a
    checkpoint, saved from the pretraining model's initial weights."""
    from graphdl.api import Model
    from graphdl.spec import load_spec

    if name in SHRINK:
        text = (SPECS_DIR / f"{name}.yaml").read_text(encoding="utf-8")
        for old, new in SHRINK[name]:
            assert text.count(old) == 1, f"{name}: {old!r} is no longer in the spec"
            text = text.replace(old, new)
        (tmp_path / f"{name}.yaml").write_text(text, encoding="utf-8")
        return load_spec(tmp_path / f"{name}.yaml")
    if name != FINETUNE:
        return load_spec(SPECS_DIR / f"{name}.yaml")
    (tmp_path / "specs").mkdir()
    shutil.copy(SPECS_DIR / f"{name}.yaml", tmp_path / "specs")
    pretrain = Model(load_spec(SPECS_DIR / "lenet_pretrain_0to4.yaml"), device="cpu")
    pretrain.compiled("eval", warmup=False)  # builds the parameters, compiles nothing
    ckpt = tmp_path / "runs" / "lenet-pretrain-0to4" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    pretrain.save(ckpt)
    return load_spec(tmp_path / "specs" / f"{name}.yaml")


def _feeds(model, program, n: int, step: int) -> dict:
    """Batch ``step`` of ``n`` samples of the train split; the benchmark specs, whose data
    block only fills the spec's slot (``graphdl bench`` feeds them random inputs of the
    declared shapes), get such random inputs."""
    if model.spec.name.startswith("bench-"):
        from graphdl.bench import random_feeds

        return random_feeds(model.spec, program, n, np.random.default_rng(step))
    train = model.data().train
    fields = list(model.spec.model.inputs) + [model.spec.train["target"]]
    ragged = train.ragged is not None and train.ragged.lengths in train.fields
    order = np.arange(len(train))
    if ragged:  # the shortest sequences: a batch is cut to its longest one
        order = np.argsort(train.fields[train.ragged.lengths], kind="stable")
    feeds = train.batch(order[step * n:(step + 1) * n], fields)
    target = model.spec.train["target"]
    if ragged and target not in train.ragged.pads:
        # a label per sequence: keep each sequence's first MAX_STEPS steps
        lengths = np.minimum(feeds[train.ragged.lengths], MAX_STEPS)
        feeds[train.ragged.lengths] = lengths
        for name in train.ragged.pads:
            if name in feeds:
                feeds[name] = np.ascontiguousarray(feeds[name][:, :int(lengths.max())])
    for name, inp in model.spec.model.inputs.items():
        if not ragged and any(isinstance(d, str) for d in inp.shape):
            feeds[name] = np.ascontiguousarray(feeds[name][:, -MAX_STEPS:])  # the last steps
    return feeds


def _declared(g, kind: str, name: str) -> tuple:
    from graphdl.ir.graph import Value

    return tuple(g.type_of(Value(g.named(kind)[name])).shape)


def _losses_equal_the_reference(spec, steps: int) -> list[tuple[float, float]]:
    """Train ``steps`` steps on the device and with the reference interpreter from the same
    initial weights; returns (device, reference) loss per step, checked to rtol 1e-4."""
    from graphdl.api import Model
    from graphdl.backends.reference import run_reference
    from graphdl.passes.pipeline import PassContext
    from graphdl.runtime.trainer import step_seed

    gpu = Model(spec, device="cuda")
    c = gpu.compiled("train", warmup=False)
    # the train step as autodiff builds it (loss, gradients, optimiser updates), unfused
    step_graph = PassContext().run(c.lowered, training=True, stop_after="autodiff")
    # the host arrays as the graph types them (a scalar is kept as [1] on the host)
    params = {k: v.reshape(_declared(step_graph, "param", k)).copy() for k, v in gpu.params.items()}
    state = {k: v.reshape(_declared(step_graph, "state", k)).copy() for k, v in gpu.state.items()}
    n = _batch_size(spec)
    losses = []
    for step in range(steps):
        feeds = _feeds(gpu, c.program, n, step)
        feeds["lr"] = np.float32(spec.train["optimizer"]["lr"])
        feeds["step_seed"] = step_seed(spec.seed, step)
        got = float(c.program(feeds)["data_loss"][0])
        out, updates, _ = run_reference(step_graph, feeds, params, state)
        want = float(np.asarray(out["data_loss"]).reshape(-1)[0])
        for name, value in updates.items():
            (params if name in params else state)[name] = value
        losses.append((got, want))
    np.testing.assert_allclose([g for g, _ in losses], [w for _, w in losses], rtol=1e-4,
                               err_msg=f"{spec.name}: device vs reference loss per step")
    return losses


@pytest.mark.parametrize("name", [s for s in SPECS if s not in THREE_STEPS])
def test_first_training_step_loss_equals_the_cpu(name, tmp_path, simulator_env):
    _losses_equal_the_reference(_spec_at(name, tmp_path), steps=1)


@pytest.mark.parametrize("name", THREE_STEPS)
def test_three_training_steps_equal_the_cpu(name, tmp_path, simulator_env):
    losses = _losses_equal_the_reference(_spec_at(name, tmp_path), steps=3)
    assert len({w for _, w in losses}) == 3  # three different batches and weights
