"""Learning-rate schedules, evaluated before every optimiser step.

The learning rate is a graph input, so a schedule never forces a recompile. Every schedule
but `plateau` is a function of the position in training (`learning_rate`); `plateau` reads
the monitored metric after each epoch, so it keeps state (`ReduceOnPlateau`) that the
trainer saves in its checkpoints. `LRSchedule` is what the trainer holds: either one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from graphdl.spec.schema_gen import SCHEDULE, fill


def schedule_settings(schedule: dict | None) -> dict:
    """A train.schedule mapping (or None) with the spec's defaults filled in."""
    return fill(SCHEDULE, {**SCHEDULE.default, **(schedule or {})})


def learning_rate(base_lr: float, schedule: dict | None, epoch_float: float, total_epochs: int,
                  steps_per_epoch: int = 1) -> float:
    """The learning rate at ``epoch_float`` (0-based, fractional within an epoch).

    ``steps_per_epoch`` places `one_cycle` on its step grid (PyTorch's OneCycleLR counts
    optimiser steps); the other schedules only need the fractional epoch.
    """
    schedule = schedule_settings(schedule)
    kind = schedule["type"]
    if schedule.get("interval") == "epoch":
        epoch_float = float(math.floor(epoch_float + 1e-9))  # held for the whole epoch
    if kind == "constant":
        return base_lr
    if kind == "step":
        return base_lr * schedule["gamma"] ** int(epoch_float // schedule["step_size"])
    if kind == "exponential":
        return base_lr * schedule["gamma"] ** epoch_float
    if kind == "one_cycle":
        total = max(total_epochs * steps_per_epoch, 1)
        return _one_cycle(base_lr, schedule, round(epoch_float * steps_per_epoch), total)
    if kind == "plateau":
        raise ValueError("the plateau schedule depends on the metrics: use LRSchedule")
    if kind in ("cosine", "warmup_cosine"):
        min_lr = float(schedule["min_lr"])
    if kind == "cosine":
        progress = min(epoch_float / max(total_epochs, 1), 1.0)
        return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))
    if kind == "warmup_cosine":
        warm = float(schedule["warmup_epochs"])
        if epoch_float < warm:
            return base_lr * (epoch_float + 1e-9) / warm if warm else base_lr
        span = max(total_epochs - warm, 1e-9)
        progress = min((epoch_float - warm) / span, 1.0)
        return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {kind!r}")


def _one_cycle(max_lr: float, s: dict, step: int, total_steps: int) -> float:
    """PyTorch's OneCycleLR at optimiser step ``step`` (0-based) of ``total_steps``."""
    initial = max_lr / s["div_factor"]
    final = initial / s["final_div_factor"]
    pct = float(s["pct_start"])
    if s["three_phase"]:
        phases = [(pct * total_steps - 1, initial, max_lr),
                  (2 * pct * total_steps - 2, max_lr, initial),
                  (total_steps - 1, initial, final)]
    else:
        phases = [(pct * total_steps - 1, initial, max_lr), (total_steps - 1, max_lr, final)]
    step = min(step, total_steps - 1)
    start_step = 0.0
    for i, (end_step, lo, hi) in enumerate(phases):
        if step <= end_step or i == len(phases) - 1:
            span = end_step - start_step
            frac = (step - start_step) / span if span > 0 else 1.0
            if s["anneal_strategy"] == "cos":
                return hi + (lo - hi) / 2.0 * (math.cos(math.pi * frac) + 1)
            return (hi - lo) * frac + lo
        start_step = end_step
    raise AssertionError("unreachable")


@dataclass
class ReduceOnPlateau:
    """PyTorch's ReduceLROnPlateau: after each epoch, `step(value)` counts the epochs
    without improvement and multiplies `lr` by `factor` once there are more than
    `patience` of them. Its fields are its whole state (`state_dict`)."""

    lr: float
    mode: str  # "min" or "max" (auto already resolved)
    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    threshold_mode: str = "rel"
    cooldown: int = 0
    min_lr: float = 0.0
    best: float | None = None
    bad_epochs: int = 0
    cooldown_left: int = 0

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.threshold_mode == "rel":
            scale = 1 - self.threshold if self.mode == "min" else 1 + self.threshold
            bound = self.best * scale
        else:
            bound = self.best - self.threshold if self.mode == "min" else self.best + self.threshold
        return value < bound if self.mode == "min" else value > bound

    def step(self, value: float) -> None:
        if self._better(value):
            self.best = value
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            new = max(self.lr * self.factor, self.min_lr)
            if self.lr - new > 1e-8:  # PyTorch's eps: smaller changes are ignored
                self.lr = new
            self.cooldown_left = self.cooldown
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        return asdict(self)


class LRSchedule:
    """The trainer's schedule: `lr(epoch, batch)` before each step, `end_epoch(value)` with
    the monitored metric after each epoch, and a JSON-able state for checkpoints."""

    def __init__(self, base_lr: float, schedule: dict | None, total_epochs: int,
                 steps_per_epoch: int, mode: str = "min"):
        self.base_lr = base_lr
        self.settings = schedule_settings(schedule)
        self.total_epochs = total_epochs
        self.steps_per_epoch = steps_per_epoch
        self.plateau: ReduceOnPlateau | None = None
        if self.settings["type"] == "plateau":
            s = self.settings
            self.plateau = ReduceOnPlateau(
                lr=base_lr, mode=mode, factor=float(s["factor"]), patience=int(s["patience"]),
                threshold=float(s["threshold"]), threshold_mode=s["threshold_mode"],
                cooldown=int(s["cooldown"]), min_lr=float(s["min_lr"]))

    @property
    def monitor(self) -> str | None:
        """The metric `end_epoch` wants, or None when the schedule reads no metric."""
        return self.settings["monitor"] if self.plateau is not None else None

    def lr(self, epoch: int, batch: int) -> float:
        if self.plateau is not None:
            return self.plateau.lr
        return learning_rate(self.base_lr, self.settings, epoch + batch / self.steps_per_epoch,
                             self.total_epochs, self.steps_per_epoch)

    def end_epoch(self, value: float | None) -> None:
        if self.plateau is not None and value is not None:
            self.plateau.step(float(value))

    def state_dict(self) -> dict | None:
        return self.plateau.state_dict() if self.plateau is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.plateau is not None and state:
            for k, v in state.items():
                setattr(self.plateau, k, v)
