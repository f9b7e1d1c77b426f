"""The steps of :func:`analysis.interpret.explain`, each a function whose name says its job.

:func:`scan` streams the data once (statistics and top examples of every feature of the site) → :func:`select`
picks the features and their top examples → :func:`fetch` reads those examples again from the loader →
:func:`attribute` attributes each feature's response, and the predicted class, to the inputs → :func:`assemble`
measures the maps and builds the plain-data result. :class:`ExplainOptions` holds the call's settings (the set-up,
as captum separates a method's set-up from its ``attribute``); each step hands a small dataclass to the next, and
:class:`Explained` holds them all for :func:`assemble`, with the seconds each step took (:class:`ExplainTiming`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypedDict

import numpy as np
import torch
from torch import Tensor, nn

from analysis.collect import batch_labels, run_pass
from analysis.errors import AnalysisError
from analysis.interpret.attribute import check_methods, class_attributions, feature_attributions, predict
from analysis.interpret.examples import display_images, receptive_boxes, tokens_of
from analysis.interpret.inputs import ImageInputs, Inputs, make_inputs
from analysis.interpret.metrics import completeness, concentration, summarize
from analysis.interpret.select import FeatureStats, select_features
from analysis.interpret.topk import fetch_rows
from analysis.pipeline import stopwatch
from analysis.sites import Site

Top = tuple[int, float, int]  # (sample index, response, position) of one top example


@dataclass(frozen=True)
class ExplainOptions:
    """The settings of one :func:`~analysis.interpret.explain` call (given as an object or as its keyword arguments;
    the explain docstring says what each does), checked when made.

    Raises:
        AnalysisError: an unknown attribution method, or a count below 1.
    """

    features: int | Sequence[int] = 16
    method: str = "integrated_gradients"
    class_method: str | None = "auto"
    examples: int = 8
    n_steps: int = 32
    internal_batch_size: int | None = 64
    baseline: float = 0.0
    max_samples: int | None = 512
    tokenizer: Any = None
    label_names: Sequence[str] | None = None
    class_names: Sequence[str] | None = None
    class_layer: str | None = None
    batched: bool = True
    device: Any = None
    progress: bool = False

    def __post_init__(self) -> None:
        check_methods(self.method, self.class_method)
        counts = {"examples": self.examples, "n_steps": self.n_steps, "internal_batch_size": self.internal_batch_size,
                  "max_samples": self.max_samples}
        for name, v in counts.items():
            if v is not None and v < 1:
                raise AnalysisError(f"{name} must be >= 1 (got {v})")

    def settings(self) -> dict[str, Any]:
        """The settings the result reports (``result["settings"]``)."""
        return {"features": self.features if isinstance(self.features, int) else list(self.features),
                "examples": self.examples, "n_steps": self.n_steps, "internal_batch_size": self.internal_batch_size,
                "baseline": self.baseline, "batched": self.batched, "max_samples": self.max_samples}


class ExplainSettings(TypedDict, total=False):
    """The fields of :class:`ExplainOptions` as keyword arguments of :func:`~analysis.interpret.explain`."""

    features: int | Sequence[int]
    method: str
    class_method: str | None
    examples: int
    n_steps: int
    internal_batch_size: int | None
    baseline: float
    max_samples: int | None
    tokenizer: Any
    label_names: Sequence[str] | None
    class_names: Sequence[str] | None
    class_layer: str | None
    batched: bool
    device: Any
    progress: bool


@dataclass
class Scan:
    """What one pass over the data measured at the site."""

    collector: FeatureStats  # holds the site's output shape and the top examples of every feature
    samples: int  # samples scanned
    stats: dict[str, np.ndarray | None]  # per-feature arrays (:meth:`FeatureStats.results`)


@dataclass
class Selection:
    """The features to explain, in report order, and the top examples of each (largest response first)."""

    features: list[int]
    tops: dict[int, list[Top]]


@dataclass
class Rows:
    """The top examples' inputs: each distinct sample once, and one row per (feature, top example) pair."""

    inputs: Inputs  # the distinct samples, in sample order, on the device
    labels: Tensor | None  # their data labels (None: the data has none)
    row_of: dict[int, int]  # sample index → row of ``inputs``
    pairs: Inputs  # one row per (feature, example), features in selection order
    pair_features: Tensor  # the feature of each pair
    positions: list[int]  # the site position of each pair's top response

    @property
    def images(self) -> bool:
        return isinstance(self.inputs, ImageInputs)


@dataclass
class MapSet:
    """Attribution maps with their concentration (Gini, top-5 % mass) and completeness (None without a delta)."""

    maps: Tensor
    concentration: dict[str, np.ndarray]
    completeness: dict[str, np.ndarray] | None


