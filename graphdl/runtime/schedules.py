"""Learning-rate schedules, evaluated per step from the fractional epoch.

The learning rate is a graph input, so a schedule never forces a recompile.
"""

from __future__ import annotations

import math

from graphdl.spec.schema_gen import SCHEDULE, fill


def learning_rate(base_lr: float, schedule: dict | None, epoch_float: float, total_epochs: int) -> float:
    """The learning rate at ``epoch_float`` (0-based, fractional within an epoch)."""
    # no schedule (or no type) is the spec's default; the spec's defaults fill the rest
    schedule = fill(SCHEDULE, {**SCHEDULE.default, **(schedule or {})})
    kind = schedule["type"]
    if kind == "constant":
        return base_lr
    if kind == "step":
        return base_lr * schedule["gamma"] ** int(epoch_float // schedule["step_size"])
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
