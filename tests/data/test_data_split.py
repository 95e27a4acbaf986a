"""Splitting: sizes, determinism, stratification."""

from __future__ import annotations

import numpy as np
import pytest

from graphdl.data import load_data
from graphdl.data.split import SplitConfig, allocate, split_indices


def _ids(ds):
    # digits rows are not unique, so identify samples by a tag field added via npz
    return set(ds.fields["idx"].tolist())


@pytest.fixture
def tagged_npz(tmp_path):
    """digits plus an 'idx' field (the original row number) as an npz file."""
    with np.load(
        __import__("graphdl.data.sources", fromlist=["BUILTIN_DIR"]).BUILTIN_DIR / "digits.npz"
    ) as npz:
        x, y = npz["x"], npz["y"]
    path = tmp_path / "tagged.npz"
    np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64), idx=np.arange(len(y)))
    return path


def _spec(make_spec, path, **kw):
    return make_spec(source={"type": "npz", "path": str(path)}, **kw)


def test_split_sizes_add_up_and_partition(make_spec, tagged_npz):
    s = load_data(_spec(make_spec, tagged_npz, split={"train": 0.7, "val": 0.2, "test": 0.1}))
    tr, va, te = _ids(s.train), _ids(s.val), _ids(s.test)
    assert len(tr) + len(va) + len(te) == 1797
    assert tr | va | te == set(range(1797))
    assert not (tr & va or tr & te or va & te)
    assert abs(len(tr) - 0.7 * 1797) <= 1 and abs(len(va) - 0.2 * 1797) <= 1


def test_split_is_deterministic_per_seed_and_differs_across_seeds(make_spec, tagged_npz):
    a = load_data(_spec(make_spec, tagged_npz, seed=1))
    b = load_data(_spec(make_spec, tagged_npz, seed=1))
    c = load_data(_spec(make_spec, tagged_npz, seed=2))
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(a.get(name).fields["idx"], b.get(name).fields["idx"])
        np.testing.assert_array_equal(a.get(name).fields["x"], b.get(name).fields["x"])
    assert _ids(a.test) != _ids(c.test)
    assert len(a.test) == len(c.test)


def test_no_shuffle_keeps_file_order(make_spec, tagged_npz):
    s = load_data(_spec(make_spec, tagged_npz, split={"shuffle": False}))
    np.testing.assert_array_equal(s.train.fields["idx"], np.arange(1438))
    np.testing.assert_array_equal(s.val.fields["idx"], np.arange(1438, 1617))
    np.testing.assert_array_equal(s.test.fields["idx"], np.arange(1617, 1797))


def test_fractions_below_one_leave_samples_out(make_spec, tagged_npz):
    s = load_data(_spec(make_spec, tagged_npz, split={"train": 0.5, "val": 0.0, "test": 0.25}))
    assert s.val is None
    assert len(s.train) == 899 and abs(len(s.test) - 0.25 * 1797) <= 1
    assert not (_ids(s.train) & _ids(s.test))


@pytest.mark.parametrize("seed", [0, 7])
def test_stratified_split_keeps_class_proportions(make_spec, tagged_npz, seed):
    fr = {"train": 0.6, "val": 0.25, "test": 0.15}
    s = load_data(_spec(make_spec, tagged_npz, seed=seed, split={**fr, "stratify": True}))
    all_y = np.concatenate([s.train.fields["y"], s.val.fields["y"], s.test.fields["y"]])
    assert len(all_y) == 1797
    total = np.bincount(all_y, minlength=10)
    for name, f in fr.items():
        per_class = np.bincount(s.get(name).fields["y"], minlength=10)
        assert np.all(np.abs(per_class - f * total) <= 1.0), (name, per_class, f * total)
    assert _ids(s.train) | _ids(s.val) | _ids(s.test) == set(range(1797))
    # the split is not ordered by class
    assert not np.all(np.diff(s.train.fields["y"]) >= 0)


def test_stratified_split_is_deterministic(make_spec, tagged_npz):
    split = {"stratify": True}
    a = load_data(_spec(make_spec, tagged_npz, seed=3, split=split))
    b = load_data(_spec(make_spec, tagged_npz, seed=3, split=split))
    c = load_data(_spec(make_spec, tagged_npz, seed=4, split=split))
    np.testing.assert_array_equal(a.val.fields["idx"], b.val.fields["idx"])
    assert _ids(a.val) != _ids(c.val)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 9, 10, 11, 99, 1000, 1797])
@pytest.mark.parametrize(
    "fracs", [(0.8, 0.1, 0.1), (0.7, 0.2, 0.1), (1 / 3, 1 / 3, 1 / 3), (0.5, 0.5, 0.0)]
)
def test_allocate_covers_everything_when_fractions_sum_to_one(n, fracs):
    counts = allocate(n, fracs, covers_all=True)
    assert sum(counts) == n
    assert all(abs(c - f * n) <= 1 for c, f in zip(counts, fracs))


@pytest.mark.parametrize("n", [3, 4, 10, 20])
@pytest.mark.parametrize("stratify", [False, True])
def test_no_split_is_empty_when_there_is_enough_data(n, stratify):
    cfg = SplitConfig(fractions=(0.8, 0.1, 0.1), shuffle=True, stratify=stratify)
    labels = np.arange(n) % 5 if stratify else None  # tiny classes: rounding gives 0 test
    idx = split_indices(n, cfg, seed=0, labels=labels)
    assert all(len(i) > 0 for i in idx), [len(i) for i in idx]
    merged = np.sort(np.concatenate(idx))
    np.testing.assert_array_equal(merged, np.arange(n))


def test_stratify_on_small_classes_assigns_every_sample_once():
    labels = np.repeat(np.arange(7), [1, 2, 3, 4, 5, 50, 100])
    cfg = SplitConfig(fractions=(0.6, 0.2, 0.2), shuffle=True, stratify=True)
    idx = split_indices(len(labels), cfg, seed=5, labels=labels)
    np.testing.assert_array_equal(np.sort(np.concatenate(idx)), np.arange(len(labels)))
