"""Shrinkage activations ``φ(z; θ, T)`` for unrolled pursuit, registered by name in :data:`ACTIVATIONS`.

All share one signature: pre-activation ``z``, threshold ``θ`` (same units as z; broadcastable) and temperature
``T`` (only the smooth ones use it). The theory's activation is ``relu``; the others show the convergence
analysis carried to other activation functions: an activation within ``δ`` of ``relu`` everywhere adds an
error floor of order ``δ`` on top of the geometric decay.

``relu``  ``ReLU(z − θ)``: non-negative soft threshold, i.e. a CNN layer's ReLU with bias ``−θ``
``soft``  ``sign(z)·max(|z| − θ, 0)``: two-sided soft threshold (codes may go negative)
``silu``  ``(z − θ)·sigmoid((z − θ)/T)``: smooth; ``sup |silu − relu| ≈ 0.278·T``
``gelu``  ``(z − θ)·Φ((z − θ)/T)``: smooth; ``sup |gelu − relu| ≈ 0.170·T``
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from analysis.errors import AnalysisError

Activation = Callable[[Tensor, Tensor, float], Tensor]


def relu(z: Tensor, theta: Tensor, temperature: float) -> Tensor:
    return torch.relu(z - theta)


def soft(z: Tensor, theta: Tensor, temperature: float) -> Tensor:
    return torch.sign(z) * torch.relu(z.abs() - theta)


def silu(z: Tensor, theta: Tensor, temperature: float) -> Tensor:
    u = z - theta
    return u * torch.sigmoid(u / temperature)


def gelu(z: Tensor, theta: Tensor, temperature: float) -> Tensor:
    u = z - theta
    return u * 0.5 * (1 + torch.erf(u / (temperature * math.sqrt(2))))


ACTIVATIONS: dict[str, Activation] = {"relu": relu, "soft": soft, "silu": silu, "gelu": gelu}


def get_activation(name: str) -> Activation:
    """The activation registered as ``name``."""
    if name not in ACTIVATIONS:
        raise AnalysisError(f"unknown activation {name!r} (choose from {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]
