"""Typed report sections: report.json, its comparison and headline sections, and an explain result's summary read
back to the same JSON they were written as; known answers for the comparison, a headline row and the summary."""

import dataclasses
import json
from functools import cache

import numpy as np
import pytest
import torch
from torch import nn

from analysis.interpret.metrics import ExplainSummary, summarize
from analysis.report import (
    DELTA_KEY,
    CoherenceDelta,
    Deltas,
    HeadlineFigure,
    MarginDelta,
    ModelEntry,
    Report,
    SiteDelta,
    build_report,
    headline_figures,
)
from analysis.sparsity import SiteSparsity


def stored(obj):
    """As a file holds it: through JSON and back."""
    return json.loads(json.dumps(obj))


@pytest.fixture(scope="module")
def analyses():
    """Two analyses of timm's test_resnet (different random weights) over the same labelled batches."""
    import timm

    from analysis.pipeline import analyze

    torch.manual_seed(0)
    loader = [(torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,))) for _ in range(2)]
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = timm.create_model("test_resnet.r160_in1k", pretrained=False, num_classes=3).eval()
        out.append(analyze(model, loader, max_samples=16, ista_samples=2, ista_steps=2, fused=False, num_classes=3))
    return out


def test_a_real_comparison_report_reads_back_to_the_same_json(analyses):
    rep = build_report([("sparse", "a", analyses[0]), ("dense", "b", analyses[1])], "sparsezoo analyze a")
    text = stored(rep)
    report = Report.from_json(text)
    assert report.to_json() == text and json.dumps(report.to_json()) == json.dumps(rep)
    assert Deltas.from_json(text[DELTA_KEY]).to_json() == text[DELTA_KEY]
    assert all(HeadlineFigure.from_json(f).to_json() == f for f in text["headline_figures"])
    assert [m.label for m in report.models] == ["sparse", "dense"] and report.version == 2
    d = report.deltas
    assert (d.subject, d.baseline) == ("sparse", "dense")
    assert set(d.sparsity_per_site) == set(analyses[0]["sparsity"]["per_site"]) and d.margins and d.coherence
    assert all(isinstance(v, SiteDelta) for v in d.sparsity_per_site.values())
    site, value = next(iter(d.sparsity_per_site.items()))
    per = [a["sparsity"]["per_site"][site]["zero_frac"] for a in analyses]
    assert value.zero_frac == pytest.approx(per[0] - per[1])
    assert all(f.compared for f in report.figures)
    assert headline_figures(text["models"], text[DELTA_KEY]) == text["headline_figures"]


def test_a_single_model_report_has_no_comparison(analyses):
    rep = stored(build_report([("only", "a", analyses[0])], "c"))
    report = Report.from_json(rep)
    assert report.to_json() == rep and report.deltas is None and DELTA_KEY not in rep
    assert report.figures and not any(f.compared for f in report.figures)
    assert all("delta" not in f for f in rep["headline_figures"])


@cache
def measured_site() -> SiteSparsity:
    from analysis.pipeline import measure

    torch.manual_seed(0)
    per_site = measure(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), [torch.randn(5, 3)], fused=False)["per_site"]
    return SiteSparsity.from_json(per_site["1"])


def hand_made(zero, l0, hoyer, gini, dead, stages, coherence, stripe, margin):
    """An analysis result with one measured site whose numbers are set by hand."""
    site = dataclasses.replace(measured_site(), zero_frac=zero, l0_per_position_mean=l0, hoyer_mean=hoyer,
                               gini_mean=gini, dead_units=dead)
    summary = {"sites": 1, "zero_frac_mean_sites": zero, "zero_frac_all_entries": zero,
               "l0_per_position_frac_mean_sites": l0 / 4, "dead_units": dead, "dense_units": 0,
               "zero_frac_per_stage": stages}
    margins = {"conv": {"stripe_max": stripe, "margin": margin, "code": "activation", "inside": False, "factor": 2.0}}
    return {"model": {"parameters": 1}, "coherence": coherence, "samples": 8, "margins": margins,
            "sparsity": {"summary": summary, "per_site": {"act": site.to_json()}, "stages": {}}}


