"""Consumers read a statistic's meaning through a typed key (analysis.sparsity.NearZero), not by slicing names;
the JSON keys themselves stay as published."""

import pytest

from analysis.sparsity import NearZero, near_zero_stats


@pytest.mark.parametrize("nz", [NearZero("abs", 0.01), NearZero("rel", 0.05), NearZero("abs", 1e-6)])
def test_keys_round_trip_with_and_without_the_summary_suffix(nz):
    assert NearZero.parse(nz.key) == nz and NearZero.parse(nz.key + "_mean_sites") == nz


def test_published_key_format_is_unchanged():
    assert NearZero("abs", 0.01).key == "near_zero_frac(abs,tau=0.01)"
    assert NearZero.parse("near_zero_frac(rel,tau=0.01)_mean_sites") == NearZero("rel", 0.01)


@pytest.mark.parametrize("key", ["zero_frac", "near_zero_frac", "near_zero_frac(abs)", "near_zero_frac(max,tau=1)",
                                 "near_zero_frac(abs,tau=0.01)x"])
def test_other_keys_are_not_near_zero_statistics(key):
    assert NearZero.parse(key) is None


def test_near_zero_stats_selects_by_kind_in_order():
    stats = {"zero_frac": 0.5, "near_zero_frac(abs,tau=0.01)_mean_sites": 0.6,
             "near_zero_frac(rel,tau=0.01)_mean_sites": 0.7}
    assert [k for _, k in near_zero_stats(stats)] == list(stats)[1:]
    assert near_zero_stats(stats, "rel") == [(NearZero("rel", 0.01), "near_zero_frac(rel,tau=0.01)_mean_sites")]


# The published files' shape: consumers (cards, the zoo, other people's scripts) read these keys.
METRICS_KEYS = {"complete", "recipe_hash", "environment", "splits", "final", "test", "history", "definitions",
                "wall_seconds_this_session"}
SUMMARY_KEYS = {"sites", "zero_frac_mean_sites", "zero_frac_all_entries", "l0_per_position_mean_sites",
                "l0_per_position_frac_mean_sites", "near_zero_frac(abs,tau=0.01)_mean_sites",
                "near_zero_frac(rel,tau=0.01)_mean_sites", "dead_units", "dense_units", "zero_frac_per_stage"}
REPORT_KEYS = {"sparsezoo_report", "created", "command", "definitions", "models", "headline_figures",
               "deltas_subject_minus_baseline"}
ANALYSIS_KEYS = {"model", "coherence", "timing", "samples", "accuracy", "sparsity", "margins", "convergence", "data"}


def test_metrics_and_report_json_keep_their_shape(l1_run, tmp_path):
    import json

    from sparsezoo.cli import main

    _, run, _ = l1_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == METRICS_KEYS
    assert set(metrics["final"]) == {"top1", "loss", "sparsity"} and set(metrics["final"]["sparsity"]) == SUMMARY_KEYS
    assert main(["analyze", str(run), "--compare", "test_resnet", "--no-pretrained", "--data", "digits", "--samples",
                 "16", "--batch-size", "8", "--no-fused", "--no-ista", "--out", str(tmp_path / "rep")]) == 0
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert set(rep) == REPORT_KEYS and rep["sparsezoo_report"] == 2
    for m in rep["models"]:
        assert set(m) == {"label", "source", "headline", "analysis"} and set(m["analysis"]) == ANALYSIS_KEYS
        assert set(m["analysis"]["sparsity"]["summary"]) == SUMMARY_KEYS
    assert {"key", "label", "definition", "unit", "values", "delta"} <= set(rep["headline_figures"][0])
