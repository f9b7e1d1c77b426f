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