def test_deltas_known_answers():
    sparse = hand_made(0.75, 2.0, 0.75, None, 3, {"r4": 0.75, "r8": 0.5},
                       {"conv": {"local": {"mu": 0.5}, "mu_shift": None}, "fc": {"local": {"mu": 0.25}, "mu_shift": 0.125}},
                       stripe=6, margin=0.5)
    dense = hand_made(0.5, 3.0, 0.5, 0.5, 1, {"r4": 0.5},
                      {"conv": {"local": {"mu": 0.75}, "mu_shift": None}}, stripe=8, margin=None)
    d = Deltas.of(("sparse", sparse), ("dense", dense))
    assert d == Deltas(subject="sparse", baseline="dense", headline=d.headline,
                       coherence={"conv": CoherenceDelta(mu=-0.25, mu_shift=None)},
                       sparsity_per_site={"act": SiteDelta(zero_frac=0.25, l0_per_position_mean=-1.0, hoyer_mean=0.25,
                                                           gini_mean=None, dead_units=2)},
                       zero_frac_per_stage={"r4": 0.25}, margins={"conv": MarginDelta(stripe_max=-2, margin=None)})
    assert d.headline["zero_frac_mean_sites"] == 0.25 and d.headline["dead_units"] == 2 and d.headline["layers"] == 1
    assert d.headline["hoyer_mean_sites"] == 0.25 and "median_factor_outside" not in d.headline  # dense: no margin
    assert list(d.to_json()) == ["subject", "baseline", "headline", "sparsity_per_site", "zero_frac_per_stage",
                                 "coherence", "margins"]
    assert d.to_json()["sparsity_per_site"] == {"act": {"zero_frac": 0.25, "l0_per_position_mean": -1.0,
                                                        "hoyer_mean": 0.25, "gini_mean": None, "dead_units": 2}}
    assert Deltas.from_json(stored(d.to_json())) == d
    weights_only = Deltas.of(("a", {"coherence": sparse["coherence"]}), ("b", {"coherence": dense["coherence"]}))
    assert weights_only.to_json() == {"subject": "a", "baseline": "b", "headline": weights_only.headline,
                                      "coherence": {"conv": {"mu": -0.25, "mu_shift": None}}}


def test_headline_figure_known_answers():
    heads = [{"zero_frac_mean_sites": 0.75, "layers_inside_theorem": 1, "layers_measured": 4, "top1": None},
             {"zero_frac_mean_sites": 0.5, "layers_inside_theorem": 0, "layers_measured": 3}]
    rows = {r.key: r for r in HeadlineFigure.rows(heads, {"zero_frac_mean_sites": 0.25})}
    assert list(rows) == ["zero_frac_mean_sites", "layers_inside_theorem"]  # top1 of the first model is missing
    assert rows["zero_frac_mean_sites"] == HeadlineFigure("zero_frac_mean_sites", "zero_frac", "zero_frac_mean_sites",
                                                          "fraction", (0.75, 0.5), None, compared=True, delta=0.25)
    assert rows["layers_inside_theorem"].to_json() == {
        "key": "layers_inside_theorem", "label": "layers inside the theorem's regime", "definition": "margin",
        "unit": "count", "values": [1, 0], "of": [4, 3], "delta": None}
    alone = HeadlineFigure.rows(heads[:1])[0]
    assert alone.to_json() == {"key": "zero_frac_mean_sites", "label": "zero_frac", "definition": "zero_frac_mean_sites",
                               "unit": "fraction", "values": [0.75]}
    assert HeadlineFigure.from_json(alone.to_json()) == alone


def test_model_entry_keeps_its_analysis():
    entry = ModelEntry("l1", "runs/l1", {"sites": 2}, {"samples": 8})
    assert list(entry.to_json()) == ["label", "source", "headline", "analysis"]
    assert ModelEntry.from_json(entry.to_json()) == entry


