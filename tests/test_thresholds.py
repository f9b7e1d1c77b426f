"""Thresholds (issue 23, item 3), on known answers: FATReLU (hard, per layer and per channel, in place of ReLU,
ReLU6 and a relufied BERT FFN), the soft shift ReLU(y − t) folded exactly into the preceding bias (conv-BN-ReLU,
timm test_resnet with its residual sites, a BERT FFN, each reloaded plainly), what plain loading loses for a hard
threshold, and the greedy threshold search on real digits that keeps validation top-1 within its budget."""

import copy

import pytest
import torch
from torch import nn

from sparsezoo.errors import RecipeError
from sparsezoo.models.thresholds import (
    THRESHOLDS_FILE,
    FATReLU,
    fold_shift,
    install_fatrelu,
    plain_activations,
    plain_loading_gap,
    plain_state_dict,
    read_thresholds,
    restore_thresholds,
    save_thresholds,
    shift_target,
)
from sparsezoo.train.threshold_search import log_edges, search_thresholds, threshold_grid


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b|: the relative error of a against the reference b."""
    return float((a - b).abs().max() / b.abs().max())


# ----------------------------------------------------------------------------- FATReLU


def test_fatrelu_keeps_values_at_or_above_t_unchanged_and_zeroes_the_rest():
    x = torch.tensor([-1.0, 0.0, 0.25, 0.5, 0.75, 7.0])
    assert FATReLU(0.5)(x).tolist() == [0.0, 0.0, 0.0, 0.5, 0.75, 7.0]
    assert FATReLU(0.5, cap=6.0)(x).tolist() == [0.0, 0.0, 0.0, 0.5, 0.75, 6.0]  # in place of ReLU6
    r = torch.randn(4, 3, 5, 5)
    assert torch.equal(FATReLU(0.0)(r), torch.relu(r))  # t = 0 is ReLU


def test_a_per_channel_threshold_broadcasts_over_the_channel_axis_of_conv_and_token_features():
    t = torch.tensor([0.0, 1.0, 2.0])
    x = torch.full((2, 3, 4, 4), 1.5)  # [B, C, H, W]: channel 2 (t = 2) zeroed, the others kept
    assert FATReLU(t)(x)[:, :, 0, 0].tolist() == [[1.5, 1.5, 0.0]] * 2
    tokens = torch.full((2, 5, 3), 1.5)  # [B, T, C]
    assert FATReLU(t)(tokens)[0, 0].tolist() == [1.5, 1.5, 0.0]
    nhwc = torch.full((2, 4, 4, 3), 1.5)  # channels-last conv features (ConvNeXt MLP)
    assert FATReLU(t, channels_last=True)(nhwc)[0, 0, 0].tolist() == [1.5, 1.5, 0.0]
    with pytest.raises(ValueError, match="3 channel thresholds"):
        FATReLU(t)(torch.ones(2, 4, 1, 1))


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), [[0.1]]])
def test_a_negative_or_non_finite_threshold_is_refused(bad):
    with pytest.raises(RecipeError):
        FATReLU(bad)


def test_hard_and_soft_zero_the_same_entries_and_differ_by_t_above_it():
    """FATReLU keeps x above t; the shift ReLU(x − t) subtracts t. Same zeros, values apart by exactly t."""
    x, t = torch.tensor([-1.0, 0.2, 0.5, 0.9, 3.0]), 0.5
    hard, soft = FATReLU(t)(x), torch.relu(x - t)
    assert torch.equal(hard == 0, torch.tensor([True, True, False, False, False]))
    assert torch.equal(soft == 0, torch.tensor([True, True, True, False, False]))  # x = t itself: 0 either way
    assert torch.allclose((hard - soft)[hard > t], torch.tensor(t))


def tiny_resnet():
    import timm

    torch.manual_seed(0)
    return timm.create_model("test_resnet", pretrained=False, num_classes=5).eval()


def test_install_puts_fatrelu_at_named_sites_and_the_state_dict_holds_its_thresholds(tmp_path):
    import timm

    model = tiny_resnet()
    x = torch.randn(2, 3, 32, 32)
    sites = install_fatrelu(model, {"layer1.0.act1": 0.3, "layer3.0.act3": torch.linspace(0, 1, 192)})
    assert [s.name for s in sites] == ["layer1.0.act1", "layer3.0.act3"] and all(s.nonnegative for s in sites)
    assert isinstance(model.get_submodule("layer1.0.act1"), FATReLU)
    assert float(model.state_dict()["layer1.0.act1.threshold"]) == pytest.approx(0.3)
    assert read_thresholds(model)["layer3.0.act3"].shape == (192,)
    y = model(x)
    # plain timm loads the weights without the thresholds strictly; restoring them gives the same model back
    plain = timm.create_model("test_resnet", pretrained=False, num_classes=5).eval()
    plain.load_state_dict(plain_state_dict(model), strict=True)
    assert save_thresholds(tmp_path, model) == tmp_path / THRESHOLDS_FILE
    assert restore_thresholds(plain, tmp_path) == ["layer1.0.act1", "layer3.0.act3"]
    assert torch.equal(plain(x), y)
    assert restore_thresholds(plain, tmp_path / "none") == [] and save_thresholds(tmp_path / "x", nn.ReLU()) is None
    with plain_activations(model) as swapped:  # what a run folder's model.safetensors is written from
        assert swapped == ["layer1.0.act1", "layer3.0.act3"]
        assert set(model.state_dict()) == set(timm.create_model("test_resnet", pretrained=False).state_dict())
    assert isinstance(model.get_submodule("layer3.0.act3"), FATReLU) and torch.equal(model(x), y)


def test_install_keeps_relu6s_cap_and_refuses_sites_it_cannot_threshold():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU6(), nn.Linear(4, 4), nn.GELU())
    install_fatrelu(model, {"1": 0.5})
    assert model[1].cap == 6.0 and isinstance(model[1].plain(), nn.ReLU6)
    with pytest.raises(RecipeError, match="relufy it first"):
        install_fatrelu(model, {"3": 0.5})
    with pytest.raises(RecipeError, match="not an activation site"):
        install_fatrelu(model, {"0": 0.5})
    install_fatrelu(model, {"1": 0.25})  # a FATReLU site takes a new threshold
    assert float(model[1].threshold) == 0.25


def tiny_bert(act: str = "relu"):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16, hidden_act=act)
    return BertModel(cfg).eval()


FFN = "encoder.layer.0.intermediate.intermediate_act_fn"


def test_fatrelu_in_a_relufied_bert_ffn_thresholds_the_ffn_activations_and_sparsezoo_restores_it(tmp_path):
    from transformers import BertModel

    model = tiny_bert()
    ids = torch.randint(0, 50, (2, 7))
    seen = {}
    install_fatrelu(model, {FFN: 0.2})
    handle = model.get_submodule(FFN).register_forward_hook(lambda m, a, y: seen.update(y=y))
    with torch.no_grad():
        out = model(input_ids=ids).last_hidden_state
    handle.remove()
    y = seen["y"]
    assert y.shape == (2, 7, 32) and bool(((y == 0) | (y >= 0.2)).all()) and bool((y > 0).any())
    with plain_activations(model):
        model.save_pretrained(tmp_path)  # no threshold key: plain transformers loads it without a warning
    save_thresholds(tmp_path, model)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "threshold" in k]
    loaded = BertModel.from_pretrained(tmp_path).eval()
    assert restore_thresholds(loaded, tmp_path) == [FFN]
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).last_hidden_state, out)
    with pytest.raises(RecipeError, match="relufy"):
        install_fatrelu(tiny_bert("gelu"), {FFN: 0.2})


# ----------------------------------------------------------------------------- the folded shift


def shifted_reference(model: nn.Module, shifts: dict, run):
    """Outputs of ``model`` with each site's activation evaluated at (input − t): the definition, by pre-hooks."""
    ref = copy.deepcopy(model)
    for name, t in shifts.items():
        tt = torch.as_tensor(t, dtype=torch.float32)

        def pre(m, args, tt=tt):
            x = args[0]
            shape = [1] * x.dim()
            if tt.dim():
                shape[1 if x.dim() == 4 else -1] = -1
            return (x - tt.view(shape),)

        ref.get_submodule(name).register_forward_pre_hook(pre)
    with torch.no_grad():
        return run(ref)


