"""Theory margins: stripe sparsity on inputs with known non-zero patterns, and the verdicts."""

import pytest
import torch
from torch import nn

from analysis.collect import run_pass
from analysis.margins import StripeCollector, theory_margins


def stripes_of(layer: nn.Module, x: torch.Tensor) -> dict:
    model = nn.Sequential(nn.Identity(), layer)
    col = StripeCollector(model)
    run_pass(model, [x], [col])
    return col.results()["1"]


def test_one_nonzero_gives_stripe_one():
    x = torch.zeros(1, 4, 8, 8)
    x[0, 2, 3, 5] = 1.0
    r = stripes_of(nn.Conv2d(4, 6, 3, padding=1), x)
    assert r["stripe_max"] == 1 and r["window_size"] == 36
    assert r["stripe_mean"] == pytest.approx(9 / 64)  # 9 of the 64 windows contain it


def test_dense_input_counts_whole_windows_and_borders():
    x = torch.ones(2, 3, 5, 5)
    r = stripes_of(nn.Conv2d(3, 2, 3, padding=1), x)
    assert r["stripe_max"] == 27  # 3 channels x 3 x 3
    # zero padding: corner windows see 4 positions, edges 6, interior 9 (x 3 channels)
    counts = [12] * 4 + [18] * 12 + [27] * 9
    assert r["stripe_mean"] == pytest.approx(sum(counts) / 25)
    assert r["stripe_p95"] == 27


def test_groups_count_within_their_channels_and_stride():
    x = torch.zeros(1, 4, 6, 6)
    x[0, 0] = 1.0  # only group 0's first channel is non-zero
    r = stripes_of(nn.Conv2d(4, 4, 2, stride=2, groups=2), x)
    assert r["stripe_max"] == 4 and r["window_size"] == 8  # 2 channels x 2 x 2
    assert r["windows"] == 2 * 9  # groups x (3 x 3 output positions)


def test_linear_layer_counts_nonzeros_per_token():
    x = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]]])  # [B=1, T=2, C=3]
    r = stripes_of(nn.Linear(3, 2), x)
    assert r["stripe_max"] == 2 and r["stripe_mean"] == 1.0


def test_first_layer_is_flagged_as_reading_the_data():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1))
    col = StripeCollector(model)
    run_pass(model, [torch.randn(2, 3, 8, 8)], [col])
    res = col.results()
    assert res["0"]["input_is_model_input"] and not res["2"]["input_is_model_input"]


def test_verdicts():
    stripes = {"a": {"stripe_max": 2, "input_is_model_input": False},
               "b": {"stripe_max": 30, "input_is_model_input": True}}
    coh = {"a": {"s_star_shift": 3.0, "s_star_local": 5.0}, "b": {"s_star_shift": None, "s_star_local": 1.5}}
    m = theory_margins(stripes, coh)
    assert m["a"]["margin"] == 1.0 and m["a"]["verdict"].startswith("inside the theorem's regime")
    assert m["b"]["factor"] == 20.0 and "outside the theorem's regime by a factor of 20.0" in m["b"]["verdict"]
    assert "data itself" in m["b"]["verdict"]
