"""Attention entropy and sparsity per head: known answers, and padded queries/keys left out."""

import math

import pytest
import torch
from torch import nn

from analysis.attention import AttentionCollector
from analysis.sites import Site


def collect(probs: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
    site = Site("attn", nn.Identity(), channels_last=True, nonnegative=True, kind="attention")
    col = AttentionCollector(nn.Identity(), [site])
    col.position_mask = mask
    col.observe("attn", site, probs)
    return col.results()["attn"]


def test_uniform_and_one_hot_rows():
    n = 4
    uniform = torch.full((1, 1, n, n), 1 / n)
    one_hot = torch.eye(n).reshape(1, 1, n, n)
    r = collect(torch.cat([uniform, one_hot], 1))  # head 0 uniform, head 1 one-hot
    ph = r["per_head"]
    assert ph["entropy"] == pytest.approx([math.log(n), 0.0], abs=1e-6)
    assert ph["entropy_norm"] == pytest.approx([1.0, 0.0], abs=1e-6)
    assert ph["hoyer"] == pytest.approx([0.0, 1.0], abs=1e-6)
    assert ph["max_prob"] == pytest.approx([1 / n, 1.0])
    assert ph["near_zero_frac(abs,tau=0.01)"] == pytest.approx([0.0, 0.75])
    assert r["heads"] == 2 and r["rows"] == n


def test_padding_is_left_out_on_both_sides():
    # 3 tokens, the last one padding: valid rows attend uniformly over the 2 valid keys; the padded key gets 0
    probs = torch.zeros(1, 1, 3, 3)
    probs[0, 0, :, :2] = 0.5
    r = collect(probs, torch.tensor([[True, True, False]]))
    ph = r["per_head"]
    assert r["rows"] == 2  # the padded query row is not counted
    assert ph["entropy_norm"] == pytest.approx([1.0])  # uniform over the 2 valid keys
    assert ph["near_zero_frac(abs,tau=0.01)"] == pytest.approx([0.0])  # the padded key's zero does not count
