"""Reports: ``report.json`` data and a self-contained ``report.html`` (inline CSS, plots as embedded PNG).

:func:`build_report` assembles the analysis of one model (or two, for a comparison) with the metric
definitions, the command line and the deltas; :func:`render_html` turns it into one HTML file that needs no
network and no JavaScript. Plots are drawn on :class:`matplotlib.figure.Figure` objects and rendered to PNG: no
pyplot and no backend selection, so a caller's matplotlib state (a notebook's backend) is left as it was.

The sections are typed: :class:`Report` holds the :class:`ModelEntry` of each model, the :class:`HeadlineFigure`
rows of the first block and, for a comparison, the :class:`Deltas` (per site :class:`SiteDelta`, per layer
:class:`CoherenceDelta` and :class:`MarginDelta`). Each has ``to_json()``, the published dict (keys in their
order), and ``from_json()``, which reads it back; the HTML is rendered from the typed form.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from analysis.definitions import DEFINITIONS
from analysis.pipeline import headline
from analysis.sparsity import SiteSparsity, near_zero_stats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


def build_report(models: list[tuple[str, str, dict]], command: str) -> dict:
    """``report.json`` as plain data (:meth:`Report.to_json`, :func:`clean`). ``models``: (label, source, analysis
    result) for one model, or two for a comparison: the subject first, then its baseline; deltas are subject −
    baseline (:class:`Deltas`)."""
    entries = tuple(ModelEntry(label, src, headline(res), res) for label, src, res in models)
    deltas = None
    if len(models) == 2:
        deltas = Deltas.of((models[0][0], models[0][2]), (models[1][0], models[1][2]))
    figures = HeadlineFigure.rows([e.headline for e in entries], None if deltas is None else deltas.headline)
    report = Report(created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), command=command,
                    definitions=DEFINITIONS, models=entries, figures=tuple(figures), deltas=deltas)
    return clean(report.to_json())



# ---------------------------------------------------------------------------------------------- plotting


def _num(v: float | None) -> float:
    """A plottable number: None (not applicable) becomes NaN, which matplotlib leaves out."""
    return float("nan") if v is None else v


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    """A new figure with ``ncols`` axes in a row (one axes, or an array of them). A plain
    :class:`matplotlib.figure.Figure`: no pyplot, so no backend is selected and the caller's matplotlib state
    (a notebook's backend, pyplot's figures) is left as it was; ``savefig`` renders PNG with Agg regardless."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(1, ncols)


def _fig_per_site(models: Sequence[ModelEntry]) -> str:
    fig, axes = _figure(15, 3.6, 3)
    for m in models:
        per = m.analysis["sparsity"]["per_site"]
        names = list(per)
        for ax, key, title in zip(axes, ("zero_frac", "hoyer_mean", "l0_per_position_frac"),
                                  ("zero_frac", "Hoyer (mean)", "l0 / C (mean)"), strict=True):
            ax.plot(range(len(names)), [per[n][key] if per[n][key] is not None else float("nan") for n in names],
                    marker=".", label=m.label)
            ax.set_title(title)
            ax.set_xlabel("site (forward order)")
    axes[0].legend(fontsize=8)
    return _png(fig)


def _fig_density(m: ModelEntry) -> str:
    per = m.analysis["sparsity"]["per_site"]
    names = list(per)
    rows = []
    for n in names:
        c = per[n]["log10_firing_density_hist"]["counts"]
        tot = sum(c) or 1
        rows.append([v / tot for v in c])
    edges = per[names[0]]["log10_firing_density_hist"]["edges"]
    fig, ax = _figure(7, max(2.5, 0.16 * len(names)))
    im = ax.imshow(rows, aspect="auto", cmap="magma", extent=(edges[0], edges[-1], len(names) - 0.5, -0.5))
    ax.set_xlabel("log10 firing density (live channels)")
    ax.set_ylabel("site")
    ax.set_title(f"{m.label}: fraction of channels per density bin")
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _png(fig)


