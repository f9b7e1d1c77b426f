"""How many features a prediction rests on: ``decision_features`` (:data:`analysis.definitions.METRICS`).

**Attribution of a feature.** For a sample whose predicted class is ``c`` (the argmax of the logits ``z``), the
attribution of feature ``j`` of a site with output ``a`` is gradient × activation summed over the site's positions,

    A_j = Σ_pos a[pos, j] · ∂z_c/∂a[pos, j]

(captum's ``LayerGradientXActivation``; gradient × input, Shrikumar et al. 2016, arXiv 1605.01713). A feature is a
channel of a conv site (``[B, C, H, W]``, all spatial positions) or a hidden unit of a token site (``[B, T, C]``).
The positions count as the head reads them: after a global average pool and a linear head right after the site,
``∂z_c/∂a[pos, j] = w_cj / P`` for P positions, so ``A_j = w_cj · h_j`` exactly, with ``h`` the pooled features
(the logit without its bias, split over the features). A transformer whose head reads the CLS token gives the other
tokens of its last activation site no gradient (the last feed-forward block acts per token), so only the CLS token
counts; a mean-pooling head spreads the gradient over the tokens it averages. Padding tokens are not read by a
masked head and get none either.

**The count.** Per sample, ``P = Σ_j max(A_j, 0)`` (the evidence for the prediction); sorted descending, ``k`` is the
fewest features whose attributions add up to at least ``share · P`` (:data:`~analysis.definitions.DECISION_SHARE`
= 90 %), up to :data:`~analysis.definitions.DECISION_TOLERANCE` · P for float rounding. ``k = 0`` when ``P = 0``:
no feature of the site argues for the prediction (an all-zero site, or a prediction made by the bias alone).
Negative attributions never help reach the share, so ``k`` is at most the number of positive attributions.
``decision_features`` is the median of ``k`` over the samples.

Example:
    >>> found = decision_features(model, loader, max_samples=512)
    >>> found.median, found.channels  # e.g. 23.0 of 1280 features carry 90 % of the evidence
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from analysis.collect import split_batch
from analysis.definitions import DECISION_SHARE, DECISION_TOLERANCE
from analysis.errors import AnalysisError
from analysis.interpret.attribute import predict
from analysis.interpret.inputs import Inputs, logits_of, make_inputs
from analysis.interpret.select import feature_view
from analysis.interpret.steps import frozen
from analysis.sites import Site, find_sites


@dataclass(frozen=True)
class DecisionFeatures:
    """What :func:`decision_features` measured: the ``site``, the ``share`` of the evidence covered, the site's number
    of features (``channels``) and per sample the count ``k`` (``counts``), the predicted class (``predicted``) and
    the number of features with a positive attribution (``positive``)."""

    site: str
    share: float
    channels: int
    counts: np.ndarray
    predicted: np.ndarray
    positive: np.ndarray

    @property
    def samples(self) -> int:
        """How many samples were measured."""
        return len(self.counts)

    @property
    def median(self) -> float:
        """``decision_features``: the median of ``k`` over the samples (features; x.5 between two counts)."""
        return float(np.median(self.counts))

    def to_json(self) -> dict[str, Any]:
        """Plain data: the settings, the median and the per-sample arrays as lists."""
        return {"site": self.site, "share": self.share, "channels": self.channels, "samples": self.samples,
                "median": self.median, "counts": self.counts.tolist(), "predicted": self.predicted.tolist(),
                "positive": self.positive.tolist()}


def _check_share(share: float) -> None:
    if not 0 < share <= 1:
        raise AnalysisError(f"share must be in (0, 1] (got {share})")


def fewest_features(attributions: Tensor, share: float = DECISION_SHARE) -> tuple[Tensor, Tensor]:
    """Per row of ``attributions`` ``[N, C]``: the fewest features whose attributions add up to ``share`` of the row's
    positive total P (0 when P = 0), and the number of positive attributions. Both ``[N]`` int64."""
    _check_share(share)
    evidence = attributions.detach().double().clamp_min(0)
    cumulative = evidence.sort(dim=1, descending=True).values.cumsum(1)
    total = cumulative[:, -1]
    need = (share - DECISION_TOLERANCE) * total
    counts = (cumulative < need[:, None]).sum(1) + 1
    return torch.where(total > 0, counts, torch.zeros_like(counts)), (evidence > 0).sum(1)


def site_attributions(model: nn.Module, site: Site, inputs: Inputs, targets: Tensor) -> Tensor:
    """Gradient × activation of each row's ``targets`` logit at ``site``, summed over positions: ``[N, C]`` (captum
    ``LayerGradientXActivation``; see the module docstring)."""
    from captum.attr import LayerGradientXActivation

    def logits(*args) -> Tensor:
        return logits_of(inputs.call(model, *args))

    x, _, extra = inputs.captum()
    algo = LayerGradientXActivation(logits, site.module)
    attr = algo.attribute(x, target=targets, additional_forward_args=extra or None,
                          attribute_to_layer_input=site.capture == "input")
    if isinstance(attr, (tuple, list)):
        attr = attr[site.output_index if site.capture == "output" else 0]
    return feature_view(attr.detach(), site).sum(2)


def _site(model: nn.Module, site: str | Site | None) -> Site:
    """The site to measure: a :class:`Site`, the last activation site a regex matches, or the model's last one."""
    if isinstance(site, Site):
        return site
    return find_sites(model, include=site)[-1]


