"""Layerwise convergence: CKA known answers, ISTA exactness and its fixed point, relative change, blocks."""

import copy

import numpy as np
import pytest
import timm
import torch
from scipy.optimize import minimize
from torch import nn

from analysis.collect import run_pass
from analysis.layerwise import (
    CKACollector,
    RelChangeCollector,
    convergence,
    find_blocks,
    ista_agreement,
    layer_ista,
    linear_cka,
)
from analysis.sites import find_sites


def test_cka_of_a_representation_with_itself_is_one_and_invariant():
    torch.manual_seed(0)
    x = torch.randn(64, 20, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(20, 20, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.7 * x @ q) == pytest.approx(1.0, abs=1e-10)  # orthogonal transform + isotropic scale
    y = torch.randn(64, 20, dtype=torch.float64)
    assert abs(linear_cka(x, y)) < 0.2  # independent representations: near 0 (unbiased estimator)


def test_streaming_cka_matches_the_function_on_each_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.GELU())
    sites = find_sites(model)
    x = torch.randn(32, 6)
    col = CKACollector(model, sites)
    run_pass(model, [x], [col])
    res = col.result()
    h1, h2 = model[1](model[0](x)), model[3](model[2](model[1](model[0](x))))
    assert res["sites"] == ["1", "3"] and res["batches"] == 1
    assert res["matrix"][0][1] == pytest.approx(linear_cka(h1.detach(), h2.detach()), rel=1e-5)
    assert res["matrix"][0][0] == pytest.approx(1.0)


def test_ista_step_one_is_exactly_the_relu_conv_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    res = ista_agreement(model, torch.randn(4, 3, 10, 10), steps=8)
    r = res["0"]
    assert r["relative_error"][0] == pytest.approx(0.0, abs=1e-6)
    assert r["support_jaccard"][0] == 1.0
    assert len(r["relative_error"]) == 8 and len(r["step_size"]) == 7


def test_ista_with_orthonormal_rows_converges_in_one_step():
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    layer = nn.Linear(6, 4)
    layer.weight.data = q[:4].clone()  # W Wᵀ = I: η = 1 and Γ² = Γ¹
    model = nn.Sequential(layer, nn.ReLU())
    r = ista_agreement(model, torch.randn(5, 6), steps=5)["0"]
    assert max(r["step_size"]) < 1e-5 and max(r["relative_error"]) < 1e-5


def test_ista_iterates_reach_the_nonnegative_lasso_solution():
    """η·Γ^K minimizes ½‖x − AᵀΓ‖² − ⟨b, Γ⟩ over Γ ≥ 0 (checked with an independent L-BFGS-B solve)."""
    torch.manual_seed(1)
    a = torch.randn(5, 8, dtype=torch.float64)  # A: R^8 -> R^5 (5 atoms of dimension 8)
    b = -0.3 * torch.rand(5, dtype=torch.float64)
    x = torch.randn(8, dtype=torch.float64)
    eta = 1.0 / float(torch.linalg.matrix_norm(a, 2) ** 2)
    *_, last = layer_ista(lambda z: z @ a.T, lambda y: y @ a, (x @ a.T + b)[None], torch.relu, eta, 3000)
    an, bn, xn = a.numpy(), b.numpy(), x.numpy()
    f = lambda g: 0.5 * np.sum((xn - an.T @ g) ** 2) - bn @ g  # noqa: E731
    grad = lambda g: -an @ (xn - an.T @ g) - bn  # noqa: E731
    ref = minimize(f, np.zeros(5), jac=grad, bounds=[(0, None)] * 5, method="L-BFGS-B", options={"gtol": 1e-12}).x
    assert np.allclose(eta * last[0].numpy(), ref, atol=1e-6)


def test_residual_layers_are_skipped_with_a_reason():
    model = timm.create_model("resnet18").eval()
    res = ista_agreement(model, torch.randn(2, 3, 64, 64), steps=3)
    assert "skipped" in res["layer1.0.conv2"] and "residual" in res["layer1.0.conv2"]["skipped"]
    assert res["layer1.0.conv1"]["relative_error"][0] < 1e-4
    assert res["conv1"]["activation"] == "act1"


def test_relative_change_between_blocks():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(4, 4)

        def forward(self, x):
            return x + self.f(x)

    model = nn.Sequential(Res(), Res())
    nn.init.zeros_(model[1].f.weight)
    nn.init.constant_(model[1].f.bias, 1.0)  # block 1 adds exactly 1 to every entry
    blocks = find_blocks(model)
    assert [b.name for b in blocks] == ["0", "1"]
    col = RelChangeCollector(model, blocks)
    x = torch.randn(16, 4)
    run_pass(model, [x[:8], x[8:]], [col])
    with torch.no_grad():
        f0 = model[0](x)
    expected = float((torch.ones_like(f0).square().sum() / f0.square().sum()).sqrt())
    assert col.result() == [{"from": "0", "to": "1", "relative_change": pytest.approx(expected, rel=1e-6)}]


def test_blocks_of_real_architectures():
    names = [b.name for b in find_blocks(timm.create_model("resnet18"))]
    assert names == ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0", "layer4.1"]
    names = [b.name for b in find_blocks(timm.create_model("mobilenetv2_100"))]
    assert names[:3] == ["blocks.0.0", "blocks.1.0", "blocks.1.1"]
    assert [b.name for b in find_blocks(timm.create_model("test_convnext"))][0] == "stages.0.blocks.0"


def test_convergence_api_returns_plain_data():
    import json

    model = timm.create_model("test_resnet").eval()
    loader = [(torch.randn(8, 3, 32, 32), None) for _ in range(2)]
    res = convergence(model, loader, ista_steps=4)
    json.dumps(res)
    assert res["cka"]["batches"] == 2 and len(res["cka"]["matrix"]) == len(find_sites(model))
    assert res["relative_change"] == []  # test_resnet has one block per stage: no equal-shape neighbours


def test_cka_between_two_models_known_answers():
    """1 for the same model and for one whose site output is an isotropically scaled copy (CKA's invariance);
    below 1 for a model with other weights; padding-free token batches and < 4 samples are handled."""
    from analysis.layerwise import cka_between

    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
    b = copy.deepcopy(a)
    with torch.no_grad():  # ReLU(3z) = 3 ReLU(z): the site output is scaled by 3
        b[0].weight.mul_(3.0)
        b[0].bias.mul_(3.0)
    c = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
    loader = [torch.randn(16, 6), torch.randn(16, 6), torch.randn(2, 6)]
    assert cka_between(a, a, loader, ["1"])["1"] == pytest.approx(1.0, abs=1e-9)
    assert cka_between(a, b, loader, ["1"])["1"] == pytest.approx(1.0, abs=1e-9)
    assert cka_between(a, c, loader, ["1"])["1"] < 0.95
    assert cka_between(a, c, [torch.randn(3, 6)], ["1"])["1"] is None  # no batch of >= 4 samples
