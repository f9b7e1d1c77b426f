"""Every conv variant a model may hold (padding modes incl. timm's TF-"same", stride, dilation, groups,
depthwise, 1×1, Conv1d): shift-aware coherence against the brute-force global dictionary, stripe sparsity of the
output code against a brute-force loop, and ISTA's operator against its own adjoint."""

import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers import create_conv2d
from torch import nn

from analysis.collect import run_pass
from analysis.dictionary import conv_shift_coherence
from analysis.layerwise import _Operator, ista_agreement
from analysis.margins import StripeCollector
from analysis.sites import find_sites

VARIANTS = {
    "3x3 pad 1": lambda: nn.Conv2d(4, 6, 3, padding=1),
    "3x3 pad same": lambda: nn.Conv2d(4, 6, 3, padding="same"),
    "3x3 reflect": lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"),
    "tf-same 5x5 stride 2": lambda: create_conv2d(4, 6, 5, stride=2, padding="same", bias=True),
    "tf-same 3x3 stride 2 depthwise": lambda: create_conv2d(4, 4, 3, stride=2, padding="same", depthwise=True, bias=True),
    "stride 2 dilation 2": lambda: nn.Conv2d(4, 6, 3, stride=2, dilation=2, padding=2),
    "3x2 stride (2, 1)": lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1)),
    "groups 2": lambda: nn.Conv2d(4, 6, 3, groups=2, padding=1),
    "depthwise stride 2": lambda: nn.Conv2d(4, 4, 3, stride=2, groups=4, padding=1),
    "1x1": lambda: nn.Conv2d(4, 6, 1),
    "2x2 stride 2 patchify": lambda: nn.Conv2d(4, 6, 2, stride=2),
    "conv1d stride 2 dilation 2": lambda: nn.Conv1d(4, 6, 3, stride=2, dilation=2, padding=2),
    "conv1d depthwise": lambda: nn.Conv1d(4, 4, 5, groups=4, padding=2),
}


def make(name: str) -> nn.Module:
    torch.manual_seed(sum(map(ord, name)))
    layer = VARIANTS[name]()
    with torch.no_grad():
        layer.bias.normal_(-0.6, 0.3)  # many zeros after the ReLU, varying per channel
    return layer


def sample_input(layer: nn.Module, size=(13, 11)) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    shape = (3, layer.in_channels, *size) if isinstance(layer, nn.Conv2d) else (3, layer.in_channels, size[0] * 2)
    return torch.randn(shape, generator=g)


def brute_shift_mu(layer: nn.Module) -> float:
    """Max |⟨d_i, d_j⟩| over all pairs of distinct atoms of the global dictionary: the columns of Aᵀ for the
    layer's linear map A (no padding, input large enough for every relative shift), built one basis vector at a
    time."""
    w = layer.weight.detach().double()
    k = [(kk - 1) * d + 1 for kk, d in zip(layer.kernel_size, layer.dilation, strict=True)]
    size = [3 * kk + 2 * s for kk, s in zip(k, layer.stride, strict=True)]
    conv = F.conv2d if w.dim() == 4 else F.conv1d
    n_in = layer.in_channels * math.prod(size)
    basis = torch.eye(n_in, dtype=torch.float64).view(n_in, layer.in_channels, *size)
    a = conv(basis, w, stride=layer.stride, dilation=layer.dilation, groups=layer.groups)  # [n_in, out...]
    d = a.reshape(n_in, -1)  # columns = atoms at every output position
    d = d / d.norm(dim=0)
    g = (d.T @ d).abs()
    g.fill_diagonal_(0.0)
    return float(g.max())


@pytest.mark.parametrize("name", VARIANTS)
def test_shift_aware_coherence_equals_the_brute_force_global_dictionary(name):
    layer = make(name)
    mu = conv_shift_coherence(layer.weight, tuple(layer.stride), layer.groups, tuple(layer.dilation))
    assert mu == pytest.approx(brute_shift_mu(layer), rel=1e-5)


def test_a_1x1_depthwise_layer_has_no_shift_aware_coherence():
    assert conv_shift_coherence(torch.randn(4, 1, 1, 1), groups=4) is None


