"""Results are typed objects (SiteSparsity, SparsitySummary, PenaltyTerms) whose to_json() writes exactly the dicts
the published metrics.json / report.json hold: same keys, same order, same numbers (json.dumps byte for byte)."""

import json
import math

import pytest
import torch
from torch import nn

from analysis.sites import find_sites
from analysis.sparsity import NearZero, SiteSparsity, SparsityMeter, SparsityStats, SparsitySummary, summarize


def one_hot_codes() -> torch.Tensor:
    """[B=2, C=4, 1, 1]: sample 0 fires channel 0, sample 1 channel 1, both with value 2; channels 2, 3 never."""
    a = torch.zeros(2, 4, 1, 1)
    a[0, 0] = a[1, 1] = 2.0
    return a


def test_a_one_hot_site_gives_the_known_answers_as_fields_and_as_the_published_dict():
    st = SparsityStats(gini_every=1)  # Gini on every code vector
    st.update(one_hot_codes(), channel_dim=1)
    site = st.site_result()
    assert (site.channels, site.positions, site.entries) == (4, 2, 8)
    assert site.zero_frac == 0.75 and site.hoyer_mean == 1.0 and site.gini_mean == 0.75  # (C-1)/C, 1, 1 - 1/C
    assert site.near_zero == ((NearZero("abs", 0.01), 0.75), (NearZero("rel", 0.01), 0.75))
    assert (site.dead_units, site.dead_frac, site.dense_units) == (2, 0.5, 0)
    # the dict the untyped code built, written out by hand
    expected = {
        "channels": 4, "positions": 2, "entries": 8, "zero_frac": 0.75,
        "near_zero_frac(abs,tau=0.01)": 0.75, "near_zero_frac(rel,tau=0.01)": 0.75,
        "l0_per_position_mean": 1.0, "l0_per_position_max": 1, "l0_per_position_frac": 0.25,
        "hoyer_mean": 1.0, "hoyer_hist": {"edges": [i / 20 for i in range(21)], "counts": [0] * 19 + [2]},
        "gini_mean": 0.75,
        "gini_quantiles": {f"p{round(q * 100)}": (37 + q) / 50 for q in (0.05, 0.25, 0.5, 0.75, 0.95)},
        "gini_hist": {"edges": [i / 50 for i in range(51)], "counts": [0] * 37 + [2] + [0] * 12},
        "gini_subsample": {"every": 1, "codes": 2},
        "empty_position_frac": 0.0, "l1_per_position_mean": 2.0,
        "dead_units": 2, "dense_units": 0, "dead_frac": 0.5, "dense_frac": 0.0,
        # both live channels fire at 1 position of 2: log10(0.5) = -0.30 falls in the last half decade [-0.5, 0)
        "log10_firing_density_hist": {"edges": [e / 2 for e in range(-16, 1)], "counts": [0] * 15 + [2]},
    }
    assert json.dumps(st.result()) == json.dumps(site.to_json()) == json.dumps(expected)


def test_a_summary_weighs_sites_and_entries_as_documented():
    small, big = SparsityStats(), SparsityStats()
    small.update(one_hot_codes(), channel_dim=1)  # zero_frac 0.75 over 8 entries
    big.update(torch.ones(6, 4, 1, 1), channel_dim=1)  # zero_frac 0 over 24 entries
    s = SparsitySummary.of({"a": small.site_result(), "b": big.site_result()}, {"a": "r2"})
    assert s.sites == 2 and s.zero_frac_mean_sites == 0.375 and s.zero_frac_all_entries == 6 / 32
    assert s.near_zero_of("rel") == (NearZero("rel", 0.01), 0.375) and s.dead_units == 2
    assert s.zero_frac_per_stage == {"r2": 0.75, "other": 0.0}
    assert SparsitySummary.near_zero_key(NearZero("abs", 0.01)) == "near_zero_frac(abs,tau=0.01)_mean_sites"
    assert list(s.to_json()) == ["sites", "zero_frac_mean_sites", "zero_frac_all_entries", "l0_per_position_mean_sites",
                                 "l0_per_position_frac_mean_sites", "near_zero_frac(abs,tau=0.01)_mean_sites",
                                 "near_zero_frac(rel,tau=0.01)_mean_sites", "dead_units", "dense_units",
                                 "zero_frac_per_stage"]
    assert "zero_frac_per_stage" not in SparsitySummary.of({"a": small.site_result()}).to_json()


