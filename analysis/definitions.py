"""One definition of every reported number: its name, formula (one line, plain text) and unit, read by the reports
(``report.json``'s ``definitions``), the training log (``metrics.json``) and the model cards.

Also the constants that are part of a definition (the default near-zero thresholds τ, the dense-unit threshold, the
Gini subsample rate), so that the code computing a number and the text describing it read the same value. Plain
data, no imports beyond the standard library: anything may read it cheaply. The longer derivations are the
docstrings of the modules that compute the numbers: :mod:`analysis.sparsity`, :mod:`analysis.dictionary`,
:mod:`analysis.margins`, :mod:`analysis.layerwise`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

DEFAULT_TAU_ABS = 1e-2  # near_zero_frac(abs): |a| <= τ, in activation units
DEFAULT_TAU_REL = 1e-2  # near_zero_frac(rel): |a| <= τ · max_c |a| of the same code vector (a fraction)
DENSE_THRESHOLD = 0.9  # a dense unit fires at more than this fraction of the positions
GINI_EVERY = 64  # Gini on 1 code vector in 64 (analysis.sparsity.gini_selection); 0 = off
DECISION_SHARE = 0.9  # decision_features: the share of the predicted class's positive attribution to cover
DECISION_TOLERANCE = 1e-6  # decision_features: the cumulative sum may fall short of share·P by this fraction of P


@dataclass(frozen=True)
class Metric:
    """One reported number: ``name`` (its key in reports), ``formula`` (one line, plain text, as reports print it)
    and ``unit`` ("fraction" is a number in [0, 1], shown in % by reports)."""

    name: str
    formula: str
    unit: str


ANALYSIS: tuple[Metric, ...] = (
    # predictions (analysis.collect.AccuracyMeter), in the same pass as the sparsity
    Metric("top1", "fraction of samples whose largest logit is their label (reported in %; differences in points)",
           "fraction"),
    Metric("loss", "mean cross-entropy of the logits against the labels (nats per sample)", "nats per sample"),
    # sparsity (analysis.sparsity)
    Metric("zero_frac", "fraction of activation entries exactly 0 at a site (unitless)", "fraction"),
    Metric("near_zero_frac(abs,tau)", "fraction of entries with |a| <= tau", "fraction"),
    Metric("near_zero_frac(rel,tau)", "fraction of entries with |a| <= tau * max_c |a[b,c,pos]| (same code vector)",
           "fraction"),
    Metric("l0_per_position", "non-zero channels per code vector (b, h, w) or (b, t); mean, max, and mean / C",
           "channels (mean / C: fraction)"),
    Metric("hoyer", "(sqrt(n) - ||x||_1/||x||_2) / (sqrt(n) - 1) per non-empty code vector, n = C; 1 = one non-zero",
           "index in [0, 1]"),
    Metric("gini", f"1 - 2 sum_k (x_(k)/||x||_1)(n - k + 1/2)/n, |x| ascending; on 1 code vector in {GINI_EVERY},"
                   " chosen by the position and a hash of the sample index, so independent of batching",
           "index in [0, 1]"),
    Metric("empty_position_frac", "fraction of code vectors that are entirely zero (excluded from hoyer/gini)",
           "fraction"),
    Metric("dead_units", "channels that are zero at every evaluated position", "channels"),
    Metric("dense_units", f"channels non-zero at more than {DENSE_THRESHOLD:.0%} of positions", "channels"),
    Metric("log10_firing_density",
           "histogram over live channels of log10(fraction of positions where it is non-zero)", "channels per bin"),
    Metric("l1_per_position", "mean over positions of ||a[b,:,pos]||_1 (the l1 penalty's quantity; units of a)",
           "activation units"),
    Metric("zero_frac_mean_sites", "zero_frac averaged over sites, each site weighted equally", "fraction"),
    Metric("zero_frac_all_entries", "fraction of all activation entries (all sites) exactly 0", "fraction"),
    Metric("zero_frac_per_stage", "zero_frac averaged over the sites of each stage (rN = output stride N)",
           "fraction"),
    # coherence (analysis.dictionary)
    Metric("mu", "mutual coherence max_{i!=j} |<w_i, w_j>| of the l2-normalized non-zero atoms (filters / rows); not"
                 " applicable (null) for depthwise layers, whose atoms share no input", "cosine in [0, 1]"),
    Metric("zero_atoms", "atoms with ||w_i|| <= 1e-4 max_j ||w_j|| (switched off): counted, left out of mu and the"
                         " thresholds", "atoms"),
    Metric("mu_shift", "shift-aware coherence: max over filter pairs and relative shifts (multiples of the stride) of"
                       " the inner product of overlapped unit filters placed on their dilated grid, a filter with itself"
                       " at shift 0 excluded", "cosine in [0, 1]"),
    Metric("gram_mean / gram_p99", "mean / 99th percentile of the off-diagonal |Gram| entries", "cosine in [0, 1]"),
    Metric("babel", "Babel function mu_1(k) = max_i sum of the k largest |<w_i, w_j>|, j != i, for k = 1..16",
           "sum of k cosines"),
    Metric("welch", "Welch bound sqrt((m - n)/(n(m - 1))) for m atoms in R^n (m > n)", "cosine in [0, 1]"),
    Metric("s_star", "uniqueness bound 1/2 (1 + 1/mu): sparser codes are the unique sparsest representation",
           "non-zeros"),
    Metric("threshold", "effective soft-threshold -b/||w|| per unit, BatchNorm folded (positive: the unit needs"
                        " evidence above this to fire)", "input activation units"),
    # margins (analysis.margins)
    Metric("stripe_sparsity", "||G_i||_{0,inf}^s of the layer's OUTPUT code G_i = act(D_i^T G_{i-1} + b)"
                              " (post-activation map; BatchNorm folded): the most non-zeros among the entries whose"
                              " atoms overlap one atom, i.e. a (2r+1) neighbourhood of output positions, r ="
                              " floor(((k-1)*dilation)/stride) per dimension (2k-1 at stride 1), all output channels of"
                              " the group; linear layers: non-zeros of the output vector per position. max, mean, p95"
                              " over stripes (Papyan-Romano-Elad 2017)", "non-zeros"),
    Metric("margin", "s* - max stripe sparsity; > 0 means the uniqueness theorem applies to this layer", "non-zeros"),
    Metric("factor_outside", "max stripe sparsity / s* of a layer (> 1: outside the theorem's regime by that factor);"
                             " the headline gives the median over layers followed by an activation", "ratio"),
    # convergence (analysis.layerwise)
    Metric("relative_change", "sqrt(sum ||F_{l+1} - F_l||^2 / sum ||F_l||^2) between consecutive equal-shape blocks",
           "ratio"),
    Metric("cka", "minibatch linear CKA with the unbiased HSIC estimator (1 = same up to rotation and scale, ~0 ="
                  " unrelated; the unbiased estimator can dip slightly below 0)", "similarity, about [0, 1]"),
    Metric("ista.relative_error", "||G^k - y|| / ||y||: k steps of layer-scale non-negative ISTA with the layer's own"
                                  " (BatchNorm-folded) filters vs the layer's output y; 0 at k = 1 by construction",
           "ratio"),
    Metric("ista.support_jaccard", "|supp(G^k) & supp(y)| / |supp(G^k) | supp(y)|", "fraction"),
    Metric("ista.rho_hat", "geometric rate fitted to the ISTA step sizes ||G^{k+1} - G^k|| / ||G^1||",
           "ratio per step"),
    Metric("ista.theory_rate", "(2s - 1) mu with s = mean non-zeros per position of y; vacuous when >= 1",
           "ratio per step"),
    # interpretability (analysis.interpret.decision)
    Metric("decision_features", "median over samples of the fewest features of a site (by default the last activation"
                                " site) whose attributions to the predicted class c add up to >= "
                                f"{DECISION_SHARE:.0%} of P, P = the sum of the positive attributions (k = 0 when P ="
                                " 0); attribution of feature j = sum over positions of a[pos, j] * d logit_c / d"
                                " a[pos, j] (captum gradient x activation; = w_cj h_j exactly for a global-average-pool"
                                " + linear head). A feature is a channel of a conv site (all spatial positions) or a"
                                " hidden unit of a token site (the positions the head reads: the CLS token or the"
                                " mean over tokens)", "features (count)"),
)

# The penalties of a sparsity fine-tune (sparsezoo.train.penalties), logged beside the metrics in metrics.json.
PENALTIES: tuple[Metric, ...] = (
    Metric("penalty.l1", "per sample (mean over the batch), sum over sites and positions of ||a[b,:,pos]||_1",
           "activation units"),
    Metric("penalty.hoyer_square", "per sample (mean over the batch), sum over sites and positions of"
                                   " ||a||_1^2/||a||_2^2", "non-zeros (a smooth count)"),
)

METRICS: dict[str, Metric] = {m.name: m for m in (*ANALYSIS, *PENALTIES)}
DEFINITIONS: dict[str, str] = {m.name: m.formula for m in ANALYSIS}  # report.json's "definitions", in this order


def definitions_of(names: Iterable[str]) -> dict[str, str]:
    """``{name: formula}`` of the metrics ``names`` (:data:`METRICS`), in that order: the ``definitions`` block of
    an output that reports those numbers."""
    return {n: METRICS[n].formula for n in names}


class Measure(NamedTuple):
    """How a model-wide number of a run's summary is described on its model card: the ``definition`` it aggregates,
    the ``threshold`` on |a| and the ``aggregate`` (how entries, positions and sites are combined)."""

    definition: str
    threshold: float
    aggregate: str


# summary key in metrics.json -> its card description; the near-zero fractions (one key per kind and τ) are
# described by near_zero_measure
MODEL_WIDE: dict[str, Measure] = {
    "zero_frac_mean_sites": Measure("zero_frac", 0.0, "fraction of entries with |a| <= threshold, mean over sites"),
    "zero_frac_all_entries": Measure("zero_frac", 0.0,
                                     "fraction of all activation entries of all sites with |a| <= threshold"),
    "l0_per_position_mean_sites": Measure("l0_per_position", 0.0, "channels with |a| > threshold per position, mean"
                                                                  " over positions, mean over sites"),
    "l0_per_position_frac_mean_sites": Measure("l0_per_position", 0.0, "l0_per_position / channels, mean over sites"),
    "dead_units": Measure("dead", 0.0, "channels with |a| > threshold at no evaluated position, summed over sites"),
    "dense_units": Measure("dense", 0.0, f"channels with |a| > threshold at more than {DENSE_THRESHOLD:.0%} of"
                                         " positions, summed over sites"),
}


def near_zero_measure(kind: str, tau: float) -> Measure:
    """The card description of a summary's near-zero fraction of ``kind`` ("abs" or "rel") at ``tau``."""
    rel = " x the largest |a| of the same code vector" if kind == "rel" else ""
    return Measure(f"near_zero_frac({kind})", tau, f"fraction of entries with |a| <= threshold{rel}, mean over sites")
