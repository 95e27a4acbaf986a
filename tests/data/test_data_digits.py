"""The built-in digits dataset."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import graphdl.data
from graphdl.data import Dataset, Splits, load_data

BUILTIN = Path(graphdl.data.__file__).parent / "builtin"


def test_digits_file_and_licence_are_shipped():
    with np.load(BUILTIN / "digits.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["x", "y"]
        assert npz["x"].dtype == np.uint8 and npz["x"].shape == (1797, 64)
        assert npz["y"].dtype == np.uint8 and npz["y"].shape == (1797,)
        assert int(npz["x"].max()) == 16 and int(npz["x"].min()) == 0
    text = (BUILTIN / "digits_LICENSE.txt").read_text(encoding="utf-8")
    for needle in ("CC BY 4.0", "archive.ics.uci.edu/dataset/80", "Alpaydin", "scikit-learn"):
        assert needle in text


def test_digits_loads_with_shapes_dtypes_labels(make_spec):
    spec = make_spec(split={"train": 1.0, "val": 0.0, "test": 0.0})
    s = load_data(spec)
    assert isinstance(s, Splits) and isinstance(s.train, Dataset)
    assert s.val is None and s.test is None
    assert len(s.train) == 1797
    x, y = s.train.fields["x"], s.train.fields["y"]
    assert x.dtype == np.float32 and x.shape == (1797, 64) and x.flags.c_contiguous
    assert y.dtype == np.int64 and y.shape == (1797,) and y.flags.c_contiguous
    assert float(x.min()) == 0.0 and float(x.max()) == 16.0
    assert np.all(x == np.round(x))  # raw 0..16 counts
    assert sorted(np.unique(y).tolist()) == list(range(10))
    assert s.num_classes == 10
    assert s.preprocess_state == {}


def test_digits_default_split_sizes(make_spec):
    s = load_data(make_spec())
    sizes = [len(s.train), len(s.val), len(s.test)]
    assert sum(sizes) == 1797
    assert sizes == [1438, 179, 180]  # round(0.8n), round(0.9n) - round(0.8n), the rest
    assert s.get("train") is s.train and s.get("val") is s.val and s.get("test") is s.test


def test_digits_loads_fast(make_spec):
    spec = make_spec(preprocess=[{"op": "normalize", "mode": "zscore", "stats": "from_train"}])
    load_data(spec)  # warm (first load reads the npz)
    t0 = time.perf_counter()
    load_data(spec)
    assert time.perf_counter() - t0 < 0.5


def test_builtin_arrays_are_not_shared_between_loads(make_spec):
    spec = make_spec(split={"train": 1.0, "val": 0.0, "test": 0.0, "shuffle": False})
    a = load_data(spec)
    a.train.fields["x"][:] = -1.0
    b = load_data(spec)
    assert float(b.train.fields["x"].min()) == 0.0
