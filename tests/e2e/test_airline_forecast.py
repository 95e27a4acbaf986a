"""Issue 11, specs/lstm_airline.yaml: a stacked LSTM forecasts the airline passengers, and
`graphdl run` prints its test RMSE beside the seasonal-naive forecast's (the same month a
year earlier: data.source.window.season), in the model's units and in thousands of
passengers; results.json keeps both. A season longer than the input window is a located
error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from graphdl.data.sources import BUILTIN_DIR

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "specs" / "lstm_airline.yaml"
NUMBER = r"(\d+(?:\.\d+)?)"

# the seasonal naive on the last 24 months (1959-1960), in thousands of passengers
NAIVE_RMSE, NAIVE_MAE = 49.98666, 47.58333


def _naive_on_last_24() -> tuple[float, float]:
    with np.load(BUILTIN_DIR / "airline.npz") as npz:
        p = npz["passengers"].astype(np.float64)
    err = p[108:132] - p[120:]
    return float(np.sqrt(np.mean(err ** 2))), float(np.mean(np.abs(err)))


def _printed(out: str) -> dict:
    """The two lines `graphdl run` prints for a windowed series with a season."""
    first = re.search(rf"^test: loss {NUMBER}, rmse {NUMBER}, mae {NUMBER}  \|  seasonal naive "
                      rf"\(12 back\): rmse {NUMBER}, mae {NUMBER}  \(\w+ weights; run directory ",
                      out, re.MULTILINE)
    second = re.search(rf"^test in thousands of passengers: rmse {NUMBER}, mae {NUMBER}  \|  "
                       rf"seasonal naive \(12 back\): rmse {NUMBER}, mae {NUMBER}$", out,
                       re.MULTILINE)
    assert first and second, out
    keys = ("loss", "rmse", "mae", "naive_rmse", "naive_mae")
    got = {k: float(v) for k, v in zip(keys, first.groups())}
    got.update({f"series_{k}": float(v) for k, v in zip(keys[1:], second.groups())})
    return got


def test_the_numbers_printed_are_the_seasonal_naive_of_numpy():
    rmse, mae = _naive_on_last_24()
    assert (rmse, mae) == pytest.approx((NAIVE_RMSE, NAIVE_MAE), abs=1e-4)


def test_run_prints_the_model_beside_the_seasonal_naive(tmp_path, cli):
    """A linear forecaster on the spec's data (cheap to compile): both lines printed, and
    results.json holds the same numbers."""
    spec = tmp_path / "linear_airline.yaml"
    text = SPEC.read_text(encoding="utf-8")
    text = text.replace("    - {type: lstm, hidden: 64, num_layers: 2, output: last}\n",
                        "    - {type: flatten}\n")
    text = text.replace("epochs: 100", "epochs: 3").replace("x: {shape: [T, 1]}",
                                                          "x: {shape: [24, 1]}")
    assert "flatten" in text
    spec.write_text(text, encoding="utf-8")
    run_dir = tmp_path / "run"
    rc, out, err = cli("run", spec, "--run-dir", run_dir, "--no-progress")
    assert rc == 0, err
    printed = _printed(out)
    assert printed["naive_rmse"] == pytest.approx(NAIVE_RMSE * 0.001, abs=1e-4)  # scaled
    assert printed["series_naive_rmse"] == pytest.approx(NAIVE_RMSE, abs=0.01)
    assert printed["series_naive_mae"] == pytest.approx(NAIVE_MAE, abs=0.01)

    test = json.loads((run_dir / "results.json").read_text())["test"]
    assert test["baseline"]["name"] == "seasonal naive (12 back)"
    assert test["baseline"]["season"] == 12
    assert test["baseline"]["rmse"] == pytest.approx(NAIVE_RMSE * 0.001, rel=1e-5)
    assert test["baseline"]["mae"] == pytest.approx(NAIVE_MAE * 0.001, rel=1e-5)
    series = test["series_units"]
    assert series["units"] == "thousands of passengers"
    assert series["baseline"] == pytest.approx({"rmse": NAIVE_RMSE, "mae": NAIVE_MAE},
                                               abs=1e-4)
    # the model's numbers in passengers are its scaled numbers with the scale undone
    assert series["rmse"] == pytest.approx(test["rmse"] / 0.001, rel=1e-4)
    assert series["mae"] == pytest.approx(test["mae"] / 0.001, rel=1e-4)
    assert printed["rmse"] == pytest.approx(test["rmse"], abs=1e-4)
    assert printed["series_rmse"] == pytest.approx(series["rmse"], rel=1e-3)


def test_season_longer_than_the_input_is_a_located_error(tmp_path, cli):
    spec = tmp_path / "bad_season.yaml"
    text = SPEC.read_text(encoding="utf-8").replace(
        "window: {input: 24, horizon: 1, season: 12}", "window: {input: 6, horizon: 1, season: 12}")
    spec.write_text(text, encoding="utf-8")
    rc, _out, err = cli("run", spec, "--run-dir", tmp_path / "run", "--no-progress")
    (line,) = [i for i, t in enumerate(text.splitlines(), 1) if "season: 12}" in t]
    col = text.splitlines()[line - 1].index("season: 12") + len("season: ") + 1  # the value
    assert rc == 2 and "Traceback" not in err, err
    assert f"{spec}:{line}:{col}: error[E508]" in err, err
    assert "more than the 6 input steps" in err


@pytest.mark.slow
def test_lstm_airline_beats_the_seasonal_naive(tmp_path, cli):
    """specs/lstm_airline.yaml as shipped (about 4 s of training once its kernels are
    cached): over seeds 1-10 its test RMSE was 25.5 to 35.1 thousand passengers against
    the naive's 50.0, so the comparison holds with room to spare."""
    run_dir = tmp_path / "run"
    rc, out, err = cli("run", SPEC, "--run-dir", run_dir, "--no-progress")
    assert rc == 0, err
    printed = _printed(out)
    test = json.loads((run_dir / "results.json").read_text())["test"]
    assert test["rmse"] < test["baseline"]["rmse"]
    assert test["series_units"]["rmse"] < 0.9 * NAIVE_RMSE, test
    assert test["series_units"]["mae"] < test["series_units"]["baseline"]["mae"]
    assert printed["series_rmse"] < printed["series_naive_rmse"]
