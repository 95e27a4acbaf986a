"""Checkpoint files: safetensors + JSON metadata, atomic writes, E401 on bad files."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
import safetensors.numpy

from graphdl.errors import GraphdlError
from graphdl.runtime import checkpoint
from graphdl.runtime.checkpoint import load_checkpoint, save_checkpoint


def _tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "dense_1.kernel": rng.standard_normal((64, 32)).astype(np.float32),
        "dense_1.bias": np.zeros(32, dtype=np.float32),
        "opt.adam.m.dense_1.kernel": rng.standard_normal((64, 32)).astype(np.float32),
        "opt.adam.step": np.array(17, dtype=np.int64),
        "embed.table": rng.standard_normal((5, 3)),  # float64
        "bn.count": np.arange(4, dtype=np.int32),
        "mask": np.array([True, False, True]),
        "half": np.arange(6, dtype=np.float16).reshape(2, 3),
    }


META = {
    "format": 1,
    "epoch": 3,
    "spec_hash": "abc123",
    "preprocess_state": {"normalize.0": {"stats": {"x": {"mean": [0.1, 0.25], "std": [1.0, 2.0]}}}},
    "num_classes": 10,
    "unicode": "µ-réseau",
}


def test_round_trip(tmp_path):
    path = tmp_path / "model.safetensors"
    tensors = _tensors()
    save_checkpoint(path, tensors, META)
    loaded, meta = load_checkpoint(path)
    assert meta == META
    assert set(loaded) == set(tensors)
    for name, arr in tensors.items():
        assert loaded[name].dtype == arr.dtype, name
        assert loaded[name].shape == arr.shape, name
        np.testing.assert_array_equal(loaded[name], arr)
        assert loaded[name].flags.writeable and loaded[name].flags.c_contiguous
    loaded["dense_1.bias"] += 1  # usable as training state


def test_file_is_plain_safetensors_with_graphdl_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"w": np.ones((2, 2), np.float32)}, {"epoch": 1})
    with safetensors.safe_open(str(path), framework="np") as f:
        assert json.loads(f.metadata()["graphdl"]) == {"epoch": 1}
        np.testing.assert_array_equal(f.get_tensor("w"), np.ones((2, 2)))
    assert b"pickle" not in path.read_bytes()


def test_non_contiguous_input_and_str_path(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T  # Fortran-ordered view
    save_checkpoint(str(tmp_path / "c.safetensors"), {"a": a}, {})
    loaded, meta = load_checkpoint(str(tmp_path / "c.safetensors"))
    np.testing.assert_array_equal(loaded["a"], a)
    assert meta == {}


def test_overwrite_and_creates_parent_dir(tmp_path):
    path = tmp_path / "runs" / "exp" / "ckpt.safetensors"
    save_checkpoint(path, _tensors(0), {"epoch": 1})
    save_checkpoint(path, _tensors(1), {"epoch": 2})
    loaded, meta = load_checkpoint(path)
    assert meta["epoch"] == 2
    np.testing.assert_array_equal(loaded["dense_1.kernel"], _tensors(1)["dense_1.kernel"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.safetensors"]


def _boom_after_partial_write(fd, data):
    os.write(fd, data[: len(data) // 2])
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_failed_write_leaves_old_file_intact(tmp_path, monkeypatch, where):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, _tensors(0), {"epoch": 1})
    old_bytes = path.read_bytes()

    if where == "write":
        monkeypatch.setattr(checkpoint, "_write_bytes", _boom_after_partial_write)
    elif where == "fsync":

        def bad_fsync(fd):
            raise OSError(5, "I/O error")

        monkeypatch.setattr(checkpoint.os, "fsync", bad_fsync)
    else:

        def bad_replace(src, dst):
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(checkpoint.os, "replace", bad_replace)

    with pytest.raises(OSError):
        save_checkpoint(path, _tensors(1), {"epoch": 2})
    monkeypatch.undo()

    assert path.read_bytes() == old_bytes
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]  # no temp file left
    _, meta = load_checkpoint(path)
    assert meta == {"epoch": 1}


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "_write_bytes", _boom_after_partial_write)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "new.safetensors", _tensors(), {})
    assert list(tmp_path.iterdir()) == []


def test_bad_meta_is_a_programming_error(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "x.safetensors", {"a": np.zeros(1)}, {"f": object()})
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "x.safetensors", {"a": np.zeros(1)}, ["not", "a", "dict"])
    assert list(tmp_path.iterdir()) == []


def _expect_e401(path):
    with pytest.raises(GraphdlError) as info:
        load_checkpoint(path)
    (d,) = info.value.diagnostics
    assert d.code == "E401"
    assert str(path) in d.message and d.file == str(path)
    assert d.help
    info.value.format()
    return d


def test_missing_file_is_e401(tmp_path):
    d = _expect_e401(tmp_path / "nope.safetensors")
    assert "does not exist" in d.message


def test_directory_is_e401(tmp_path):
    _expect_e401(tmp_path)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b[:5], id="tiny"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b"PK\x03\x04 not a safetensors file at all", id="garbage"),
        pytest.param(lambda b: struct.pack("<Q", 10**12) + b[8:], id="huge-header-len"),
        pytest.param(lambda b: b[:8] + b"\xff" + b[9:], id="bad-header-bytes"),
        pytest.param(lambda b: b + b"trailing", id="trailing-bytes"),
    ],
)
def test_corrupt_file_is_e401(tmp_path, mutate):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, _tensors(), META)
    path.write_bytes(mutate(path.read_bytes()))
    _expect_e401(path)


def test_corrupt_graphdl_metadata_is_e401(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(safetensors.numpy.save({"a": np.zeros(2)}, metadata={"graphdl": "{oops"}))
    d = _expect_e401(path)
    assert "JSON" in d.message


def test_foreign_safetensors_without_graphdl_metadata_loads_with_empty_meta(tmp_path):
    path = tmp_path / "hf.safetensors"
    path.write_bytes(safetensors.numpy.save({"a": np.ones(3, np.float32)}))
    tensors, meta = load_checkpoint(path)
    assert meta == {} and tensors["a"].tolist() == [1.0, 1.0, 1.0]


def test_overwrite_keeps_file_mode(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"a": np.zeros(1)}, {})
    assert path.stat().st_mode & 0o777 == 0o644
    os.chmod(path, 0o640)
    save_checkpoint(path, {"a": np.ones(1)}, {})
    assert path.stat().st_mode & 0o777 == 0o640