@dataclass
class Attributions:
    """What :func:`attribute` found for the fetched rows."""

    features: MapSet  # one map per pair
    classes: MapSet | None  # one map per distinct sample (None: class attributions skipped)
    class_method: str | None  # the class method used
    preds: Tensor  # the model's prediction per distinct sample
    num_classes: int
    boxes: list | None  # receptive-field box per pair (images only)
    display: dict[str, Any]  # {"images": display images, "tokens": token strings}, one of them None
    feature_s: float  # seconds the feature attributions took
    class_s: float  # seconds the predictions and class attributions took


@dataclass(frozen=True)
class ExplainTiming:
    """Seconds each step of one explain call took: the scan (with the selection), the fetch, the feature
    attributions and the class attributions (with the predictions)."""

    scan_s: float
    fetch_s: float
    feature_attributions_s: float
    class_attributions_s: float

    def to_json(self) -> dict[str, float]:
        """The result's ``timing``: each field under its name, in this order."""
        return asdict(self)


@dataclass(frozen=True)
class Explained:
    """What the steps of one explain call produced, in order, for :func:`assemble`: the ``site`` and the names its
    pattern ``matched``, the scan, the selection, the fetched rows, the attributions and the ``timing``."""

    site: Site
    matched: list[str]
    scanned: Scan
    selection: Selection
    rows: Rows
    found: Attributions
    timing: ExplainTiming


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode with no parameter gradients (attributions need input gradients only); both are
    restored on exit, also after an error."""
    was_training = model.training
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        model.train(was_training)


def _labelled(loader: Iterable, stats: FeatureStats) -> Iterator:
    for batch in loader:
        stats.labels = batch_labels(batch)
        yield batch


def scan(model: nn.Module, loader: Iterable, site: Site, device: Any, opts: ExplainOptions) -> Scan:
    """Stream up to ``max_samples`` samples once: per-feature statistics and top examples at ``site``."""
    collector = FeatureStats(model, site, opts.examples)
    n = run_pass(model, _labelled(loader, collector), [collector], device=device, max_samples=opts.max_samples,
                 progress=opts.progress, desc="explain: top examples")
    return Scan(collector, n, collector.results())


def select(scanned: Scan, opts: ExplainOptions) -> Selection:
    """The features to explain (:func:`~.select.select_features`) and their top examples."""
    chosen = select_features(scanned.stats, opts.features, opts.examples)
    return Selection(chosen, {f: scanned.collector.topk.of(f) for f in chosen})


def fetch(loader: Iterable, selection: Selection, site: Site, device: Any, opts: ExplainOptions) -> Rows:
    """Read the selected top examples again from ``loader`` and lay them out as rows for attribution."""
    unique = sorted({s for f in selection.features for s, _, _ in selection.tops[f]})
    if not unique:
        raise AnalysisError(f"no samples reached site {site.name}")
    raw, labels = fetch_rows(loader, unique, getattr(opts.tokenizer, "pad_token_id", None) or 0)
    inputs = make_inputs(raw, opts.tokenizer, opts.baseline).to(device)
    row_of = {s: i for i, s in enumerate(unique)}
    pairs = [(f, row_of[s], pos) for f in selection.features for s, _, pos in selection.tops[f]]
    return Rows(inputs, labels, row_of, inputs.rows(torch.tensor([r for _, r, _ in pairs], device=device)),
                torch.tensor([f for f, _, _ in pairs]), [pos for _, _, pos in pairs])


def _measure(maps: Tensor, mask: Tensor | None, attr: Tensor, delta: Tensor | None, n: int) -> MapSet:
    concentrated = concentration(maps, mask)
    return MapSet(maps, concentrated, completeness(attr.reshape(n, -1).sum(1), delta) if delta is not None else None)


def _class_maps(model: nn.Module, rows: Rows, opts: ExplainOptions) -> tuple[Tensor, int, MapSet | None, str | None]:
    """The model's predictions on the distinct samples and, unless ``class_method`` is None, their class maps."""
    preds, num_classes = predict(model, rows.inputs, opts.internal_batch_size or 64)
    if opts.class_method is None:
        return preds, num_classes, None, None
    maps, delta, used = class_attributions(model, rows.inputs, preds, opts.class_method, layer=opts.class_layer,
                                           n_steps=opts.n_steps, internal_batch_size=opts.internal_batch_size)
    mask = None if rows.images else rows.inputs.mask
    return preds, num_classes, _measure(maps, mask, maps, delta, len(rows.row_of)), used


