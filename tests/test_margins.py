"""Theory margins: the stripe sparsity of each layer's output code on hand-made codes, which code is measured,
and the verdicts (Papyan-Romano-Elad 2017; analysis.margins). Brute-force checks over every conv variant are in
test_conv_geometry.py."""

import pytest
import torch
from torch import nn

from analysis.collect import run_pass
from analysis.margins import StripeCollector, theory_margins


def identity_conv(channels: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A conv whose output at position p is its input at p·stride (a delta at the kernel centre)."""
    conv = nn.Conv2d(channels, channels, k, stride=stride, padding=k // 2, groups=groups)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for c in range(channels):
            conv.weight[c, c % (channels // groups), k // 2, k // 2] = 1.0
    return conv


def stripe_of(conv: nn.Module, x: torch.Tensor) -> dict:
    model = nn.Sequential(conv, nn.ReLU())
    col = StripeCollector(model)
    run_pass(model, [x], [col])
    return col.results()["0"]


def test_hand_computed_stripe_of_a_3x3_layer_is_a_5x5_neighbourhood():
    x = torch.zeros(1, 2, 8, 8)
    for i, j in [(0, 0), (2, 2), (4, 4)]:
        x[0, 0, i, j] = 1.0
    x[0, 1, 4, 0] = 1.0
    x[0, 1, 7, 7] = -1.0  # negative: the ReLU zeroes it, so it is not part of the code
    r = stripe_of(identity_conv(2, 3), x)
    assert r["stripe_shape"] == [5, 5] and r["window_size"] == 2 * 25
    assert r["stripe_max"] == 4  # the neighbourhood of (2, 2) holds all four non-zeros


def test_hand_computed_stripe_of_a_strided_layer_lives_in_the_output_grid():
    x = torch.zeros(1, 2, 8, 8)
    for i in range(4):
        x[0, 0, 2 * i, 2 * i] = 1.0  # output (i, i)
    x[0, 1, 0, 6] = 1.0  # output (0, 3)
    r = stripe_of(identity_conv(2, 3, stride=2), x)
    # k = 3, stride 2: atoms overlap within |p - q| <= 1 output positions, a 3x3 neighbourhood
    assert r["stripe_shape"] == [3, 3] and r["stripe_max"] == 3


def test_hand_computed_stripe_of_a_grouped_layer_counts_its_own_group_only():
    x = torch.zeros(1, 4, 5, 5)
    x[0, [0, 1, 2], 0, 0] = 1.0  # two non-zeros in group 0, one in group 1, all at one position
    r = stripe_of(identity_conv(4, 1, groups=2), x)
    assert r["stripe_shape"] == [1, 1] and r["window_size"] == 2 and r["stripe_max"] == 2
    assert r["stripes"] == 2 * 25


def test_margin_and_verdict_from_the_measured_stripe():
    x = torch.zeros(1, 2, 8, 8)
    x[0, 0, 1, 1] = x[0, 1, 2, 2] = 1.0
    r = {"0": stripe_of(identity_conv(2, 3), x)}
    inside = theory_margins(r, {"0": {"s_star_shift": 2.5}})["0"]
    assert inside["margin"] == pytest.approx(0.5) and inside["inside"]
    assert inside["verdict"].startswith("inside the theorem's regime")
    outside = theory_margins(r, {"0": {"s_star_shift": 1.25}})["0"]
    assert outside["factor"] == pytest.approx(1.6) and not outside["inside"]
    assert "outside the theorem's regime by a factor of 1.6" in outside["verdict"]
    na = theory_margins(r, {"0": {"s_star_shift": None, "s_star_local": None}})["0"]
    assert na["margin"] is None and na["verdict"].startswith("not applicable")


def test_a_layer_without_activation_has_its_batchnorm_output_as_code():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Conv2d(3, 2, 1), nn.ReLU()).eval()
    col = StripeCollector(model)
    run_pass(model, [torch.randn(2, 2, 6, 6)], [col])
    res = col.results()
    assert res["0"]["code"] == "linear" and res["0"]["stripe_max"] == 3 * 4 * 4  # dense: every entry
    assert res["2"]["code"] == "activation" and res["2"]["code_site"] == "3"


def test_a_shared_activation_counts_only_the_call_after_its_layer():
    class Block(nn.Module):  # torchvision style: one ReLU module called twice
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 2, 1)
            self.b = nn.Conv2d(2, 5, 1)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.b(self.relu(self.a(x))))

    model = Block().eval()
    col = StripeCollector(model)
    run_pass(model, [torch.randn(2, 2, 4, 4)], [col])
    res = col.results()
    assert res["b"]["code"] == "activation" and res["b"]["window_size"] == 5  # the 5-channel call, not the first
    assert res["b"]["stripes"] == 2 * 16


def test_linear_layer_counts_nonzeros_of_the_output_per_token_without_padding():
    lin = nn.Linear(2, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        lin.bias.zero_()
    model = nn.Sequential(lin, nn.ReLU())
    x = torch.tensor([[[1.0, -1.0], [1.0, 1.0], [5.0, 5.0]]])  # token codes: [1, 0, 0], [1, 1, 2], padding
    col = StripeCollector(model)
    col.position_mask = torch.tensor([[True, True, False]])
    with col:
        model(x)
    r = col.results()["0"]
    assert r["stripe_max"] == 3 and r["stripe_mean"] == 2.0 and r["stripes"] == 2 and r["window_size"] == 3
