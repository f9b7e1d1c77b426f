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
    Undefined (0/0) for an all-zero code, excluded from the mean and counted in ``empty_position_frac``; and
    undefined for n = 1 (a one-channel site): :func:`hoyer` gives NaN and the streaming ``hoyer_mean`` NaN too
    (``null`` in JSON reports), with an empty histogram.
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

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from analysis.collect import SiteCollector
from analysis.errors import AnalysisError
from analysis.runtime import compile_failure, compile_failure_reason
from analysis.sites import Site

DEFAULT_TAU_ABS = 1e-2
DEFAULT_TAU_REL = 1e-2
DENSE_THRESHOLD = 0.9
HIST_EDGES = [float(e) / 2 for e in range(-16, 1)]  # log10 density bins from 1e-8 to 1, half decades


# ----------------------------------------------------------------------------------------------------
# Definitions on one tensor (used by the tests as the reference and by anyone who wants one number).


def zero_frac(a: Tensor) -> float:
    """Fraction of entries exactly 0 (unitless, in [0, 1])."""
    return float((a == 0).sum()) / a.numel()


@dataclass(frozen=True)
class NearZero:
    """Which near-zero fraction a statistic is: ``kind`` "abs" (|a| ≤ τ) or "rel" (|a| ≤ τ·max_c |a| of the same
    code vector), and ``tau``. Its JSON key is ``near_zero_frac(KIND,tau=τ)`` (``…_mean_sites`` in a summary);
    consumers read the kind and τ through :meth:`parse` / :func:`near_zero_stats`, not by slicing key names."""

    kind: str
    tau: float

    @property
    def key(self) -> str:
        return f"near_zero_frac({self.kind},tau={self.tau:g})"

    @classmethod
    def parse(cls, key: str) -> NearZero | None:
        """The statistic a per-site or summary key names (``…_mean_sites`` too), or None for another key."""
        found = _NEAR_ZERO_KEY.fullmatch(key.removesuffix("_mean_sites"))
        return cls(found.group(1), float(found.group(2))) if found else None


_NEAR_ZERO_KEY = re.compile(r"near_zero_frac\((abs|rel),tau=([0-9.eE+-]+)\)")


def near_zero_stats(stats: Mapping[str, Any], kind: str | None = None) -> list[tuple[NearZero, str]]:
    """The near-zero statistics of a result dict (per-site or summary), as ``(NearZero, key)``, optionally only
    those of ``kind``."""
    found = [(nz, k) for k in stats if (nz := NearZero.parse(k)) is not None]
    return [(nz, k) for nz, k in found if kind is None or nz.kind == kind]


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

HOYER_BINS = 20  # histogram of per-position Hoyer values on [0, 1]
GINI_BINS = 50  # histogram of per-position Gini values on [0, 1]
GINI_EVERY = 64  # Gini on 1 code vector in 64, see gini_selection; 0 = off


def gini_selection(sample_idx: Tensor, positions: int, every: int = GINI_EVERY) -> Tensor:
    """Which code vectors enter the Gini statistics: ``[B, S]`` bool, one position in ``every``.

    Sample i contributes the positions p with ``(p + o_i) mod every = 0``, where the offset ``o_i`` is hashed from
    the sample's index in the data. The choice depends only on that index and the position, never on batching,
    so the subsampled Gini statistics do not change with batch size; across samples every position is covered.
    """
    off = ((sample_idx.to(torch.int64) * 2654435761 + 12345) % 4294967296 >> 7) % every
    p = torch.arange(positions, device=sample_idx.device, dtype=torch.int64)
    return (p[None, :] + off[:, None]) % every == 0


def _gini_values(codes: Tensor) -> Tensor:
    """The Gini index of each row of ``codes`` ``[n, C]`` (float32; NaN for an all-zero row).

    No data-dependent shapes inside, so ``torch.compile`` handles any number of rows with one compilation.
    """
    xs, _ = codes.abs().float().sort(dim=-1)
    n = codes.shape[-1]
    w = (n - torch.arange(1, n + 1, device=codes.device, dtype=xs.dtype) + 0.5) / n
    total = xs.sum(-1)
    return torch.where(total > 0, 1 - 2 * (xs * w).sum(-1) / total.clamp_min(1e-30), torch.full_like(total, math.nan))


