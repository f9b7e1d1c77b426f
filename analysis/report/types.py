"""The typed sections of ``report.json``: :class:`Report` holds the :class:`ModelEntry` of each model (its
:class:`~analysis.pipeline.Headline` and :class:`Analysis`), the :class:`HeadlineFigure` rows of the first block and,
for a comparison, the :class:`Deltas` (per site :class:`SiteDelta`, per layer :class:`CoherenceDelta` and
:class:`MarginDelta`). ``to_json()`` (the published dict, keys in field order) and ``from_json()`` (which reads it
back) are derived from the fields by :mod:`analysis.jsonform`; the few special forms are said in the fields'
metadata. :func:`clean` makes the plain data strict JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from analysis.jsonform import Codec, JsonForm, json_meta
from analysis.pipeline import Headline, headline
from analysis.sparsity import near_zero_stats

S = TypeVar("S")
REPORT_VERSION = 2  # 2: deltas are subject − baseline (deltas_subject_minus_baseline)


def clean(obj: Any) -> Any:
    """JSON-safe copy: NaN and ±inf become None (strict JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def _delta(baseline: float | None, subject: float | None) -> float | None:
    return None if baseline is None or subject is None else subject - baseline


DELTA_KEY = "deltas_subject_minus_baseline"


@dataclass(frozen=True)
class SiteDelta(JsonForm):
    """Change subject − baseline of one feature site's sparsity (see :class:`~analysis.sparsity.SiteSparsity`):
    ``zero_frac`` a difference of fractions (× 100 = points), ``l0_per_position_mean`` in channels per code vector,
    ``hoyer_mean`` and ``gini_mean`` differences of indices in [0, 1], ``dead_units`` in channels; None where either
    model has no value."""

    zero_frac: float | None
    l0_per_position_mean: float | None
    hoyer_mean: float | None
    gini_mean: float | None
    dead_units: int | None

    @classmethod
    def of(cls, subject: Mapping[str, Any], baseline: Mapping[str, Any]) -> SiteDelta:
        """From the two models' per-site results (as stored)."""
        changes: dict[str, Any] = {f.name: _delta(baseline.get(f.name), subject.get(f.name)) for f in fields(cls)}
        return cls(**changes)


@dataclass(frozen=True)
class CoherenceDelta(JsonForm):
    """Change subject − baseline of one layer's mutual coherence: ``mu`` (local, rows) and ``mu_shift`` (shift-aware,
    convolutions only); None where either model has no value (a depthwise layer, a linear layer's shift)."""

    mu: float | None
    mu_shift: float | None

    @classmethod
    def of(cls, subject: Mapping[str, Any], baseline: Mapping[str, Any]) -> CoherenceDelta:
        """From the two models' coherence results of the layer."""
        return cls(mu=_delta(baseline["local"]["mu"], subject["local"]["mu"]),
                   mu_shift=_delta(baseline.get("mu_shift"), subject.get("mu_shift")))


@dataclass(frozen=True)
class MarginDelta(JsonForm):
    """Change subject − baseline of one layer's theory margin: ``stripe_max`` (non-zeros in the densest stripe) and
    ``margin`` (None where either model's margin is undefined)."""

    stripe_max: float
    margin: float | None

    @classmethod
    def of(cls, subject: Mapping[str, Any], baseline: Mapping[str, Any]) -> MarginDelta:
        """From the two models' margin results of the layer."""
        return cls(stripe_max=subject["stripe_max"] - baseline["stripe_max"],
                   margin=_delta(baseline["margin"], subject["margin"]))


def _common(subject: Mapping[str, Any], baseline: Mapping[str, Any], make: Callable[[Any, Any], Any]) -> dict:
    """``make(subject[k], baseline[k])`` for the keys both have, in the subject's order."""
    return {k: make(subject[k], baseline[k]) for k in subject if k in baseline}


@dataclass(frozen=True, kw_only=True)
class Deltas(JsonForm):
    """The comparison section of ``report.json`` (:data:`DELTA_KEY`): signed differences **subject − baseline**
    (sparse − dense, new − old) of the numbers both analyses have, over the sites and layers they have in common.
    Fractions stay fractions here (× 100 = points).

    ``subject``/``baseline``: the two models' labels. ``headline``: headline key → change, for the numeric figures
    both have. With data (both analyses measured activations): ``sparsity_per_site`` (site → :class:`SiteDelta`)
    and ``zero_frac_per_stage`` (stage label → change of its mean ``zero_frac``), and ``margins`` (layer →
    :class:`MarginDelta`); always ``coherence`` (layer → :class:`CoherenceDelta`). The JSON form has the keys in this
    order, those not measured left out.
    """

    subject: str
    baseline: str
    headline: dict[str, float]
    sparsity_per_site: dict[str, SiteDelta] | None = field(default=None, metadata=json_meta(omit_none=True))
    zero_frac_per_stage: dict[str, float] | None = field(default=None, metadata=json_meta(omit_none=True))
    coherence: dict[str, CoherenceDelta]
    margins: dict[str, MarginDelta] | None = field(default=None, metadata=json_meta(omit_none=True))

    @classmethod
    def of(cls, subject: tuple[str, dict[str, Any]], baseline: tuple[str, dict[str, Any]]) -> Deltas:
        """The changes between two analysis results, each given with its label: ``(label, result)``."""
        (ls, s), (lb, b) = subject, baseline
        hs, hb = headline(s), headline(b)
        out: dict[str, Any] = {"headline": {k: hs[k] - hb[k] for k in hs if isinstance(hs[k], (int, float))
                                            and isinstance(hb.get(k), (int, float))}}
        if "sparsity" in s and "sparsity" in b:
            out["sparsity_per_site"] = _common(s["sparsity"]["per_site"], b["sparsity"]["per_site"], SiteDelta.of)
            zs, zb = (m["sparsity"]["summary"].get("zero_frac_per_stage", {}) for m in (s, b))
            out["zero_frac_per_stage"] = _common(zs, zb, lambda x, y: x - y)
        out["coherence"] = _common(s.get("coherence", {}), b.get("coherence", {}), CoherenceDelta.of)
        if "margins" in s and "margins" in b:
            out["margins"] = _common(s["margins"], b["margins"], MarginDelta.of)
        return cls(subject=ls, baseline=lb, **out)


NEAR_ZERO_ABS = "near_zero_frac(abs,…)"  # stands for the absolute near-zero fraction, whatever its τ
# The headline block: (headline key, label, definition key, unit). Unit "fraction" is shown in % and its
# differences in points; "count" as an integer; "" as a plain number.
HEADLINE_FIGURES: list[tuple[str, str, str, str]] = [
    ("top1", "top-1", "top1", "fraction"),
    ("loss", "loss", "loss", ""),
    ("zero_frac_mean_sites", "zero_frac", "zero_frac_mean_sites", "fraction"),
    (NEAR_ZERO_ABS, "near_zero_frac", "near_zero_frac(abs,tau)", "fraction"),
    ("l0_per_position_frac_mean_sites", "l0 per position / C", "l0_per_position", "fraction"),
    ("dead_units", "dead units", "dead_units", "count"),
    ("median_factor_outside", "theory margin: median factor outside", "factor_outside", ""),
    ("layers_inside_theorem", "layers inside the theorem's regime", "margin", "count"),
    ("mu_local_median", "median coherence μ", "mu", ""),
]


def _compared() -> Codec:
    """``compared`` is not stored: a compared row is one that has a ``delta`` key."""
    return Codec(dump=lambda owner, compared: {}, load=lambda d: "delta" in d)


def _delta_key() -> Codec:
    """``delta`` is stored in compared rows only (there it may be None)."""
    return Codec(dump=lambda owner, delta: {"delta": delta} if owner.compared else {}, load=lambda d: d.get("delta"))


@dataclass(frozen=True)
class HeadlineFigure(JsonForm):
    """One row of the report's first block (``headline_figures`` of ``report.json``).

    ``key``: the figure's key in each model's ``headline``; ``label``: its name on the page; ``definition``: its key
    in the report's ``definitions``; ``unit``: "fraction" (shown in %, changes in points), "count" (an integer) or
    "" (a plain number). ``values``: one per model, None where a model has none. ``of``: for a count out of a total
    (layers inside the theorem's regime), each model's total, else None. ``compared``: the report compares two
    models, so the row has a ``delta`` (subject − baseline; None where it is not defined).

    JSON: ``{"key", "label", "definition", "unit", "values"}``, then ``"of"`` and ``"delta"`` where they apply.
    """

    key: str
    label: str
    definition: str
    unit: str
    values: tuple[float | None, ...]
    of: tuple[int | None, ...] | None = field(default=None, metadata=json_meta(omit_none=True))
    compared: bool = field(default=False, metadata=json_meta(codec=_compared()))
    delta: float | None = field(default=None, metadata=json_meta(codec=_delta_key()))

    @classmethod
    def rows(cls, heads: Sequence[Mapping[str, Any]], deltas: Mapping[str, float] | None = None) -> list[HeadlineFigure]:
        """Each figure of :data:`HEADLINE_FIGURES` for the models' ``heads`` (their headlines) and, for a
        comparison, the headline ``deltas`` (:attr:`Deltas.headline`). Figures the first model does not have (no
        labels, weights only) are left out."""
        rows = []
        for key, label, definition, unit in HEADLINE_FIGURES:
            full = key
            if key == NEAR_ZERO_ABS:
                near = next(iter(near_zero_stats(heads[0], "abs")), None)
                if near is None:
                    continue
                label, full = near[0].key, near[1]
            if heads[0].get(full) is None:
                continue
            of = tuple(h.get("layers_measured") for h in heads) if key == "layers_inside_theorem" else None
            rows.append(cls(full, label, definition, unit, tuple(h.get(full) for h in heads), of,
                            compared=deltas is not None, delta=None if deltas is None else deltas.get(full)))
        return rows


def headline_figures(models: list[dict], deltas: dict | None) -> list[dict]:
    """The ``headline_figures`` section as plain data (:meth:`HeadlineFigure.rows` as JSON) for the report's
    ``models`` entries and, for a comparison, its :data:`DELTA_KEY` section."""
    rows = HeadlineFigure.rows([m["headline"] for m in models], None if deltas is None else deltas["headline"])
    return [r.to_json() for r in rows]


def _section() -> dict[str, Any]:
    """A section of an analysis result: left out of the JSON where it was not measured."""
    return json_meta(omit_none=True)


@dataclass(frozen=True)
class Analysis(JsonForm):
    """One model's analysis result as a report holds it (:func:`analysis.pipeline.analyze`, and what the command
    adds): each section is None where it was not measured, and left out of the JSON then. ``model`` (class,
    architecture, parameters), ``coherence`` (layer → result, :func:`analysis.coherence`), ``timing`` (step →
    seconds); with data ``samples``, ``accuracy``, ``sparsity`` (``per_site``, ``summary``, ``stages``), ``margins``
    (layer → result, :func:`analysis.theory_margins`), ``attention`` (models with attention), ``convergence``
    (``relative_change``, ``cka``, ``ista``) and the ``data`` it was measured on; ``explain`` (``--explain``: the
    :func:`analysis.explain` result as JSON). Inside a section the values are the plain data their measurement
    returns. Keys that name no section are not kept."""

    model: dict[str, Any] | None = field(default=None, metadata=_section())
    coherence: dict[str, dict[str, Any]] | None = field(default=None, metadata=_section())
    timing: dict[str, float] | None = field(default=None, metadata=_section())
    samples: int | None = field(default=None, metadata=_section())
    accuracy: dict[str, Any] | None = field(default=None, metadata=_section())
    sparsity: dict[str, Any] | None = field(default=None, metadata=_section())
    margins: dict[str, dict[str, Any]] | None = field(default=None, metadata=_section())
    attention: dict[str, dict[str, Any]] | None = field(default=None, metadata=_section())
    convergence: dict[str, Any] | None = field(default=None, metadata=_section())
    data: str | None = field(default=None, metadata=_section())
    explain: dict[str, Any] | None = field(default=None, metadata=_section())


def measured(section: S | None) -> S:
    """A section of an :class:`Analysis` that a part of the report is drawn from (only where it was measured)."""
    if section is None:
        raise KeyError("this part of the report needs a section the analysis did not measure")
    return section


@dataclass(frozen=True)
class ModelEntry(JsonForm):
    """One model of a report: ``label`` (its column), ``source`` (what was loaded: a timm name, Hub id or folder),
    its :class:`~analysis.pipeline.Headline` and its :class:`Analysis`. Either may be given as its plain data (the
    stored dict), which is read with its ``from_json``."""

    label: str
    source: str
    headline: Headline
    analysis: Analysis

    def __post_init__(self) -> None:
        """Read a headline or analysis given as plain data."""
        if isinstance(self.headline, Mapping):
            object.__setattr__(self, "headline", Headline.from_json(self.headline))
        if isinstance(self.analysis, Mapping):
            object.__setattr__(self, "analysis", Analysis.from_json(self.analysis))


@dataclass(frozen=True, kw_only=True)
class Report(JsonForm):
    """``report.json`` (:func:`~analysis.report.build.build_report`): ``version`` (``sparsezoo_report``,
    :data:`REPORT_VERSION`), ``created`` (ISO 8601, UTC), the ``command`` line, the metric ``definitions``, the
    ``models`` (one, or the subject then its baseline), for a comparison the ``deltas`` (:data:`DELTA_KEY`), and the
    headline ``figures`` (``headline_figures``), in this order."""

    version: int = field(default=REPORT_VERSION, metadata=json_meta(key="sparsezoo_report"))
    created: str
    command: str
    definitions: dict[str, str]
    models: tuple[ModelEntry, ...]
    deltas: Deltas | None = field(default=None, metadata=json_meta(key=DELTA_KEY, omit_none=True))
    figures: tuple[HeadlineFigure, ...] = field(metadata=json_meta(key="headline_figures"))
