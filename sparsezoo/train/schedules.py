"""Schedules as pure functions of training progress, so a resumed run recomputes them exactly.

- :func:`lam_at`: λ(t) of a penalty: 0 during warm-up, then a linear or cosine ramp to λ; or ProSparse's staged
  schedule (:func:`staged_lam_at`): λ constant during warm-up, then stage by stage up to each stage's peak along
  η = ½[sin(−π/2 + π·progress) + 1].
- :func:`lr_at`: learning rate: linear warm-up, then cosine (or constant) to ``lr · min_lr_ratio``.
- :class:`TargetController`: adapts λ so that the measured ``zero_frac`` reaches a target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sparsezoo.recipe import ScheduleSpec


def lam_at(lam: float, epoch: float, warmup_epochs: float, ramp_epochs: float, shape: str = "linear") -> float:
    """λ at fractional epoch ``epoch`` (0 = start of training) of a warm-up (λ = 0) and ramp schedule."""
    if epoch < warmup_epochs:
        return 0.0
    if ramp_epochs <= 0:
        return lam
    x = min(1.0, (epoch - warmup_epochs) / ramp_epochs)
    if shape == "cosine":
        x = 0.5 - 0.5 * math.cos(math.pi * x)
    return lam * x


def sine_progress(progress: float) -> float:
    """ProSparse's smooth rise η = ½[sin(−π/2 + π·p) + 1]: 0 at p = 0, ½ at p = ½, 1 at p = 1 (p clipped to [0, 1])."""
    p = min(1.0, max(0.0, progress))
    return 0.5 * (math.sin(-math.pi / 2 + math.pi * p) + 1.0)


def staged_lam_at(lam: float, epoch: float, warmup_epochs: float, stages: Sequence[tuple[float, float]]) -> float:
    """λ at fractional epoch ``epoch`` of ProSparse's staged schedule (Song et al. 2024, arXiv 2402.13516).

    λ is ``lam`` (constant) during the first ``warmup_epochs``; then stage k, lasting ``stages[k][0]`` epochs,
    rises from the previous peak (``lam`` for the first stage) to its own peak ``stages[k][1]`` along
    :func:`sine_progress`; after the last stage λ stays at the last peak.
    """
    if epoch < warmup_epochs:
        return lam
    start, t = lam, epoch - warmup_epochs
    for epochs, peak in stages:
        if t < epochs:
            return start + (peak - start) * sine_progress(t / epochs)
        start, t = peak, t - epochs
    return start


def scheduled_lam(schedule: ScheduleSpec, lam: float, epoch: float) -> float:
    """λ at fractional epoch ``epoch`` under a recipe's schedule, for a penalty whose (starting) λ is ``lam``."""
    if schedule.shape == "staged":
        return staged_lam_at(lam, epoch, schedule.warmup_epochs, [(s.epochs, s.lam) for s in schedule.stages])
    return lam_at(lam, epoch, schedule.warmup_epochs, schedule.ramp_epochs, schedule.shape)


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