def _gini_stats(codes: Tensor):
    """Sum, count and [0, 1] histogram of the Gini index of the rows of ``codes`` ``[n, C]`` (all-zero rows skipped)."""
    g = _gini_values(codes)
    ok = ~g.isnan()
    return torch.where(ok, g, torch.zeros_like(g)).sum(dtype=torch.float64), ok.sum(dtype=torch.int64), \
        _hist01(g, GINI_BINS)


def _reductions(x: Tensor, tau_abs: float, tau_rel: float, valid: Tensor | None = None) -> tuple[Tensor, ...]:
    """All sort-free statistics of codes ``x`` laid out ``[B, C, S]`` in one function (fused when compiled), in
    ``_SORT_FREE_KEYS`` order, over the positions where ``valid`` ``[B, S]`` is True (all when None). Excluded
    positions are weighted out, not indexed out, so that the shapes do not depend on the data (one graph)."""
    c = x.shape[1]
    mag = x.abs()
    nz = mag > 0
    # per-position counts (≤ C, exact in float32 below 2**24) in float lanes: compiled, they join the kernel that
    # produces the activation at less cost than int64 lanes (near_abs had been a pass of its own); mobilenetv2_100's
    # whole graph went from 1.71-1.90x to 1.61-1.77x of its compiled forward (benchmarks/bench_analysis.py)
    lanes = torch.float32 if c < 2**24 else torch.int64
    l0 = nz.to(lanes).sum(1).to(torch.int64)
    peak = mag.amax(1, keepdim=True)
    l1 = mag.sum(1, dtype=torch.float32)
    l2 = x.float().square().sum(1).sqrt()
    nonempty = l0 > 0
    sqrt_c = math.sqrt(c)
    h = (sqrt_c - l1 / l2.clamp_min(1e-30)) / max(sqrt_c - 1, 1e-30)
    # empty codes fall outside the histogram; for n = 1 Hoyer is undefined (0/0): no code enters sum or histogram
    counted = nonempty if c > 1 else torch.zeros_like(nonempty)
    empty = ~nonempty
    near_abs, near_rel, fire = mag <= tau_abs, mag <= tau_rel * peak, nz
    if valid is not None:
        keep = valid[:, None, :]
        counted, empty = counted & valid, empty & valid
        near_abs, near_rel, fire = near_abs & keep, near_rel & keep, fire & keep
        l0, l1 = l0 * valid, l1 * valid
    h = torch.where(counted, h, torch.full_like(h, -1.0))
    return (
        l0.sum(dtype=torch.int64),
        near_abs.to(lanes).sum(1).to(torch.int64).sum(),
        near_rel.sum(dtype=torch.int64),
        empty.sum(dtype=torch.int64),
        l0.amax().to(torch.int64),
        torch.where(counted, h, torch.zeros_like(h)).sum(dtype=torch.float64),
        l1.sum(dtype=torch.float64),
        fire.sum((0, 2), dtype=torch.int64),
        _hist01(h, HOYER_BINS),
    )


def _hist01(v: Tensor, bins: int) -> Tensor:
    """Counts of ``v`` in ``bins`` equal bins of [0, 1] (1.0 in the last one; values outside are dropped), int64.

    Written as one broadcast comparison with the bin indices and one sum, so that ``torch.compile`` makes it a
    single reduction kernel (``torch.histc`` would not fuse; one reduction per bin multiplies compile time).
    """
    idx = (v * bins).floor().clamp(min=-1, max=bins - 1)
    idx = torch.where((v >= 0) & (v <= 1), idx, torch.full_like(idx, -1.0)).reshape(-1, 1)
    return (idx == torch.arange(bins, device=v.device, dtype=idx.dtype)).sum(0, dtype=torch.int64)


_SORT_FREE_KEYS = ("nnz", "near_abs", "near_rel", "empty", "l0_max", "hoyer_sum", "l1_sum", "fire", "hoyer_hist")
_GINI_KEYS = ("gini_sum", "gini_count", "gini_hist")


def _accumulate(x: Tensor, tau_abs: float, tau_rel: float, *state: Tensor):
    """The running sums ``state`` (in ``_SORT_FREE_KEYS`` order) updated with the batch ``x`` (one fused call)."""
    new = _reductions(x, tau_abs, tau_rel)
    return tuple(torch.maximum(old, v) if k == "l0_max" else old + v
                 for k, old, v in zip(_SORT_FREE_KEYS, state, new, strict=True))


