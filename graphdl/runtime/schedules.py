"""Learning-rate schedules, evaluated per step from the fractional epoch.

The learning rate is a graph input, so a schedule never forces a recompile.
"""

from __future__ import annotations

import math


def learning_rate(base_lr: float, schedule: dict | None, epoch_float: float, total_epochs: int) -> float:
    """The learning rate at ``epoch_float`` (0-based, fractional within an epoch)."""
    if not schedule or schedule.get("type", "constant") == "constant":
        return base_lr
    kind = schedule["type"]
    if kind == "step":
        return base_lr * schedule.get("gamma", 0.1) ** int(epoch_float // schedule["step_size"])
    min_lr = float(schedule.get("min_lr", 0.0))
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
