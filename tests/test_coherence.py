"""Dictionary coherence: known answers (Hadamard frames, simplex/Welch), brute force over shifts, BN folding."""

import math

import pytest
import timm
import torch
from scipy.linalg import hadamard
from torch import nn

from analysis.dictionary import (
    coherence,
    conv_shift_coherence,
    gram_stats,
    layer_coherence,
    stability_bound,
    uniqueness_bound,
    welch_bound,
)


@pytest.mark.parametrize("n", [4, 16, 64])
def test_identity_plus_hadamard_frame_has_coherence_one_over_sqrt_n(n):
    frame = torch.cat([torch.eye(n), torch.tensor(hadamard(n), dtype=torch.float32) / math.sqrt(n)], 1)
    stats = gram_stats(frame.T)  # atoms are the 2n columns
    assert stats["mu"] == pytest.approx(1 / math.sqrt(n), rel=1e-6)
    assert stats["babel"][0] == pytest.approx(stats["mu"])
    assert uniqueness_bound(stats["mu"]) == pytest.approx(0.5 * (1 + math.sqrt(n)))


def test_simplex_frame_meets_the_welch_bound():
    n = 5  # n + 1 unit vectors in R^n with pairwise inner product -1/n (an equiangular tight frame)
    e = torch.eye(n + 1) - 1.0 / (n + 1)
    q, _ = torch.linalg.qr(e.double())
    atoms = (e.double() @ q[:, :n])  # coordinates in the n-dim subspace orthogonal to (1, …, 1)
    stats = gram_stats(atoms)
    assert stats["mu"] == pytest.approx(1 / n, rel=1e-5)
    assert welch_bound(n + 1, n) == pytest.approx(stats["mu"], rel=1e-5)
    assert welch_bound(3, 5) is None


def _brute_shift_mu(w: torch.Tensor, stride=(1, 1), groups=1) -> float:
    w = w.double() / w.double().flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    cout, _, kh, kw = w.shape
    per = cout // groups
    best = 0.0
    for a in range(cout):
        for b in range(cout):
            if a // per != b // per:
                continue
            for u in range(-(kh - 1), kh):
                for v in range(-(kw - 1), kw):
                    if u % stride[0] or v % stride[1] or (a == b and u == 0 and v == 0):
                        continue
                    s = 0.0
                    for i in range(kh):
                        for j in range(kw):
                            if 0 <= i + u < kh and 0 <= j + v < kw:
                                s += float((w[a, :, i + u, j + v] * w[b, :, i, j]).sum())
                    best = max(best, abs(s))
    return best


@pytest.mark.parametrize("shape, stride, groups", [
    ((5, 3, 3, 3), (1, 1), 1), ((4, 2, 3, 2), (2, 1), 1), ((6, 2, 3, 3), (2, 2), 3), ((4, 1, 3, 3), (1, 1), 4),
])
def test_shift_aware_coherence_equals_brute_force(shape, stride, groups):
    torch.manual_seed(sum(shape))
    w = torch.randn(*shape)
    assert conv_shift_coherence(w, stride, groups) == pytest.approx(_brute_shift_mu(w, stride, groups), rel=1e-5)


def test_conv1d_shift_coherence_and_shift_aware_at_least_local():
    torch.manual_seed(0)
    w = torch.randn(6, 2, 5)
    mu_1d = conv_shift_coherence(w, (1,), 1)
    assert mu_1d == pytest.approx(_brute_shift_mu(w.unsqueeze(2)), rel=1e-5)
    assert mu_1d >= gram_stats(w)["mu"] - 1e-6  # shift 0 is among the shifts


def test_orthogonal_filters_with_no_overlap_have_zero_coherence():
    w = torch.zeros(2, 1, 1, 2)
    w[0, 0, 0, 0] = 1.0
    w[1, 0, 0, 1] = 1.0
    assert gram_stats(w)["mu"] == 0.0
    assert conv_shift_coherence(w) == pytest.approx(1.0)  # filter 1 shifted by one column is filter 0
    assert conv_shift_coherence(w, (1, 2)) == 0.0  # …but stride 2 never places them one column apart