def _empty_state(channels: int, device) -> dict:
    z = lambda dtype=torch.int64: torch.zeros((), dtype=dtype, device=device)  # noqa: E731
    return {"entries": 0, "positions": 0, "nnz": z(), "near_abs": z(), "near_rel": z(), "empty": z(), "l0_max": z(),
            "hoyer_sum": z(torch.float64), "l1_sum": z(torch.float64),
            "fire": torch.zeros(channels, dtype=torch.int64, device=device),
            "hoyer_hist": torch.zeros(HOYER_BINS, dtype=torch.int64, device=device),
            "gini_sum": z(torch.float64), "gini_count": z(), "gini_hist": torch.zeros(GINI_BINS, dtype=torch.int64,
                                                                                        device=device)}


_COMPILED: dict[str, Callable] = {}


def _fused(fn: Callable, *args):
    """``fn(*args)`` through ``torch.compile`` (one compilation serves all shapes). Where compiling is unavailable
    (:func:`analysis.runtime.compile_failure`: no C++ toolchain, an unsupported backend, …) one warning, and ``fn``
    runs eagerly from then on, with the same numbers; any other error (out of memory, a bug) propagates and the
    compiled path stays."""
    compiled = _COMPILED.get(fn.__name__)
    if compiled is None:
        compiled = _COMPILED[fn.__name__] = torch.compile(fn, dynamic=True)
    try:
        return compiled(*args)
    except Exception as e:
        if not compile_failure(e):
            raise
        logging.getLogger(__name__).warning("compiled sparsity statistics unavailable (%s); using eager",
                                            compile_failure_reason(e))
        _COMPILED[fn.__name__] = fn
        return fn(*args)


def code_view(a: Tensor, channel_dim: int, mask: Tensor | None = None) -> Tensor:
    """``a`` as ``[B, C, S]`` codes (a view when possible); masked positions are dropped (B becomes 1)."""
    if mask is not None:
        return a.movedim(channel_dim, -1)[mask.to(torch.bool)].T.unsqueeze(0)
    cd = channel_dim % a.dim()
    if cd == 1:
        return a.reshape(a.shape[0], a.shape[1], -1)
    if cd == a.dim() - 1:
        return a.reshape(a.shape[0], -1, a.shape[-1]).transpose(1, 2)
    return a.movedim(cd, 1).reshape(a.shape[0], a.shape[cd], -1)


