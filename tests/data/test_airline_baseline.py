"""The seasonal-naive baseline of the airline windows (data.source.window.season, issue 11):
its forecasts and metrics against a NumPy computation on the series, in the model's units
(the target's own preprocessing applied to the forecasts, whatever the inputs' is) and in
the series' units, and the located errors of a bad season."""

from __future__ import annotations

import numpy as np
import pytest

from graphdl.api import forecast_report
from graphdl.data import load_data
from graphdl.data.forecast import seasonal_naive, to_series_units
from graphdl.data.sources import BUILTIN_DIR


def _passengers() -> np.ndarray:
    with np.load(BUILTIN_DIR / "airline.npz") as npz:
        return npz["passengers"].astype(np.float64)


def _airline(make_spec, window, split=None, preprocess=None):
    return make_spec(source={"type": "builtin", "name": "airline", "window": window},
                     inputs={"x": (("T", 1), "float32")}, split=split, preprocess=preprocess)


def _reference(p: np.ndarray, starts, inputs: int, horizon: int, season: int) -> np.ndarray:
    """Window i's target step h (month i + inputs + h) forecast by the latest month of the
    input window at the same point of the season."""
    return np.array([[p[i + inputs + h - season * (h // season + 1)] for h in range(horizon)]
                     for i in starts])


def _rmse(a, b) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(a, np.float64) - b))))


def test_baseline_is_the_value_one_season_back(make_spec):
    # 144 - 12 - 3 + 1 = 130 windows: 104 / 13 / 13, val and test 2 windows later
    splits = load_data(_airline(make_spec, {"input": 12, "horizon": 3, "season": 12}))
    p = _passengers()
    starts = {"train": range(104), "val": range(106, 117), "test": range(119, 130)}
    assert set(splits.baselines) == {"train", "val", "test"}
    for name, rows in starts.items():
        b = splits.baselines[name]
        want = _reference(p, rows, 12, 3, 12)
        assert want[:, 0].tolist() == [p[i] for i in rows]  # input 12, season 12: x[:, 0]
        assert b.season == 12 and b.name == "seasonal naive (12 back)"
        assert b.series_predicted.tolist() == want.tolist()
        assert b.series_target.tolist() == [p[i + 12:i + 15].tolist() for i in rows]
        assert not b.preprocessed and b.predicted.tolist() == want.tolist()
        assert b.units == "thousands of passengers"


def test_last_24_months_seasonal_naive_rmse(make_spec):
    """The spec's configuration: 120 windows, test = the last 24 months, forecast by the
    same months a year earlier (RMSE 49.99 thousand passengers)."""
    splits = load_data(_airline(make_spec, {"input": 24, "horizon": 1, "season": 12},
                                split={"train": 0.7, "val": 0.1, "test": 0.2}))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (84, 12, 24)
    p = _passengers()
    b = splits.baselines["test"]
    assert b.series_target[:, 0].tolist() == p[120:].tolist()
    assert b.series_predicted[:, 0].tolist() == p[108:132].tolist()
    assert _rmse(b.series_predicted, b.series_target) == pytest.approx(49.98666, abs=1e-4)


def test_horizon_longer_than_the_season_repeats_the_last_season(make_spec):
    splits = load_data(_airline(make_spec, {"input": 6, "horizon": 9, "season": 4},
                                split={"train": 0.8, "val": 0.0, "test": 0.2}))
    p = _passengers()
    # 144 - 6 - 9 + 1 = 130 windows: 104 train, 26 test starting 8 windows later
    rows = range(104 + 8, 130)
    got = splits.baselines["test"].series_predicted
    assert got.tolist() == _reference(p, rows, 6, 9, 4).tolist()
    # steps 0-3, 4-7 and 8 read the input's last 4 months: months i+2 .. i+5
    assert got[0].tolist() == [p[rows[0] + 2 + h % 4] for h in range(9)]
    assert "val" not in splits.baselines  # an empty split has none


