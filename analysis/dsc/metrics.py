"""Error and support metrics of estimated codes, the fitted geometric rate and its bootstrap interval.

Per depth K (all dimensionless; pooled sums over the test samples, so they are exact streaming reductions):

``nmse``            ``Σ_b ‖Γ̂_b − Γ_b‖² / Σ_b ‖Γ_b‖²`` of the deepest code Γ_J (``nmse_layers``: every layer)
``rel_err``         ``√nmse``: the relative ℓ2 error whose decay with K is fitted
``precision``       ``Σ|Ŝ ∩ S| / Σ|Ŝ|`` with ``Ŝ = {i : Γ̂_i > tol}``, ``S = {i : Γ_i ≠ 0}`` (1 when nothing is selected)
``recall``          ``Σ|Ŝ ∩ S| / Σ|S|``
``exact_support``   fraction of samples with ``Ŝ = S``
``false_pos``       mean ``|Ŝ \\ S|`` per sample

``tol`` is :data:`SUPPORT_TOL` times the largest code amplitude: ReLU networks output exact zeros, and this
keeps a smooth activation's tiny positive tail from counting as a false positive.

**Rate.** ``floor`` is ``rel_err`` at the deepest K (an overestimate where the error is still decaying there,
which biases ρ̂ low by ~0.1 % at ρ = 0.9 and K = 64). The fit uses the depths where ``rel_err ≥ 10·floor`` and
``rel_err ≥ 1e-12`` (float64 round-off of the codes is ~1e-16): ``log(rel_err_K − floor) = a + K·log ρ̂`` by
least squares, ``R²`` of that line. The predicted rate is ``(2s − 1)μ``. The 95 % interval resamples the test
samples with replacement (seeded) and refits on the same depths (percentiles 2.5 and 97.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

SUPPORT_TOL = 1e-6
FLOOR_FACTOR = 10.0
ROUNDOFF = 1e-12
MIN_FIT_POINTS = 3


def per_sample(est: Tensor, true: Tensor, amplitude_max: float) -> dict[str, Tensor]:
    """Per-sample sums for one depth: squared error, squared norm, support counts ([B] each, float64)."""
    sel = est > SUPPORT_TOL * amplitude_max
    sup = true != 0
    return {"sq_err": ((est - true) ** 2).sum(1).double().cpu(), "sq_norm": (true**2).sum(1).double().cpu(),
            "tp": (sel & sup).sum(1).double().cpu(), "n_sel": sel.sum(1).double().cpu(), "n_true": sup.sum(1).double().cpu(),
            "exact": (sel == sup).all(1).double().cpu()}


def summarize(ps: dict[str, Tensor]) -> dict[str, float]:
    """Pooled metrics (module docstring) from :func:`per_sample` output."""
    nmse = float(ps["sq_err"].sum() / ps["sq_norm"].sum())
    n_sel = float(ps["n_sel"].sum())
    return {"nmse": nmse, "rel_err": math.sqrt(nmse), "precision": float(ps["tp"].sum()) / n_sel if n_sel else 1.0,
            "recall": float(ps["tp"].sum() / ps["n_true"].sum()), "exact_support": float(ps["exact"].mean()),
            "false_pos": float((ps["n_sel"] - ps["tp"]).mean())}


def _fit(depths: Tensor, err: Tensor, floor: Tensor) -> tuple[Tensor, Tensor]:
    """Least-squares slope of ``log(err − floor)`` vs depth (last dim) and R²; batched over leading dims."""
    y = torch.log((err - floor[..., None]).clamp_min(1e-300))
    x = depths - depths.mean()
    slope = ((y - y.mean(-1, keepdim=True)) * x).sum(-1) / (x**2).sum()
    resid = y - y.mean(-1, keepdim=True) - slope[..., None] * x
    ss_tot = ((y - y.mean(-1, keepdim=True)) ** 2).sum(-1)
    r2 = torch.where(ss_tot > 0, 1 - (resid**2).sum(-1) / ss_tot.clamp_min(1e-300), torch.ones_like(ss_tot))
    return slope, r2


def fit_rate(depths: Sequence[int], sq_err: Tensor, sq_norm: Tensor, bootstrap: int = 200, seed: int = 0) -> dict:
    """Geometric rate of ``rel_err`` vs K from per-sample ``sq_err`` [B, len(depths)] and ``sq_norm`` [B].

    Returns ``rho_hat`` (per unrolled step), ``ci95``, ``r2``, ``fit_depths``, ``floor_rel_err``, ``floor_nmse``;
    ``rho_hat`` is None when fewer than :data:`MIN_FIT_POINTS` depths lie above the floor.
    """
    err = (sq_err.sum(0) / sq_norm.sum()).sqrt()
    floor = err[-1]
    keep = (err >= FLOOR_FACTOR * floor) & (err >= ROUNDOFF)
    out = {"floor_rel_err": float(floor), "floor_nmse": float(floor**2),
           "fit_depths": [d for d, k in zip(depths, keep.tolist(), strict=True) if k], "rho_hat": None, "ci95": None, "r2": None}
    if int(keep.sum()) < MIN_FIT_POINTS:
        return out
    ks = torch.tensor(depths, dtype=torch.float64)[keep]
    slope, r2 = _fit(ks, err[keep], floor)
    g = torch.Generator().manual_seed(seed)
    counts = torch.multinomial(torch.ones(sq_err.shape[0], dtype=torch.float64), sq_err.shape[0] * bootstrap,
                               replacement=True, generator=g).view(bootstrap, -1)
    w = torch.zeros(bootstrap, sq_err.shape[0], dtype=torch.float64)
    w.scatter_add_(1, counts, torch.ones_like(counts, dtype=torch.float64))  # w[r, b]: copies of sample b in resample r
    boot = ((w @ sq_err) / (w @ sq_norm)[:, None]).sqrt()  # [bootstrap, len(depths)]
    bslope, _ = _fit(ks, boot[:, keep], boot[:, -1])
    lo, hi = torch.quantile(bslope.exp(), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    out.update(rho_hat=math.exp(float(slope)), ci95=[lo, hi], r2=float(r2))
    return out
