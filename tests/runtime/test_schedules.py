"""Learning-rate schedules: learning_rate(base_lr, schedule, epoch_float, total_epochs)."""

from __future__ import annotations

import itertools
import math

import pytest

from graphdl.runtime.schedules import learning_rate


@pytest.mark.parametrize("schedule", [None, {}, {"type": "constant"}])
def test_constant(schedule):
    for e in (0.0, 0.5, 3.0, 99.0):
        assert learning_rate(0.01, schedule, e, 10) == 0.01


@pytest.mark.parametrize(
    "epoch, expected",
    [(0.0, 0.1), (1.0, 0.1), (1.99, 0.1), (2.0, 0.05), (3.5, 0.05), (4.0, 0.025), (6.0, 0.0125)],
)
def test_step(epoch, expected):
    s = {"type": "step", "step_size": 2, "gamma": 0.5}
    assert learning_rate(0.1, s, epoch, 10) == pytest.approx(expected, rel=1e-12)


def test_step_default_gamma_is_a_tenth():
    s = {"type": "step", "step_size": 1}
    assert learning_rate(1.0, s, 0.5, 5) == 1.0
    assert learning_rate(1.0, s, 1.0, 5) == pytest.approx(0.1)
    assert learning_rate(1.0, s, 2.25, 5) == pytest.approx(0.01)


@pytest.mark.parametrize(
    "epoch, expected",
    [
        (0.0, 1.0),
        (2.5, 0.1 + 0.45 * (1 + math.cos(math.pi / 4))),
        (5.0, 0.55),  # halfway: the mean of lr and min_lr
        (7.5, 0.1 + 0.45 * (1 + math.cos(3 * math.pi / 4))),
        (10.0, 0.1),
        (12.0, 0.1),  # past the end: stays at min_lr
    ],
)
def test_cosine(epoch, expected):
    s = {"type": "cosine", "min_lr": 0.1}
    assert learning_rate(1.0, s, epoch, 10) == pytest.approx(expected, rel=1e-12)


def test_cosine_default_min_lr_is_zero_and_decreasing():
    s = {"type": "cosine"}
    values = [learning_rate(0.2, s, e / 4, 4) for e in range(17)]
    assert values[0] == pytest.approx(0.2)
    assert values[-1] == pytest.approx(0.0, abs=1e-15)
    assert all(a > b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(
    "epoch, expected",
    [
        (0.0, 0.0),  # linear warmup from 0 ...
        (0.5, 0.25),
        (1.0, 0.5),
        (1.5, 0.75),
        (2.0, 1.0),  # ... to lr at warmup_epochs
        (6.0, 0.5 * (1 + math.cos(math.pi / 2))),  # then cosine over the remaining 8 epochs
        (10.0, 0.0),
        (11.0, 0.0),
    ],
)
def test_warmup_cosine(epoch, expected):
    s = {"type": "warmup_cosine", "warmup_epochs": 2}
    assert learning_rate(1.0, s, epoch, 10) == pytest.approx(expected, abs=1e-8)


def test_warmup_cosine_with_min_lr_and_continuity():
    s = {"type": "warmup_cosine", "warmup_epochs": 1, "min_lr": 0.01}
    assert learning_rate(0.1, s, 1.0, 5) == pytest.approx(0.1)
    assert learning_rate(0.1, s, 3.0, 5) == pytest.approx(
        0.01 + 0.5 * 0.09 * (1 + math.cos(math.pi / 2))
    )
    assert learning_rate(0.1, s, 5.0, 5) == pytest.approx(0.01)
    # continuous at the end of warmup
    assert learning_rate(0.1, s, 1.0 - 1e-9, 5) == pytest.approx(
        learning_rate(0.1, s, 1.0, 5), rel=1e-6
    )
    # rising during warmup, falling after it
    up = [learning_rate(0.1, s, e / 10, 5) for e in range(11)]
    down = [learning_rate(0.1, s, 1 + e / 10, 5) for e in range(41)]
    assert all(a < b for a, b in itertools.pairwise(up))
    assert all(a > b for a, b in itertools.pairwise(down))


def test_warmup_zero_epochs_is_plain_cosine():
    w = {"type": "warmup_cosine", "warmup_epochs": 0, "min_lr": 0.0}
    c = {"type": "cosine", "min_lr": 0.0}
    for e in (0.0, 1.3, 2.7, 4.0):
        assert learning_rate(0.5, w, e, 4) == pytest.approx(learning_rate(0.5, c, e, 4))


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="unknown schedule"):
        learning_rate(0.1, {"type": "exponential"}, 1.0, 10)
