"""Learning-rate schedules: learning_rate(base_lr, schedule, epoch_float, total_epochs) and
the trainer's LRSchedule (plateau), each checked against torch.optim.lr_scheduler on the same
step sequence."""

from __future__ import annotations

import itertools
import math

import pytest

from graphdl.runtime.schedules import LRSchedule, learning_rate


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
        learning_rate(0.1, {"type": "linear"}, 1.0, 10)


# ---------------------------------------------------------------- against torch


def _torch_lrs(make_scheduler, n_steps, base_lr=0.1, metrics=None):
    """The learning rate torch's scheduler gives before each of ``n_steps`` steps (stepped
    once per step, with ``metrics[i]`` for ReduceLROnPlateau)."""
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=base_lr)
    sched = make_scheduler(torch.optim.lr_scheduler, opt)
    out = []
    for i in range(n_steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(metrics[i]) if metrics is not None else sched.step()
    return out


SPE, EPOCHS = 7, 5  # steps per epoch, epochs


def _ours(schedule, base_lr=0.1):
    lrs = LRSchedule(base_lr, schedule, EPOCHS, SPE)
    return [lrs.lr(e, b) for e in range(EPOCHS) for b in range(SPE)]


def test_exponential_per_epoch_matches_exponential_lr():
    want = _torch_lrs(lambda s, o: s.ExponentialLR(o, gamma=0.7), EPOCHS)
    got = _ours({"type": "exponential", "gamma": 0.7, "interval": "epoch"})
    assert got == pytest.approx([lr for lr in want for _ in range(SPE)], rel=1e-12)


def test_exponential_per_step_matches_exponential_lr_stepped_every_batch():
    want = _torch_lrs(lambda s, o: s.ExponentialLR(o, gamma=0.7 ** (1 / SPE)), EPOCHS * SPE)
    assert _ours({"type": "exponential", "gamma": 0.7}) == pytest.approx(want, rel=1e-9)


def test_cosine_per_step_and_per_epoch_match_cosine_annealing_lr():
    per_step = _torch_lrs(lambda s, o: s.CosineAnnealingLR(o, T_max=EPOCHS * SPE, eta_min=1e-3),
                          EPOCHS * SPE)
    assert _ours({"type": "cosine", "min_lr": 1e-3}) == pytest.approx(per_step, rel=1e-9)
    per_epoch = _torch_lrs(lambda s, o: s.CosineAnnealingLR(o, T_max=EPOCHS, eta_min=1e-3),
                           EPOCHS)
    got = _ours({"type": "cosine", "min_lr": 1e-3, "interval": "epoch"})
    assert got == pytest.approx([lr for lr in per_epoch for _ in range(SPE)], rel=1e-9)


def test_step_per_epoch_matches_step_lr():
    want = _torch_lrs(lambda s, o: s.StepLR(o, step_size=2, gamma=0.5), EPOCHS)
    got = _ours({"type": "step", "step_size": 2, "gamma": 0.5, "interval": "epoch"})
    assert got == pytest.approx([lr for lr in want for _ in range(SPE)], rel=1e-12)


@pytest.mark.parametrize("extra", [
    {},
    {"anneal_strategy": "linear", "pct_start": 0.25},
    {"three_phase": True, "div_factor": 10.0, "final_div_factor": 100.0},
])
def test_one_cycle_matches_one_cycle_lr(extra):
    torch_extra = {k: v for k, v in extra.items()}
    want = _torch_lrs(lambda s, o: s.OneCycleLR(o, max_lr=0.1, total_steps=EPOCHS * SPE,
                                                cycle_momentum=False, **torch_extra),
                      EPOCHS * SPE)
    got = _ours({"type": "one_cycle", **extra})
    assert got == pytest.approx(want, rel=1e-9)
    assert max(got) == pytest.approx(0.1, rel=1e-2)  # the peak is (near) the optimiser's lr


PLATEAU_METRICS = [1.0, 0.9, 0.9, 0.95, 0.91, 0.9, 0.9, 0.89999, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6,
                   0.7, 0.7, 0.7, 0.7, 0.7, 0.7]


@pytest.mark.parametrize("ours,theirs,sign", [
    ({"patience": 2}, {"patience": 2}, 1),
    ({"patience": 1, "factor": 0.5, "cooldown": 2, "min_lr": 0.01},
     {"patience": 1, "factor": 0.5, "cooldown": 2, "min_lr": 0.01}, 1),
    ({"patience": 0, "threshold": 0.05, "threshold_mode": "abs"},
     {"patience": 0, "threshold": 0.05, "threshold_mode": "abs"}, 1),
    ({"patience": 1, "monitor": "val_accuracy"}, {"patience": 1, "mode": "max"}, -1),
])
def test_plateau_matches_reduce_lr_on_plateau(ours, theirs, sign):
    values = [sign * v for v in PLATEAU_METRICS]
    want = _torch_lrs(lambda s, o: s.ReduceLROnPlateau(o, **theirs), len(values), metrics=values)
    mode = "max" if sign < 0 else "min"
    lrs = LRSchedule(0.1, {"type": "plateau", **ours}, len(values), SPE, mode=mode)
    got = []
    for epoch, value in enumerate(values):
        got.append(lrs.lr(epoch, 3))  # the same for every step of the epoch
        assert lrs.lr(epoch, 0) == got[-1]
        lrs.end_epoch(value)
    assert got == pytest.approx(want, rel=1e-12)
    assert min(got) < 0.1  # the sequence does make it reduce


def test_plateau_state_round_trips_through_json():
    import json

    a = LRSchedule(0.1, {"type": "plateau", "patience": 1, "cooldown": 1}, 10, 3)
    for v in PLATEAU_METRICS[:9]:
        a.end_epoch(v)
    b = LRSchedule(0.1, {"type": "plateau", "patience": 1, "cooldown": 1}, 10, 3)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.state_dict() == a.state_dict()
    for v in PLATEAU_METRICS[9:]:
        a.end_epoch(v)
        b.end_epoch(v)
        assert b.lr(0, 0) == a.lr(0, 0)
