"""The zoo's numbers of each built variant (:func:`measure`): recovery against the baseline, the stored sparsity,
the theory margin, coherence, CKA to the baseline and class selectivity."""

from __future__ import annotations

import math
from pathlib import Path

from sparsezoo.zoo.entries import Entry, ZooError
from sparsezoo.zoo.results import VariantResult, recovery_class


def measure(entry: Entry, folder: Path, names: list[str], samples: int) -> dict[str, VariantResult]:
    """The zoo's numbers of every built variant (the baseline first); see the module docstring."""
    import torch

    from analysis.layerwise import cka_between
    from analysis.pipeline import analyze, headline
    from analysis.sites import find_sites
    from analysis.sparsity import SparsitySummary
    from sparsezoo.data.inputs import load_model, sample_loader
    from sparsezoo.hub.cards import read_run

    runs = {v: read_run(folder / v) for v in names}
    base_top1 = runs[entry.baseline].final["top1"]
    loaded = {v: load_model(str(folder / v)) for v in names}
    data = runs[entry.baseline].recipe.data
    loader, n, *_ = sample_loader(loaded[entry.baseline], data, samples, 32)
    base_sites = {s.name for s in find_sites(loaded[entry.baseline].model)}
    out = {}
    for v in names:
        run, model = runs[v], loaded[v].model
        summary = SparsitySummary.from_json(run.final["sparsity"])
        res = analyze(model, loader, max_samples=samples, cka=False, ista=False, attention_stats=False)
        head = headline(res)  # margins as the analysis report states them: layers followed by an activation
        sites = [s for s in find_sites(model) if s.name in base_sites]
        cka = None
        if v != entry.baseline and sites:
            per_site = cka_between(loaded[entry.baseline].model, model, loader, [s.name for s in sites],
                                   max_samples=samples)
            finite = [x for x in per_site.values() if x is not None and math.isfinite(x)]
            cka = sum(finite) / len(finite) if finite else None
        elif v == entry.baseline:
            cka = 1.0
        near = summary.near_zero_of("abs")
        if near is None:
            raise ZooError(f"{folder / v}/metrics.json has no absolute near-zero fraction")
        top1 = run.final["top1"]
        recovery = top1 / base_top1 if base_top1 else float("nan")
        with torch.no_grad():
            selectivity = _class_selectivity(model, loader, samples)
        out[v] = VariantResult(
            variant=v, recipe_hash=run.recipe.hash(), penalties={p.kind: p.lam for p in run.recipe.penalties},
            activation=run.recipe.model.activation, top1=top1, recovery=recovery,
            recovery_class=recovery_class(recovery), zero_frac=summary.zero_frac_mean_sites,
            near_zero_frac=near[1], l0_frac=summary.l0_per_position_frac_mean_sites,
            dead_units=summary.dead_units, sites=summary.sites,
            margin_median_factor=head["median_factor_outside"], layers_inside_theorem=head["layers_inside_theorem"],
            layers_measured=head["layers_measured"], mu_local_median=head["mu_local_median"],
            cka_to_baseline=cka, class_selectivity_top16=selectivity, analysis_samples=n)
    return out


def _class_selectivity(model, loader, samples: int, top: int = 16) -> float | None:
    """Mean class selectivity (Morcos et al. 2018) of the ``top`` most selective features of the last activation
    site, over exactly the first ``samples`` samples of ``loader`` (the explain scan, :func:`analysis.interpret.steps.scan`);
    None without labels."""
    from analysis.interpret.select import select_features
    from analysis.interpret.steps import ExplainOptions, scan
    from analysis.sites import find_sites

    device = next(model.parameters()).device
    scanned = scan(model, loader, find_sites(model)[-1], device, ExplainOptions(examples=4, max_samples=samples))
    r = scanned.stats
    if r["class_selectivity"] is None:
        return None  # no labels: class selectivity is undefined
    chosen = select_features(r, min(top, len(r["selectivity"])), examples=1)
    return float(r["class_selectivity"][chosen].mean())
