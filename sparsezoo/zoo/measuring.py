"""The zoo's numbers of each built variant (:func:`measure`): recovery against the baseline, the stored sparsity,
the theory margin, coherence, CKA to the baseline, class selectivity and ``decision_features``.

**Which split each number comes from** (the split protocol): a run selects everything (checkpoint, λ, thresholds) on
its validation split, and a run that also holds out a test split measures it once, after all selection, into
``metrics.json``'s ``test`` block (``final`` keeps the validation numbers; ``splits`` names the splits). When every
run of the entry has a ``test`` block, ``top1``, ``recovery`` and the sparsity (``zero_frac``, ``near_zero_frac``,
``l0_frac``, dead units) are the test numbers, ``val_top1`` / ``val_recovery`` the validation ones, ``eval_split``
the test split's name and ``selection_split`` the validation split's. Otherwise (runs trained before the protocol,
or an entry mixing both) every number is the validation one and both names are the validation split's (or
``validation`` when ``metrics.json`` names no splits): recovery always compares numbers of the same split.

The analysis numbers (margins, coherence, CKA, class selectivity, ``decision_features``) are measured on the first
``samples`` samples of the split recorded as ``analysis_split``: the test split where the numbers are test numbers,
else the validation split (followed by training samples when the validation split is smaller:
``"<name> + train"``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsezoo.zoo.entries import Entry, ZooError
from sparsezoo.zoo.results import VariantResult, recovery_class

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluated:
    """A run's reported numbers on the split the zoo reports (``eval_split``): ``top1`` and its ``sparsity`` block
    (the structure of ``metrics.json["final"]["sparsity"]``), with the validation top-1 (``val_top1``) of the split
    the run was selected on (``selection_split``)."""

    top1: float
    sparsity: dict
    eval_split: str
    selection_split: str
    val_top1: float


def evaluated(metrics: dict, use_test: bool = True) -> Evaluated:
    """The numbers of a run's ``metrics.json`` the zoo reports: its ``test`` block when it has one and ``use_test``,
    else ``final`` (validation); see the module docstring."""
    final = metrics.get("final") or {}
    splits = metrics.get("splits") or {}
    selection = (splits.get("validation") or {}).get("name") or "validation"
    test = metrics.get("test")
    if test and use_test:
        return Evaluated(test["top1"], test["sparsity"], (splits.get("test") or {}).get("name") or "test", selection,
                         final["top1"])
    return Evaluated(final["top1"], final["sparsity"], selection, selection, final["top1"])


def _ratio(top1: float, base: float) -> float:
    return top1 / base if base else float("nan")


@dataclass(frozen=True)
class AnalysisSamples:
    """The analysis samples: the ``loader`` of the first ``count`` samples of the split named ``split``."""

    loader: Any
    count: int
    split: str


def analysis_samples(loaded: Any, run: Any, samples: int, evaluated_on: Evaluated) -> AnalysisSamples:
    """The first ``samples`` samples of the split the run is evaluated on: the test split for runs that report one,
    else the validation split (then training samples when it is smaller; see the module docstring)."""
    from sparsezoo.data.inputs import sample_loader

    data = run.recipe.data
    if evaluated_on.eval_split != evaluated_on.selection_split:
        loader, n, *_ = sample_loader(loaded, data, samples, 32, split="test")
        return AnalysisSamples(loader, n, evaluated_on.eval_split)
    loader, n, *_ = sample_loader(loaded, data, samples, 32)
    size = ((run.metrics.get("splits") or {}).get("validation") or {}).get("size")
    name = evaluated_on.selection_split
    return AnalysisSamples(loader, n, f"{name} + train" if isinstance(size, int) and n > size else name)


def measure(entry: Entry, folder: Path, names: list[str], samples: int) -> dict[str, VariantResult]:
    """The zoo's numbers of every built variant (the baseline first); see the module docstring."""
    from sparsezoo.data.inputs import load_model
    from sparsezoo.hub.cards import read_run

    runs = {v: read_run(folder / v) for v in names}
    with_test = [v for v in names if runs[v].metrics.get("test")]
    use_test = len(with_test) == len(names)
    if with_test and not use_test:
        log.warning("%s: only %s have test numbers; reporting every variant on its validation split", entry.name,
                    ", ".join(with_test))
    numbers = {v: evaluated(runs[v].metrics, use_test) for v in names}
    loaded = {v: load_model(str(folder / v)) for v in names}
    base = entry.baseline
    analysis = analysis_samples(loaded[base], runs[base], samples, numbers[base])
    out = {}
    for v in names:
        cka = 1.0 if v == base else _cka(loaded[base].model, loaded[v].model, analysis, samples)
        out[v] = _variant(runs[v], loaded[v].model, (numbers[v], numbers[base]), analysis, samples)
        out[v].cka_to_baseline = cka
    return out


def _cka(base, model, analysis: AnalysisSamples, samples: int) -> float | None:
    """Mean linear CKA over the activation sites the variant shares with the baseline (None: none shared)."""
    from analysis.layerwise import cka_between
    from analysis.sites import find_sites

    base_sites = {s.name for s in find_sites(base)}
    sites = [s.name for s in find_sites(model) if s.name in base_sites]
    if not sites:
        return None
    per_site = cka_between(base, model, analysis.loader, sites, max_samples=samples)
    finite = [x for x in per_site.values() if x is not None and math.isfinite(x)]
    return sum(finite) / len(finite) if finite else None


def _variant(run, model, numbers: tuple[Evaluated, Evaluated], analysis: AnalysisSamples, samples: int) -> VariantResult:
    """One variant's numbers (CKA left to the caller): ``numbers`` are the variant's and the baseline's."""
    import torch

    from analysis.interpret.decision import decision_features
    from analysis.pipeline import analyze, headline
    from analysis.sparsity import SparsitySummary

    own, base = numbers
    summary = SparsitySummary.from_json(own.sparsity)
    near = summary.near_zero_of("abs")
    if near is None:
        raise ZooError(f"{run.path}/metrics.json has no absolute near-zero fraction")
    res = analyze(model, analysis.loader, max_samples=samples, cka=False, ista=False, attention_stats=False)
    head = headline(res)  # margins as the analysis report states them: layers followed by an activation
    with torch.no_grad():
        selectivity = _class_selectivity(model, analysis.loader, samples)
    decided = decision_features(model, analysis.loader, max_samples=samples)
    recovery = _ratio(own.top1, base.top1)
    return VariantResult(
        variant=run.path.name, recipe_hash=run.recipe.hash(),
        penalties={p.kind: p.lam for p in run.recipe.penalties}, activation=run.recipe.model.activation,
        top1=own.top1, recovery=recovery, recovery_class=recovery_class(recovery), zero_frac=summary.zero_frac_mean_sites,
        near_zero_frac=near[1], l0_frac=summary.l0_per_position_frac_mean_sites, dead_units=summary.dead_units,
        sites=summary.sites, margin_median_factor=head["median_factor_outside"],
        layers_inside_theorem=head["layers_inside_theorem"], layers_measured=head["layers_measured"],
        mu_local_median=head["mu_local_median"], cka_to_baseline=None, class_selectivity_top16=selectivity,
        analysis_samples=analysis.count, decision_features=decided.median, eval_split=own.eval_split,
        selection_split=own.selection_split, val_top1=own.val_top1, val_recovery=_ratio(own.val_top1, base.val_top1),
        analysis_split=analysis.split)


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
    per_feature = r["selectivity"]
    assert per_feature is not None  # computed for every scanned site
    chosen = select_features(r, min(top, len(per_feature)), examples=1)
    return float(r["class_selectivity"][chosen].mean())
