"""The typed sections of ``report.json``: :class:`Report` holds the :class:`ModelEntry` of each model, the
:class:`HeadlineFigure` rows of the first block and, for a comparison, the :class:`Deltas` (per site
:class:`SiteDelta`, per layer :class:`CoherenceDelta` and :class:`MarginDelta`). Each has ``to_json()``, the published
dict (keys in their order), and ``from_json()``, which reads it back; :func:`clean` makes the plain data strict JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from analysis.pipeline import headline
from analysis.sparsity import near_zero_stats

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
class SiteDelta:
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

    def to_json(self) -> dict[str, Any]:
        """``{"zero_frac", "l0_per_position_mean", "hoyer_mean", "gini_mean", "dead_units"}``, in this order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SiteDelta:
        """The change :meth:`to_json` wrote."""
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class CoherenceDelta:
    """Change subject − baseline of one layer's mutual coherence: ``mu`` (local, rows) and ``mu_shift`` (shift-aware,
    convolutions only); None where either model has no value (a depthwise layer, a linear layer's shift)."""

    mu: float | None
    mu_shift: float | None

    @classmethod
    def of(cls, subject: Mapping[str, Any], baseline: Mapping[str, Any]) -> CoherenceDelta:
        """From the two models' coherence results of the layer."""
        return cls(mu=_delta(baseline["local"]["mu"], subject["local"]["mu"]),
                   mu_shift=_delta(baseline.get("mu_shift"), subject.get("mu_shift")))

    def to_json(self) -> dict[str, Any]:
        """``{"mu", "mu_shift"}``."""
        return {"mu": self.mu, "mu_shift": self.mu_shift}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CoherenceDelta:
        """The change :meth:`to_json` wrote."""
        return cls(mu=d["mu"], mu_shift=d["mu_shift"])


@dataclass(frozen=True)
class MarginDelta:
    """Change subject − baseline of one layer's theory margin: ``stripe_max`` (non-zeros in the densest stripe) and
    ``margin`` (None where either model's margin is undefined)."""

    stripe_max: float
    margin: float | None

    @classmethod
    def of(cls, subject: Mapping[str, Any], baseline: Mapping[str, Any]) -> MarginDelta:
        """From the two models' margin results of the layer."""
        return cls(stripe_max=subject["stripe_max"] - baseline["stripe_max"],
                   margin=_delta(baseline["margin"], subject["margin"]))

    def to_json(self) -> dict[str, Any]:
        """``{"stripe_max", "margin"}``."""
        return {"stripe_max": self.stripe_max, "margin": self.margin}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MarginDelta:
        """The change :meth:`to_json` wrote."""
        return cls(stripe_max=d["stripe_max"], margin=d["margin"])


def _common(subject: Mapping[str, Any], baseline: Mapping[str, Any], make: Callable[[Any, Any], Any]) -> dict:
    """``make(subject[k], baseline[k])`` for the keys both have, in the subject's order."""
    return {k: make(subject[k], baseline[k]) for k in subject if k in baseline}


@dataclass(frozen=True)
class Deltas:
    """The comparison section of ``report.json`` (:data:`DELTA_KEY`): signed differences **subject − baseline**
    (sparse − dense, new − old) of the numbers both analyses have, over the sites and layers they have in common.
    Fractions stay fractions here (× 100 = points).

    ``subject``/``baseline``: the two models' labels. ``headline``: headline key → change, for the numeric figures
    both have. With data (both analyses measured activations): ``sparsity_per_site`` (site → :class:`SiteDelta`)
    and ``zero_frac_per_stage`` (stage label → change of its mean ``zero_frac``), and ``margins`` (layer →
    :class:`MarginDelta`); always ``coherence`` (layer → :class:`CoherenceDelta`).
    """

    subject: str
    baseline: str
    headline: dict[str, float]
    coherence: dict[str, CoherenceDelta]
    sparsity_per_site: dict[str, SiteDelta] | None = None
    zero_frac_per_stage: dict[str, float] | None = None
    margins: dict[str, MarginDelta] | None = None

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

    def to_json(self) -> dict[str, Any]:
        """The section as plain data: ``subject``, ``baseline``, ``headline``, then the per-site, per-stage, coherence
        and margin changes (those measured), in this order."""
        out: dict[str, Any] = {"subject": self.subject, "baseline": self.baseline, "headline": dict(self.headline)}
        if self.sparsity_per_site is not None:
            out["sparsity_per_site"] = {n: v.to_json() for n, v in self.sparsity_per_site.items()}
        if self.zero_frac_per_stage is not None:
            out["zero_frac_per_stage"] = dict(self.zero_frac_per_stage)
        out["coherence"] = {n: v.to_json() for n, v in self.coherence.items()}
        if self.margins is not None:
            out["margins"] = {n: v.to_json() for n, v in self.margins.items()}
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Deltas:
        """The section :meth:`to_json` wrote (e.g. read back from ``report.json``)."""
        per_site, margins, stages = d.get("sparsity_per_site"), d.get("margins"), d.get("zero_frac_per_stage")
        return cls(subject=d["subject"], baseline=d["baseline"], headline=dict(d["headline"]),
                   coherence={n: CoherenceDelta.from_json(v) for n, v in d["coherence"].items()},
                   sparsity_per_site=None if per_site is None else {n: SiteDelta.from_json(v)
                                                                    for n, v in per_site.items()},
                   zero_frac_per_stage=None if stages is None else dict(stages),
                   margins=None if margins is None else {n: MarginDelta.from_json(v) for n, v in margins.items()})


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