def conv_bn_relu(bias: bool = False):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=bias), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 4, 3, padding=1), nn.ReLU6())
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.2, 0.2)
    return net


@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train"])
def test_a_shift_folded_into_batchnorm_and_conv_bias_equals_relu_of_y_minus_t(train_mode):
    net = conv_bn_relu().train(train_mode)
    x = torch.randn(4, 3, 6, 6)
    shifts = {"2": 0.3, "4": torch.tensor([0.0, 0.1, 0.2, 0.4])}  # per layer into BN; per channel into conv bias
    expected = shifted_reference(net, shifts, lambda m: m(x))
    with torch.no_grad():
        before = net(x)
    assert fold_shift(net, "2", shifts["2"]) == "1.bias"
    assert fold_shift(net, "4", shifts["4"]) == "3.bias"
    with torch.no_grad():
        got = net(x)
    assert rel_err(got, expected) <= 1e-6 and rel_err(before, expected) > 1e-3  # exact, and not a no-op


def test_a_shift_folded_into_test_resnet_is_exact_at_residual_sites_and_loads_in_plain_timm():
    import timm

    from analysis.sites import find_sites

    model = tiny_resnet()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    shifts = {s.name: float(torch.rand(())) * 0.5 for s in find_sites(model)}  # all 12, residual act2s included
    expected = shifted_reference(model, shifts, lambda m: m(x))
    for name, t in shifts.items():
        fold_shift(model, name, t)
    plain = timm.create_model("test_resnet", pretrained=False, num_classes=5).eval()
    plain.load_state_dict(model.state_dict(), strict=True)  # no new key, no custom module
    with torch.no_grad():
        assert rel_err(plain(x), expected) <= 1e-6


