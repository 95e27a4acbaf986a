"""What `graphdl run` prints while it works: one compact line per epoch when the output is
not a terminal (pytest's capture, a pipe), a message before compiling kernels that are not
in the cache, the device line only with --verbose; and the item-11 error locations."""

from __future__ import annotations

import numpy as np
import pytest
from e2e_helpers import spec_file

import graphdl
from graphdl.errors import GraphdlError
from graphdl.runtime.checkpoint import save_checkpoint


def test_piped_run_prints_one_compact_line_per_epoch(tmp_path, cli):
    spec = spec_file(tmp_path, {"train.epochs": 2})
    rc, out, err = cli("run", spec, "--run-dir", tmp_path / "run")
    assert rc == 0, err
    assert "\r" not in out and "\r" not in err
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2, out
    assert epochs[0].startswith("epoch 1/2  loss ") and " - val_loss " in epochs[0], out
    assert epochs[1].startswith("epoch 2/2  ") and epochs[1].endswith("s"), out
    assert "device:" not in out  # only with --verbose (or on a GPU)


def test_verbose_says_which_device(tmp_path, cli):
    spec = spec_file(tmp_path, {"train.epochs": 1})
    rc, out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress", "--verbose")
    assert rc == 0, err
    assert out.splitlines()[0].startswith("device: cpu"), out
    assert not [line for line in out.splitlines() if line.startswith("epoch ")]


def test_cold_programs_are_announced_before_compiling(tmp_path, cli, monkeypatch):
    import graphdl.compiler

    real = graphdl.compiler.compile_spec

    def as_if_not_cached(*args, **kwargs):
        c = real(*args, **kwargs)
        c.program.was_cached = False  # the kernel cache of a new machine
        return c

    monkeypatch.setattr(graphdl.compiler, "compile_spec", as_if_not_cached)
    spec = spec_file(tmp_path, {"train.epochs": 1})
    rc, out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    assert rc == 0, err
    # only the train program before the first step: eval compiles at the first validation
    assert "compiling 1 program (first run on this machine, ~" in err, err
    assert "compiling" not in out


def test_run_compiles_only_the_train_program_before_training(tmp_path, cli, monkeypatch):
    from graphdl.runtime.trainer import Trainer

    real = Trainer._epochs
    seen = {}

    def epochs(self, *args, **kwargs):
        seen["before"] = sorted(self.model._compiled)
        history = real(self, *args, **kwargs)
        seen["after"] = sorted(self.model._compiled)
        return history

    monkeypatch.setattr(Trainer, "_epochs", epochs)
    spec = spec_file(tmp_path, {"train.epochs": 1})
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    assert rc == 0, err
    assert seen == {"before": ["train"], "after": ["eval", "train"]}, seen


def test_cached_programs_are_not_announced(tmp_path, cli):
    spec = spec_file(tmp_path, {"train.epochs": 1})
    cli("run", spec, "--run-dir", tmp_path / "warm", "--no-progress")
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    assert rc == 0 and "compiling" not in err, err


def test_checkpoint_of_another_model_names_the_file(tmp_path):
    bad = tmp_path / "other.ckpt"
    save_checkpoint(bad, {"param/other.kernel": np.zeros((2, 2), np.float32)}, {"spec": "other"})
    model = graphdl.load(spec_file(tmp_path))
    with pytest.raises(GraphdlError) as e:
        model.load_weights(bad)
    d = e.value.diagnostics[0]
    assert d.code == "E403" and d.file == str(bad)
    assert e.value.format().startswith(f"{bad}: error[E403]"), e.value.format()


def test_unwritable_run_dir_option_is_located_at_the_option(tmp_path, cli):
    (tmp_path / "file").write_text("not a directory")
    spec = spec_file(tmp_path)
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "file" / "run", "--no-progress")
    assert rc == 2 and "Traceback" not in err, err
    assert err.startswith("--run-dir: error[E702]"), err
    assert f"{spec}:" not in err, err