@dataclass(frozen=True)
class HeadlineFigure:
    """One row of the report's first block (``headline_figures`` of ``report.json``).

    ``key``: the figure's key in each model's ``headline``; ``label``: its name on the page; ``definition``: its key
    in the report's ``definitions``; ``unit``: "fraction" (shown in %, changes in points), "count" (an integer) or
    "" (a plain number). ``values``: one per model, None where a model has none. ``of``: for a count out of a total
    (layers inside the theorem's regime), each model's total, else None. ``compared``: the report compares two
    models, so the row has a ``delta`` (subject − baseline; None where it is not defined).
    """

    key: str
    label: str
    definition: str
    unit: str
    values: tuple[float | None, ...]
    of: tuple[int | None, ...] | None = None
    compared: bool = False
    delta: float | None = None

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

    def to_json(self) -> dict[str, Any]:
        """``{"key", "label", "definition", "unit", "values"}``, then ``"of"`` and ``"delta"`` where they apply."""
        out: dict[str, Any] = {"key": self.key, "label": self.label, "definition": self.definition, "unit": self.unit,
                               "values": list(self.values)}
        if self.of is not None:
            out["of"] = list(self.of)
        if self.compared:
            out["delta"] = self.delta
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HeadlineFigure:
        """The row :meth:`to_json` wrote."""
        return cls(d["key"], d["label"], d["definition"], d["unit"], tuple(d["values"]),
                   tuple(d["of"]) if "of" in d else None, compared="delta" in d, delta=d.get("delta"))


def headline_figures(models: list[dict], deltas: dict | None) -> list[dict]:
    """The ``headline_figures`` section as plain data (:meth:`HeadlineFigure.rows` as JSON) for the report's
    ``models`` entries and, for a comparison, its :data:`DELTA_KEY` section."""
    rows = HeadlineFigure.rows([m["headline"] for m in models], None if deltas is None else deltas["headline"])
    return [r.to_json() for r in rows]


@dataclass(frozen=True)
class ModelEntry:
    """One model of a report: ``label`` (its column), ``source`` (what was loaded: a timm name, Hub id or folder),
    ``headline`` (:func:`analysis.pipeline.headline` of its analysis) and the full ``analysis`` result."""

    label: str
    source: str
    headline: dict[str, Any]
    analysis: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """``{"label", "source", "headline", "analysis"}``."""
        return {"label": self.label, "source": self.source, "headline": self.headline, "analysis": self.analysis}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModelEntry:
        """The entry :meth:`to_json` wrote."""
        return cls(d["label"], d["source"], d["headline"], d["analysis"])


@dataclass(frozen=True)
class Report:
    """``report.json`` (:func:`build_report`): ``version`` (``sparsezoo_report``, :data:`REPORT_VERSION`), ``created``
    (ISO 8601, UTC), the ``command`` line, the metric ``definitions``, the ``models`` (one, or the subject then its
    baseline), for a comparison the ``deltas`` (:data:`DELTA_KEY`), and the headline ``figures``
    (``headline_figures``). :meth:`to_json` writes the keys in this order; :meth:`from_json` reads them back."""

    created: str
    command: str
    definitions: dict[str, str]
    models: tuple[ModelEntry, ...]
    figures: tuple[HeadlineFigure, ...]
    deltas: Deltas | None = None
    version: int = REPORT_VERSION

    def to_json(self) -> dict[str, Any]:
        """The report as plain data (not yet :func:`clean`)."""
        out: dict[str, Any] = {"sparsezoo_report": self.version, "created": self.created, "command": self.command,
                               "definitions": self.definitions, "models": [m.to_json() for m in self.models]}
        if self.deltas is not None:
            out[DELTA_KEY] = self.deltas.to_json()
        out["headline_figures"] = [f.to_json() for f in self.figures]
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Report:
        """The report :meth:`to_json` wrote (e.g. ``json.load`` of a ``report.json``)."""
        deltas = d.get(DELTA_KEY)
        return cls(created=d["created"], command=d["command"], definitions=d["definitions"],
                   models=tuple(ModelEntry.from_json(m) for m in d["models"]),
                   figures=tuple(HeadlineFigure.from_json(f) for f in d["headline_figures"]),
                   deltas=None if deltas is None else Deltas.from_json(deltas), version=d["sparsezoo_report"])