def _fig_coherence(models: Sequence[ModelEntry]) -> str:
    fig, axes = _figure(13, 3.6, 2)
    for m in models:
        coh = m.analysis["coherence"]
        names = list(coh)
        axes[0].plot([_num(coh[n]["local"]["mu"]) for n in names], marker=".", label=f"{m.label} local μ")
        axes[0].plot([_num(coh[n]["mu_shift"]) for n in names],
                     marker="x", linestyle=":", label=f"{m.label} shift-aware μ")
        for n in names:
            babel = coh[n]["local"]["babel"]
            axes[1].plot(range(1, len(babel) + 1), babel, alpha=0.35, linewidth=0.8,
                         color="C0" if m is models[0] else "C1")
    axes[0].set_title("mutual coherence per layer")
    axes[0].set_xlabel("layer (module order)")
    axes[0].legend(fontsize=8)
    axes[1].set_title("Babel curves μ₁(k), one line per layer")
    axes[1].set_xlabel("k")
    return _png(fig)


def _fig_margins(models: Sequence[ModelEntry]) -> str:
    fig, ax = _figure(10, 3.6)
    for i, m in enumerate(models):
        mg = m.analysis["margins"]
        names = list(mg)
        ax.plot([mg[n]["stripe_max"] for n in names], marker=".", color=f"C{i}", label=f"{m.label} max stripe sparsity")
        ax.plot([_num(mg[n]["s_star"]) for n in names], linestyle="--", color=f"C{i}", label=f"{m.label} s* = ½(1+1/μ)")
    ax.set_yscale("log")
    ax.set_xlabel("layer (module order)")
    ax.set_ylabel("non-zeros")
    ax.legend(fontsize=8)
    ax.set_title("theory margin: the theorem applies where the solid line is below the dashed one")
    return _png(fig)


def _fig_cka(m: ModelEntry) -> str:
    cka = m.analysis["convergence"]["cka"]
    fig, ax = _figure(5.5, 4.6)
    im = ax.imshow(cka["matrix"], vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"{m.label}: linear CKA between sites ({cka['batches']} minibatches)")
    ax.set_xlabel("site")
    ax.set_ylabel("site")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def _fig_ista(models: Sequence[ModelEntry]) -> str:
    fig, axes = _figure(15, 3.6, 3)
    for i, m in enumerate(models):
        for v in (m.analysis["convergence"].get("ista") or {}).values():
            if "skipped" in v:
                continue
            k = range(1, len(v["relative_error"]) + 1)
            axes[0].plot(k, v["relative_error"], color=f"C{i}", alpha=0.35, linewidth=0.8)
            axes[1].plot(k, v["support_jaccard"], color=f"C{i}", alpha=0.35, linewidth=0.8)
            if v["step_size"]:
                axes[2].semilogy(range(1, len(v["step_size"]) + 1), [max(s, 1e-12) for s in v["step_size"]],
                                 color=f"C{i}", alpha=0.35, linewidth=0.8)
        axes[0].plot([], [], color=f"C{i}", label=m.label)
    axes[0].set_title("‖Γᵏ − y‖/‖y‖ vs ISTA steps k")
    axes[1].set_title("support Jaccard with y")
    axes[2].set_title("step size ‖Γᵏ⁺¹ − Γᵏ‖/‖Γ¹‖ (log)")
    for ax in axes:
        ax.set_xlabel("k")
    axes[0].legend(fontsize=8)
    return _png(fig)


def _fig_attention(m: ModelEntry) -> str:
    att = m.analysis["attention"]
    names = list(att)
    fig, axes = _figure(12, max(2.6, 0.3 * len(names)), 2)
    for ax, key, title in zip(axes, ("entropy_norm", "hoyer"), ("normalized entropy (1 = uniform)",
                                                              "Hoyer of attention rows (1 = one key)"), strict=True):
        im = ax.imshow([att[n]["per_head"][key] for n in names], vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(f"{m.label}: {title}")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def _attention_table(m: ModelEntry) -> str:
    att = m.analysis["attention"]
    rows = [[n, v["heads"], v["rows"], *v["mean"].values()] for n, v in att.items()]
    keys = list(next(iter(att.values()))["mean"]) if att else []
    return _table(["layer", "heads", "query rows", *[f"{k} (mean over heads)" for k in keys]], rows, "wide")


def _fig_relchange(models: Sequence[ModelEntry]) -> str:
    fig, ax = _figure(10, 3.2)
    for m in models:
        rc = m.analysis["convergence"]["relative_change"]
        ax.plot([r["relative_change"] for r in rc], marker="o", label=m.label)
    ax.set_xlabel("consecutive equal-shape block pair")
    ax.set_ylabel("‖F_{l+1} − F_l‖ / ‖F_l‖")
    ax.legend(fontsize=8)
    return _png(fig)


# ---------------------------------------------------------------------------------------------- HTML


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3e}"
        return f"{v:.4f}"
    if isinstance(v, (list, tuple)):
        return "×".join(_fmt(x) for x in v)
    return html.escape(str(v))


