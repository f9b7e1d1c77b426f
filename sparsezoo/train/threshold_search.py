"""Threshold search: raise each site's activation threshold as far as validation accuracy allows.

Kurtz et al. (ICML 2020) set FATReLU thresholds per layer with a search that keeps the metric loss under a bound
(SparseML's ``ModuleASOneShootBooster``); this is the same greedy, layer-by-layer search:

1. one validation pass gives the starting top-1 and, per site, a histogram of its positive activations;
2. the accuracy floor is ``top1_before − budget`` (absolute) or ``top1_before · (1 − budget)`` (relative);
3. for each site in the order given, the candidate thresholds are quantiles of that site's positive validation
   activations (measured with the earlier sites' thresholds already set), and a binary search over them keeps the
   highest one whose validation top-1 is still ``≥ floor``; the site keeps it and the next site starts.

Greedy: the floor is fixed before the search, so the first sites may spend the whole budget. The binary search
assumes top-1 falls as ``t`` rises (the booster's assumption); every accepted step was evaluated, so the final
model's validation top-1 is ``≥ floor`` whatever the curve looks like, and budget 0 never loses validation top-1
(it may even rise).

**Validation only.** The search reads data only through the ``evaluate`` callable it is given (a function of the
model returning top-1 on the validation split); it holds no loader and no other split, so a caller that passes a
validation-only ``evaluate`` can be sure no test sample chose a threshold.

Histograms are exact streaming counts over fixed log-spaced bins (100 per decade from 1e-8 to 1e8), so the
candidate grid does not depend on the batch size, and under several processes the counts are summed with
``reduce`` (e.g. ``sparsezoo.train.distributed.dist_reduce`` with ``"sum"``) so every process picks the same grid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from sparsezoo.errors import RecipeError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from sparsezoo.models.thresholds import FATReLU

log = logging.getLogger(__package__)  # each room logs under its own name, which the CLI prints

REALIZATIONS = ("hard", "shift")
QUANTILES = tuple(i / 50 for i in range(1, 50))  # 0.02 … 0.98 of a site's positive activations
BINS_PER_DECADE, LOG10_LOW, LOG10_HIGH = 100, -8, 8

Evaluate = Callable[["nn.Module"], float]  # model → validation top-1 in [0, 1]
Reduce = Callable[["Tensor"], "Tensor"]  # sums a tensor over processes (identity in one process)


@dataclass(frozen=True)
class SiteThreshold:
    """What the search chose at one site.

    Attributes:
        site: module path of the activation.
        threshold: ``t`` chosen, in activation units (0: the site is left as it was).
        positive_frac_below: fraction of the site's positive validation activations below ``t``, measured just
            before its search (the quantile ``t`` realizes).
        zero_frac_before: fraction of exact zeros in the site's output over the validation split before the search
            (every position counted, padding tokens included).
        zero_frac_after: the same after the whole search (every site's threshold set).
        top1_after: validation top-1 once this site's threshold was set (the earlier sites' kept).
        evaluations: validation passes spent on this site.
    """

    site: str
    threshold: float
    positive_frac_below: float
    zero_frac_before: float
    zero_frac_after: float
    top1_after: float
    evaluations: int


@dataclass(frozen=True)
class ThresholdSearch:
    """The search's result (all top-1 figures on the validation split).

    Attributes:
        realization: ``hard`` (FATReLU modules) or ``shift`` (``ReLU(y − t)`` folded into the preceding biases).
        budget: the accuracy budget, absolute top-1 (``relative=False``) or a fraction of ``top1_before``.
        relative: how ``budget`` is read.
        top1_before: validation top-1 before the search.
        floor: the validation top-1 every accepted step kept.
        top1_after: validation top-1 with every threshold set (``≥ floor``).
        evaluations: validation passes in all (1 for the start, then per site).
        sites: per site, in search order.
        split: always ``validation``: the only data the search saw.
    """

    realization: str
    budget: float
    relative: bool
    top1_before: float
    floor: float
    top1_after: float
    evaluations: int
    sites: tuple[SiteThreshold, ...]
    split: str = field(default="validation")

    @property
    def thresholds(self) -> dict[str, float]:
        """Site name → chosen threshold."""
        return {s.site: s.threshold for s in self.sites}

    def to_json(self) -> dict[str, Any]:
        """The dict for ``metrics.json``: every field, ``thresholds`` by site, and the definitions used."""
        from sparsezoo.models.thresholds import FATRELU_DEFINITION, SHIFT_DEFINITION

        out = asdict(self)
        out["sites"] = [asdict(s) for s in self.sites]
        out["thresholds"] = self.thresholds
        out["definition"] = FATRELU_DEFINITION if self.realization == "hard" else SHIFT_DEFINITION
        return out


@dataclass
class SiteCounts:
    """Streaming counts at one site's output: exact zeros, entries, and positive values per log bucket
    (``hist[i]`` counts values in ``[edges[i−1], edges[i])``; ``hist[0]`` those below ``edges[0]``)."""

    zeros: Any = 0
    entries: int = 0
    hist: Any = None

    @property
    def zero_frac(self) -> float:
        return float(self.zeros) / self.entries if self.entries else math.nan


@dataclass
class Measure:
    """One validation pass: top-1 and the counts per site."""

    top1: float
    counts: dict[str, SiteCounts]


def log_edges() -> Tensor:
    """The fixed bucket edges of the histograms: ``10**k / BINS_PER_DECADE`` for k from 1e-8 to 1e8 (float32)."""
    import torch

    n = (LOG10_HIGH - LOG10_LOW) * BINS_PER_DECADE + 1
    return torch.logspace(LOG10_LOW, LOG10_HIGH, n, dtype=torch.float64).float()


class _Recorder:
    """Forward hooks that count each site's zeros (and, for ``histogram`` sites, its positive values by bucket)."""

    def __init__(self, modules: Mapping[str, nn.Module], histogram: Collection[str], edges: Tensor):
        self.modules, self.histogram, self.edges = modules, set(histogram), edges
        self.counts = {n: SiteCounts() for n in modules}
        self.handles: list = []
        self.on_device: dict[Any, Tensor] = {}  # the edges, copied once per device

    def __enter__(self) -> _Recorder:
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in self.modules.items()]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()

    def _hook(self, name: str):
        import torch

        def hook(module: nn.Module, args: tuple, out: Any) -> None:
            if not isinstance(out, torch.Tensor):
                return
            y, c = out.detach(), self.counts[name]
            c.zeros = c.zeros + (y == 0).sum()
            c.entries += y.numel()
            if name in self.histogram:
                if y.device not in self.on_device:
                    self.on_device[y.device] = self.edges.to(y.device)
                edges = self.on_device[y.device]
                idx = torch.bucketize(y[y > 0].float(), edges, right=True)
                found = torch.bincount(idx, minlength=edges.numel() + 1)
                c.hist = found if c.hist is None else c.hist + found

        return hook

    def finish(self, reduce: Reduce | None) -> dict[str, SiteCounts]:
        import torch

        out = {}
        for n, c in self.counts.items():
            zeros = torch.as_tensor(c.zeros, dtype=torch.long)
            entries = torch.tensor(c.entries, dtype=torch.long, device=zeros.device)
            hist = c.hist
            if hist is None and n in self.histogram:  # no batch reached this process
                hist = torch.zeros(self.edges.numel() + 1, dtype=torch.long, device=zeros.device)
            if reduce is not None:
                zeros, entries = reduce(zeros), reduce(entries)
                hist = reduce(hist) if hist is not None else None
            out[n] = SiteCounts(int(zeros), int(entries), hist.cpu() if hist is not None else None)
        return out