def test_model_units_follow_the_target_preprocessing(make_spec):
    """x normalized per step, y scaled: the forecasts go through y's scale (not x's
    normalize), so the baseline's metrics are in the units the model's are."""
    spec = _airline(make_spec, {"input": 13, "horizon": 2, "season": 12},
                    split={"train": 0.8, "val": 0.1, "test": 0.1},
                    preprocess=[{"op": "normalize"}, {"op": "scale", "factor": 0.01,
                                                      "fields": ["y"]}])
    splits = load_data(spec)
    p = _passengers()
    b = splits.baselines["test"]
    n_windows = 144 - 13 - 2 + 1  # 130: 104 / 13 / 13, val and test 1 window later
    rows = range(n_windows - 12, n_windows)
    want = _reference(p, rows, 13, 2, 12)
    assert b.series_predicted.tolist() == want.tolist()
    assert b.predicted.dtype == np.float32
    np.testing.assert_allclose(b.predicted, want * 0.01, rtol=1e-6)
    y = splits.test.fields["y"]
    np.testing.assert_allclose(y, p[[[i + 13, i + 14] for i in rows]] * 0.01, rtol=1e-6)
    train_x = np.array([p[i:i + 13] for i in range(104)])  # x: normalized per step
    test_x = (np.array([p[i:i + 13] for i in rows]) - train_x.mean(0)) / train_x.std(0)
    np.testing.assert_allclose(splits.test.fields["x"][:, :, 0], test_x, rtol=1e-5, atol=1e-5)

    # a model that forecasts the truth exactly, and the report of both
    report = forecast_report(b, ["loss", "rmse", "mae", "r2"], y.copy(), y)
    base = report["baseline"]
    assert list(base) == ["name", "season", "rmse", "mae", "r2"]
    assert base["rmse"] == pytest.approx(_rmse(want * 0.01, y), rel=1e-6)
    assert base["mae"] == pytest.approx(float(np.abs(want * 0.01 - y).mean()), rel=1e-6)
    series = report["series_units"]
    assert series["units"] == "thousands of passengers"
    assert series["rmse"] == pytest.approx(0.0, abs=1e-4)
    truth = p[[[i + 13, i + 14] for i in rows]]
    assert series["baseline"]["rmse"] == pytest.approx(_rmse(want, truth), rel=1e-12)
    assert series["baseline"]["rmse"] == pytest.approx(base["rmse"] / 0.01, rel=1e-5)


def test_no_series_units_when_the_target_is_not_preprocessed(make_spec):
    splits = load_data(_airline(make_spec, {"input": 24, "season": 12},
                                preprocess=[{"op": "scale", "factor": 0.5}]))  # x only
    b = splits.baselines["test"]
    y = splits.test.fields["y"]
    report = forecast_report(b, ["rmse"], y + 1.0, y)
    assert "series_units" not in report
    assert report["baseline"]["rmse"] == pytest.approx(_rmse(b.series_predicted, y))


def test_no_baseline_without_season(make_spec):
    assert load_data(_airline(make_spec, {"input": 24})).baselines == {}


@pytest.mark.parametrize("steps", [
    [{"op": "scale", "factor": 0.002, "fields": ["y"]}],
    [{"op": "normalize", "fields": ["y"]}],
    [{"op": "normalize", "mode": "minmax", "fields": ["x", "y"]},
     {"op": "scale", "factor": 3.0, "fields": ["y"]}],
])
def test_to_series_units_undoes_the_target_steps(make_spec, steps):
    splits = load_data(_airline(make_spec, {"input": 12, "horizon": 2, "season": 12},
                                preprocess=steps))
    b = splits.baselines["train"]
    assert b.preprocessed
    back = b.to_series_units(splits.train.fields["y"])
    np.testing.assert_allclose(back, b.series_target, rtol=1e-5)
    np.testing.assert_allclose(b.to_series_units(b.predicted), b.series_predicted, rtol=1e-5)


def test_pca_on_the_target_cannot_be_undone():
    steps = [{"op": "pca", "fields": ["y"], "stats": {"y": {}}}]
    assert to_series_units(steps, "y", np.zeros((2, 1))) is None


def test_seasonal_naive_refuses_a_season_longer_than_the_input():
    x = np.arange(10, dtype=np.float32).reshape(2, 5, 1)
    assert seasonal_naive(x, 2, 3).tolist() == [[3, 4, 3], [8, 9, 8]]
    with pytest.raises(ValueError):
        seasonal_naive(x, 6, 1)


def test_season_longer_than_the_input_is_E508_at_season(make_spec, expect_error):
    spec = _airline(make_spec, {"input": 6, "horizon": 1, "season": 12})
    d = expect_error(lambda: load_data(spec), "E508", spec, "data", "source", "window",
                     "season")
    assert "12" in d.message and "6 input steps" in d.message and "input: 12" in d.help


@pytest.mark.parametrize("season", [0, -3, 1.5, True, "12"])
def test_season_must_be_a_positive_integer(make_spec, expect_error, season):
    spec = _airline(make_spec, {"input": 24, "season": season})
    expect_error(lambda: load_data(spec), "E508", spec, "data", "source", "window", "season")