def _table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    """A table in its own scroll box (``tw``), so a wide one scrolls instead of widening the page."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="tw {cls}"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _def_id(key: str) -> str:
    return "def-" + "".join(c if c.isalnum() else "-" for c in key)


def figure_text(v: float | None, unit: str) -> str:
    """A headline figure as the report shows it: fractions in %, counts as integers."""
    if v is None:
        return "—"
    if unit == "fraction":
        return f"{100 * v:.1f} %"
    return _fmt(int(v)) if unit == "count" else f"{v:.3g}"


def _change(d: float | None, unit: str) -> str:
    """A signed change with its unit: points for fractions."""
    if d is None:
        return "—"
    if unit == "fraction":
        return f"{100 * d:+.1f} pts"
    return f"{int(d):+,}" if unit == "count" else f"{d:+.3g}"


def headline_html(report: Report) -> str:
    """The first screen: the key figures of each model side by side, and the change subject − baseline."""
    models, deltas = report.models, report.deltas
    head = "".join(f"<th>{html.escape(m.label)}</th>" for m in models)
    if deltas is not None:
        head += f"<th>change ({html.escape(deltas.subject)} − {html.escape(deltas.baseline)})</th>"
    body = []
    for row in report.figures:
        name = (f'<a href="#{_def_id(row.definition)}">{html.escape(row.label)}</a>')
        cells = [figure_text(v, row.unit) for v in row.values]
        if row.of is not None:
            cells = [f"{c} / {_fmt(o)}" for c, o in zip(cells, row.of, strict=True)]
        if deltas is not None:
            cells.append(f"<b>{_change(row.delta, row.unit)}</b>")
        body.append(f"<tr><td>{name}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    missing = [m.label for m in models if "top1" not in m.headline and "sparsity" in m.analysis]
    note = ""
    if missing:
        why = "; ".join(f"{html.escape(m.label)}: {html.escape(str(m.analysis.get('accuracy', {}).get('skipped')))}"
                        for m in models if m.label in missing)
        note = f"<p class=\"note\">top-1 not measured ({why}).</p>"
    what = ("What sparsity training bought and what it cost: " if deltas is not None else "")
    data = models[0].analysis.get("data")
    over = f"over {html.escape(data)}" if data else "over the analysis samples"
    return (f'<div id="headline"><p>{what}figures {over}; names link to their definitions.</p>'
            f'<div class="tw"><table class="headline"><thead><tr><th>figure</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{note}</div>')


def _side(models: Sequence[ModelEntry], make) -> str:
    """One panel per model, side by side."""
    cells = "".join(f'<div class="col"><h4>{html.escape(m.label)}</h4>{make(m)}</div>' for m in models)
    return f'<div class="row">{cells}</div>'


def _sparsity_table(m: ModelEntry) -> str:
    a = m.analysis["sparsity"]
    per = {n: SiteSparsity.from_json(v) for n, v in a["per_site"].items()}
    stages = a["stages"]
    near = [nz for nz, _ in next(iter(per.values())).near_zero]
    rows = [[n, stages.get(n.split("@")[0], ""), v.channels, v.zero_frac, *[dict(v.near_zero)[nz] for nz in near],
             v.l0_per_position_mean, v.l0_per_position_max, v.hoyer_mean, v.gini_mean, v.dead_units,
             v.dense_units] for n, v in per.items()]
    return _table(["site", "stage", "C", "zero_frac", *[nz.key for nz in near], "l0 mean", "l0 max", "Hoyer", "Gini",
                   "dead", "dense"], rows, "wide")


def _coherence_table(m: ModelEntry) -> str:
    coh = m.analysis["coherence"]
    rows = []
    for n, c in coh.items():
        th = c.get("threshold") or {}
        rows.append([n, c["extra"].get("role", c["kind"]), c["shape"], c["groups"], c["local"]["mu"],
                     c["mu_shift"] if c["mu_shift"] is not None else (c["extra"].get("columns") or {}).get("mu"),
                     c["mu_over_welch"],
                     c["local"]["gram_mean"], c["local"]["gram_p99"], c["s_star_local"], c["s_star_shift"],
                     (th.get("quantiles") or {}).get("p50"), th.get("positive_frac")])
    return _table(["layer", "kind / role", "shape", "groups", "μ local (rows)", "μ shift (conv) / columns (FFN out)",
                   "μ/Welch", "|Gram| mean", "|Gram| p99",
                   "s* local", "s* shift", "threshold p50", "threshold > 0"], rows, "wide")


def _margins_table(m: ModelEntry) -> str:
    mg = m.analysis["margins"]
    rows = [[n, v["code_site"] if v["code"] == "activation" else "linear (no activation)", v["stripe_shape"],
             v["s_star"], v["stripe_max"], v["stripe_mean"], v["stripe_p95"], v["window_size"], v["margin"],
             _verdict(v)] for n, v in mg.items()]
    return _table(["layer", "code (output of)", "stripe (positions)", "s*", "stripe max", "stripe mean", "stripe p95",
                   "stripe capacity", "margin", "verdict"], rows, "wide")


def _verdict(v: dict) -> str:
    """The compact verdict of a layer: "inside", "×F outside" or "n/a" (the sentence is above the table)."""
    if v["inside"] is None:
        return "n/a"
    return "inside" if v["inside"] else f"×{v['factor']:.1f} outside"


MARGINS_NOTE = ("<p>Verdict: <b>inside</b> means the layer's output code is sparse enough for the uniqueness "
                "theorem (max stripe sparsity below s* = ½(1 + 1/μ)); <b>×F outside</b> means its max stripe "
                "sparsity is F times s*; <b>n/a</b>: no bound (no two atoms overlap, or μ = 0). Layers with "
                "no activation after them are linear: their code is not thresholded. The full sentence per layer "
                "is the <code>verdict</code> field of report.json.</p>")


def _ista_table(m: ModelEntry) -> str:
    rows = []
    for n, v in (m.analysis["convergence"].get("ista") or {}).items():
        if "skipped" in v:
            rows.append([n, "—", "—", "—", "—", "—", "—", "skipped: " + v["skipped"]])
        else:
            rows.append([n, v["activation"], v["relative_error"][1] if len(v["relative_error"]) > 1 else None,
                         v["support_jaccard"][-1], v["rho_hat"], v["rho_fit_r2"], v["theory_rate"],
                         "theory vacuous ((2s−1)μ ≥ 1)" if v["theory_vacuous"] else "theory applies"])
    return _table(["layer", "activation", "rel. error k=2", "Jaccard k=K", "ρ̂", "fit R²", "(2s−1)μ", "note"], rows, "wide")


def _summary(m: ModelEntry) -> str:
    h = m.headline
    a = m.analysis
    rows = [[k.replace("_", " "), v] for k, v in h.items()]
    rows.append(["samples", a.get("samples")])
    rows.append(["parameters", a["model"]["parameters"]])
    rows += [[f"time: {k}", v] for k, v in a.get("timing", {}).items()]
    text = ""
    if "margins" in a and h.get("layers_measured"):
        text = (f"<p>{h['layers_inside_theorem']} of {h['layers_measured']} layers have output codes sparse enough "
                f"for the uniqueness theorem (stripe sparsity ‖Γ‖<sub>0,∞</sub> of the post-activation map below "
                f"s* = ½(1 + 1/μ)); the median layer is outside its regime by a factor of "
                f"{_fmt(h['median_factor_outside'])}. Counted: layers followed by an activation (their code is "
                f"thresholded); the others are listed below as linear. Real networks are expected to be far outside "
                f"the regime.</p>")
    return f"<p>source: <code>{html.escape(str(m.source))}</code></p>{text}" + _table(["quantity", "value"], rows)


def _deltas(d: Deltas) -> str:
    parts = [f"<p>Changes are <b>{html.escape(d.subject)}</b> − <b>{html.escape(d.baseline)}</b> (subject − "
             f"baseline; positive: the subject has more). Fractions are differences of fractions (× 100 = points).</p>",
             _table(["headline", "change"], [[k, v] for k, v in d.headline.items()])]
    if d.zero_frac_per_stage is not None:
        parts.append(_table(["stage", "Δ zero_frac"], [[k, v] for k, v in d.zero_frac_per_stage.items()]))
    if d.sparsity_per_site is not None:
        parts.append(_table(["site", "Δ zero_frac", "Δ l0 mean", "Δ Hoyer", "Δ Gini", "Δ dead"],
                            [[n, v.zero_frac, v.l0_per_position_mean, v.hoyer_mean, v.gini_mean, v.dead_units]
                             for n, v in d.sparsity_per_site.items()], "wide"))
    parts.append(_table(["layer", "Δ μ local", "Δ μ shift"], [[n, v.mu, v.mu_shift] for n, v in d.coherence.items()],
                        "wide"))
    if d.margins is not None:
        parts.append(_table(["layer", "Δ stripe max", "Δ margin"], [[n, v.stripe_max, v.margin]
                                                                 for n, v in d.margins.items()], "wide"))
    return "".join(parts)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1f;max-width:1600px}
h1{font-size:22px}h2{margin-top:34px;border-bottom:1px solid #ddd;padding-bottom:4px}h4{margin:6px 0}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f4f4f6;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
.tw{max-width:100%;overflow:auto;margin:8px 0}.wide{max-height:420px}
.row{display:flex;gap:18px;flex-wrap:wrap}.col{flex:1 1 420px;min-width:0}
img{max-width:100%}code{background:#f4f4f6;padding:1px 4px;overflow-wrap:anywhere}nav a{margin-right:12px}
dt{font-weight:600}dd{margin:0 0 6px 12px}dt:target{background:#fff3b0}
#headline table{font-size:15px}#headline td,#headline th{padding:4px 12px}.note{color:#555}
"""