def attribute(model: nn.Module, site: Site, rows: Rows, opts: ExplainOptions) -> Attributions:
    """Attribute every pair's feature response (one batched captum call unless ``batched`` is False) and the
    predicted class of every distinct sample to the inputs; also the boxes or tokens the report shows."""
    with stopwatch() as feature_took:
        attr, delta = feature_attributions(model, site, rows.pairs, rows.pair_features, opts.method,
                                           n_steps=opts.n_steps, internal_batch_size=opts.internal_batch_size,
                                           batched=opts.batched)
        fmaps = rows.pairs.to_map(attr)
    features = _measure(fmaps, None if rows.images else rows.pairs.mask, attr, delta, len(rows.pair_features))
    with stopwatch() as class_took:
        preds, num_classes, classes, used = _class_maps(model, rows, opts)
    if rows.images:
        boxes = receptive_boxes(model, site, rows.pairs, rows.positions)
        display = {"images": display_images(rows.inputs.x), "tokens": None}
    else:
        boxes, display = None, {"images": None, "tokens": tokens_of(rows.inputs.ids, rows.inputs.mask, opts.tokenizer)}
    return Attributions(features, classes, used, preds, num_classes, boxes, display, feature_took.seconds,
                        class_took.seconds)


def _item(arr: np.ndarray | None, i: int) -> float | int | None:
    if arr is None:
        return None
    v = arr[i]
    return int(v) if np.issubdtype(type(v), np.integer) else float(v)


def _at(values: dict[str, np.ndarray] | None, key: str, i: int) -> Any:
    return None if values is None else values[key][i]


def _example(top: Top, row: int, k: int, labels: np.ndarray | None, preds: np.ndarray, found: Attributions) -> dict:
    """The record of the ``k``-th attributed example (map ``k``), distinct sample ``row``."""
    (sample, value, position), feature = top, found.features
    class_conc, class_comp = (None, None) if found.classes is None else (found.classes.concentration,
                                                                          found.classes.completeness)
    e = {"sample": sample, "value": value, "position": position, "row": row, "map": k,
         "label": None if labels is None else int(labels[row]), "pred": int(preds[row]),
         "feature_gini": feature.concentration["gini"][k], "feature_top5_mass": feature.concentration["top5_mass"][k],
         "feature_delta_abs": _at(feature.completeness, "abs", k), "feature_delta_rel": _at(feature.completeness, "rel", k),
         "class_gini": _at(class_conc, "gini", row), "class_top5_mass": _at(class_conc, "top5_mass", row),
         "class_delta_rel": _at(class_comp, "rel", row), "box": list(found.boxes[k]) if found.boxes is not None else None}
    return {key: (float(val) if isinstance(val, np.floating) else val) for key, val in e.items()}


def _feature_records(stats: dict, selection: Selection, rows: Rows, found: Attributions) -> list[dict]:
    """One record per selected feature: its statistics and its examples (maps numbered in order)."""
    labels = None if rows.labels is None else rows.labels.cpu().numpy()
    preds = found.preds.cpu().numpy()
    records, k = [], 0
    for f in selection.features:
        examples = []
        for top in selection.tops[f]:
            examples.append(_example(top, rows.row_of[top[0]], k, labels, preds, found))
            k += 1
        records.append({"index": f, **{key: _item(stats[key], f) for key in stats}, "examples": examples})
    return records


def _names(names: Sequence[str] | None) -> list[str] | None:
    return list(names) if names is not None else None


def assemble(explained: Explained, opts: ExplainOptions) -> dict:
    """The plain-data result of :func:`~analysis.interpret.explain` (its docstring lists the keys)."""
    site, scanned, rows, found = explained.site, explained.scanned, explained.rows, explained.found
    arrays = {**found.display, "feature_maps": found.features.maps.detach().cpu().numpy(),
              "class_maps": None if found.classes is None else found.classes.maps.detach().cpu().numpy()}
    result = {
        "site": site.name, "matched_sites": explained.matched, "site_shape": list(scanned.collector.shape or ()),
        "channels": len(scanned.stats["selectivity"]), "samples": scanned.samples, "input_kind": rows.inputs.kind,
        "method": opts.method, "class_method": found.class_method, "settings": opts.settings(),
        "selection": "indices" if not isinstance(opts.features, int) else "selectivity",
        "label_names": _names(opts.label_names), "class_names": _names(opts.class_names),
        "num_classes": found.num_classes, "stats": scanned.stats,
        "features": _feature_records(scanned.stats, explained.selection, rows, found), "arrays": arrays,
        "timing": explained.timing.to_json(),
    }
    result["summary"] = summarize(result)
    return result
