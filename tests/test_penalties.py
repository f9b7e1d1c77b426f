"""Penalties: hand-computed values, batch-size independence, λ = 0 exactness, autograd safety."""

import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from sparsezoo.train.penalties import PENALTIES, SparsityPenalty, hoyer_square_penalty, l1_penalty


class TwoSites(nn.Module):
    """x -> conv -> ReLU (site a1) -> conv -> GELU (site a2); outputs of known shape."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 2, 1, bias=False)
        self.a1 = nn.ReLU()
        self.c2 = nn.Conv2d(2, 3, 1, bias=False)
        self.a2 = nn.GELU()

    def forward(self, x):
        return self.a2(self.c2(self.a1(self.c1(x))))


def test_l1_is_the_per_sample_l1_of_all_codes_averaged_over_the_batch():
    # B=1, C=2, H=1, W=2: codes (1, -2) and (0, 3): l1 = 3 + 3 = 6 for the one sample
    a = torch.tensor([[[[1.0, 0.0]], [[-2.0, 3.0]]]])
    assert l1_penalty(a, 1, False).item() == pytest.approx(6.0)
    # tokens [B=2, T=1, C=3]: samples have l1 6 and 0 -> mean over the batch 3
    t = torch.tensor([[[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]]])
    assert l1_penalty(t, -1, True).item() == pytest.approx(3.0)
    # λ per coefficient: the gradient on every entry is λ/B whatever the number of positions
    x = torch.rand(2, 3, 5, 7, requires_grad=True)
    l1_penalty(x, 1, True).backward()
    assert torch.allclose(x.grad, torch.full_like(x, 0.5))


def test_hoyer_square_hand_computed():
    # codes (1, -2): 9/5; (0, 3): 9/9 -> sum over the sample's positions 2.8
    a = torch.tensor([[[[1.0, 0.0]], [[-2.0, 3.0]]]])
    assert hoyer_square_penalty(a, 1, False).item() == pytest.approx(2.8)
    assert hoyer_square_penalty(torch.zeros(1, 4, 2, 2), 1, True).item() == 0.0  # empty codes count 0


@pytest.mark.parametrize("kind", sorted(PENALTIES))
def test_penalty_of_a_batch_is_the_mean_over_its_samples(kind):
    torch.manual_seed(0)
    a = torch.randn(6, 5, 4, 4)
    whole = PENALTIES[kind](a, 1, False, None)
    parts = torch.stack([PENALTIES[kind](a[i:i + 1], 1, False, None) for i in range(6)]).mean()
    assert whole.item() == pytest.approx(parts.item(), rel=1e-5)


def test_handle_matches_hand_computed_total_with_weights_and_two_kinds():
    torch.manual_seed(0)
    m = TwoSites()
    x = torch.randn(2, 1, 3, 3)
    with SparsityPenalty(m, l1=0.5, hoyer_square=0.25, site_weights={"a2": 2.0}) as reg:
        m(x)
        got = reg.penalty()
    h1 = m.a1(m.c1(x))
    h2 = m.a2(m.c2(h1))
    l1 = l1_penalty(h1, 1, True) + 2.0 * l1_penalty(h2, 1, False)  # summed over the sites
    hs = hoyer_square_penalty(h1, 1, True) + 2.0 * hoyer_square_penalty(h2, 1, False)
    assert got.item() == pytest.approx((0.5 * l1 + 0.25 * hs).item(), rel=1e-6)
    assert reg.last_terms["l1"].item() == pytest.approx(l1.item(), rel=1e-6)


def test_penalty_does_not_change_with_batch_size_on_a_real_model():
    torch.manual_seed(0)
    model = timm.create_model("test_resnet").eval()
    x = torch.randn(8, 3, 32, 32)
    with SparsityPenalty(model, l1=1.0) as reg:
        model(x)
        whole = reg.penalty().item()
        singles = []
        for i in range(8):
            model(x[i:i + 1])
            singles.append(reg.penalty().item())
    assert whole == pytest.approx(sum(singles) / 8, rel=1e-4)


def test_no_hook_work_under_no_grad_and_nothing_stale_between_forwards():
    m = TwoSites()
    with SparsityPenalty(m, l1=1.0) as reg:
        with torch.no_grad():
            m(torch.randn(1, 1, 2, 2))
        assert reg.penalty().item() == 0.0
        m(torch.randn(1, 1, 2, 2))
        m(torch.zeros(1, 1, 2, 2))  # the second forward replaces the first one's terms
        assert reg.penalty().item() == pytest.approx(l1_penalty(m.a2(m.c2(m.a1(m.c1(torch.zeros(1, 1, 2, 2))))), 1,
                                                                False).item() / 2)


def test_lambda_zero_gives_exactly_the_plain_training_trajectory():
    torch.manual_seed(0)
    base = timm.create_model("test_resnet", num_classes=4)
    data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 4, (4,))) for _ in range(5)]

    def train(model, reg=None):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for x, y in data:
            loss = F.cross_entropy(model(x), y)
            if reg is not None:
                loss = loss + reg.penalty()
            loss.backward()
            opt.step()
            opt.zero_grad()
        return model

    plain = train(copy.deepcopy(base))
    model = copy.deepcopy(base)
    with SparsityPenalty(model, l1=0.0, hoyer_square=0.0) as reg:
        train(model, reg)
    for (n, p), q in zip(plain.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("arch", ["resnet18", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_no_inplace_autograd_error_on_timm_resnets(arch):
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=3)
    x = torch.randn(2, 3, 64, 64)
    with SparsityPenalty(model, l1=1e-3, hoyer_square=1e-3) as reg:
        loss = F.cross_entropy(model(x), torch.tensor([0, 2])) + reg.penalty()
        loss.backward()  # would raise "modified by an inplace operation" with timm's inplace ReLUs
        assert not any(getattr(s.module, "inplace", False) for s in reg.sites)
    assert model.conv1.weight.grad is not None
    assert all(s.module.inplace for s in reg.sites if hasattr(s.module, "inplace"))  # restored on detach


def test_penalty_gradient_pushes_activations_down():
    m = TwoSites()
    x = torch.randn(4, 1, 3, 3)
    with SparsityPenalty(m, l1=1.0, sites="a1") as reg:
        m(x)
        reg.penalty().backward()
    # d(sum relu(w x))/dw >= 0 summed over positive inputs: a gradient step lowers the l1
    before = l1_penalty(m.a1(m.c1(x)), 1, True)
    with torch.no_grad():
        m.c1.weight -= 0.1 * m.c1.weight.grad
    assert l1_penalty(m.a1(m.c1(x)), 1, True) < before


def test_zero_frac_tracking_for_the_target_controller():
    torch.manual_seed(0)
    m = TwoSites()
    x = -torch.ones(1, 1, 2, 2)
    with SparsityPenalty(m, l1=1.0, sites="a1", track_zero_frac=True) as reg:
        m.c1.weight.data = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
        m(x)  # pre-activations -1 (channel 0) and +1 (channel 1): half the codes are zero
        m.c1.weight.data.fill_(1.0)
        m(x)  # all negative pre-activations: all zeros
        zero_frac = reg.pop_zero_frac()  # the mean over the forwards since the last pop
    assert zero_frac.item() == 0.75 and reg.pop_zero_frac() is None


def test_invalid_lambda_and_kind():
    m = TwoSites()
    with pytest.raises(ValueError, match=">= 0"):
        SparsityPenalty(m, l1=-1.0)
    with pytest.raises(ValueError, match="unknown penalty kind"):
        SparsityPenalty(m, lams={"l3": 1.0})


def test_l1_on_relu_sites_keeps_inplace_and_gives_the_same_gradients():
    torch.manual_seed(0)
    a = timm.create_model("resnet18", num_classes=3)
    b = copy.deepcopy(a)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    ra = SparsityPenalty(a, l1=1e-2)  # l1 on ReLU outputs is a plain sum: in-place is safe
    rb = SparsityPenalty(b, lams={"l1": 1e-2, "hoyer_square": 0.0})  # hoyer saves outputs: in-place off
    assert ra.inplace_disabled == [] and len(rb.inplace_disabled) == len(rb.sites)
    for m, r in ((a, ra), (b, rb)):
        with r:
            (F.cross_entropy(m(x), y) + r.penalty()).backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), n


@pytest.mark.parametrize("kind", sorted(PENALTIES))
def test_padded_positions_count_for_nothing(kind):
    torch.manual_seed(0)
    a = torch.randn(2, 5, 4)  # [B, T, C]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    garbage = a.clone()
    garbage[~mask] = 100.0  # whatever the padded positions hold
    fn = PENALTIES[kind]
    assert fn(garbage, -1, False, mask).item() == pytest.approx(fn(a, -1, False, mask).item())
    valid = torch.cat([a[0, :3], a[1, :4]])[None]  # the 7 real tokens as one sequence (a batch of 1, not 2)
    assert fn(a, -1, False, mask).item() == pytest.approx(fn(valid, -1, False, None).item() / 2, rel=1e-6)
