"""``report.html``: :func:`render_html` turns a report (:func:`~analysis.report.build.build_report`, or a
``report.json`` read back) into one self-contained page (inline CSS, plots as embedded PNG, no JavaScript, no
network); :func:`headline_html` is its first block, the key figures side by side."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from analysis.report import figures
from analysis.report.format import CSS, change_text, figure_text, fmt, table
from analysis.report.types import Deltas, ModelEntry, Report, measured
from analysis.sparsity import SiteSparsity


def _def_id(key: str) -> str:
    """The HTML id of a definition's entry (links from the headline figures point to it)."""
    return "def-" + "".join(c if c.isalnum() else "-" for c in key)


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
            cells = [f"{c} / {fmt(o)}" for c, o in zip(cells, row.of, strict=True)]
        if deltas is not None:
            cells.append(f"<b>{change_text(row.delta, row.unit)}</b>")
        body.append(f"<tr><td>{name}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    missing = [m.label for m in models if m.headline.accuracy is None and m.analysis.sparsity is not None]
    note = ""
    if missing:
        why = "; ".join(f"{html.escape(m.label)}: {html.escape(str((m.analysis.accuracy or {}).get('skipped')))}"
                        for m in models if m.label in missing)
        note = f"<p class=\"note\">top-1 not measured ({why}).</p>"
    what = ("What sparsity training bought and what it cost: " if deltas is not None else "")
    data = models[0].analysis.data
    over = f"over {html.escape(data)}" if data else "over the analysis samples"
    return (f'<div id="headline"><p>{what}figures {over}; names link to their definitions.</p>'
            f'<div class="tw"><table class="headline"><thead><tr><th>figure</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{note}</div>')


def _side(models: Sequence[ModelEntry], make: Callable[[ModelEntry], str]) -> str:
    """One panel per model, side by side."""
    cells = "".join(f'<div class="col"><h4>{html.escape(m.label)}</h4>{make(m)}</div>' for m in models)
    return f'<div class="row">{cells}</div>'


def _sparsity_table(m: ModelEntry) -> str:
    """Every measure of every site of one model."""
    a = measured(m.analysis.sparsity)
    per = {n: SiteSparsity.from_json(v) for n, v in a["per_site"].items()}
    stages = a["stages"]
    near = [nz for nz, _ in next(iter(per.values())).near_zero]
    rows = [[n, stages.get(n.split("@")[0], ""), v.channels, v.zero_frac, *[dict(v.near_zero)[nz] for nz in near],
             v.l0_per_position_mean, v.l0_per_position_max, v.hoyer_mean, v.gini_mean, v.dead_units,
             v.dense_units] for n, v in per.items()]
    return table(["site", "stage", "C", "zero_frac", *[nz.key for nz in near], "l0 mean", "l0 max", "Hoyer", "Gini",
                   "dead", "dense"], rows, "wide")


def _coherence_table(m: ModelEntry) -> str:
    """Coherence, bounds and thresholds of every layer of one model."""
    coh = measured(m.analysis.coherence)
    rows = []
    for n, c in coh.items():
        th = c.get("threshold") or {}
        rows.append([n, c["extra"].get("role", c["kind"]), c["shape"], c["groups"], c["local"]["mu"],
                     c["mu_shift"] if c["mu_shift"] is not None else (c["extra"].get("columns") or {}).get("mu"),
                     c["mu_over_welch"],
                     c["local"]["gram_mean"], c["local"]["gram_p99"], c["s_star_local"], c["s_star_shift"],
                     (th.get("quantiles") or {}).get("p50"), th.get("positive_frac")])
    return table(["layer", "kind / role", "shape", "groups", "μ local (rows)", "μ shift (conv) / columns (FFN out)",
                   "μ/Welch", "|Gram| mean", "|Gram| p99",
                   "s* local", "s* shift", "threshold p50", "threshold > 0"], rows, "wide")


def _margins_table(m: ModelEntry) -> str:
    """The theory margin of every layer of one model, with its verdict."""
    mg = measured(m.analysis.margins)
    rows = [[n, v["code_site"] if v["code"] == "activation" else "linear (no activation)", v["stripe_shape"],
             v["s_star"], v["stripe_max"], v["stripe_mean"], v["stripe_p95"], v["window_size"], v["margin"],
             _verdict(v)] for n, v in mg.items()]
    return table(["layer", "code (output of)", "stripe (positions)", "s*", "stripe max", "stripe mean", "stripe p95",
                   "stripe capacity", "margin", "verdict"], rows, "wide")


def _verdict(v: Mapping[str, Any]) -> str:
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
    """ISTA agreement of every layer of one model (skipped layers say why)."""
    rows = []
    for n, v in (measured(m.analysis.convergence).get("ista") or {}).items():
        if "skipped" in v:
            rows.append([n, "—", "—", "—", "—", "—", "—", "skipped: " + v["skipped"]])
        else:
            rows.append([n, v["activation"], v["relative_error"][1] if len(v["relative_error"]) > 1 else None,
                         v["support_jaccard"][-1], v["rho_hat"], v["rho_fit_r2"], v["theory_rate"],
                         "theory vacuous ((2s−1)μ ≥ 1)" if v["theory_vacuous"] else "theory applies"])
    return table(["layer", "activation", "rel. error k=2", "Jaccard k=K", "ρ̂", "fit R²", "(2s−1)μ", "note"], rows, "wide")


def _summary(m: ModelEntry) -> str:
    """One model's headline numbers, samples, parameters and timings, with the theorem's regime in a sentence."""
    a, margins = m.analysis, m.headline.margins
    rows = [[k.replace("_", " "), v] for k, v in m.headline.to_json().items()]
    rows.append(["samples", a.samples])
    rows.append(["parameters", measured(a.model)["parameters"]])
    rows += [[f"time: {k}", v] for k, v in (a.timing or {}).items()]
    text = ""
    if a.margins is not None and margins is not None and margins.layers_measured:
        text = (f"<p>{margins.layers_inside_theorem} of {margins.layers_measured} layers have output codes sparse enough "
                f"for the uniqueness theorem (stripe sparsity ‖Γ‖<sub>0,∞</sub> of the post-activation map below "
                f"s* = ½(1 + 1/μ)); the median layer is outside its regime by a factor of "
                f"{fmt(margins.median_factor_outside)}. Counted: layers followed by an activation (their code is "
                f"thresholded); the others are listed below as linear. Real networks are expected to be far outside "
                f"the regime.</p>")
    return f"<p>source: <code>{html.escape(str(m.source))}</code></p>{text}" + table(["quantity", "value"], rows)


def _deltas(d: Deltas) -> str:
    """The comparison section: the changes subject − baseline, headline, per stage, per site and per layer."""
    parts = [f"<p>Changes are <b>{html.escape(d.subject)}</b> − <b>{html.escape(d.baseline)}</b> (subject − "
             f"baseline; positive: the subject has more). Fractions are differences of fractions (× 100 = points).</p>",
             table(["headline", "change"], [[k, v] for k, v in d.headline.items()])]
    if d.zero_frac_per_stage is not None:
        parts.append(table(["stage", "Δ zero_frac"], [[k, v] for k, v in d.zero_frac_per_stage.items()]))
    if d.sparsity_per_site is not None:
        parts.append(table(["site", "Δ zero_frac", "Δ l0 mean", "Δ Hoyer", "Δ Gini", "Δ dead"],
                            [[n, v.zero_frac, v.l0_per_position_mean, v.hoyer_mean, v.gini_mean, v.dead_units]
                             for n, v in d.sparsity_per_site.items()], "wide"))
    parts.append(table(["layer", "Δ μ local", "Δ μ shift"], [[n, v.mu, v.mu_shift] for n, v in d.coherence.items()],
                        "wide"))
    if d.margins is not None:
        parts.append(table(["layer", "Δ stripe max", "Δ margin"], [[n, v.stripe_max, v.margin]
                                                                 for n, v in d.margins.items()], "wide"))
    return "".join(parts)


def _attention_table(m: ModelEntry) -> str:
    """Per-head attention statistics of one model, averaged over the heads of each layer."""
    att = measured(m.analysis.attention)
    rows = [[n, v["heads"], v["rows"], *v["mean"].values()] for n, v in att.items()]
    keys = list(next(iter(att.values()))["mean"]) if att else []
    return table(["layer", "heads", "query rows", *[f"{k} (mean over heads)" for k in keys]], rows, "wide")



def render_html(rep: Mapping[str, Any], extra_sections: Sequence[tuple[str, str, str]] = ()) -> str:
    """The report (:func:`build_report`, or a ``report.json`` read back) as one self-contained HTML page;
    ``extra_sections``: ``(id, title, inner HTML)`` added before the definitions (``sparsezoo analyze --explain`` adds
    the feature explanations)."""
    report = Report.from_json(rep)
    models = report.models
    has_data = all(m.analysis.sparsity is not None for m in models)
    title = " vs ".join(m.label for m in models)
    sections: list[tuple[str, str, str]] = [("summary", "Summary", _side(models, _summary))]
    if report.deltas is not None:
        sections.append(("deltas", "Changes (subject − baseline)", _deltas(report.deltas)))
    if has_data:
        sections.append(("sparsity", "Sparsity per site", figures.plot_per_site(models) + _side(models, _sparsity_table)))
        sections.append(("density", "Firing-density histograms", _side(models, figures.plot_density)))
    sections.append(("coherence", "Dictionary coherence", figures.plot_coherence(models) + _side(models, _coherence_table)))
    if has_data:
        sections.append(("margins", "Theory margins",
                         figures.plot_margins(models) + MARGINS_NOTE + _side(models, _margins_table)))
        if all(m.analysis.attention for m in models):
            sections.append(("attention", "Attention entropy and sparsity per head",
                             _side(models, figures.plot_attention) + _side(models, _attention_table)))
        conv = figures.plot_relative_change(models)
        if all(measured(m.analysis.convergence).get("cka") for m in models):
            conv += "<h3>CKA between sites</h3>" + _side(models, figures.plot_cka)
        if all(measured(m.analysis.convergence).get("ista") for m in models):
            conv += "<h3>ISTA agreement</h3>" + figures.plot_ista(models) + _side(models, _ista_table)
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
