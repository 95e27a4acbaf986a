"""`graphdl validate`: syntax, schema, references and shapes (lowering with shape inference),
fast, without passes or code generation."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_helpers import line_of

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted((REPO / "specs").glob("*.yaml"))

IMAGE_SPEC = """\
graphdl: 1
data:
  source: {type: builtin, name: digits, as_images: true}
model:
  inputs:
    image: {shape: [1, 8, 8]}
  layers:
LAYERS
train:
  target: label
"""


def image_spec(tmp_path: Path, layers: list[str]) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(IMAGE_SPEC.replace("LAYERS\n", "".join(f"    - {s}\n" for s in layers)),
                    encoding="utf-8")
    return path


def assert_located_e301(rc: int, err: str, spec: Path, needle: str) -> None:
    """Exit code 2, no traceback, E301 at file:line:col of the layer holding ``needle``."""
    assert rc == 2, err
    assert "Traceback" not in err, err
    line = line_of(spec, needle)
    col = spec.read_text(encoding="utf-8").splitlines()[line - 1].index("{") + 1
    assert re.search(rf"^{re.escape(str(spec))}:{line}:{col}: error\[E301\]", err,
                     re.MULTILINE), err


def test_dense_after_conv_without_flatten_is_a_located_E301(tmp_path, cli):
    spec = image_spec(tmp_path, [
        "{type: conv2d, filters: 4, kernel: 3}",
        "{type: dense, name: head, units: 10}",
    ])
    rc, _out, err = cli("validate", spec)
    assert_located_e301(rc, err, spec, "name: head")
    assert "dense expects a feature vector [features] or a sequence of them [T, features], got [4, 6, 6]" in err
    assert "add '- {type: flatten}' before it" in err


def test_pool_window_larger_than_its_input_is_a_located_E301(tmp_path, cli):
    spec = image_spec(tmp_path, [
        "{type: conv2d, filters: 4, kernel: 3}",
        "{type: maxpool2d, name: pool, kernel: 7}",
        "{type: flatten}",
        "{type: dense, units: 10}",
    ])
    rc, _out, err = cli("validate", spec)
    assert_located_e301(rc, err, spec, "name: pool")
    assert "maxpool2d layer 'pool'" in err


def test_a_shape_error_in_json_format(tmp_path, cli):
    spec = image_spec(tmp_path, ["{type: dense, name: head, units: 10}"])
    rc, out, _err = cli("validate", spec, "--format", "json")
    assert rc == 2
    report = json.loads(out)
    assert report["phase"] == "shapes"
    [diag] = report["errors"]
    assert (diag["code"], diag["line"], diag["col"]) == ("E301", line_of(spec, "name: head"), 7)
    assert diag["path"] == "model.layers[0]"


def test_a_spec_without_a_train_section_validates_its_predict_graph(tmp_path, cli):
    spec = image_spec(tmp_path, ["{type: flatten}", "{type: dense, units: 10}"])
    spec.write_text(spec.read_text(encoding="utf-8").split("train:")[0], encoding="utf-8")
    rc, out, err = cli("validate", spec)
    assert rc == 0, err
    assert "ok (2 layers" in out


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_every_example_spec_validates_quickly(spec):
    """The real command in a fresh process (imports included). Under a second on a
    laptop; the bound here is generous because tests are not benchmarks."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from graphdl.cli import main; sys.exit(main())",
         "validate", str(spec)],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert f"{spec}: ok (" in proc.stdout
    assert seconds < 5.0, f"graphdl validate {spec.name} took {seconds:.2f} s"