def test_a_shift_folded_into_a_bert_ffn_bias_is_exact_and_survives_save_pretrained(tmp_path):
    from transformers import BertModel

    model = tiny_bert()
    ids = torch.randint(0, 50, (2, 7))
    t = torch.linspace(0.0, 0.3, 32)  # per FFN channel
    expected = shifted_reference(model, {FFN: t}, lambda m: m(input_ids=ids).last_hidden_state)
    assert fold_shift(model, FFN, t) == "encoder.layer.0.intermediate.dense.bias"
    model.save_pretrained(tmp_path)
    plain = BertModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert rel_err(plain(input_ids=ids).last_hidden_state, expected) <= 1e-6


def test_a_shift_needs_a_bias_to_fold_into():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.ReLU())
    with pytest.raises(RecipeError, match="has no bias"):
        fold_shift(net, "1", 0.1)
    with pytest.raises(RecipeError, match="no conv / Linear layer feeds it"):
        shift_target(net, "3")
    with pytest.raises(RecipeError, match="needs 8 values"):
        fold_shift(conv_bn_relu(), "2", [0.1, 0.2])
    with pytest.raises(RecipeError):
        fold_shift(conv_bn_relu(), "2", -0.1)


# ----------------------------------------------------------------------------- what plain loading loses


def test_plain_loading_gap_is_zero_at_t_0_and_measures_the_loss_of_a_hard_threshold():
    import timm

    model = tiny_resnet()
    batches = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    install_fatrelu(model, {"layer1.0.act1": 0.0})
    gap = plain_loading_gap(model, batches)
    assert (gap.samples, gap.max_abs_logit_diff, gap.top1_agreement) == (8, 0.0, 1.0)
    install_fatrelu(model, {"layer1.0.act1": 1.0, "layer4.0.act2": 1.0})
    gap = plain_loading_gap(model, batches)
    plain = timm.create_model("test_resnet", pretrained=False, num_classes=5).eval()  # what plain timm builds
    plain.load_state_dict(plain_state_dict(model), strict=True)
    with torch.no_grad():
        ours, theirs = torch.cat([model(b) for b in batches]), torch.cat([plain(b) for b in batches])
    assert gap.max_abs_logit_diff == pytest.approx(float((ours - theirs).abs().max())) and gap.max_abs_logit_diff > 0
    assert gap.top1_agreement == float((ours.argmax(-1) == theirs.argmax(-1)).double().mean())
    assert isinstance(model.get_submodule("layer1.0.act1"), FATReLU)  # the FATReLUs are put back
    assert set(gap.to_json()) == {"samples", "max_abs_logit_diff", "mean_abs_logit_diff", "top1_agreement"}


# ----------------------------------------------------------------------------- the search


def test_the_grid_is_made_of_quantiles_of_the_positive_activations():
    """Positives 1, 2, …, 100, buckets of 1/100 decade: for q = 0.5 the highest edge with at most 50 values below it
    is 10^1.70 = 50.12 (the next, 51.29, has 51); for q = 0.9 it is 10^1.95 = 89.13 (89 below; 91.20 has 91)."""
    edges = log_edges()
    values = torch.arange(1, 101, dtype=torch.float32)
    hist = torch.bincount(torch.bucketize(values, edges, right=True), minlength=edges.numel() + 1)
    grid = threshold_grid(hist, edges, [0.5, 0.9])
    assert grid[0] == (0.0, 0.0)
    assert grid[1][0] == pytest.approx(10 ** 1.7, rel=1e-6) and grid[1][1] == 0.5
    assert grid[2][0] == pytest.approx(10 ** 1.95, rel=1e-6) and grid[2][1] == 0.89
    assert threshold_grid(torch.zeros_like(hist), edges, [0.5]) == [(0.0, 0.0)]  # no positives: nothing to try


