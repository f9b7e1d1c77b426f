"""The analysis entry points: :func:`measure` (sparsity), :func:`analyze` (everything, one pass over data).

Both work on any ``nn.Module`` and a data loader yielding tensors, ``(input, label)`` pairs or dicts of
keyword inputs, and return plain, JSON-ready dicts. Dictionary coherence needs no data
(:func:`analysis.coherence`); convergence alone is :func:`analysis.convergence`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from analysis.collect import AccuracyMeter, run_pass, to_device
from analysis.sites import Site, find_sites, site_stages
from analysis.sparsity import (
    DEFAULT_TAU_ABS,
    DEFAULT_TAU_REL,
    GINI_EVERY,
    SiteSparsity,
    SparsityMeter,
    near_zero_stats,
    summarize,
)

SiteSpec = str | Sequence[str] | Sequence[Site] | None


def resolve_sites(model: nn.Module, sites: SiteSpec) -> list[Site]:
    """Sites from regex(es) over activation names, an explicit list of :class:`Site`, or None (all)."""
    if sites and not isinstance(sites, str):
        items = list(sites)
        if all(isinstance(s, Site) for s in items):
            return [s for s in items if isinstance(s, Site)]
        return find_sites(model, include=[str(s) for s in items])
    return find_sites(model, include=sites if isinstance(sites, str) and sites else None)


def _stages(model: nn.Module, keys: Iterable[str]) -> dict[str, str]:
    names = list(dict.fromkeys(k.split("@")[0] for k in keys))
    return site_stages(model, names)


def measure(model: nn.Module, loader: Iterable, sites: SiteSpec = None, *, max_samples: int | None = None, fused: bool = True,
            tau_abs: float = DEFAULT_TAU_ABS, tau_rel: float = DEFAULT_TAU_REL, gini_every: int = GINI_EVERY,
            device: torch.device | str | None = None, progress: bool = False, whole_graph: bool = False) -> dict:
    """Feature sparsity of ``model`` at ``sites`` over ``loader`` (see :mod:`analysis.sparsity`).

    Returns ``{"samples", "per_site": {site: {...}}, "summary": {...}, "stages": {site: stage}}``. With
    ``whole_graph`` the model's forward is compiled together with the statistics
    (:class:`analysis.graph.GraphSparsityMeter`: same numbers, less time per batch, a compilation of tens of
    seconds first; worth it for long passes, README "Performance"), and ``"graph": {"compile_s", "fallback"}``
    says what it cost and, where it could not compile, why it measured per site instead.

    Example:
        >>> res = analysis.measure(model, loader, sites=r"layer4")
        >>> res["summary"]["zero_frac_mean_sites"]
    """
    site_list = resolve_sites(model, sites)
    graph = None
    if whole_graph:
        from analysis.graph import GraphSparsityMeter

        graph = GraphSparsityMeter(model, site_list, tau_abs, tau_rel, gini_every)
    meter = graph or SparsityMeter(model, site_list, tau_abs, tau_rel, fused, gini_every)
    n = run_pass(model, loader, [meter], device=device, max_samples=max_samples, progress=progress, desc="sparsity")
    per_site = meter.results()
    stages = _stages(model, per_site)
    out = {"samples": n, "per_site": per_site, "summary": summarize(per_site, stages), "stages": stages}
    if graph is not None:
        out["graph"] = {"compile_s": graph.compile_s, "fallback": graph.fallback_reason}
    return out


def model_info(model: nn.Module) -> dict:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    hf = getattr(getattr(model, "config", None), "to_dict", None)
    return {
        "class": type(model).__name__,
        "architecture": cfg.get("architecture") or (hf()["model_type"] if hf else None),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def analyze(model: nn.Module, loader: Iterable | None = None, *, sites: SiteSpec = None, max_samples: int | None = 512,
            cka: bool = True, ista: bool = True, ista_samples: int = 16, ista_steps: int = 16, fused: bool = True,
            attention_stats: bool = True, num_classes: int | None = None, device: torch.device | str | None = None,
            progress: bool = False) -> dict:
    """Every analysis of ``model``: coherence (weights), and with ``loader`` sparsity, theory margins,
    layerwise convergence (relative change, CKA) in one pass over at most ``max_samples`` samples, plus ISTA
    agreement on the first ``ista_samples`` of them; for models with attention also the entropy and sparsity of
    every head (this switches Hugging Face models to eager attention). The same pass scores the predictions
    (``accuracy``: top-1 and cross-entropy) where the batches have labels and the model's logits have
    ``num_classes`` columns (:class:`analysis.collect.AccuracyMeter`). Plain data; timings in ``timing``."""
    from analysis.dictionary import coherence
    from analysis.layerwise import CKACollector, RelChangeCollector, find_blocks, first_batch, ista_agreement
    from analysis.margins import StripeCollector, theory_margins

    timing = {}
    t = time.perf_counter()
    coh = coherence(model, progress=progress)
    timing["coherence_s"] = time.perf_counter() - t
    out: dict = {"model": model_info(model), "coherence": coh, "timing": timing}
    if loader is None:
        return out
    from analysis.attention import AttentionCollector
    from analysis.sites import find_attention

    site_list = [s for s in resolve_sites(model, sites) if s.kind != "attention"]
    meter = SparsityMeter(model, site_list, fused=fused)
    stripes = StripeCollector(model)
    attention = AttentionCollector(model, find_attention(model)) if attention_stats else None
    collectors = [meter, stripes] + ([attention] if attention is not None and attention.sites else [])
    rel = RelChangeCollector(model, find_blocks(model))
    collectors.append(rel)
    cka_c = CKACollector(model, site_list) if cka else None
    if cka_c is not None:
        collectors.append(cka_c)
    accuracy = AccuracyMeter(num_classes)
    t = time.perf_counter()
    n = run_pass(model, loader, collectors, device=device, max_samples=max_samples, progress=progress,
                 desc="analyzing", accuracy=accuracy)
    timing["data_pass_s"] = time.perf_counter() - t
    per_site = meter.results()
    stages = _stages(model, per_site)
    out["samples"] = n
    out["accuracy"] = accuracy.result()
    out["sparsity"] = {"per_site": per_site, "summary": summarize(per_site, stages), "stages": stages}
    out["margins"] = theory_margins(stripes.results(), coh)
    if attention is not None and attention.sites:
        out["attention"] = attention.results()
    out["convergence"] = {"relative_change": rel.result(), "cka": cka_c.result() if cka_c else None, "ista": None}
    if ista:
        t = time.perf_counter()
        dev = device or next((p.device for p in model.parameters()), "cpu")
        x: Any = first_batch(loader)
        x = {k: v[:ista_samples] for k, v in x.items()} if isinstance(x, dict) else x[:ista_samples]
        out["convergence"]["ista"] = ista_agreement(model, to_device(x, dev), site_list, ista_steps, coh)
        timing["ista_s"] = time.perf_counter() - t
    return out


def headline(result: dict) -> dict:
    """The few numbers a summary shows (NaN-free: missing values are None)."""
    coh = list(result.get("coherence", {}).values())
    mus = [c["local"]["mu"] for c in coh if c["local"]["mu"] is not None]  # depthwise layers: not applicable
    acc = result.get("accuracy") or {}
    out = {k: acc[k] for k in ("top1", "loss") if k in acc}
    out.update({"layers": len(coh), "mu_local_mean": sum(mus) / len(mus) if mus else None,
                "mu_local_median": statistics.median(mus) if mus else None, "mu_local_layers": len(mus),
                "mu_shift_max": max((c["mu_shift"] for c in coh if c.get("mu_shift") is not None), default=None)})
    if "sparsity" in result:
        s = result["sparsity"]["summary"]
        out.update({k: s[k] for k in ("sites", "zero_frac_mean_sites", "zero_frac_all_entries",
                                      "l0_per_position_frac_mean_sites", "dead_units", "dense_units")})
        out.update({k: s[k] for _, k in near_zero_stats(s)})  # the summary may be a stored, partial one
        per = [SiteSparsity.from_json(v) for v in result["sparsity"]["per_site"].values()]
        hoyers = [v.hoyer_mean for v in per if not math.isnan(v.hoyer_mean)]
        out["hoyer_mean_sites"] = sum(hoyers) / len(hoyers) if hoyers else None
    if "margins" in result:
        # pursuit layers only: a layer with no activation after it does not threshold, its code is its output
        m = [v for v in result["margins"].values() if v["margin"] is not None and v["code"] == "activation"]
        out["layers_inside_theorem"] = sum(1 for v in m if v["inside"])
        out["layers_measured"] = len(m)
        factors = sorted(v["factor"] for v in m)
        out["median_factor_outside"] = statistics.median(factors) if factors else None
    return out
