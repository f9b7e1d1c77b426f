"""The kernels both sparsity meters share (analysis.sparsity.kernels), on inputs with known answers: the typed running
sums and how they merge, the Gini hash and selection, and the [0, 1] binning; and the one table of definitions."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

import analysis.sparsity as sparsity
from analysis import definitions
from analysis.graph import gini_subsample
from analysis.sparsity.kernels import (
    COUNTS,
    GINI,
    GINI_BINS,
    HOYER_BINS,
    SORT_FREE,
    SparsityState,
    bin01,
    combine,
    gini_offset,
    gini_selection,
    reductions,
)


def test_the_state_is_typed_and_its_groups_cover_its_fields_in_kernel_order():
    assert SORT_FREE == ("nnz", "near_abs", "near_rel", "empty", "l0_max", "hoyer_sum", "l1_sum", "fire", "hoyer_hist")
    assert GINI == ("gini_sum", "gini_count", "gini_hist") and COUNTS == ("entries", "positions")
    assert [f.name for f in fields(SparsityState)] == [*SORT_FREE, *GINI, *COUNTS]
    st = SparsityState.zeros(5, "cpu")
    assert st.fire.shape == (5,) and st.hoyer_hist.shape == (HOYER_BINS,) and st.gini_hist.shape == (GINI_BINS,)
    assert st.hoyer_sum.dtype == st.l1_sum.dtype == st.gini_sum.dtype == torch.float64 and st.nnz.dtype == torch.int64
    assert (st.entries, st.positions) == (0, 0)  # Python ints on the per-site path
    assert isinstance(SparsityState.zeros(5, "cpu", tensor_counts=True).entries, torch.Tensor)
    assert len(reductions(torch.rand(2, 5, 3), 0.1, 0.1)) == len(SORT_FREE)


def test_l0_max_merges_by_maximum_and_every_other_sum_by_addition():
    t = lambda *v: tuple(torch.tensor(x) for x in v)  # noqa: E731
    assert combine(("nnz", "l0_max", "fire"), t(3, 4, 1), t(5, 2, 1)) == t(8, 4, 2)
    st = SparsityState.zeros(2, "cpu")
    st.add(("l0_max", "nnz"), t(3, 7))
    st.add(("l0_max", "nnz"), t(2, 1))
    assert (int(st.l0_max), int(st.nnz)) == (3, 8)


def test_reducing_over_processes_applies_each_fields_op_and_keeps_int_counts_ints():
    st = SparsityState.zeros(2, "cpu")
    st.entries, st.positions, st.l0_max, st.nnz = 10, 4, torch.tensor(3), torch.tensor(6)
    seen = []

    def fake_all_reduce(v: torch.Tensor, op: str) -> torch.Tensor:
        seen.append(op)
        return v * 2 if op == "sum" else v + 100

    st.reduce_(fake_all_reduce)
    assert (st.entries, st.positions, int(st.l0_max), int(st.nnz)) == (20, 8, 103, 12)
    assert type(st.entries) is int and seen.count("max") == 1  # same field order on every process: by name
    with pytest.raises(ValueError):  # AnalysisError: nothing recorded
        sparsity.SparsityStats().reduce_(fake_all_reduce)


def test_the_gini_hash_has_known_values_and_both_meters_select_the_same_codes():
    idx = torch.arange(6)
    assert gini_offset(idx, 64).tolist() == [((i * 2654435761 + 12345) % 4294967296 >> 7) % 64 for i in range(6)]
    x = torch.arange(6 * 3 * 130, dtype=torch.float32).reshape(6, 3, 130)  # every code vector distinct
    sel = gini_selection(idx, 130, 64)
    codes, ok = gini_subsample(x, idx, None, 64)  # the whole-graph meter's fixed-size gather
    assert torch.equal(codes[ok], x.transpose(1, 2)[sel])


def test_bin01_puts_values_in_equal_bins_of_the_unit_interval():
    v = torch.tensor([0.0, 0.049, 0.05, 0.5, 0.999, 1.0, -0.01, 1.01, float("nan")])
    assert bin01(v, 20).tolist() == [0, 0, 1, 10, 19, 19, -1, -1, -1]


def test_one_table_of_definitions_is_what_reports_and_cards_read():
    d = definitions
    assert list(d.DEFINITIONS) == [m.name for m in d.ANALYSIS] and len(d.METRICS) == len(d.ANALYSIS) + len(d.PENALTIES)
    assert all(m.formula and m.unit for m in d.METRICS.values())
    assert "90%" in d.DEFINITIONS["dense_units"] and "1 code vector in 64" in d.DEFINITIONS["gini"]
    assert d.definitions_of(["loss", "penalty.l1"]) == {"loss": d.METRICS["loss"].formula,
                                                         "penalty.l1": d.METRICS["penalty.l1"].formula}
    assert d.MODEL_WIDE["dense_units"].aggregate == ("channels with |a| > threshold at more than 90% of positions, "
                                                     "summed over sites")
    assert d.near_zero_measure("rel", 0.05) == ("near_zero_frac(rel)", 0.05, "fraction of entries with |a| <= threshold"
                                                " x the largest |a| of the same code vector, mean over sites")
    # the code that computes a number reads the constants its definition names
    assert (sparsity.DENSE_THRESHOLD, sparsity.GINI_EVERY, sparsity.DEFAULT_TAU_ABS, sparsity.DEFAULT_TAU_REL) == (
        d.DENSE_THRESHOLD, d.GINI_EVERY, d.DEFAULT_TAU_ABS, d.DEFAULT_TAU_REL)