def threshold_grid(hist: Tensor, edges: Tensor, quantiles: Sequence[float], start: float = 0.0
                   ) -> list[tuple[float, float]]:
    """Candidate thresholds from a site's histogram of positive values: ``(t, fraction of positives below t)``.

    For each quantile q, ``t`` is the highest bucket edge with at most a fraction q of the positives below it
    (so it zeroes at most q of them on the measured data). The list starts with ``(start, 0.0)``, the site as it
    is, and holds only ``t > start``, increasing and without repeats.
    """
    import torch

    cum = hist.double().cumsum(0)[:-1]  # cum[i]: positives below edges[i]
    n = float(hist.sum())
    grid = {start: 0.0}
    if n > 0:
        for q in quantiles:
            i = int(torch.searchsorted(cum, torch.tensor([q * n], dtype=torch.float64), right=True)[0]) - 1
            if i >= 0 and float(edges[i]) > start:
                grid.setdefault(float(edges[i]), float(cum[i]) / n)
    return sorted(grid.items())


def accuracy_floor(top1: float, budget: float, relative: bool) -> float:
    """The lowest validation top-1 the search accepts: ``top1 − budget``, or ``top1 · (1 − budget)`` if relative."""
    return top1 * (1.0 - budget) if relative else top1 - budget


