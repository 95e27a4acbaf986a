"""data.filter (keep classes, relabel) and data.split.train_subsample."""

from __future__ import annotations

import numpy as np
import pytest

from graphdl.data import load_data
from graphdl.data.split import subsample

ALL_TRAIN = {"train": 1.0, "val": 0.0, "test": 0.0, "shuffle": False}
FIVE_TO_NINE = [5, 6, 7, 8, 9]


@pytest.fixture
def digits_y(make_spec):
    return load_data(make_spec(split=ALL_TRAIN)).train.fields["y"]


def test_filter_keeps_classes(make_spec, digits_y):
    s = load_data(make_spec(split=ALL_TRAIN, filter={"classes": FIVE_TO_NINE}))
    y = s.train.fields["y"]
    assert sorted(np.unique(y).tolist()) == FIVE_TO_NINE
    assert len(y) == int(np.isin(digits_y, FIVE_TO_NINE).sum())
    assert s.num_classes == 10  # labels keep their values: a 10-way head still fits
    s = load_data(make_spec(split=ALL_TRAIN, filter={"classes": [3, 0, 1]}))
    assert s.num_classes == 4  # 0..3 (class 2 has no samples but keeps its index)
    np.testing.assert_array_equal(y, digits_y[digits_y >= 5])  # order kept


def test_filter_relabel_in_listed_order(make_spec, digits_y):
    order = [9, 5, 7]
    s = load_data(make_spec(split=ALL_TRAIN, filter={"classes": order, "relabel": True}))
    y = s.train.fields["y"]
    kept = digits_y[np.isin(digits_y, order)]
    np.testing.assert_array_equal(y, np.select([kept == 9, kept == 5, kept == 7], [0, 1, 2]))
    assert s.num_classes == 3
    assert len(s.train.fields["x"]) == len(y)


def test_filter_then_stratified_split(make_spec):
    spec = make_spec(split={"train": 0.8, "val": 0.1, "test": 0.1, "stratify": True},
                     filter={"classes": FIVE_TO_NINE, "relabel": True})
    s = load_data(spec)
    for name in ("train", "val", "test"):
        assert sorted(np.unique(s.get(name).fields["y"]).tolist()) == [0, 1, 2, 3, 4]


def test_filter_by_class_folder_name(make_spec, tmp_path):
    from PIL import Image

    for name in ("ant", "bee", "cat"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(np.full((4, 4, 3), k * 50, np.uint8)).save(
                tmp_path / "imgs" / name / f"{k}.png")
    spec = make_spec(source={"type": "image_folder", "path": "imgs"},
                     inputs={"image": ((3, 4, 4), "float32")}, target="label",
                     split=ALL_TRAIN, filter={"classes": ["cat", 0], "relabel": True})
    s = load_data(spec)
    assert s.train.fields["label"].tolist() == [1, 1, 0, 0]  # ant (0) -> 1, cat (2) -> 0
    assert s.class_names == ["cat", "ant"] and s.num_classes == 2


@pytest.mark.parametrize(
    "filter_, where, needle",
    [
        ({"classes": [5, 12]}, ("data", "filter", "classes", 1), "class 12 has no samples"),
        ({"classes": [5, 5]}, ("data", "filter", "classes", 1), "twice"),
        ({"classes": ["five"]}, ("data", "filter", "classes", 0), "must be a class number"),
        ({"classes": [5], "relabel": "yes"}, ("data", "filter", "relabel"), "true or false"),
        ({"classes": []}, ("data", "filter"), "non-empty list"),
    ],
)
def test_filter_errors(make_spec, expect_error, filter_, where, needle):
    spec = make_spec(filter=filter_)
    d = expect_error(lambda: load_data(spec), "E508", spec, *where)
    assert needle in d.message


def test_filter_needs_integer_target(make_spec, expect_error, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 64)), y=np.linspace(0, 1, 6))
    spec = make_spec(source={"type": "npz", "path": "d.npz"}, filter={"classes": [0]})
    expect_error(lambda: load_data(spec), "E508", spec, "data", "filter")


# ---------------------------------------------------------------- train_subsample


def test_train_subsample_is_stratified_and_leaves_val_test(make_spec):
    split = {"train": 0.8, "val": 0.1, "test": 0.1, "stratify": True}
    full = load_data(make_spec(split=split))
    s = load_data(make_spec(split={**split, "train_subsample": 0.1}))
    y_full, y = full.train.fields["y"], s.train.fields["y"]
    assert abs(len(y) - 0.1 * len(y_full)) <= 10
    for c in range(10):
        assert abs((y == c).sum() - 0.1 * (y_full == c).sum()) <= 1
    for name in ("val", "test"):
        np.testing.assert_array_equal(s.get(name).fields["x"], full.get(name).fields["x"])
    rows = {r.tobytes() for r in full.train.fields["x"]}  # a subset of the train split
    assert all(r.tobytes() in rows for r in s.train.fields["x"])


def test_train_subsample_is_seeded(make_spec):
    split = {"train_subsample": 0.2}
    a = load_data(make_spec(split=split)).train.fields["x"]
    b = load_data(make_spec(split=split)).train.fields["x"]
    c = load_data(make_spec(split=split, seed=5)).train.fields["x"]
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_train_subsample_normalizes_with_the_subsample(make_spec):
    s = load_data(make_spec(split={"train_subsample": 0.25},
                            preprocess=[{"op": "normalize", "mode": "minmax"}]))
    x = s.train.fields["x"]
    lo = np.asarray(s.preprocess_state["normalize.0"]["stats"]["x"]["min"])
    assert x.min() == 0.0 and np.all(lo >= 0)


def test_subsample_function():
    idx = np.arange(100, 200)
    labels = np.zeros(300, np.int64)
    labels[150:200] = 1
    out = subsample(idx, 0.1, seed=0, labels=labels)
    assert len(out) == 10 and (labels[out] == 1).sum() == 5 and np.all(np.diff(out) > 0)
    assert len(subsample(idx, 0.001, seed=0, labels=labels)) == 2  # at least one per class
    assert len(subsample(idx, 0.33, seed=0)) == 33
    assert subsample(idx, 1.0, seed=0) is idx


@pytest.mark.parametrize("value", [0, 1.5, "half", True])
def test_train_subsample_errors(make_spec, expect_error, value):
    spec = make_spec(split={"train_subsample": value})
    expect_error(lambda: load_data(spec), "E507", spec, "data", "split", "train_subsample")
