"""What sparse features mean: top-activating examples and captum attributions for the features of one site.

:func:`explain` is the entry point (also ``analysis.explain``). For one site of any ``nn.Module`` it

1. streams the data once: per-feature firing density, mean, top response, selectivity (top / mean), class
   selectivity, and the top examples of every feature in a bounded buffer (:mod:`.select`, :mod:`.topk`);
2. picks the features: the ``K`` most selective ones, or explicit indices;
3. attributes each feature's response on each of its top examples to the input pixels or tokens, all features in
   one batched captum call (:mod:`.attribute`), and the predicted class of those examples (Grad-CAM or integrated
   gradients);
4. measures the maps: concentration (Gini, mass on the top 5 % of pixels/tokens) and completeness (:mod:`.metrics`).

Each step is a function of :mod:`.steps` (scan → select → fetch → attribute → assemble); :func:`explain` runs them.

:func:`decision_features` (:mod:`.decision`) measures how many features of a site carry 90 % of the attribution to
each sample's predicted class (the ``decision_features`` metric).

The result is plain data (numbers, lists, numpy arrays); :func:`to_json` keeps what fits in JSON and
:mod:`.render` turns it into an HTML report section. Its ``summary`` is :meth:`ExplainSummary.to_json`; read it back
typed with :meth:`ExplainSummary.from_json`.

Example:
    >>> res = analysis.explain(model, loader, site=r"layer4\\.1\\.act2", features=16, examples=8)
    >>> res["features"][0]["index"], res["summary"]["feature_attr_gini_mean"]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from analysis.interpret.decision import DecisionFeatures, decision_features
from analysis.interpret.metrics import ExplainSummary, compare, summarize
from analysis.interpret.steps import (
    Explained,
    ExplainOptions,
    ExplainSettings,
    ExplainTiming,
    assemble,
    attribute,
    fetch,
    frozen,
    scan,
    select,
)
from analysis.pipeline import stopwatch, with_settings
from analysis.sites import Site, find_sites

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11; only type checkers read it

__all__ = ["explain", "ExplainOptions", "resolve_site", "to_json", "compare", "summarize", "ExplainSummary",
           "decision_features", "DecisionFeatures"]

log = logging.getLogger(__name__)


def resolve_site(model: nn.Module, site: str | Site) -> tuple[Site, list[str]]:
    """The site to explain and the names a pattern matched: a :class:`Site`, or a regex over activation sites (the
    last match in forward order when several match). Raises SiteSelectionError when nothing matches."""
    if isinstance(site, Site):
        return site, [site.name]
    sites = find_sites(model, include=site)
    if len(sites) > 1:
        log.debug("site pattern %r matches %d sites; explaining the last one, %s", site, len(sites), sites[-1].name)
    return sites[-1], [s.name for s in sites]


def explain(model: nn.Module, loader: Iterable, options: ExplainOptions | None = None, *, site: str | Site,
            **settings: Unpack[ExplainSettings]) -> dict:
    """Explain ``features`` of ``site``: their statistics, top examples and attributions (see module docstring).

    Args:
        model: any ``nn.Module``; a transformers text model is called with ``input_ids``/``attention_mask``.
        loader: yields tensors, ``(input, label)`` pairs or dicts (``input_ids``, ``attention_mask``, ``labels``);
            it is read twice unless it is a sequential ``DataLoader`` over a map-style dataset.
        options: the settings below as one :class:`ExplainOptions` (keyword arguments replace its fields).
        site: regex over activation-site names (the last match is used) or a :class:`~analysis.sites.Site`.

    Settings (:class:`ExplainOptions`, or keyword arguments):
        features: how many of the most selective features to explain, or a list of feature indices.
        method: feature attribution method, a key of :data:`.attribute.FEATURE_METHODS`.
        class_method: class attribution method (key of :data:`.attribute.CLASS_METHODS`), ``auto`` (Grad-CAM for
            images, integrated gradients on the embeddings for text) or None to skip.
        examples: top examples per feature (each is attributed).
        n_steps: integration steps of integrated gradients.
        internal_batch_size: most rows (examples × steps) in one forward pass; bounds memory.
        baseline: pixel value of the image baseline (token baselines are pad tokens).
        max_samples: samples to scan for top examples (None: all).
        tokenizer: for text: token strings in the report and the pad/special ids of the baseline.
        label_names: names of the data's labels, for the report.
        class_names: names of the model's output classes (its predictions), for the report.
        class_layer: module name of the Grad-CAM layer (default: the last spatial site).
        batched: False makes one captum call per feature (the reference the benchmark compares against).
        device: where to run (default: the model's device).
        progress: show a progress bar over the scan.

    Returns:
        ``{"site", "matched_sites", "channels", "samples", "input_kind", "method", "class_method", "settings",
        "stats": {per-feature arrays}, "features": [{"index", statistics…, "examples": [{"sample", "value",
        "position", "label", "pred", "row", "map", "box" or "tokens", metrics…}]}], "arrays": {"feature_maps",
        "class_maps", "images", "tokens"}, "summary": {...}, "timing": {...}}``. ``map`` indexes ``feature_maps``
        and ``row`` indexes the per-example arrays.

    Raises:
        SiteSelectionError: the site pattern matches nothing.
        AnalysisError: unknown method, more features asked for than the site has, an index out of range, …
    """
    opts = with_settings(options, ExplainOptions, settings)
    site_obj, matched = resolve_site(model, site)
    device = opts.device or next((p.device for p in model.parameters()), torch.device("cpu"))
    with frozen(model):
        with stopwatch() as scan_took:
            scanned = scan(model, loader, site_obj, device, opts)
            selection = select(scanned, opts)
        with stopwatch() as fetch_took:
            rows = fetch(loader, selection, site_obj, device, opts)
        found = attribute(model, site_obj, rows, opts)
    timing = ExplainTiming(scan_took.seconds, fetch_took.seconds, found.feature_s, found.class_s)
    return assemble(Explained(site_obj, matched, scanned, selection, rows, found, timing), opts)


def to_json(result: dict) -> dict:
    """The JSON-ready part of an :func:`explain` result: everything but the maps and images (NaN → None)."""
    from analysis.report import clean

    out = {k: v for k, v in result.items() if k != "arrays"}
    out["stats"] = {k: None if v is None else np.asarray(v).tolist() for k, v in result["stats"].items()}
    return clean(out)