class _Hard:
    """FATReLU at every site (ReLU/ReLU6 become FATReLU(0), the same function); ``set`` writes its threshold."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        from sparsezoo.models.thresholds import FATReLU, install_fatrelu

        fresh = {n: 0.0 for n in names if not isinstance(model.get_submodule(n), FATReLU)}
        install_fatrelu(model, fresh)
        self.fat: dict[str, FATReLU] = {n: cast("FATReLU", model.get_submodule(n)) for n in names}
        self.modules: dict[str, nn.Module] = dict(self.fat)
        for n, m in self.fat.items():
            if m.threshold.dim() != 0:
                raise RecipeError(f"the threshold search sets one threshold per layer; {n!r} has one per channel")

    def start(self, name: str) -> float:
        return float(self.fat[name].threshold)

    def set(self, name: str, t: float) -> None:
        self.fat[name].threshold.fill_(t)


class _Shift:
    """``ReLU(y − t)`` folded into each site's preceding bias; ``set`` writes ``bias₀ − t``."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        from sparsezoo.models.thresholds import shift_target

        self.modules: dict[str, nn.Module] = {n: model.get_submodule(n) for n in names}
        self.bias = {n: shift_target(model, n)[1] for n in names}
        self.original = {n: b.detach().clone() for n, b in self.bias.items()}

    def start(self, name: str) -> float:
        return 0.0

    def set(self, name: str, t: float) -> None:
        import torch

        with torch.no_grad():
            self.bias[name].copy_(self.original[name] - t)


def _site_names(sites: Sequence[Any]) -> list[str]:
    names = [s if isinstance(s, str) else s.name for s in sites]
    if not names or len(set(names)) != len(names):
        raise RecipeError(f"the threshold search needs distinct sites, got {names}")
    return names


def _check(budget: float, relative: bool, realization: str, quantiles: Sequence[float]) -> None:
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget >= 0):
        raise RecipeError(f"the threshold budget must be a finite number >= 0, got {budget!r}")
    if relative and budget >= 1:
        raise RecipeError(f"a relative threshold budget is a fraction below 1, got {budget:g}")
    if realization not in REALIZATIONS:
        raise RecipeError(f"unknown threshold realization {realization!r} (known: {', '.join(REALIZATIONS)})")
    if not quantiles or any(not 0 < q < 1 for q in quantiles):
        raise RecipeError(f"threshold quantiles must lie in (0, 1), got {list(quantiles)}")