def test_batchnorm_folding_keeps_coherence_and_gives_thresholds():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    plain, folded = layer_coherence("c", conv), layer_coherence("c", conv, bn)
    assert folded.local["mu"] == pytest.approx(plain.local["mu"], rel=1e-5)
    assert folded.mu_shift == pytest.approx(plain.mu_shift, rel=1e-5)
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    b = bn.bias - bn.running_mean * scale
    w = conv.weight * scale.view(-1, 1, 1, 1)
    expected = (-b / w.flatten(1).norm(dim=1)).detach()
    assert folded.threshold["values"] == pytest.approx(expected.tolist(), rel=1e-5)
    assert plain.threshold is None  # no bias, no BN: no threshold


def test_model_coherence_folds_bn_and_covers_every_layer():
    model = timm.create_model("resnet18").eval()
    coh = coherence(model)
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert list(coh) == layers
    assert coh["conv1"]["bn_folded"] and not coh["fc"]["bn_folded"]
    assert coh["layer1.0.conv1"]["s_star_shift"] == pytest.approx(0.5 * (1 + 1 / coh["layer1.0.conv1"]["mu_shift"]))
    assert len(coh["layer4.1.conv1"]["local"]["babel"]) == 16
    # timm zero-initializes the last BatchNorm of each block: folded, those atoms are all zero
    last = coh["layer4.1.conv2"]
    assert last["local"]["zero_atoms"] == 512 and last["local"]["mu"] is None and last["mu_shift"] is None
    assert last["threshold"]["zero_atoms"] == 512 and last["threshold"]["max"] is None
    assert all(0 <= c["local"]["mu"] <= 1 + 1e-6 for c in coh.values() if c["local"]["mu"] is not None)


def test_stability_bound():
    assert stability_bound(0.1, 2, 0.2) == pytest.approx(4 * 0.01 / (1 - 3 * 0.2))
    assert stability_bound(0.1, 4, 0.2) == math.inf


def test_grouped_statistics_equal_the_per_group_ones():
    torch.manual_seed(0)
    w = torch.randn(12, 5)
    per_group = [gram_stats(w[i:i + 4]) for i in range(0, 12, 4)]
    g = gram_stats(w, groups=3)
    assert g["mu"] == pytest.approx(max(s["mu"] for s in per_group))
    assert g["gram_mean"] == pytest.approx(sum(s["gram_mean"] for s in per_group) / 3)
    assert g["babel"] == pytest.approx([max(v) for v in zip(*[s["babel"] for s in per_group], strict=True)])


def test_depthwise_local_coherence_is_not_applicable_and_left_out_of_the_mean():
    dw = gram_stats(torch.randn(6, 9), groups=6)
    assert dw["mu"] is None and "depthwise" in dw["not_applicable"]
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 8, 1))
    coh = coherence(model)
    assert coh["0"]["local"]["mu"] is None and coh["0"]["s_star_local"] is None
    assert coh["0"]["mu_shift"] is not None  # a depthwise filter overlaps itself at other shifts
    from analysis.pipeline import headline

    h = headline({"coherence": coh})
    assert h["mu_local_layers"] == 1 and h["mu_local_mean"] == pytest.approx(coh["1"]["local"]["mu"])


def test_zero_atoms_are_counted_and_left_out_of_mu_and_thresholds():
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    with torch.no_grad():
        lin.weight[1] = 0.0
        lin.weight[3] = 1e-12  # numerically zero next to O(0.1) rows
        lin.bias.fill_(0.3)
    res = layer_coherence("l", lin)
    live = lin.weight.detach()[[0, 2, 4]]
    assert res.local["zero_atoms"] == 2 and res.local["atoms"] == 5
    assert res.local["mu"] == pytest.approx(gram_stats(live)["mu"])
    assert res.local["gram_mean"] == pytest.approx(gram_stats(live)["gram_mean"])
    assert res.threshold["zero_atoms"] == 2 and len(res.threshold["values"]) == 3
    expected = (-0.3 / live.norm(dim=1)).tolist()
    assert res.threshold["values"] == pytest.approx(expected, rel=1e-6)
    assert res.threshold["max"] == pytest.approx(max(expected)) and abs(res.threshold["mean"]) < 10
    w = torch.randn(4, 2, 3, 3)
    w[2] = 0.0
    assert conv_shift_coherence(w) == pytest.approx(conv_shift_coherence(w[[0, 1, 3]]))
    assert gram_stats(torch.zeros(3, 4))["mu"] is None