def test_stored_results_of_a_real_model_read_back_to_the_same_json():
    import timm

    from analysis.pipeline import measure
    from analysis.report import clean

    torch.manual_seed(0)
    model = timm.create_model("test_resnet.r160_in1k", pretrained=False, num_classes=3).eval()
    res = measure(model, [torch.randn(4, 3, 32, 32)], fused=False)
    stored = json.loads(json.dumps(res))  # as metrics.json holds it (NaN stays NaN)
    for name, site in stored["per_site"].items():
        assert json.dumps(SiteSparsity.from_json(site).to_json()) == json.dumps(res["per_site"][name])
        cleaned = clean(site)  # as report.json holds it (NaN is null)
        assert SiteSparsity.from_json(cleaned).to_json() == cleaned
    assert json.dumps(SparsitySummary.from_json(stored["summary"]).to_json()) == json.dumps(res["summary"])
    assert json.dumps(summarize(stored["per_site"], stored["stages"])) == json.dumps(res["summary"])


def test_the_history_table_reads_the_near_zero_column_from_the_summary():
    from sparsezoo.cli.finetune import format_history

    summary = SparsitySummary(sites=1, zero_frac_mean_sites=0.5, zero_frac_all_entries=0.5,
                              l0_per_position_mean_sites=3.0, l0_per_position_frac_mean_sites=0.25,
                              near_zero=((NearZero("rel", 0.01), 0.9), (NearZero("abs", 0.05), 0.625)),
                              dead_units=0, dense_units=0)
    history = [{"epoch": 1, "val": {"top1": 0.5, "loss": 1.0, "sparsity": summary.to_json()},
                "train": {"task_loss": 1.0, "penalty": {}}}]
    head, row = format_history(history).splitlines()
    assert "  near_zero_frac(abs,tau=0.05)  " in head and "rel" not in head
    column = head.index("near_zero_frac(abs")
    assert row[column:column + len("near_zero_frac(abs,tau=0.05)")].strip() == "0.6250"


def test_penalty_terms_are_a_read_only_mapping_with_host_floats():
    from sparsezoo.train.penalties import PenaltyTerms, SparsityPenalty

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU())
    with SparsityPenalty(model, l1=1e-3, hoyer_square=1e-3) as reg:
        assert isinstance(reg.last_terms, PenaltyTerms) and not reg.last_terms
        model(torch.randn(4, 3))
        total = reg.penalty()
    terms = reg.last_terms
    assert list(terms) == ["l1", "hoyer_square"] and not terms["l1"].requires_grad
    assert terms.to_json() == {k: float(v) for k, v in terms.items()}
    assert total.item() == pytest.approx(1e-3 * sum(terms.to_json().values()), rel=1e-6)


def test_the_report_labels_the_near_zero_figure_by_its_definition():
    from analysis.report import headline_figures

    heads = [{"zero_frac_mean_sites": 0.5, "near_zero_frac(abs,tau=0.05)_mean_sites": 0.625}]
    rows = {r["key"]: r for r in headline_figures([{"headline": h} for h in heads], None)}
    near = rows["near_zero_frac(abs,tau=0.05)_mean_sites"]
    assert near["label"] == "near_zero_frac(abs,tau=0.05)" and near["values"] == [0.625]


def test_a_meter_reports_the_same_per_site_dicts_as_its_stats():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
    with SparsityMeter(model, find_sites(model)) as meter, torch.no_grad():
        model(torch.randn(5, 4))
    (key, st), = meter.stats.items()
    assert json.dumps(meter.results()[key]) == json.dumps(st.site_result().to_json())
    assert not math.isnan(st.site_result().hoyer_mean)
