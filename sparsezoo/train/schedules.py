"""Schedules as pure functions of training progress, so a resumed run recomputes them exactly.

- :func:`lam_at`: λ(t) of a penalty: 0 during warm-up, then a linear or cosine ramp to λ.
- :func:`lr_at`: learning rate: linear warm-up, then cosine (or constant) to ``lr · min_lr_ratio``.
- :class:`TargetController`: adapts λ so that the measured ``zero_frac`` reaches a target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def lam_at(lam: float, epoch: float, warmup_epochs: float, ramp_epochs: float, shape: str = "linear") -> float:
    """λ at fractional epoch ``epoch`` (0 = start of training)."""
    if epoch < warmup_epochs:
        return 0.0
    if ramp_epochs <= 0:
        return lam
    x = min(1.0, (epoch - warmup_epochs) / ramp_epochs)
    if shape == "cosine":
        x = 0.5 - 0.5 * math.cos(math.pi * x)
    return lam * x


def lr_at(step: int, total_steps: int, lr: float, warmup_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    span = max(1, total_steps - warmup_steps)
    x = min(1.0, (step - warmup_steps) / span)
    lo = lr * min_lr_ratio
    return lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * x))


@dataclass
class TargetController:
    """Integral controller on log λ: ``log λ += gain · (target − measured)`` each update.

    ``measured`` is the mean ``zero_frac`` over sites of the training batches since the last update
    (identical on every process: the caller reduces it first). λ stays within ``[lam_min, lam_max]``.
    A gain of 4 moves λ by a factor e^0.4 ≈ 1.5 for a 10-point gap.
    """

    target: float
    lam: float
    gain: float = 4.0
    lam_min: float = 1e-8
    lam_max: float = 10.0
    last_measured: float | None = None

    def update(self, measured: float) -> float:
        self.last_measured = float(measured)
        self.lam = min(self.lam_max, max(self.lam_min, self.lam * math.exp(self.gain * (self.target - measured))))
        return self.lam

    def state_dict(self) -> dict:
        return {"lam": self.lam, "last_measured": self.last_measured}

    def load_state_dict(self, d: dict) -> None:
        self.lam = float(d["lam"])
        self.last_measured = d.get("last_measured")