def test_dilation_changes_which_shifts_overlap():
    w = torch.zeros(2, 1, 1, 2)
    w[0, 0, 0, 0] = w[1, 0, 0, 1] = 1.0  # filter 1 = filter 0 shifted one column right
    assert conv_shift_coherence(w, (1, 1)) == pytest.approx(1.0)
    # dilation 2: the taps sit 2 pixels apart, so filter 1 is filter 0 shifted by 2 — a multiple of stride 2
    assert conv_shift_coherence(w, (1, 2), dilation=(1, 2)) == pytest.approx(1.0)
    assert conv_shift_coherence(w, (1, 2), dilation=(1, 1)) == 0.0


def overlapping(p: int, q: int, k: int, s: int, d: int) -> bool:
    """Do the atoms at output positions p and q (input extents [p·s, p·s + (k−1)·d]) share an input pixel range?"""
    ext = (k - 1) * d
    return max(p * s, q * s) <= min(p * s + ext, q * s + ext)


def brute_stripes(layer: nn.Module, code: torch.Tensor) -> list[int]:
    """Non-zeros of every stripe, by looping over samples, groups and output positions."""
    if code.dim() == 3:
        code = code.unsqueeze(2)
        geo = [(1, 1, 1), (layer.kernel_size[0], layer.stride[0], layer.dilation[0])]
    else:
        geo = list(zip(layer.kernel_size, layer.stride, layer.dilation, strict=True))
    b, c, h, w = code.shape
    per = c // layer.groups
    out = []
    for n in range(b):
        for g in range(layer.groups):
            block = code[n, g * per:(g + 1) * per] != 0
            for i in range(h):
                for j in range(w):
                    rows = [q for q in range(h) if overlapping(i, q, *geo[0])]
                    cols = [q for q in range(w) if overlapping(j, q, *geo[1])]
                    out.append(int(block[:, rows][:, :, cols].sum()))
    return out


@pytest.mark.parametrize("size", [(13, 11), (4, 4)], ids=["13x11", "4x4"])
@pytest.mark.parametrize("name", VARIANTS)
def test_stripe_sparsity_of_the_output_code_equals_a_brute_force_loop(name, size):
    layer = make(name)
    model = nn.Sequential(layer, nn.ReLU()).eval()
    x = sample_input(layer, size)
    col = StripeCollector(model)
    run_pass(model, [x], [col])
    res = col.results()["0"]
    with torch.no_grad():
        code = model(x)
    counts = sorted(brute_stripes(layer, code))
    assert res["code"] == "activation" and res["code_site"] == "1"
    assert res["stripe_max"] == counts[-1] > 0
    assert res["stripes"] == len(counts)
    assert res["stripe_mean"] == pytest.approx(sum(counts) / len(counts))
    assert res["stripe_p95"] == counts[math.ceil(0.95 * len(counts)) - 1]


def test_timm_tf_same_variants_are_conv2d_same():
    assert type(make("tf-same 5x5 stride 2")).__name__ == "Conv2dSame"
    assert make("tf-same 5x5 stride 2").padding == (0, 0)  # it pads inside forward


@pytest.mark.parametrize("name", VARIANTS)
def test_ista_operator_adjoint_is_exact_and_applies_the_layers_padding(name):
    layer = make(name).double()
    x = sample_input(layer).double()
    op = _Operator(layer, layer.weight.detach(), x.shape)
    y = op.fwd(x)
    assert y.shape == layer(x).shape
    assert torch.allclose(y + layer.bias.view(1, -1, *([1] * (y.dim() - 2))), layer(x))
    v = torch.randn_like(y)
    assert float((y * v).sum()) == pytest.approx(float((x * op.adj(v)).sum()), rel=1e-9)


def test_ista_agreement_runs_on_tf_same_convolutions():
    torch.manual_seed(0)
    model = nn.Sequential(create_conv2d(3, 8, 5, stride=2, padding="same"), nn.BatchNorm2d(8), nn.ReLU()).eval()
    res = ista_agreement(model, torch.randn(2, 3, 15, 15), find_sites(model), steps=4)
    assert "skipped" not in res["0"]
    assert res["0"]["relative_error"][0] == pytest.approx(0.0, abs=1e-6)