@dataclass
class SparsityStats:
    """Exact running sums for one site; ``update`` per batch, ``result`` at the end.

    Memory is O(C) whatever the number of samples (histograms have fixed bins). All state lives in
    :attr:`state` (tensors on the activations' device, no host sync per batch) so that distributed
    evaluation can all-reduce it. ``fused`` computes the sort-free statistics in one ``torch.compile``d
    function (same numbers; about 2–5× less overhead on CPU, one compilation of ~15 s per process).
    """

    tau_abs: float = DEFAULT_TAU_ABS
    tau_rel: float = DEFAULT_TAU_REL
    fused: bool = False
    gini_every: int = GINI_EVERY
    state: dict[str, Tensor] = field(default_factory=dict)

    # name -> reduction op used when merging partial results
    REDUCE_OPS = {
        "entries": "sum", "nnz": "sum", "near_abs": "sum", "near_rel": "sum", "positions": "sum",
        "empty": "sum", "l0_max": "max", "hoyer_sum": "sum", "l1_sum": "sum", "fire": "sum",
        "hoyer_hist": "sum", "gini_sum": "sum", "gini_count": "sum", "gini_hist": "sum",
    }

    @torch.no_grad()
    def update(self, a: Tensor, channel_dim: int, mask: Tensor | None = None, sample_idx: Tensor | None = None) -> None:
        """Add one batch of activations.

        Args:
            a: activations; ``a.shape[channel_dim]`` is the number of channels C.
            channel_dim: axis of the channels.
            mask: optional bool tensor with the shape of ``a`` minus the channel axis; positions where it
                is False (padding) are left out of every statistic.
            sample_idx: index in the dataset of each sample of the batch (``[B]``); selects the Gini
                subsample (default ``0…B-1``: pass it when feeding several batches).
        """
        if a.dim() < 2:
            raise AnalysisError(f"expected activations with a batch and a channel axis, got shape {tuple(a.shape)}")
        b = a.shape[0]
        if sample_idx is None:
            sample_idx = torch.arange(b, device=a.device)
        run = (lambda fn, *args: _fused(fn, *args)) if self.fused else (lambda fn, *args: fn(*args))
        x = code_view(a, channel_dim)  # [B, C, S]
        st = self.state
        if not st:
            st = self.state = _empty_state(x.shape[1], a.device)
        elif st["fire"].numel() != x.shape[1]:
            raise AnalysisError(f"site changed its number of channels between batches ({st['fire'].numel()} -> "
                                f"{x.shape[1]})")
        if self.gini_every > 0:  # the selection (data-dependent size) is eager; the sort and sums may be compiled
            sel = gini_selection(sample_idx, x.shape[2], self.gini_every)
            if mask is not None:
                sel = sel & mask.to(torch.bool).reshape(b, -1)
            g = run(_gini_stats, x.transpose(1, 2)[sel])
            st["gini_sum"], st["gini_count"], st["gini_hist"] = (st[k] + v for k, v in zip(_GINI_KEYS, g, strict=True))
        if mask is not None:
            x = code_view(a, channel_dim, mask)
        new = run(_accumulate, x, self.tau_abs, self.tau_rel, *(st[k] for k in _SORT_FREE_KEYS))
        st.update(zip(_SORT_FREE_KEYS, new, strict=True))
        st["entries"] += x.numel()  # Python ints until reduce_ / result: no tensor op per batch
        st["positions"] += x.shape[0] * x.shape[2]

    def reduce_(self, fn: Callable[[Tensor, str], Tensor]) -> None:
        """Merge partial states in place, e.g. across processes: ``fn(tensor, op)`` with op 'sum'|'max'."""
        dev = self.state["fire"].device
        for k in sorted(self.state):
            v = self.state[k]
            if isinstance(v, int):
                self.state[k] = int(fn(torch.tensor(v, dtype=torch.int64, device=dev), self.REDUCE_OPS[k]))
            else:
                self.state[k] = fn(v, self.REDUCE_OPS[k])

    def result(self) -> dict:
        """Plain-data summary (JSON-serializable): :meth:`site_result` as JSON. Keys name the definition and
        threshold."""
        return self.site_result().to_json()

    def site_result(self) -> SiteSparsity:
        """The statistics of the data seen so far (see :class:`SiteSparsity` for what each number means)."""
        if not self.state:
            raise AnalysisError("no activations were recorded for this site")
        s: dict[str, Any] = {k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in self.state.items()}
        entries, positions = int(s["entries"]), int(s["positions"])
        zeros = entries - int(s["nnz"])
        fire = s["fire"].double()
        c = fire.numel()
        density = fire / max(positions, 1)
        live = density[density > 0]
        hist = torch.histogram(live.log10().clamp(min=HIST_EDGES[0]), bins=torch.tensor(HIST_EDGES, dtype=torch.float64))
        nonempty = positions - int(s["empty"])
        l0_mean = (entries - zeros) / max(positions, 1)
        return SiteSparsity(
            channels=c,
            positions=positions,
            entries=entries,
            zero_frac=zeros / max(entries, 1),
            near_zero=((NearZero("abs", self.tau_abs), int(s["near_abs"]) / max(entries, 1)),
                       (NearZero("rel", self.tau_rel), int(s["near_rel"]) / max(entries, 1))),
            l0_per_position_mean=l0_mean,
            l0_per_position_max=int(s["l0_max"]),
            l0_per_position_frac=l0_mean / max(c, 1),
            hoyer_mean=float(s["hoyer_sum"]) / nonempty if nonempty and c > 1 else float("nan"),
            hoyer_hist=Histogram(tuple(_edges(HOYER_BINS)), tuple(s["hoyer_hist"].tolist())),
            gini_mean=float(s["gini_sum"]) / int(s["gini_count"]) if int(s["gini_count"]) else float("nan"),
            gini_quantiles=_hist_quantiles(s["gini_hist"], (0.05, 0.25, 0.5, 0.75, 0.95)),
            gini_hist=Histogram(tuple(_edges(GINI_BINS)), tuple(s["gini_hist"].tolist())),
            gini_every=self.gini_every,
            gini_codes=int(s["gini_count"]),
            empty_position_frac=int(s["empty"]) / max(positions, 1),
            l1_per_position_mean=float(s["l1_sum"]) / max(positions, 1),
            dead_units=int((fire == 0).sum()),
            dense_units=int((density > DENSE_THRESHOLD).sum()),
            dead_frac=float((fire == 0).sum()) / max(c, 1),
            dense_frac=float((density > DENSE_THRESHOLD).sum()) / max(c, 1),
            log10_firing_density_hist=Histogram(tuple(HIST_EDGES), tuple(int(x) for x in hist.hist)),
        )


