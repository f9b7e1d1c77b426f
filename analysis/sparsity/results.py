"""The typed results of the sparsity measures: one site's (:class:`SiteSparsity`), the model's
(:class:`SparsitySummary`), their histograms, and the name of each near-zero statistic (:class:`NearZero`).

Their JSON forms (the per-site dicts and the ``summary`` of ``metrics.json`` and ``report.json``) are derived from
the fields by :mod:`analysis.jsonform`; the only special forms are said in the fields' metadata: the near-zero
fractions stored under keys that name their kind and τ, and the Gini subsample's two numbers in one object.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from analysis.errors import AnalysisError
from analysis.jsonform import Codec, JsonForm, json_meta

MEAN_SITES = "_mean_sites"  # the suffix of a summary's key: a mean over sites


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
        found = _NEAR_ZERO_KEY.fullmatch(key.removesuffix(MEAN_SITES))
        return cls(found.group(1), float(found.group(2))) if found else None


_NEAR_ZERO_KEY = re.compile(r"near_zero_frac\((abs|rel),tau=([0-9.eE+-]+)\)")


def near_zero_stats(stats: Mapping[str, Any], kind: str | None = None) -> list[tuple[NearZero, str]]:
    """The near-zero statistics of a result dict (per-site or summary), as ``(NearZero, key)``, optionally only
    those of ``kind``."""
    found = [(nz, k) for k in stats if (nz := NearZero.parse(k)) is not None]
    return [(nz, k) for nz, k in found if kind is None or nz.kind == kind]


NearZeroValues = tuple[tuple[NearZero, float], ...]  # (statistic, fraction) pairs, absolute τ first


def near_zero_keys(suffix: str = "") -> Codec:
    """The JSON form of ``(NearZero, fraction)`` pairs: one key per statistic, :attr:`NearZero.key` + ``suffix``,
    written where the field stands; read back from every key that names a near-zero statistic."""
    return Codec(dump=lambda owner, pairs: {nz.key + suffix: v for nz, v in pairs},
                 load=lambda d: tuple((nz, d[k]) for nz, k in near_zero_stats(d)))


@dataclass(frozen=True)
class Histogram(JsonForm):
    """Counts of values in the bins ``[edges[i], edges[i + 1])`` (the last bin closed); ``len(edges) = bins + 1``.
    The edges are in the unit of the histogrammed value (a Hoyer or Gini index, or log10 of a firing density).
    JSON: ``{"edges": [...], "counts": [...]}``."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True)
class SiteSparsity(JsonForm):
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

    :meth:`to_json` gives the per-site dict of ``metrics.json`` and ``report.json`` (keys in field order; the
    near-zero fractions under their :attr:`NearZero.key`, ``gini_every``/``gini_codes`` as
    ``"gini_subsample": {"every", "codes"}``); :meth:`from_json` reads it back (values as stored: a cleaned
    report's ``null`` stays None).
    """

    channels: int
    positions: int
    entries: int
    zero_frac: float
    near_zero: NearZeroValues = field(metadata=json_meta(codec=near_zero_keys()))
    l0_per_position_mean: float
    l0_per_position_max: int
    l0_per_position_frac: float
    hoyer_mean: float
    hoyer_hist: Histogram
    gini_mean: float
    gini_quantiles: dict[str, float]
    gini_hist: Histogram
    gini_every: int = field(metadata=json_meta(key=("gini_subsample", "every")))
    gini_codes: int = field(metadata=json_meta(key=("gini_subsample", "codes")))
    empty_position_frac: float
    l1_per_position_mean: float
    dead_units: int
    dense_units: int
    dead_frac: float
    dense_frac: float
    log10_firing_density_hist: Histogram


@dataclass(frozen=True)
class SparsitySummary(JsonForm):
    """Model-wide numbers from per-site results (:meth:`of`); the ``summary`` of ``metrics.json`` and ``report.json``.

    ``sites``: how many sites were measured. Fractions in [0, 1]: ``zero_frac_mean_sites`` (each site weighted
    equally), ``zero_frac_all_entries`` (each entry weighted equally: large early feature maps dominate it),
    ``l0_per_position_frac_mean_sites`` (mean over sites of l0 / C), each ``near_zero`` value (``(NearZero,
    fraction)``, mean over sites; JSON key :meth:`near_zero_key`) and, with stages, ``zero_frac_per_stage``
    (stage label → mean ``zero_frac`` of its sites; left out of the JSON without stages).
    ``l0_per_position_mean_sites``: non-zero channels per code vector, mean over sites. ``dead_units`` /
    ``dense_units``: channels summed over sites. :meth:`from_json` ignores keys it does not know.
    """

    sites: int
    zero_frac_mean_sites: float
    zero_frac_all_entries: float
    l0_per_position_mean_sites: float
    l0_per_position_frac_mean_sites: float
    near_zero: NearZeroValues = field(metadata=json_meta(codec=near_zero_keys(MEAN_SITES)))
    dead_units: int
    dense_units: int
    zero_frac_per_stage: dict[str, float] | None = field(default=None, metadata=json_meta(omit_none=True))

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
        return nz.key + MEAN_SITES

    def near_zero_of(self, kind: str) -> tuple[NearZero, float] | None:
        """The first near-zero statistic of ``kind`` ("abs" or "rel") and its mean over sites, or None."""
        return next(((nz, v) for nz, v in self.near_zero if nz.kind == kind), None)


def summarize(per_site: Mapping[str, Mapping[str, Any]], stages: Mapping[str, str] | None = None) -> dict:
    """Model-wide numbers from stored per-site results (plain data, :meth:`SiteSparsity.to_json`) as plain data:
    :meth:`SparsitySummary.of` read and written through the typed results. Holding a meter, take its typed
    results instead: ``SparsitySummary.of(meter.site_results(), stages).to_json()`` gives the same.

    ``zero_frac_mean_sites`` weighs every site equally; ``zero_frac_all_entries`` weighs every entry
    equally (large early feature maps dominate it). With ``stages`` (site → stage label) also the mean
    ``zero_frac`` of the sites in each stage.
    """
    return SparsitySummary.of({k: SiteSparsity.from_json(v) for k, v in per_site.items()}, stages).to_json()
