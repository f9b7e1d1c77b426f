"""Numbers that describe attribution maps, and the comparison of two models.

Per map (one example's attribution, one number per pixel or per token; padding excluded), on ``|attribution|``:

- ``gini``: Gini index (:func:`analysis.sparsity.gini`), 0 = mass spread evenly, → 1 = on one pixel/token;
- ``top5_mass``: fraction of the total ``|attribution|`` on the 5 % of pixels/tokens with the most (at least one);
  0.05 for a uniform map, 1 when it is all on that top 5 %.

Completeness (integrated gradients): ``delta = Σ attribution − (f(x) − f(baseline))``, absolute and relative to
``|f(x) − f(baseline)|``; a Riemann/Gauss–Legendre error that shrinks as ``n_steps`` grows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from analysis.jsonform import JsonForm
from analysis.sparsity import gini

TOP_FRACTION = 0.05


def concentration(maps: Tensor, mask: Tensor | None = None) -> dict[str, np.ndarray]:
    """``{"gini": [N], "top5_mass": [N]}`` of each map (rows of ``maps``, any trailing shape; ``mask`` selects the
    positions that count, e.g. non-padding tokens). An all-zero map gives NaN."""
    a = maps.detach().abs().reshape(maps.shape[0], -1).double().cpu()
    m = None if mask is None else mask.reshape(mask.shape[0], -1).bool().cpu()
    g, top = [], []
    for i in range(a.shape[0]):
        v = a[i] if m is None else a[i][m[i]]
        total = float(v.sum())
        if v.numel() == 0 or total == 0:
            g.append(math.nan)
            top.append(math.nan)
            continue
        g.append(float(gini(v)))
        k = max(1, math.ceil(TOP_FRACTION * v.numel()))
        top.append(float(torch.topk(v, k).values.sum()) / total)
    return {"gini": np.array(g), "top5_mass": np.array(top)}


def completeness(attr_sum: Tensor, delta: Tensor) -> dict[str, np.ndarray]:
    """``{"abs": |delta|, "rel": |delta| / |f(x) − f(baseline)|}`` per row, from the attributions' sums and the
    delta captum returns (``f(x) − f(baseline) = Σ attribution − delta``)."""
    d = delta.detach().double().cpu()
    span = (attr_sum.detach().double().cpu() - d).abs()
    rel = torch.where(span > 0, d.abs() / span, torch.full_like(d, math.nan))
    return {"abs": d.abs().numpy(), "rel": rel.numpy()}


def _mean(x) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None


def _median(x) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else None


def _max(x) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.max()) if x.size else None


@dataclass(frozen=True)
class ExplainSummary(JsonForm):
    """Headline numbers of one :func:`analysis.interpret.explain` result (its ``summary``): means and medians over the
    explained features and their examples, None where there is nothing to average.

    ``features``, ``examples``: how many were explained / attributed. Over the explained features:
    ``firing_density_mean`` (fraction of positions > 0), ``selectivity_median`` (top / mean response, ≥ 1) and
    ``class_selectivity_mean`` (in [0, 1]; None without labels). Over the examples, of the feature (``feature_…``) and
    of the predicted class's (``class_…``) attribution maps: ``…_attr_gini_mean`` and ``…_attr_top5_mass_mean`` (in
    [0, 1], see the module docstring). Completeness of integrated gradients: ``feature_delta_abs_max`` (largest
    ``|delta|``, in units of the feature's response) and ``feature_delta_rel_median`` / ``class_delta_rel_median``
    (median ``|delta| / |f(x) − f(baseline)|``; None for methods without a delta).

    :meth:`to_json` gives the ``summary`` dict of the result and of ``report.json`` (each number under its field's
    name, in this order); :meth:`from_json` reads it back (both derived by :mod:`analysis.jsonform`).
    """

    features: int
    examples: int
    firing_density_mean: float | None
    selectivity_median: float | None
    class_selectivity_mean: float | None
    feature_attr_gini_mean: float | None
    feature_attr_top5_mass_mean: float | None
    class_attr_gini_mean: float | None
    class_attr_top5_mass_mean: float | None
    feature_delta_abs_max: float | None
    feature_delta_rel_median: float | None
    class_delta_rel_median: float | None

    @classmethod
    def of(cls, result: Mapping[str, Any]) -> ExplainSummary:
        """The summary of an explain result (its ``features`` and ``stats``)."""
        feats = result["features"]
        ex = [e for f in feats for e in f["examples"]]

        def each(key: str) -> list[float]:
            return [e[key] for e in ex if e.get(key) is not None]

        stats = result["stats"]
        idx = [f["index"] for f in feats]
        cs = stats.get("class_selectivity")
        return cls(
            features=len(feats),
            examples=len(ex),
            firing_density_mean=_mean(stats["firing_density"][idx]),
            selectivity_median=_median(stats["selectivity"][idx]),
            class_selectivity_mean=None if cs is None else _mean(cs[idx]),
            feature_attr_gini_mean=_mean(each("feature_gini")),
            feature_attr_top5_mass_mean=_mean(each("feature_top5_mass")),
            class_attr_gini_mean=_mean(each("class_gini")),
            class_attr_top5_mass_mean=_mean(each("class_top5_mass")),
            feature_delta_abs_max=_max(each("feature_delta_abs")),
            feature_delta_rel_median=_median(each("feature_delta_rel")),
            class_delta_rel_median=_median(each("class_delta_rel")),
        )

    @property
    def worst_delta_rel_median(self) -> float | None:
        """The larger of the feature and class median relative completeness deltas (None if neither was measured):
        above a small tolerance, the integration of integrated gradients has not converged."""
        measured = [v for v in (self.feature_delta_rel_median, self.class_delta_rel_median) if v is not None]
        return max(measured, default=None)



def summarize(result: dict) -> dict[str, float | int | None]:
    """Headline numbers of one :func:`analysis.interpret.explain` result as plain data (:class:`ExplainSummary`)."""
    return ExplainSummary.of(result).to_json()


def compare(subject: dict, baseline: dict) -> dict[str, float]:
    """``subject − baseline`` (sparse − dense) for every headline number both :func:`summarize` results have."""
    return {k: subject[k] - baseline[k] for k in subject
            if isinstance(subject[k], (int, float)) and isinstance(baseline.get(k), (int, float))}
