"""Which features to explain: per-feature statistics in one streamed pass, and selection by selectivity.

For one site with ``C`` features (channels of a conv map, FFN neurons of a token map), over every position of
every sample (padding excluded):

- ``firing_density``: fraction of positions where the feature is > 0;
- ``mean``: mean of ``max(a, 0)`` over positions;
- ``top``: the largest response (the feature's maximum over positions, see :mod:`.topk`) over all samples;
- ``selectivity``: ``top / mean``, the ratio of the feature's best response to its average one (0 for a feature
  that never fires). A feature that fires rarely but strongly scores high; a dense one scores low;
- ``class_selectivity`` (with labels): ``(μ_max − μ_rest) / (μ_max + μ_rest)`` over the class-conditional means of
  the sample response ``max(response, 0)``: μ_max of the best class, μ_rest the mean of the other classes'
  means (Morcos et al. 2018). 0 = no preference, 1 = responds to one class only.

All are exact streaming sums and counts, so they do not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from analysis.collect import SiteCollector
from analysis.errors import AnalysisError
from analysis.interpret.topk import TopK
from analysis.sites import Site

DENSE_DENSITY = 0.9  # a feature firing at more than this fraction of positions is "dense" (as analysis.sparsity.DENSE_THRESHOLD)


def feature_view(out: Tensor, site: Site) -> Tensor:
    """The site output as ``[B, C, P]``: features on axis 1, positions flattened on axis 2 (P = 1 for ``[B, C]``)."""
    o = out.movedim(site.channel_dim(out.dim()), 1)
    return o.reshape(o.shape[0], o.shape[1], -1)


class FeatureStats(SiteCollector):
    """Streams per-feature statistics and the top-``k`` examples of one site (see module docstring).

    Set :attr:`labels` to the labels of the coming batch to get class-conditional means.
    """

    def __init__(self, model: nn.Module, site: Site, k: int):
        super().__init__(model, [site])
        self.site, self.k = site, k
        self.labels: Tensor | None = None
        self.positions = 0
        self.shape: tuple[int, ...] | None = None  # site output shape of one sample
        self.sum = self.fire = self.topk = None
        self.class_sum: Tensor | None = None  # [classes, C] sums of max(response, 0)
        self.class_count: Tensor | None = None

    def observe(self, key: str, site: Site, out: Tensor) -> None:
        if key != site.name:  # a module run twice per forward: its first call is the site
            return
        o = feature_view(out, site).float()
        b, c, p = o.shape
        if self.sum is None:
            self.shape = tuple(out.shape[1:])
            self.sum = torch.zeros(c, dtype=torch.float64, device=o.device)
            self.fire = torch.zeros(c, dtype=torch.long, device=o.device)
            self.topk = TopK(c, self.k, device=o.device)
        mask = self.mask_for(out)
        valid = mask.view(b, 1, p) if mask is not None else torch.ones(b, 1, p, dtype=torch.bool, device=o.device)
        self.sum += (o.clamp_min(0) * valid).sum((0, 2), dtype=torch.float64)
        self.fire += ((o > 0) & valid).sum((0, 2))
        self.positions += int(valid.sum())
        resp, where = o.masked_fill(~valid, -torch.inf).max(2)
        self.topk.update(resp, where, self.sample_idx[:b].to(o.device))
        if self.labels is not None:
            self._by_class(resp.clamp_min(0), self.labels[:b].to(o.device))

    def _by_class(self, resp: Tensor, y: Tensor) -> None:
        n = int(y.max()) + 1
        if self.class_sum is None or self.class_sum.shape[0] < n:
            grow = torch.zeros(n, resp.shape[1], dtype=torch.float64, device=resp.device)
            cnt = torch.zeros(n, dtype=torch.long, device=resp.device)
            if self.class_sum is not None:
                grow[: self.class_sum.shape[0]] = self.class_sum
                cnt[: self.class_count.shape[0]] = self.class_count
            self.class_sum, self.class_count = grow, cnt
        self.class_sum.index_add_(0, y, resp.double())
        self.class_count += torch.bincount(y, minlength=self.class_count.shape[0])

    def results(self) -> dict[str, np.ndarray | None]:
        """Per-feature arrays (length C): firing_density, mean, top, selectivity, positive_examples (how many of
        the top-k examples respond > 0), class_selectivity and top_class (None without labels)."""
        if self.sum is None:
            raise AnalysisError(f"site {self.site.name} produced no output on the data (is it used in forward?)")
        n = max(self.positions, 1)
        mean = (self.sum / n).cpu().numpy()
        top = self.topk.values[:, 0].cpu().numpy().astype(np.float64)
        top = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            sel = np.where(mean > 0, top / mean, 0.0)
        out = {"firing_density": (self.fire.double() / n).cpu().numpy(), "mean": mean, "top": top, "selectivity": sel,
               "positive_examples": (self.topk.values > 0).sum(1).cpu().numpy(), "class_selectivity": None,
               "top_class": None}
        if self.class_count is not None and int((self.class_count > 0).sum()) >= 2:
            present = self.class_count > 0
            mu = (self.class_sum[present] / self.class_count[present, None]).cpu().numpy()  # [K, C]
            best = mu.max(0)
            rest = (mu.sum(0) - best) / (mu.shape[0] - 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                out["class_selectivity"] = np.where(best + rest > 0, (best - rest) / (best + rest), 0.0)
            out["top_class"] = torch.nonzero(present).view(-1).cpu().numpy()[mu.argmax(0)]
        return out


def select_features(stats: dict[str, np.ndarray | None], features: int | Sequence[int], examples: int) -> list[int]:
    """Feature indices to explain: ``features`` itself if it is a list, else the ``features`` most selective ones.

    Ranking: features that are neither dead nor dense (firing density in (0, 0.9]) and that have at least
    ``examples`` samples with a positive response come first, by selectivity (descending, ties by index); the
    others follow in the same order, so a model with few such features still gets ``features`` cards.

    Raises:
        AnalysisError: an index is out of range, or more features are asked for than the site has.
    """
    c = len(stats["selectivity"])
    if not isinstance(features, int):
        bad = [f for f in features if not 0 <= int(f) < c]
        if bad:
            raise AnalysisError(f"feature index {bad[0]} out of range: the site has {c} features (0..{c - 1})")
        if not features:
            raise AnalysisError("no feature index given")
        return [int(f) for f in features]
    if features < 1:
        raise AnalysisError(f"the number of features to explain must be >= 1 (got {features})")
    if features > c:
        raise AnalysisError(f"asked for the top {features} features but the site has only {c}")
    d, sel = stats["firing_density"], stats["selectivity"]
    eligible = (d > 0) & (d <= DENSE_DENSITY) & (stats["positive_examples"] >= examples)
    order = np.lexsort((np.arange(c), -sel, ~eligible))  # eligible first, then selectivity desc, then index
    return [int(i) for i in order[:features]]