@dataclass(frozen=True)
class Histogram:
    """Counts of values in the bins ``[edges[i], edges[i + 1])`` (the last bin closed); ``len(edges) = bins + 1``.
    The edges are in the unit of the histogrammed value (a Hoyer or Gini index, or log10 of a firing density)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def to_json(self) -> dict[str, list]:
        """``{"edges": [...], "counts": [...]}``."""
        return {"edges": list(self.edges), "counts": list(self.counts)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Histogram:
        """The histogram :meth:`to_json` wrote."""
        return cls(tuple(d["edges"]), tuple(d["counts"]))


@dataclass(frozen=True)
class SiteSparsity:
    """The sparsity of one feature site over the evaluated data (:meth:`SparsityStats.site_result`); every number
    is dimensionless, defined in :mod:`analysis.sparsity`.

    ``channels`` C, ``positions`` (code vectors seen) and ``entries`` (= positions × C) are counts. Fractions in
    [0, 1]: ``zero_frac``, each ``near_zero`` value (``(NearZero, fraction)``: absolute τ first, then relative),
    ``l0_per_position_frac`` (mean l0 / C), ``empty_position_frac`` (all-zero code vectors), ``dead_frac`` and
    ``dense_frac`` (of the C channels). ``l0_per_position_mean``/``_max``: non-zero channels per code vector;
    ``l1_per_position_mean``: mean ‖code‖₁ in activation units. ``hoyer_mean`` (over non-empty codes) and
    ``gini_mean`` (over the Gini subsample: one code in ``gini_every``, ``gini_codes`` of them) ∈ [0, 1], NaN when
    undefined (``null`` in a cleaned report); ``gini_quantiles`` maps ``p5``…``p95`` to quantiles read from
    ``gini_hist``. ``dead_units``/``dense_units``: channels firing at no position / at more than 90 % of them.

    :meth:`to_json` gives the per-site dict of ``metrics.json`` and ``report.json`` (keys in this order);
    :meth:`from_json` reads it back.
    """

    channels: int
    positions: int
    entries: int
    zero_frac: float
    near_zero: tuple[tuple[NearZero, float], ...]
    l0_per_position_mean: float
    l0_per_position_max: int
    l0_per_position_frac: float
    hoyer_mean: float
    hoyer_hist: Histogram
    gini_mean: float
    gini_quantiles: dict[str, float]
    gini_hist: Histogram
    gini_every: int
    gini_codes: int
    empty_position_frac: float
    l1_per_position_mean: float
    dead_units: int
    dense_units: int
    dead_frac: float
    dense_frac: float
    log10_firing_density_hist: Histogram

    def to_json(self) -> dict[str, Any]:
        """The per-site result as plain data; near-zero fractions under their :attr:`NearZero.key`."""
        return {
            "channels": self.channels,
            "positions": self.positions,
            "entries": self.entries,
            "zero_frac": self.zero_frac,
            **{nz.key: v for nz, v in self.near_zero},
            "l0_per_position_mean": self.l0_per_position_mean,
            "l0_per_position_max": self.l0_per_position_max,
            "l0_per_position_frac": self.l0_per_position_frac,
            "hoyer_mean": self.hoyer_mean,
            "hoyer_hist": self.hoyer_hist.to_json(),
            "gini_mean": self.gini_mean,
            "gini_quantiles": dict(self.gini_quantiles),
            "gini_hist": self.gini_hist.to_json(),
            "gini_subsample": {"every": self.gini_every, "codes": self.gini_codes},
            "empty_position_frac": self.empty_position_frac,
            "l1_per_position_mean": self.l1_per_position_mean,
            "dead_units": self.dead_units,
            "dense_units": self.dense_units,
            "dead_frac": self.dead_frac,
            "dense_frac": self.dense_frac,
            "log10_firing_density_hist": self.log10_firing_density_hist.to_json(),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SiteSparsity:
        """The result :meth:`to_json` wrote (values as stored: a cleaned report's ``null`` stays None)."""
        from dataclasses import fields

        typed = ("near_zero", "hoyer_hist", "gini_quantiles", "gini_hist", "gini_every", "gini_codes",
                 "log10_firing_density_hist")
        scalars: dict[str, Any] = {f.name: d[f.name] for f in fields(cls) if f.name not in typed}
        return cls(**scalars, near_zero=tuple((nz, d[k]) for nz, k in near_zero_stats(d)),
                   hoyer_hist=Histogram.from_json(d["hoyer_hist"]), gini_quantiles=dict(d["gini_quantiles"]),
                   gini_hist=Histogram.from_json(d["gini_hist"]), gini_every=d["gini_subsample"]["every"],
                   gini_codes=d["gini_subsample"]["codes"],
                   log10_firing_density_hist=Histogram.from_json(d["log10_firing_density_hist"]))


def _edges(bins: int) -> list[float]:
    return [i / bins for i in range(bins + 1)]


def _hist_quantiles(counts: Tensor, qs: tuple[float, ...]) -> dict[str, float]:
    """Quantiles from a histogram on [0, 1] (linear within a bin; resolution 1/bins)."""
    counts = counts.double()
    total = float(counts.sum())
    if total == 0:
        return {f"p{round(q * 100)}": float("nan") for q in qs}
    cdf = counts.cumsum(0) / total
    bins = counts.numel()
    out = {}
    for q in qs:
        i = int(torch.searchsorted(cdf, torch.tensor(q, dtype=cdf.dtype)))
        i = min(i, bins - 1)
        lo = float(cdf[i - 1]) if i > 0 else 0.0
        frac = (q - lo) / max(float(cdf[i]) - lo, 1e-12)
        out[f"p{round(q * 100)}"] = (i + min(max(frac, 0.0), 1.0)) / bins
    return out


@dataclass(frozen=True)
class SparsitySummary:
    """Model-wide numbers from per-site results (:meth:`of`); the ``summary`` of ``metrics.json`` and ``report.json``.

    ``sites``: how many sites were measured. Fractions in [0, 1]: ``zero_frac_mean_sites`` (each site weighted
    equally), ``zero_frac_all_entries`` (each entry weighted equally: large early feature maps dominate it),
    ``l0_per_position_frac_mean_sites`` (mean over sites of l0 / C), each ``near_zero`` value (``(NearZero,
    fraction)``, mean over sites; JSON key :meth:`near_zero_key`) and, with stages, ``zero_frac_per_stage``
    (stage label → mean ``zero_frac`` of its sites). ``l0_per_position_mean_sites``: non-zero channels per code
    vector, mean over sites. ``dead_units`` / ``dense_units``: channels summed over sites.
    """

    sites: int
    zero_frac_mean_sites: float
    zero_frac_all_entries: float
    l0_per_position_mean_sites: float
    l0_per_position_frac_mean_sites: float
    near_zero: tuple[tuple[NearZero, float], ...]
    dead_units: int
    dense_units: int
    zero_frac_per_stage: dict[str, float] | None = None

    @classmethod
    def of(cls, per_site: Mapping[str, SiteSparsity], stages: Mapping[str, str] | None = None) -> SparsitySummary:
        """The summary of ``per_site`` (site key → result); with ``stages`` (site → stage label, a key ``name@i``
        counts for ``name``) also the mean ``zero_frac`` per stage (sites of no stage under "other")."""
        if not per_site:
            raise AnalysisError("no sites were measured")
        vals = list(per_site.values())
        mean = lambda get: sum(get(v) for v in vals) / len(vals)  # noqa: E731
        near = [dict(v.near_zero) for v in vals]
        per_stage = None
        if stages:
            groups: dict[str, list[float]] = {}
            for name, v in per_site.items():
                groups.setdefault(stages.get(name.split("@")[0], "other"), []).append(v.zero_frac)
            per_stage = {k: sum(g) / len(g) for k, g in groups.items()}
        return cls(
            sites=len(vals),
            zero_frac_mean_sites=mean(lambda v: v.zero_frac),
            zero_frac_all_entries=sum(v.zero_frac * v.entries for v in vals) / sum(v.entries for v in vals),
            l0_per_position_mean_sites=mean(lambda v: v.l0_per_position_mean),
            l0_per_position_frac_mean_sites=mean(lambda v: v.l0_per_position_frac),
            near_zero=tuple((nz, sum(n[nz] for n in near) / len(vals)) for nz, _ in vals[0].near_zero),
            dead_units=sum(v.dead_units for v in vals),
            dense_units=sum(v.dense_units for v in vals),
            zero_frac_per_stage=per_stage,
        )

    @staticmethod
    def near_zero_key(nz: NearZero) -> str:
        """The summary's JSON key of a near-zero mean over sites, ``near_zero_frac(KIND,tau=τ)_mean_sites``."""
        return f"{nz.key}_mean_sites"

    def near_zero_of(self, kind: str) -> tuple[NearZero, float] | None:
        """The first near-zero statistic of ``kind`` ("abs" or "rel") and its mean over sites, or None."""
        return next(((nz, v) for nz, v in self.near_zero if nz.kind == kind), None)

    def to_json(self) -> dict[str, Any]:
        """The summary as plain data (``zero_frac_per_stage`` only when measured with stages)."""
        out: dict[str, Any] = {
            "sites": self.sites,
            "zero_frac_mean_sites": self.zero_frac_mean_sites,
            "zero_frac_all_entries": self.zero_frac_all_entries,
            "l0_per_position_mean_sites": self.l0_per_position_mean_sites,
            "l0_per_position_frac_mean_sites": self.l0_per_position_frac_mean_sites,
            **{self.near_zero_key(nz): v for nz, v in self.near_zero},
            "dead_units": self.dead_units,
            "dense_units": self.dense_units,
        }
        if self.zero_frac_per_stage is not None:
            out["zero_frac_per_stage"] = dict(self.zero_frac_per_stage)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SparsitySummary:
        """The summary :meth:`to_json` wrote (e.g. ``metrics.json``'s ``final.sparsity``); other keys are ignored."""
        per_stage = d.get("zero_frac_per_stage")
        return cls(sites=d["sites"], zero_frac_mean_sites=d["zero_frac_mean_sites"],
                   zero_frac_all_entries=d["zero_frac_all_entries"],
                   l0_per_position_mean_sites=d["l0_per_position_mean_sites"],
                   l0_per_position_frac_mean_sites=d["l0_per_position_frac_mean_sites"],
                   near_zero=tuple((nz, d[k]) for nz, k in near_zero_stats(d)), dead_units=d["dead_units"],
                   dense_units=d["dense_units"], zero_frac_per_stage=dict(per_stage) if per_stage is not None else None)


def summarize(per_site: Mapping[str, Mapping[str, Any]], stages: Mapping[str, str] | None = None) -> dict:
    """Model-wide numbers from per-site results as plain data: :meth:`SparsitySummary.of` on the per-site dicts
    (:meth:`SparsityStats.result`), as JSON.

    ``zero_frac_mean_sites`` weighs every site equally; ``zero_frac_all_entries`` weighs every entry
    equally (large early feature maps dominate it). With ``stages`` (site → stage label) also the mean
    ``zero_frac`` of the sites in each stage.
    """
    return SparsitySummary.of({k: SiteSparsity.from_json(v) for k, v in per_site.items()}, stages).to_json()


class SparsityMeter(SiteCollector):
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
                 tau_rel: float = DEFAULT_TAU_REL, fused: bool = False, gini_every: int = GINI_EVERY):
        super().__init__(model, sites)
        self.tau_abs, self.tau_rel, self.fused, self.gini_every = tau_abs, tau_rel, fused, gini_every
        self.stats: dict[str, SparsityStats] = {}

    def observe(self, key: str, site: Site, out: Tensor) -> None:
        st = self.stats.get(key)
        if st is None:
            st = self.stats[key] = SparsityStats(self.tau_abs, self.tau_rel, self.fused, self.gini_every)
        st.update(out, site.channel_dim(out.dim()), self.mask_for(out), self.sample_idx)

    def reduce_(self, fn: Callable[[Tensor, str], Tensor]) -> None:
        """Merge the partial states of all processes (see :meth:`SparsityStats.reduce_`)."""
        for k in sorted(self.stats):
            self.stats[k].reduce_(fn)

    def results(self) -> dict[str, dict]:
        """Per-site results, in the order the sites first ran."""
        return {k: v.result() for k, v in self.stats.items()}