@pytest.fixture(scope="module")
def digits_net():
    """A small conv net trained for a few seconds on scikit-learn's digits (real 8×8 images), with its fixed
    train / validation split: (model, x_val, y_val)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    tr, va = perm[:1200], perm[1200:]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Flatten(), nn.Linear(16 * 16, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(6):
        for idx in tr[torch.randperm(len(tr), generator=g)].split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval(), x[va], y[va]


def evaluator(x_val, y_val, batch_size=None):
    def evaluate(model):
        with torch.no_grad():
            parts = x_val.split(batch_size) if batch_size else [x_val]
            pred = torch.cat([model.eval()(p) for p in parts]).argmax(-1)
        return float((pred == y_val).double().mean())

    return evaluate


SITES = ["2", "5", "8"]


@pytest.mark.parametrize("realization", ["hard", "shift"])
def test_the_search_keeps_validation_top1_within_its_budget_and_only_adds_zeros(digits_net, realization):
    net, xv, yv = digits_net
    model = copy.deepcopy(net)
    evaluate = evaluator(xv, yv)
    res = search_thresholds(model, SITES, evaluate, budget=0.02, realization=realization)
    assert res.top1_before == evaluate(net) > 0.85 and res.floor == pytest.approx(res.top1_before - 0.02)
    assert res.top1_after == evaluate(model) >= res.top1_before - 0.02
    assert all(s.threshold >= 0 for s in res.sites) and any(s.threshold > 0 for s in res.sites)
    assert all(s.zero_frac_after >= s.zero_frac_before for s in res.sites)
    assert sum(s.zero_frac_after for s in res.sites) > sum(s.zero_frac_before for s in res.sites)
    assert res.evaluations == 1 + sum(s.evaluations for s in res.sites) and res.split == "validation"
    kinds = {type(model.get_submodule(s)) for s in SITES}
    assert kinds == ({FATReLU} if realization == "hard" else {nn.ReLU})
    if realization == "shift":  # folded: the same weights in a fresh copy of the architecture reproduce it
        fresh = copy.deepcopy(net)
        fresh.load_state_dict(model.state_dict(), strict=True)
        assert evaluate(fresh) == res.top1_after
    assert set(res.to_json()["thresholds"]) == set(SITES)


@pytest.mark.parametrize("realization", ["hard", "shift"])
def test_budget_zero_never_loses_validation_top1(digits_net, realization):
    net, xv, yv = digits_net
    model = copy.deepcopy(net)
    evaluate = evaluator(xv, yv)
    res = search_thresholds(model, SITES, evaluate, budget=0.0, realization=realization)
    assert res.top1_after == evaluate(model) >= res.top1_before == evaluate(net)  # every accepted step kept it
    assert res.floor == res.top1_before and any(s.threshold > 0 for s in res.sites)


def test_the_search_sees_only_the_data_its_evaluate_gives_and_does_not_depend_on_batch_size(digits_net):
    net, xv, yv = digits_net
    inputs = []
    results = []
    for batch_size in (None, 50):
        model = copy.deepcopy(net)
        handle = model.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
        results.append(search_thresholds(model, SITES, evaluator(xv, yv, batch_size), budget=0.01,
                                         relative=True))
        handle.remove()
    assert inputs and all(any(x.data_ptr() == p.data_ptr() for p in xv.split(50)) or x is xv for x in inputs)
    assert results[0].thresholds == results[1].thresholds
    assert results[0].floor == pytest.approx(results[0].top1_before * 0.99)


def test_counts_summed_over_processes_choose_the_same_thresholds(digits_net):
    """``reduce`` sums the streaming counts over processes; two identical shards (×2) change no decision."""
    net, xv, yv = digits_net
    one = search_thresholds(copy.deepcopy(net), SITES, evaluator(xv, yv), budget=0.02)
    two = search_thresholds(copy.deepcopy(net), SITES, evaluator(xv, yv), budget=0.02, reduce=lambda t: t * 2)
    assert one == two


@pytest.mark.parametrize("kwargs, match", [({"budget": -0.01}, "budget"), ({"budget": 1.0, "relative": True}, "below 1"),
                                           ({"realization": "soft"}, "unknown threshold realization"),
                                           ({"quantiles": [0.0, 0.5]}, "quantiles")])
def test_bad_search_arguments_are_one_clear_error(kwargs, match):
    with pytest.raises(RecipeError, match=match):
        search_thresholds(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), ["1"], lambda m: 1.0, **kwargs)
