"""The seasonal-naive baseline of a windowed series (data.source.window.season).

With ``window: {input, horizon, season}`` every split of the windows also carries the
seasonal-naive forecast: target step h of a window (0-based) is forecast by the value
``season`` steps before it, or, for a horizon longer than the season, by the latest value
of the input window at the same point of the season (x[input - season + h % season]).
Either way the forecast is read from the input window alone (season <= input, checked by
the source), so it uses nothing the model does not see.

Units. A model is scored in the units of its target *after* data.preprocess (what the
loss and the eval program's outputs are in), so the baseline is put into the same units:
its forecasts, taken from the raw input window in the series' own units, go through the
target's own fitted preprocessing steps, the very programs that transformed the target.
That holds however the inputs are preprocessed (x and y may be scaled or normalized
differently). Where the target's steps can be undone (scale, normalize; not pca), the
model's outputs are also brought back to the series' units, and both forecasts are
scored there too (`series_units`): for the airline series that is thousands of
passengers, the number a forecaster compares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphdl.data.pipeline import apply_entries
from graphdl.data.preprocess import RANGE_FLOOR, STD_FLOOR

INVERTIBLE = ("scale", "normalize")


@dataclass
class SeasonalNaive:
    """The seasonal-naive forecast of one split's windows."""

    season: int
    # float32 [n, horizon]: the forecasts in the units the model is scored in (the target
    # after data.preprocess)
    predicted: np.ndarray
    # float64 [n, horizon]: the forecasts and the targets in the series' own units
    series_predicted: np.ndarray
    series_target: np.ndarray
    # the target's fitted data.preprocess entries, in order (empty: the target is in the
    # series' units); `to_series_units` undoes them
    target_steps: list[dict]
    target: str = "y"
    units: str | None = None  # what the series is measured in ("thousands of passengers")

    @property
    def name(self) -> str:
        return f"seasonal naive ({self.season} back)"

    @property
    def preprocessed(self) -> bool:
        """Whether the target is preprocessed (so the model's units are not the series')."""
        return bool(self.target_steps)

    def to_series_units(self, values: np.ndarray) -> np.ndarray | None:
        """``values`` (model outputs, in the preprocessed target's units) in the series'
        units, float64; None when a step of the target cannot be undone (pca)."""
        return to_series_units(self.target_steps, self.target, values)


def seasonal_naive(x: np.ndarray, season: int, horizon: int) -> np.ndarray:
    """The seasonal-naive forecasts float64 [n, horizon] of the input windows ``x``
    [n, input, 1] (season <= input): step h is x[:, input - season + h % season]."""
    x = np.asarray(x)
    n, inputs = x.shape[0], x.shape[1]
    if not 1 <= season <= inputs:
        raise ValueError(f"season {season} must be within the {inputs} input steps")
    cols = inputs - season + np.arange(horizon) % season
    return x.reshape(n, inputs)[:, cols].astype(np.float64)


def target_steps(state: dict, target: str) -> list[dict]:
    """The fitted data.preprocess entries of ``state`` that transform ``target``, in order."""
    return [e for k, e in state.items()
            if k != "csv" and isinstance(e, dict) and target in e.get("fields", ())]


def baseline_of_split(raw_x: np.ndarray, raw_y: np.ndarray, state: dict, target: str,
                      season: int, units: str | None = None) -> SeasonalNaive:
    """The seasonal-naive forecast of one split from its windows before preprocessing
    (``raw_x`` [n, input, 1], ``raw_y`` [n, horizon], the series' units), with the
    forecasts also transformed as the target ``target`` was (``state``: the fitted
    preprocess state)."""
    horizon = raw_y.shape[1]
    series = seasonal_naive(raw_x, season, horizon)
    steps = target_steps(state, target)
    forecast = series.astype(np.float32)  # the target's dtype, as the steps saw it
    if steps:
        forecast = apply_entries(steps, {target: forecast})[target]
    return SeasonalNaive(season=season, predicted=np.ascontiguousarray(forecast),
                         series_predicted=series,
                         series_target=np.asarray(raw_y, np.float64).reshape(series.shape),
                         target_steps=steps, target=target, units=units)


def to_series_units(steps: list[dict], target: str, values: np.ndarray) -> np.ndarray | None:
    """Undo the steps (scale, normalize) of the field ``target`` on ``values`` [n, *its
    shape], last step first, in float64; None when one of them cannot be undone."""
    out = np.asarray(values, np.float64)
    for entry in reversed(steps):
        op = entry["op"]
        if op not in INVERTIBLE:
            return None
        if op == "scale":
            out = out / float(entry["factor"])
            continue
        st = entry["stats"][target]
        if st.get("per") not in (None, "feature"):
            return None  # per channel or per step: not a windowed target
        shape = out.shape[1:]
        if entry["mode"] == "zscore":
            a = np.asarray(st["mean"], np.float64)
            b = np.asarray(st["std"], np.float64)
            b = np.where(b < STD_FLOOR, 1.0, b)  # as the step applied it
        else:
            a = np.asarray(st["min"], np.float64)
            b = np.asarray(st["max"], np.float64) - a
            b = np.where(b < RANGE_FLOOR, 1.0, b)
        out = out * b.reshape(shape) + a.reshape(shape)
    return out
