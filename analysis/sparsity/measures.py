"""The sparsity measures on one tensor: the reference definitions (the tests hold the streaming path to them), and
what anyone who wants one number calls. Every measure is dimensionless; the formulas are in :mod:`analysis.sparsity`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def zero_frac(a: Tensor) -> float:
    """Fraction of entries exactly 0 (unitless, in [0, 1])."""
    return float((a == 0).sum()) / a.numel()


def near_zero_frac(a: Tensor, tau: float, relative: bool = False, channel_dim: int = 1) -> float:
    """Fraction of entries with ``|a| ≤ τ``; with ``relative`` τ is a fraction of the per-position max."""
    mag = a.abs()
    if relative:
        mag = mag / mag.amax(dim=channel_dim, keepdim=True).clamp_min(torch.finfo(mag.dtype).tiny)
    return float((mag <= tau).sum()) / a.numel()


def l0_per_position(a: Tensor, channel_dim: int = 1, tau: float = 0.0) -> Tensor:
    """Count of channels with ``|a| > τ`` at each position (shape of ``a`` without the channel axis)."""
    return (a.abs() > tau).sum(dim=channel_dim)


def hoyer(x: Tensor, dim: int = -1) -> Tensor:
    """Hoyer sparsity of each vector along ``dim``; NaN for all-zero vectors and for n = 1."""
    x = x.float()
    n = x.shape[dim]
    l1 = x.abs().sum(dim)
    l2 = x.square().sum(dim).sqrt()
    sqrt_n = math.sqrt(n)
    return (sqrt_n - l1 / l2) / (sqrt_n - 1) if n > 1 else torch.full_like(l1, float("nan"))


def gini(x: Tensor, dim: int = -1) -> Tensor:
    """Gini index of each vector along ``dim`` (Hurley–Rickard form); NaN for all-zero vectors."""
    x = x.float().abs().movedim(dim, -1)
    n = x.shape[-1]
    xs, _ = x.sort(dim=-1)
    k = torch.arange(1, n + 1, dtype=x.dtype, device=x.device)
    w = (n - k + 0.5) / n
    return 1 - 2 * (xs * w).sum(-1) / xs.sum(-1)