def _inputs(loader: Iterable, max_samples: int | None, device: Any) -> Iterator[Inputs]:
    """The loader's batches as :class:`Inputs` on ``device``, cut at ``max_samples`` samples."""
    seen = 0
    for batch in loader:
        if max_samples is not None and seen >= max_samples:
            return
        inputs = make_inputs(split_batch(batch)[0])
        if max_samples is not None and seen + len(inputs) > max_samples:
            inputs = inputs.rows(torch.arange(max_samples - seen))
        seen += len(inputs)
        yield inputs.to(device)


def decision_features(model: nn.Module, loader: Iterable, site: str | Site | None = None, *,
                      share: float = DECISION_SHARE, max_samples: int | None = None) -> DecisionFeatures:
    """How many features of ``site`` carry ``share`` of the evidence for each sample's predicted class (the module
    docstring has the definition); ``.median`` is the reported ``decision_features``.

    Args:
        model: any classifier ``nn.Module`` (logits ``[B, classes]``, or an output with ``.logits``); a transformers
            text model is called with ``input_ids``/``attention_mask`` (and ``token_type_ids``).
        loader: yields image tensors, ``(input, label)`` pairs or dicts (``input_ids``, ``attention_mask``, …).
        site: a :class:`~analysis.sites.Site`, a regex over activation sites (the last match), or None: the model's
            last activation site.
        share: the fraction of the positive attribution to cover, in (0, 1].
        max_samples: measure at most this many samples (None: all).

    Raises:
        AnalysisError: ``share`` out of range, no samples, or inputs that cannot be attributed.
        SiteSelectionError: the site pattern matches nothing.
    """
    _check_share(share)
    chosen = _site(model, site)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    counts, positive, predicted, channels = [], [], [], 0
    with frozen(model):
        for inputs in _inputs(loader, max_samples, device):
            preds, _ = predict(model, inputs, len(inputs))
            attr = site_attributions(model, chosen, inputs, preds)
            k, n_pos = fewest_features(attr, share)
            counts.append(k.cpu())
            positive.append(n_pos.cpu())
            predicted.append(preds.cpu())
            channels = attr.shape[1]
    if not counts:
        raise AnalysisError("decision_features needs at least one sample; the loader gave none")
    return DecisionFeatures(chosen.name, share, channels, torch.cat(counts).numpy(), torch.cat(predicted).numpy(),
                            torch.cat(positive).numpy())
