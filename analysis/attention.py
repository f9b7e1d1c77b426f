"""Attention entropy and sparsity, per layer and head.

For attention probabilities ``p[b, h, q, :]`` over the ``n`` valid keys of a valid query (padding excluded on
both sides, from the attention mask):

``entropy``          ``−Σ_k p_k log p_k`` in nats; ``entropy_norm`` = entropy / log n ∈ [0, 1] (1 = uniform)
``near_zero_frac``   fraction of valid (query, key) probabilities ≤ τ (τ absolute, default 0.01)
``hoyer``            ``(√n − ‖p‖₁/‖p‖₂)/(√n − 1)`` per row (‖p‖₁ = 1): 1 = attends to one key, 0 = uniform
``max_prob``         mean over rows of the largest probability

Sums are exact streaming reductions per head; results are means over all valid rows of the data.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from analysis.collect import SiteCollector
from analysis.sites import Site

DEFAULT_ATTENTION_TAU = 1e-2


class AttentionCollector(SiteCollector):
    """Per-head attention statistics at attention sites (see :func:`analysis.sites.find_attention`)."""

    def __init__(self, model: nn.Module, sites: Iterable[Site], tau: float = DEFAULT_ATTENTION_TAU):
        super().__init__(model, [s for s in sites if s.kind == "attention"])
        self.tau = tau
        self.sums: dict[str, dict[str, Tensor]] = {}

    def observe(self, key: str, site: Site, probs: Tensor) -> None:
        if probs.dim() != 4:
            return
        b, h, tq, tk = probs.shape
        p = probs.float()
        m = self.position_mask
        if m is not None and tuple(m.shape) == (b, tk) and tq == tk:
            valid_k = m[:, None, None, :].to(p.dtype)  # [B, 1, 1, Tk]
            valid_q = m[:, None, :].to(p.dtype).expand(b, h, tq)  # [B, H, Tq]
        else:
            valid_k = torch.ones(b, 1, 1, tk, device=p.device)
            valid_q = torch.ones(b, h, tq, device=p.device)
        n = valid_k.sum(-1).clamp_min(1.0)  # [B, 1, 1] valid keys per row
        pk = p * valid_k
        ent = -(pk * pk.clamp_min(1e-30).log()).sum(-1)  # [B, H, Tq]
        ent_norm = torch.where(n > 1, ent / n.log().clamp_min(1e-30), torch.zeros_like(ent))
        l1, l2 = pk.sum(-1), pk.square().sum(-1).sqrt().clamp_min(1e-30)
        sq = n.sqrt()
        hoy = torch.where(n > 1, (sq - l1 / l2) / (sq - 1).clamp_min(1e-30), torch.ones_like(ent))
        near = ((p <= self.tau) * valid_k).sum(-1)  # [B, H, Tq]
        batch = {
            "rows": valid_q.sum((0, 2)),
            "entries": (valid_q * n.expand_as(valid_q)).sum((0, 2)),
            "entropy": (ent * valid_q).sum((0, 2), dtype=torch.float64),
            "entropy_norm": (ent_norm * valid_q).sum((0, 2), dtype=torch.float64),
            "hoyer": (hoy * valid_q).sum((0, 2), dtype=torch.float64),
            "near_zero": (near * valid_q).sum((0, 2), dtype=torch.float64),
            "max_prob": (pk.amax(-1) * valid_q).sum((0, 2), dtype=torch.float64),
        }
        acc = self.sums.get(key)
        if acc is None:
            self.sums[key] = batch
        else:
            for k, v in batch.items():
                acc[k] = acc[k] + v

    def results(self) -> dict[str, dict]:
        out = {}
        for key, s in self.sums.items():
            rows = s["rows"].double().clamp_min(1.0)
            per_head = {
                "entropy": (s["entropy"] / rows).tolist(),
                "entropy_norm": (s["entropy_norm"] / rows).tolist(),
                "hoyer": (s["hoyer"] / rows).tolist(),
                f"near_zero_frac(abs,tau={self.tau:g})": (s["near_zero"] / s["entries"].double().clamp_min(1)).tolist(),
                "max_prob": (s["max_prob"] / rows).tolist(),
            }
            out[key] = {"heads": len(per_head["entropy"]), "rows": int(s["rows"][0]),
                        "per_head": per_head,
                        "mean": {k: sum(v) / len(v) for k, v in per_head.items()}}
        return out