def render_html(rep: Mapping[str, Any], extra_sections: Sequence[tuple[str, str, str]] = ()) -> str:
    """The report (:func:`build_report`, or a ``report.json`` read back) as one self-contained HTML page;
    ``extra_sections``: ``(id, title, inner HTML)`` added before the definitions (``sparsezoo analyze --explain`` adds
    the feature explanations)."""
    report = Report.from_json(rep)
    models = report.models
    has_data = all("sparsity" in m.analysis for m in models)
    title = " vs ".join(m.label for m in models)
    sections: list[tuple[str, str, str]] = [("summary", "Summary", _side(models, _summary))]
    if report.deltas is not None:
        sections.append(("deltas", "Changes (subject − baseline)", _deltas(report.deltas)))
    if has_data:
        sections.append(("sparsity", "Sparsity per site", _fig_per_site(models) + _side(models, _sparsity_table)))
        sections.append(("density", "Firing-density histograms", _side(models, _fig_density)))
    sections.append(("coherence", "Dictionary coherence", _fig_coherence(models) + _side(models, _coherence_table)))
    if has_data:
        sections.append(("margins", "Theory margins",
                         _fig_margins(models) + MARGINS_NOTE + _side(models, _margins_table)))
        if all(m.analysis.get("attention") for m in models):
            sections.append(("attention", "Attention entropy and sparsity per head",
                             _side(models, _fig_attention) + _side(models, _attention_table)))
        conv = _fig_relchange(models)
        if all(m.analysis["convergence"].get("cka") for m in models):
            conv += "<h3>CKA between sites</h3>" + _side(models, _fig_cka)
        if all(m.analysis["convergence"].get("ista") for m in models):
            conv += "<h3>ISTA agreement</h3>" + _fig_ista(models) + _side(models, _ista_table)
        sections.append(("convergence", "Layerwise convergence", conv))
    sections += list(extra_sections)
    defs = "".join(f'<dt id="{_def_id(k)}">{html.escape(k)}</dt><dd>{html.escape(v)}</dd>'
                   for k, v in report.definitions.items())
    sections.append(("definitions", "Definitions", f"<dl>{defs}</dl>"))
    nav = "".join(f'<a href="#{sid}">{html.escape(name)}</a>' for sid, name, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{html.escape(name)}</h2>{content}</section>'
                   for sid, name, content in sections)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sparsezoo report: "
            f"{html.escape(title)}</title><style>{CSS}</style></head><body><h1>sparsezoo report: {html.escape(title)}</h1>"
            f"{headline_html(report)}"
            f"<p>command: <code>{html.escape(report.command)}</code> · created {html.escape(report.created)}</p>"
            f"<nav>{nav}</nav>{body}</body></html>\n")