def explain_result():
    """An explain result with only what the summary reads: two features, three examples."""
    ex = lambda gini, rel, class_rel: {"feature_gini": gini, "feature_top5_mass": 0.5, "class_gini": None,  # noqa: E731
                                       "feature_delta_abs": rel / 10, "feature_delta_rel": rel,
                                       "class_delta_rel": class_rel}
    return {"features": [{"index": 0, "examples": [ex(0.25, 0.125, None), ex(0.75, 0.5, 0.25)]},
                         {"index": 2, "examples": [ex(0.5, 0.25, None)]}],
            "stats": {"firing_density": np.array([0.125, 0.5, 0.375]), "selectivity": np.array([2.0, 9.0, 4.0]),
                      "class_selectivity": None}}


def test_explain_summary_known_answers():
    s = ExplainSummary.of(explain_result())
    assert s == ExplainSummary(features=2, examples=3, firing_density_mean=0.25, selectivity_median=3.0,
                               class_selectivity_mean=None, feature_attr_gini_mean=0.5, feature_attr_top5_mass_mean=0.5,
                               class_attr_gini_mean=None, class_attr_top5_mass_mean=None, feature_delta_abs_max=0.05,
                               feature_delta_rel_median=0.25, class_delta_rel_median=0.25)
    assert s.worst_delta_rel_median == 0.25
    assert dataclasses.replace(s, feature_delta_rel_median=0.5).worst_delta_rel_median == 0.5
    assert dataclasses.replace(s, feature_delta_rel_median=None, class_delta_rel_median=None).worst_delta_rel_median is None
    # the published summary: these keys, in this order
    assert list(summarize(explain_result())) == [
        "features", "examples", "firing_density_mean", "selectivity_median", "class_selectivity_mean",
        "feature_attr_gini_mean", "feature_attr_top5_mass_mean", "class_attr_gini_mean", "class_attr_top5_mass_mean",
        "feature_delta_abs_max", "feature_delta_rel_median", "class_delta_rel_median"]
    assert ExplainSummary.from_json(stored(s.to_json())) == s


def test_a_real_explain_summary_reads_back_to_the_same_json():
    from analysis.interpret import explain, to_json

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    loader = [(torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,)))]
    res = explain(model, loader, site="1", features=2, examples=2, n_steps=4, class_method=None)
    text = stored(to_json(res))["summary"]
    assert ExplainSummary.from_json(text).to_json() == text
    assert json.dumps(ExplainSummary.from_json(res["summary"]).to_json()) == json.dumps(res["summary"])


def test_a_headline_is_typed_groups_stored_as_one_flat_dict(analyses):
    from analysis.pipeline import Headline, headline

    h = Headline.of(analyses[0])
    assert h.accuracy is not None and h.weights is not None and h.sparsity is not None and h.margins is not None
    flat = headline(analyses[0])
    assert flat == h.to_json() and list(flat)[:3] == ["top1", "loss", "layers"]
    assert list(flat)[-4:] == ["hoyer_mean_sites", "layers_inside_theorem", "layers_measured", "median_factor_outside"]
    assert h.sparsity.near_zero == {k: flat[k] for k in flat if k.startswith("near_zero_frac(")}
    assert Headline.from_json(stored(flat)) == h
    weights_only = Headline.of({"coherence": analyses[0]["coherence"]})
    assert (weights_only.accuracy, weights_only.sparsity, weights_only.margins) == (None, None, None)
    assert list(weights_only.to_json()) == ["layers", "mu_local_mean", "mu_local_median", "mu_local_layers",
                                            "mu_shift_max"]


def test_a_model_entry_holds_its_analysis_typed_by_section(analyses):
    from analysis.report import Analysis
    from analysis.report.types import measured

    a = Analysis.from_json(analyses[0])
    assert a.sparsity == analyses[0]["sparsity"] and a.samples == 16
    assert a.attention is None and a.explain is None and a.data is None
    assert list(a.to_json()) == list(analyses[0])  # the sections analyze wrote, in its order
    assert measured(a.margins) == analyses[0]["margins"]
    with pytest.raises(KeyError):
        measured(a.attention)
    stored_headline = stored(build_report([("m", "src", analyses[0])], "c"))["models"][0]["headline"]
    entry = ModelEntry("m", "src", stored_headline, analyses[0])  # plain data is read typed
    assert isinstance(entry.analysis, Analysis) and entry.headline.sparsity is not None