def _measure(model: nn.Module, evaluate: Evaluate, modules: Mapping[str, nn.Module], histogram: Collection[str],
             edges: Tensor, reduce: Reduce | None) -> Measure:
    import torch

    with _Recorder(modules, histogram, edges) as rec, torch.no_grad():
        top1 = float(evaluate(model))
    if not 0.0 <= top1 <= 1.0:
        raise ValueError(f"evaluate(model) must return a top-1 accuracy in [0, 1], got {top1}")
    return Measure(top1, rec.finish(reduce))


def _search_site(name: str, grid: list[tuple[float, float]], realizer: _Hard | _Shift, measure: Callable[[], Measure],
                 floor: float, current: Measure) -> tuple[int, Measure, int]:
    """Binary search over ``grid`` (index 0 = the site as it is, accepted) for the highest index whose validation
    top-1 is ``≥ floor``; leaves the site at it. Returns (index, its measure, validation passes spent)."""
    lo, hi, best, spent = 0, len(grid) - 1, current, 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        realizer.set(name, grid[mid][0])
        m = measure()
        spent += 1
        if m.top1 >= floor:
            lo, best = mid, m
        else:
            hi = mid - 1
    realizer.set(name, grid[lo][0])
    return lo, best, spent


def search_thresholds(model: nn.Module, sites: Sequence[Any], evaluate: Evaluate, *, budget: float = 0.005,
                      relative: bool = False, realization: str = "hard", quantiles: Sequence[float] = QUANTILES,
                      reduce: Reduce | None = None) -> ThresholdSearch:
    """Set each site's threshold, in the order given, as high as validation top-1 allows (see the module doc).

    Args:
        model: the model; changed in place (``hard``: FATReLUs installed at the sites; ``shift``: biases folded).
        sites: site names (module paths) or :class:`analysis.sites.Site` objects of ReLU / ReLU6 / FATReLU
            activations, searched in this order (module order is the booster's).
        evaluate: ``evaluate(model) -> top-1`` on the **validation** split; it must run ``model`` (or a wrapper
            around it) forward, deterministically. It is the only data the search sees.
        budget: the top-1 the search may spend: absolute (0.005 = half a point) or, if ``relative``, a fraction of
            the starting top-1. 0 never lets validation top-1 fall.
        realization: ``hard`` (FATReLU, values above t unchanged) or ``shift`` (``ReLU(y − t)`` folded into the
            preceding bias, loadable by plain timm / transformers).
        quantiles: the candidate grid, as quantiles of each site's positive validation activations.
        reduce: sums a tensor over processes (None in one process).

    Raises:
        RecipeError: a negative budget, an unknown realization, sites that are not thresholdable.
    """
    _check(budget, relative, realization, quantiles)
    names = _site_names(sites)
    realizer = _Hard(model, names) if realization == "hard" else _Shift(model, names)
    edges = log_edges()

    def measure(histogram: Collection[str]) -> Measure:
        return _measure(model, evaluate, realizer.modules, histogram, edges, reduce)

    start = current = measure(names)
    floor, rows, total = accuracy_floor(start.top1, budget, relative), [], 1
    for i, name in enumerate(names):
        grid = threshold_grid(current.counts[name].hist, edges, quantiles, realizer.start(name))
        k, current, spent = _search_site(name, grid, realizer, partial(measure, names[i + 1:]), floor, current)
        total += spent
        rows.append((name, *grid[k], current.top1, spent))
        log.info("threshold %s: t=%.4g (%.0f%% of its positives below), validation top-1 %.4f (floor %.4f)",
                 name, grid[k][0], 100 * grid[k][1], current.top1, floor)
    result = tuple(SiteThreshold(site=n, threshold=t, positive_frac_below=frac,
                                 zero_frac_before=start.counts[n].zero_frac, zero_frac_after=current.counts[n].zero_frac,
                                 top1_after=top1, evaluations=spent) for n, t, frac, top1, spent in rows)
    return ThresholdSearch(realization=realization, budget=float(budget), relative=relative, top1_before=start.top1,
                           floor=floor, top1_after=current.top1, evaluations=total, sites=result)
