"""decision_features, on known answers: the fewest features of a site whose attributions to the predicted class carry
90 % of its positive attribution (analysis.interpret.decision), with gradient × activation equal to w_c·h for a
global-average-pool + linear head."""

import math

import pytest
import torch
from torch import nn

from analysis.definitions import METRICS
from analysis.errors import AnalysisError
from analysis.interpret import decision_features
from analysis.interpret.decision import fewest_features, site_attributions
from analysis.interpret.inputs import ImageInputs, make_inputs
from analysis.sites import find_sites


class GapHead(nn.Module):
    """conv 1×1 (one input channel, one weight per feature, no bias) → ReLU → global average pool → linear."""

    def __init__(self, scales, head):
        super().__init__()
        head = torch.as_tensor(head, dtype=torch.float32)
        self.conv = nn.Conv2d(1, len(scales), 1, bias=False)
        self.act = nn.ReLU()
        self.fc = nn.Linear(len(scales), head.shape[0])
        with torch.no_grad():
            self.conv.weight.copy_(torch.as_tensor(scales, dtype=torch.float32).view(-1, 1, 1, 1))
            self.fc.weight.copy_(head)
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


def ones(n=1, value=1.0):
    return torch.full((n, 1, 4, 4), value)


def test_the_metric_is_defined_once_with_its_unit():
    m = METRICS["decision_features"]
    assert m.unit == "features (count)" and "90%" in m.formula and "w_cj h_j" in m.formula


def test_one_feature_with_all_the_positive_attribution_counts_one():
    # class 0's logit is h·(5 − 1 − 1 + 0…) > 0 = class 1's: feature 0 is the only positive attribution
    model = GapHead([1.0] * 10, [[5, -1, -1, 0, 0, 0, 0, 0, 0, 0], [0] * 10])
    found = decision_features(model, [ones(3)])
    assert found.counts.tolist() == [1, 1, 1] and found.median == 1.0
    assert found.positive.tolist() == [1, 1, 1] and found.predicted.tolist() == [0, 0, 0]
    assert (found.site, found.channels, found.samples) == ("act", 10, 3)


def test_equal_attributions_over_ten_features_need_nine_for_90_percent():
    model = GapHead([1.0] * 10, [[1.0] * 10, [0.0] * 10])
    assert decision_features(model, [ones(2)]).counts.tolist() == [9, 9]
    assert decision_features(model, [ones(1)], share=1.0).median == 10.0
    assert decision_features(model, [ones(1)], share=0.5).median == 5.0


def test_graded_attributions_are_taken_largest_first():
    # attributions 1, 4, 2, 3 (P = 10): 4 + 3 + 2 = 9 reaches 90 %, 4 + 3 = 7 reaches 50 %, 4 alone 40 %
    model = GapHead([1.0, 4.0, 2.0, 3.0], [[1.0] * 4, [0.0] * 4])
    assert [decision_features(model, [ones()], share=s).median for s in (0.9, 0.5, 0.4, 0.41)] == [3, 2, 1, 2]


def test_no_positive_attribution_counts_zero():
    # the ReLU silences every feature: the prediction rests on the bias alone, P = 0
    model = GapHead([1.0] * 4, [[1.0] * 4, [0.0] * 4])
    assert decision_features(model, [ones(2, value=-1.0)]).counts.tolist() == [0, 0]
    assert fewest_features(torch.tensor([[-1.0, -2.0, 0.0]]))[0].tolist() == [0]


def test_negative_attributions_do_not_count_towards_the_share():
    counts, positive = fewest_features(torch.tensor([[5.0, -100.0, 5.0, 0.0], [1.0, 1.0, 1.0, 1.0]]), share=0.9)
    assert counts.tolist() == [2, 4] and positive.tolist() == [2, 4]


def test_gradient_times_activation_is_w_c_times_h_for_a_pooled_linear_head():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(6, 4)).eval()
    x = torch.randn(5, 3, 7, 7)
    with torch.no_grad():
        h = model[2](model[1](model[0](x))).flatten(1)  # the pooled features
        c = model(x).argmax(1)
    site = find_sites(model)[-1]
    attr = site_attributions(model, site, ImageInputs(x), c)
    assert torch.allclose(attr, model[4].weight[c] * h, atol=1e-6)
    # completeness of a linear head: the attributions add up to the logit without its bias
    assert torch.allclose(attr.sum(1), model(x).gather(1, c[:, None])[:, 0] - model[4].bias[c], atol=1e-5)


def test_the_count_does_not_depend_on_batching_and_stops_at_max_samples():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    x = torch.randn(12, 3, 8, 8)
    whole = decision_features(model, [(x, torch.zeros(12))])
    ones_ = decision_features(model, [(x[i:i + 1], torch.zeros(1)) for i in range(12)])
    assert whole.counts.tolist() == ones_.counts.tolist()
    cut = decision_features(model, [x[:5], x[5:]], max_samples=7)
    assert cut.counts.tolist() == whole.counts[:7].tolist() and model.training  # train mode restored


def test_bad_share_and_an_empty_loader_are_clear_errors():
    model = GapHead([1.0] * 2, [[1.0] * 2, [0.0] * 2])
    for share in (0.0, 1.5):
        with pytest.raises(AnalysisError, match="share must be in"):
            decision_features(model, [ones()], share=share)
    with pytest.raises(AnalysisError, match="at least one sample"):
        decision_features(model, [])


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=32, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


def text_batch():
    ids = torch.randint(5, 64, (4, 9), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = 2  # a [CLS]-like first token
    mask = torch.ones_like(ids)
    mask[2:, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.zeros(4, dtype=torch.long)}


def test_a_tiny_bert_gives_a_finite_count_of_its_last_ffn_units():
    model = tiny_bert()
    found = decision_features(model, [text_batch()])
    assert found.site == "bert.encoder.layer.1.intermediate.intermediate_act_fn" and found.channels == 32
    assert found.samples == 4 and math.isfinite(found.median)
    assert ((1 <= found.counts) & (found.counts <= found.positive) & (found.positive <= 32)).all()
    assert found.to_json()["median"] == found.median


def test_a_cls_pooled_head_reads_only_the_cls_token_of_the_last_activation_site():
    from captum.attr import LayerGradientXActivation

    model, batch = tiny_bert(), text_batch()
    inputs = make_inputs({k: v for k, v in batch.items() if k != "labels"})
    site = find_sites(model)[-1]
    with torch.no_grad():
        c = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(1)
    ids, _, extra = inputs.captum()
    per_position = LayerGradientXActivation(lambda *a: inputs.call(model, *a).logits, site.module).attribute(
        ids, target=c, additional_forward_args=extra)
    assert per_position[:, 1:].abs().max() == 0 and per_position[:, 0].abs().max() > 0
    assert torch.allclose(site_attributions(model, site, inputs, c), per_position[:, 0])
