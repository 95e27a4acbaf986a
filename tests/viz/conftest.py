"""Fixtures for the visualiser tests: compiled stages of specs/mlp_digits.yaml, a
2,000-node training graph made from a spec with a repeated block, a small GRU (a forward
scan and its backward, BPTT, scan), and a headless chromium runner for the end-to-end
page tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DIGITS_SPEC = REPO / "specs" / "mlp_digits.yaml"

os.environ.setdefault("GRAPHDL_CACHE_DIR", str(REPO / ".graphdl_cache"))

# a block repeated `repeat` times: about 32 nodes per copy in the training graph
BIG_SPEC = """\
graphdl: 1
name: deep-residual
seed: 1
blocks:
  enc:
    inputs: [x]
    layers:
      - type: residual
        layers:
          - {{type: dense, units: 32, activation: relu}}
          - {{type: dense, units: 16}}
      - {{type: activation, activation: tanh, name: out}}
data:
  source: {{type: npz, path: data/none.npz, fields: {{src: a, y: c}}}}
model:
  inputs:
    src: {{shape: [16]}}
  layers:
    - {{type: dense, name: emb, units: 16}}
    - {{type: enc, name: encoder, repeat: {repeat}}}
    - {{type: dense, name: logits, units: 4}}
train:
  target: y
  epochs: 1
  loss: {{type: cross_entropy}}
  optimizer: {{type: adam, lr: 1.0e-3}}
"""


@pytest.fixture(scope="session")
def digits():
    """compile_spec(specs/mlp_digits.yaml, "train") with every pass snapshot kept."""
    from graphdl.compiler import compile_spec
    from graphdl.spec import load_spec

    spec = load_spec(DIGITS_SPEC)
    return compile_spec(spec, "train", keep_snapshots=True, warmup=False)


# a GRU over the rows of the 8x8 digits: one forward scan, and in training its BPTT scan
GRU_SPEC = """\
graphdl: 1
name: gru-rows
seed: 0
data:
  source: {type: builtin, name: digits, as_sequence: true}
  split: {train: 0.8, test: 0.2}
model:
  inputs:
    x: {shape: [T, 8]}
  layers:
    - {type: gru, hidden: 4, output: last}
    - {type: dense, units: 10}
train: {target: y, epochs: 1, batch_size: 32, loss: {type: cross_entropy}, optimizer: {type: adam, lr: 0.005}}
"""


@pytest.fixture(scope="session")
def gru_spec_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gru") / "gru.yaml"
    path.write_text(GRU_SPEC, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def gru(gru_spec_path):
    """compile_spec of a small GRU (hidden 4) for training, every pass snapshot kept."""
    from graphdl.compiler import compile_spec
    from graphdl.spec import load_spec

    return compile_spec(load_spec(gru_spec_path), "train", keep_snapshots=True, warmup=False)


@pytest.fixture(scope="session")
def big_graph():
    """A training graph (after autodiff) of about 2,000 nodes, with layers named like
    encoder.17.dense_36 (repeated block copies)."""
    from graphdl.layers.lower import lower
    from graphdl.passes.pipeline import PassContext
    from graphdl.spec import load_spec

    spec = load_spec("deep_residual.yaml", text=BIG_SPEC.format(repeat=62))
    ctx = PassContext(keep_snapshots=True)
    g = ctx.run(lower(spec, "train"), training=True, stop_after="autodiff")
    assert 1950 <= len(g) <= 2200, len(g)
    return g


@pytest.fixture
def viz_cli(capsys):
    """viz_cli(*argv) -> (exit code, stdout, stderr): `graphdl viz` through its own parser
    (graphdl.viz.cli.add_parser), errors handled as graphdl.cli.main does."""
    import argparse

    from graphdl.errors import GraphdlError
    from graphdl.viz.cli import add_parser

    def run(*argv):
        parser = argparse.ArgumentParser(prog="graphdl")
        add_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["viz", *[str(a) for a in argv]])
        capsys.readouterr()
        try:
            rc = args.func(args)
        except GraphdlError as e:
            print(e.format(), file=__import__("sys").stderr)
            rc = 2
        out, err = capsys.readouterr()
        return rc, out, err

    return run


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=5000", "--window-size=1600,1000", "--hide-scrollbars",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


@pytest.fixture(scope="session")
def chromium():
    """run(url, screenshot=None) -> dumped DOM (or the screenshot's path) in headless
    chromium with a fresh profile; skips when chromium is not installed."""
    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium not installed: .ci/run installs it with apt-get "
                    "(apt-get install -y chromium)")

    def run(url: str, screenshot: Path | None = None, timeout: float = 90) -> str:
        with tempfile.TemporaryDirectory(prefix="graphdl-chromium-") as profile:
            cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
            if screenshot is not None:
                cmd.append(f"--screenshot={screenshot}")
            else:
                cmd.append("--dump-dom")
            cmd.append(url)
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True,
                                  timeout=timeout)
        if screenshot is not None:
            assert screenshot.exists(), proc.stderr[-2000:]
            return str(screenshot)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    return run
