"""What sparse features mean: top-activating examples and captum attributions for the features of one site.

:func:`explain` is the entry point (also ``analysis.explain``). For one site of any ``nn.Module`` it

1. streams the data once: per-feature firing density, mean, top response, selectivity (top / mean), class
   selectivity, and the top examples of every feature in a bounded buffer (:mod:`.select`, :mod:`.topk`);
2. picks the features: the ``K`` most selective ones, or explicit indices;
3. attributes each feature's response on each of its top examples to the input pixels or tokens, all features in
   one batched captum call (:mod:`.attribute`), and the predicted class of those examples (Grad-CAM or integrated
   gradients);
4. measures the maps: concentration (Gini, mass on the top 5 % of pixels/tokens) and completeness (:mod:`.metrics`).

The result is plain data (numbers, lists, numpy arrays); :func:`to_json` keeps what fits in JSON and
:mod:`.render` turns it into an HTML report section.

Example:
    >>> res = analysis.explain(model, loader, site=r"layer4\\.1\\.act2", features=16, examples=8)
    >>> res["features"][0]["index"], res["summary"]["feature_attr_gini_mean"]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from analysis.collect import run_pass
from analysis.errors import AnalysisError
from analysis.interpret.attribute import check_methods, class_attributions, feature_attributions, predict
from analysis.interpret.examples import display_images, receptive_boxes, tokens_of
from analysis.interpret.inputs import ImageInputs, make_inputs
from analysis.interpret.metrics import compare, completeness, concentration, summarize
from analysis.interpret.select import FeatureStats, select_features
from analysis.interpret.topk import fetch_rows, labels_of
from analysis.sites import Site, find_sites

__all__ = ["explain", "resolve_site", "to_json", "compare", "summarize"]

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


def _labelled(loader: Iterable, stats: FeatureStats) -> Iterator:
    for batch in loader:
        stats.labels = labels_of(batch)
        yield batch


def _check(**values: int | None) -> None:
    for name, v in values.items():
        if v is not None and v < 1:
            raise AnalysisError(f"{name} must be >= 1 (got {v})")


def explain(model: nn.Module, loader: Iterable, *, site: str | Site, features: int | Sequence[int] = 16,
            method: str = "integrated_gradients", class_method: str | None = "auto", examples: int = 8,
            n_steps: int = 32, internal_batch_size: int | None = 64, baseline: float = 0.0,
            max_samples: int | None = 512, tokenizer: Any = None, label_names: Sequence[str] | None = None,
            class_names: Sequence[str] | None = None, class_layer: str | None = None, batched: bool = True, device: Any = None,
            progress: bool = False) -> dict:
    """Explain ``features`` of ``site``: their statistics, top examples and attributions (see module docstring).

    Args:
        model: any ``nn.Module``; a transformers text model is called with ``input_ids``/``attention_mask``.
        loader: yields tensors, ``(input, label)`` pairs or dicts (``input_ids``, ``attention_mask``, ``labels``);
            it is read twice unless it is a sequential ``DataLoader`` over a map-style dataset.
        site: regex over activation-site names (the last match is used) or a :class:`~analysis.sites.Site`.
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
    check_methods(method, class_method)
    _check(examples=examples, n_steps=n_steps, internal_batch_size=internal_batch_size, max_samples=max_samples)
    site_obj, matched = resolve_site(model, site)
    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    timing: dict[str, float] = {}
    was_training = model.training
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in grads:
            p.requires_grad_(False)  # attributions need input gradients only
        t = time.perf_counter()
        collector = FeatureStats(model, site_obj, examples)
        n = run_pass(model, _labelled(loader, collector), [collector], device=device, max_samples=max_samples,
                     progress=progress, desc="explain: top examples")
        stats = collector.results()
        chosen = select_features(stats, features, examples)
        tops = {f: collector.topk.of(f) for f in chosen}
        timing["scan_s"] = time.perf_counter() - t

        t = time.perf_counter()
        unique = sorted({s for f in chosen for s, _, _ in tops[f]})
        if not unique:
            raise AnalysisError(f"no samples reached site {site_obj.name}")
        raw, labels = fetch_rows(loader, unique, getattr(tokenizer, "pad_token_id", None) or 0)
        inputs = make_inputs(raw, tokenizer, baseline).to(device)
        row_of = {s: i for i, s in enumerate(unique)}
        pairs = [(f, row_of[s]) for f in chosen for s, _, _ in tops[f]]
        row_inputs = inputs.rows(torch.tensor([r for _, r in pairs], device=device))
        timing["fetch_s"] = time.perf_counter() - t

        t = time.perf_counter()
        attr, delta = feature_attributions(model, site_obj, row_inputs, torch.tensor([f for f, _ in pairs]), method,
                                           n_steps=n_steps, internal_batch_size=internal_batch_size, batched=batched)
        fmaps = row_inputs.to_map(attr)
        timing["feature_attributions_s"] = time.perf_counter() - t
        fmask = None if isinstance(inputs, ImageInputs) else row_inputs.mask
        fconc = concentration(fmaps, fmask)
        fcomp = completeness(attr.reshape(len(pairs), -1).sum(1), delta) if delta is not None else None

        t = time.perf_counter()
        preds, num_classes = predict(model, inputs, internal_batch_size or 64)
        cmaps = cdelta = cconc = ccomp = None
        used_class_method = None
        if class_method is not None:
            cmaps, cdelta, used_class_method = class_attributions(
                model, inputs, preds, class_method, layer=class_layer, n_steps=n_steps,
                internal_batch_size=internal_batch_size)
            cconc = concentration(cmaps, None if isinstance(inputs, ImageInputs) else inputs.mask)
            if cdelta is not None:
                ccomp = completeness(cmaps.reshape(len(unique), -1).sum(1), cdelta)
        timing["class_attributions_s"] = time.perf_counter() - t

        positions = [pos for f in chosen for _, _, pos in tops[f]]
        if isinstance(inputs, ImageInputs):
            boxes = receptive_boxes(model, site_obj, row_inputs, positions)
            arrays = {"images": display_images(inputs.x), "tokens": None}
        else:
            boxes = None
            arrays = {"images": None, "tokens": tokens_of(inputs.ids, inputs.mask, tokenizer)}
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        model.train(was_training)

    arrays["feature_maps"] = fmaps.detach().cpu().numpy()
    arrays["class_maps"] = None if cmaps is None else cmaps.detach().cpu().numpy()
    labels_np = None if labels is None else labels.cpu().numpy()
    preds_np = preds.cpu().numpy()
    feats_out = []
    k = 0
    for f in chosen:
        exs = []
        for s, v, pos in tops[f]:
            r = row_of[s]
            e = {"sample": s, "value": v, "position": pos, "row": r, "map": k,
                 "label": None if labels_np is None else int(labels_np[r]), "pred": int(preds_np[r]),
                 "feature_gini": fconc["gini"][k], "feature_top5_mass": fconc["top5_mass"][k],
                 "feature_delta_abs": None if fcomp is None else fcomp["abs"][k],
                 "feature_delta_rel": None if fcomp is None else fcomp["rel"][k],
                 "class_gini": None if cconc is None else cconc["gini"][r],
                 "class_top5_mass": None if cconc is None else cconc["top5_mass"][r],
                 "class_delta_rel": None if ccomp is None else ccomp["rel"][r]}
            e["box"] = list(boxes[k]) if boxes is not None else None
            exs.append({key: (float(val) if isinstance(val, np.floating) else val) for key, val in e.items()})
            k += 1
        feats_out.append({"index": f, **{key: _item(stats[key], f) for key in stats}, "examples": exs})
    result = {
        "site": site_obj.name, "matched_sites": matched, "site_shape": list(collector.shape or ()),
        "channels": len(stats["selectivity"]), "samples": n, "input_kind": inputs.kind, "method": method,
        "class_method": used_class_method,
        "settings": {"features": features if isinstance(features, int) else list(features), "examples": examples,
                     "n_steps": n_steps, "internal_batch_size": internal_batch_size, "baseline": baseline,
                     "batched": batched, "max_samples": max_samples},
        "selection": "indices" if not isinstance(features, int) else "selectivity",
        "label_names": list(label_names) if label_names is not None else None,
        "class_names": list(class_names) if class_names is not None else None, "num_classes": num_classes,
        "stats": stats, "features": feats_out, "arrays": arrays, "timing": timing,
    }
    result["summary"] = summarize(result)
    return result


def _item(arr: np.ndarray | None, i: int) -> float | int | None:
    if arr is None:
        return None
    v = arr[i]
    return int(v) if np.issubdtype(type(v), np.integer) else float(v)


def to_json(result: dict) -> dict:
    """The JSON-ready part of an :func:`explain` result: everything but the maps and images (NaN → None)."""
    from analysis.report import clean

    out = {k: v for k, v in result.items() if k != "arrays"}
    out["stats"] = {k: None if v is None else np.asarray(v).tolist() for k, v in result["stats"].items()}
    return clean(out)
