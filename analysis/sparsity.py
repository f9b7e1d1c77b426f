"""Sparsity of feature maps: the definitions, and exact streaming reductions over a dataset.

Every measure here is dimensionless. Activations at a site have shape ``[B, C, H, W]`` (conv),
``[B, T, C]`` (tokens) or ``[B, C]``; the *code at a position* is the channel vector at one (b, h, w)
or (b, t), of length ``n = C``. The field uses several incompatible sparsity measures, so every number
is reported under the name of its definition:

``zero_frac``
    fraction of entries exactly 0.  ∈ [0, 1].
``near_zero_frac(abs,τ)`` / ``near_zero_frac(rel,τ)``
    fraction of entries with ``|a| ≤ τ`` (absolute), or ``|a| ≤ τ · max_c |a[b, c, pos]|`` (relative to the
    largest magnitude in the same code vector). Needed for GELU/SiLU nets, where exact zeros are rare.
``l0_per_position``
    number of non-zero channels in each code vector (``|a| > τ`` with τ = 0 by default); mean and max
    over positions, and the mean as a fraction of C. SAE-style "L0".
``hoyer``
    ``(√n − ‖x‖₁/‖x‖₂) / (√n − 1)`` per code vector ∈ [0, 1]: 1 = one non-zero, 0 = all equal.
    Undefined for an all-zero code; those are excluded from the mean and counted in ``empty_position_frac``.
``gini``
    ``1 − 2 Σ_k (x_(k)/‖x‖₁)·(n − k + ½)/n`` with |x| sorted ascending (k = 1…n); 0 for a constant vector,
    ``1 − 1/n`` for a one-hot one (Hurley & Rickard 2009).
``dead`` / ``dense`` units
    channels that are non-zero at no evaluated position / at more than 90 % of them; with the histogram
    of ``log10(firing density)`` over the live channels (density = fraction of positions where it fires).

:class:`SparsityStats` keeps exact sums and counts (integers in int64, real sums in float64), so a
dataset-level result does not depend on how the data was batched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from analysis.errors import AnalysisError
from analysis.sites import Site

DEFAULT_TAU_ABS = 1e-2
DEFAULT_TAU_REL = 1e-2
DENSE_THRESHOLD = 0.9
HIST_EDGES = [float(e) / 2 for e in range(-16, 1)]  # log10 density bins from 1e-8 to 1, half decades


def _positions_first(a: Tensor, channel_dim: int) -> Tensor:
    """View ``a`` as ``[P, C]``: one row per position."""
    return a.movedim(channel_dim, -1).reshape(-1, a.shape[channel_dim])


# ----------------------------------------------------------------------------------------------------
# Definitions on one tensor (used by the tests as the reference and by anyone who wants one number).


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


# ----------------------------------------------------------------------------------------------------
# Streaming accumulation.


@dataclass
class SparsityStats:
    """Exact running sums for one site; ``update`` per batch, ``result`` at the end.

    Memory is O(C) whatever the number of samples. All state lives in :attr:`state` (tensors on the
    activations' device, no host sync per batch) so that distributed evaluation can all-reduce it.
    """

    tau_abs: float = DEFAULT_TAU_ABS
    tau_rel: float = DEFAULT_TAU_REL
    state: dict[str, Tensor] = field(default_factory=dict)

    # name -> reduction op used when merging partial results
    REDUCE_OPS = {
        "entries": "sum", "zeros": "sum", "near_abs": "sum", "near_rel": "sum", "positions": "sum",
        "empty": "sum", "l0_max": "max", "hoyer_sum": "sum", "l1_sum": "sum", "fire": "sum",
    }

    @torch.no_grad()
    def update(self, a: Tensor, channel_dim: int, mask: Tensor | None = None) -> None:
        """Add one batch of activations.

        Args:
            a: activations; ``a.shape[channel_dim]`` is the number of channels C.
            channel_dim: axis of the channels.
            mask: optional bool tensor with the shape of ``a`` minus the channel axis; positions where it
                is False (padding) are left out of every statistic.
        """
        if a.dim() < 2:
            raise AnalysisError(f"expected activations with a batch and a channel axis, got shape {tuple(a.shape)}")
        if mask is not None:
            a = a.movedim(channel_dim, -1)[mask.to(torch.bool)]
            channel_dim = -1
        c = a.shape[channel_dim]
        mag = a.abs()
        nz = mag > 0
        l0 = nz.sum(dim=channel_dim)
        peak = mag.amax(dim=channel_dim, keepdim=True)
        l1 = mag.sum(dim=channel_dim, dtype=torch.float32)
        l2 = a.float().square().sum(dim=channel_dim).sqrt()
        nonempty = l0 > 0
        if c > 1:
            h = (math.sqrt(c) - l1 / l2.clamp_min(1e-30)) / (math.sqrt(c) - 1)
            hoyer_sum = torch.where(nonempty, h, torch.zeros_like(h)).sum(dtype=torch.float64)
        else:
            hoyer_sum = torch.zeros((), dtype=torch.float64, device=a.device)
        reduce_dims = [d for d in range(a.dim()) if d != channel_dim % a.dim()]
        batch = {
            "entries": torch.tensor(a.numel(), dtype=torch.int64, device=a.device),
            "zeros": a.numel() - l0.sum(dtype=torch.int64),
            "near_abs": (mag <= self.tau_abs).sum(dtype=torch.int64),
            "near_rel": (mag <= self.tau_rel * peak).sum(dtype=torch.int64),
            "positions": torch.tensor(l0.numel(), dtype=torch.int64, device=a.device),
            "empty": (~nonempty).sum(dtype=torch.int64),
            "l0_max": l0.max().to(torch.int64) if l0.numel() else torch.zeros((), dtype=torch.int64, device=a.device),
            "hoyer_sum": hoyer_sum,
            "l1_sum": l1.sum(dtype=torch.float64),
            "fire": nz.sum(dim=reduce_dims, dtype=torch.int64) if reduce_dims else nz.to(torch.int64),
        }
        if not self.state:
            self.state = batch
            return
        if self.state["fire"].shape != batch["fire"].shape:
            raise AnalysisError(
                f"site changed its number of channels between batches ({self.state['fire'].numel()} -> {c})"
            )
        for k, v in batch.items():
            self.state[k] = torch.maximum(self.state[k], v) if self.REDUCE_OPS[k] == "max" else self.state[k] + v

    def reduce_(self, fn: Callable[[Tensor, str], Tensor]) -> None:
        """Merge partial states in place, e.g. across processes: ``fn(tensor, op)`` with op 'sum'|'max'."""
        for k in sorted(self.state):
            self.state[k] = fn(self.state[k], self.REDUCE_OPS[k])

    def result(self) -> dict:
        """Plain-data summary (JSON-serializable). Keys name the definition and threshold."""
        if not self.state:
            raise AnalysisError("no activations were recorded for this site")
        s = {k: v.detach().cpu() for k, v in self.state.items()}
        entries, positions = int(s["entries"]), int(s["positions"])
        fire = s["fire"].double()
        c = fire.numel()
        density = fire / max(positions, 1)
        live = density[density > 0]
        hist = torch.histogram(live.log10().clamp(min=HIST_EDGES[0]), bins=torch.tensor(HIST_EDGES, dtype=torch.float64))
        nonempty = positions - int(s["empty"])
        l0_mean = (entries - int(s["zeros"])) / max(positions, 1)
        return {
            "channels": c,
            "positions": positions,
            "entries": entries,
            "zero_frac": int(s["zeros"]) / max(entries, 1),
            f"near_zero_frac(abs,tau={self.tau_abs:g})": int(s["near_abs"]) / max(entries, 1),
            f"near_zero_frac(rel,tau={self.tau_rel:g})": int(s["near_rel"]) / max(entries, 1),
            "l0_per_position_mean": l0_mean,
            "l0_per_position_max": int(s["l0_max"]),
            "l0_per_position_frac": l0_mean / max(c, 1),
            "hoyer_mean": float(s["hoyer_sum"]) / nonempty if nonempty else float("nan"),
            "empty_position_frac": int(s["empty"]) / max(positions, 1),
            "l1_per_position_mean": float(s["l1_sum"]) / max(positions, 1),
            "dead_units": int((fire == 0).sum()),
            "dense_units": int((density > DENSE_THRESHOLD).sum()),
            "dead_frac": float((fire == 0).sum()) / max(c, 1),
            "dense_frac": float((density > DENSE_THRESHOLD).sum()) / max(c, 1),
            "log10_firing_density_hist": {"edges": HIST_EDGES, "counts": [int(x) for x in hist.hist]},
        }


def summarize(per_site: dict[str, dict], stages: dict[str, str] | None = None) -> dict:
    """Model-wide numbers from per-site results: unweighted means over sites, and over all entries.

    ``zero_frac_mean_sites`` weighs every site equally; ``zero_frac_all_entries`` weighs every entry
    equally (large early feature maps dominate it). With ``stages`` (site → stage label) also the mean
    ``zero_frac`` of the sites in each stage.
    """
    if not per_site:
        raise AnalysisError("no sites were measured")
    vals = list(per_site.values())
    mean = lambda key: sum(v[key] for v in vals) / len(vals)  # noqa: E731
    out = {
        "sites": len(vals),
        "zero_frac_mean_sites": mean("zero_frac"),
        "zero_frac_all_entries": sum(v["zero_frac"] * v["entries"] for v in vals) / sum(v["entries"] for v in vals),
        "l0_per_position_mean_sites": mean("l0_per_position_mean"),
        "l0_per_position_frac_mean_sites": mean("l0_per_position_frac"),
        "dead_units": sum(v["dead_units"] for v in vals),
        "dense_units": sum(v["dense_units"] for v in vals),
    }
    if stages:
        groups: dict[str, list[float]] = {}
        for name, v in per_site.items():
            groups.setdefault(stages.get(name.split("@")[0], "other"), []).append(v["zero_frac"])
        out["zero_frac_per_stage"] = {k: sum(g) / len(g) for k, g in groups.items()}
    return out


class SparsityMeter:
    """Records :class:`SparsityStats` for every site during forward passes of ``model``.

    A module that runs several times per forward (a reused ``ReLU``) gets one entry per call:
    ``name``, ``name@1``, ``name@2``, …

    Example:
        >>> with SparsityMeter(model, find_sites(model)) as meter, torch.no_grad():
        ...     for x, _ in loader:
        ...         model(x)
        >>> meter.results()["layer1.0.act1"]["zero_frac"]
    """

    def __init__(self, model: nn.Module, sites: Iterable[Site], tau_abs: float = DEFAULT_TAU_ABS,
                 tau_rel: float = DEFAULT_TAU_REL):
        self.model = model
        self.sites = list(sites)
        self.tau_abs, self.tau_rel = tau_abs, tau_rel
        self.stats: dict[str, SparsityStats] = {}
        self.position_mask: Tensor | None = None  # set per batch to exclude padded positions
        self._calls: dict[str, int] = {}
        self._handles: list = []

    def _hook(self, site: Site):
        def hook(module, args, out):
            if not isinstance(out, Tensor):
                return
            k = self._calls.get(site.name, 0)
            self._calls[site.name] = k + 1
            key = site.name if k == 0 else f"{site.name}@{k}"
            st = self.stats.get(key)
            if st is None:
                st = self.stats[key] = SparsityStats(self.tau_abs, self.tau_rel)
            mask = self.position_mask
            if mask is not None and tuple(mask.shape) != tuple(out.shape[:-1]):
                mask = None  # mask applies to token sites [B, T, C] only
            st.update(out.detach(), site.channel_dim(out.dim()), mask)

        return hook

    def attach(self) -> SparsityMeter:
        self._handles.append(self.model.register_forward_pre_hook(lambda m, a: self._calls.clear()))
        self._handles += [s.module.register_forward_hook(self._hook(s)) for s in self.sites]
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> SparsityMeter:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def reduce_(self, fn: Callable[[Tensor, str], Tensor]) -> None:
        """Merge the partial states of all processes (see :meth:`SparsityStats.reduce_`)."""
        for k in sorted(self.stats):
            self.stats[k].reduce_(fn)

    def results(self) -> dict[str, dict]:
        """Per-site results, in the order the sites first ran."""
        return {k: v.result() for k, v in self.stats.items()}
