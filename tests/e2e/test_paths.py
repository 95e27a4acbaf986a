"""Paths: every path written in a spec is relative to the spec file; the default run
directory (runs/<name>) and the command line's paths are relative to the working directory.
Each test runs from a directory other than the spec's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from e2e_helpers import spec_file

import graphdl
from graphdl.spec.schema_gen import build_schema

pytestmark = pytest.mark.usefixtures("chdir_elsewhere")


@pytest.fixture
def chdir_elsewhere(tmp_path, monkeypatch):
    """Start every test in tmp_path/elsewhere; specs are written to tmp_path/project."""
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")


def _saved_weights(path: Path) -> Path:
    """Freshly initialised weights of the digits MLP, saved as a checkpoint at ``path``."""
    model = graphdl.load(spec_file(path.parent / "source", {}))
    model.data()  # the preprocessing state predict needs
    model.compile(("eval",))
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def test_model_init_checkpoint_is_relative_to_the_spec(tmp_path):
    project = tmp_path / "project"
    saved = _saved_weights(project / "weights" / "init.ckpt")
    spec = spec_file(project, {"model.init": {"checkpoint": "weights/init.ckpt"}})
    model = graphdl.load(spec)
    model.compile(("eval",))
    assert model.init_report.checkpoint == str(saved)
    assert len(model.init_report.loaded) == 6  # 3 dense layers: kernel and bias


def test_checkpoint_dir_is_relative_to_the_spec_and_runs_to_the_working_directory(tmp_path):
    project = tmp_path / "project"
    written = graphdl.load(spec_file(project, {"train.checkpoint.dir": "out/run"}))
    assert written.default_run_dir() == project / "out" / "run"
    default = graphdl.load(spec_file(project, {"name": "paths"}, name="default.yaml"))
    assert default.default_run_dir().resolve() == Path.cwd() / "runs" / "paths"


def test_predict_finds_the_weights_of_a_spec_relative_run_dir(tmp_path, cli):
    project = tmp_path / "project"
    spec = spec_file(project, {"train.checkpoint.dir": "out/run"})
    _saved_weights(project / "out" / "run" / "best.ckpt")
    x = np.zeros((3, 64), np.float32)
    np.savez("new.npz", x=x)  # --input: relative to the working directory
    rc, out, err = cli("predict", spec, "--input", "new.npz", "--format", "json")
    assert rc == 0, err
    assert len(json.loads(out)["class"]) == 3


def test_run_writes_the_default_run_dir_in_the_working_directory(tmp_path, cli):
    spec = spec_file(tmp_path / "project", {"name": "paths-run", "train.epochs": 1})
    rc, _out, err = cli("run", spec, "--no-progress")
    assert rc == 0, err
    assert (Path.cwd() / "runs" / "paths-run" / "results.json").exists()
    assert not (tmp_path / "project" / "runs").exists()


def test_schema_says_where_paths_are_relative_to():
    text = json.dumps(build_schema())
    assert "relative to the working directory\"" not in text
    for key in ("path of the .npz file", "path of the .csv file", "checkpoint file (a graphdl",
                "the folder holding one sub-folder per class", "run directory (checkpoints"):
        start = text.index(key)
        assert "relative to the spec file" in text[start : start + 120], key
