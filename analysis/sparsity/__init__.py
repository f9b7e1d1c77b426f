"""Sparsity of feature maps: the definitions, and exact streaming reductions over a dataset.

Every measure here is dimensionless. Activations at a site have shape ``[B, C, H, W]`` (conv),
``[B, T, C]`` (tokens) or ``[B, C]``; the *code at a position* is the channel vector at one (b, h, w)
or (b, t), of length ``n = C``. The field uses several incompatible sparsity measures, so every number
is reported under the name of its definition:

``zero_frac``
    fraction of entries exactly 0.  ∈ [0, 1].
``near_zero_frac(abs,τ)`` / ``near_zero_frac(rel,τ)``
    fraction of entries with ``|a| ≤ τ`` (absolute), or ``|a| ≤ τ · max_c |a[b, c, pos]|`` (relative to the
    largest magnitude in the same code vector). Needed for GELU/SiLU nets, where exact zeros are rare.
``l0_per_position``
    number of non-zero channels in each code vector (``|a| > τ`` with τ = 0 by default); mean and max
    over positions, and the mean as a fraction of C. SAE-style "L0".
``hoyer``
    ``(√n − ‖x‖₁/‖x‖₂) / (√n − 1)`` per code vector ∈ [0, 1]: 1 = one non-zero, 0 = all equal.
    Undefined (0/0) for an all-zero code, excluded from the mean and counted in ``empty_position_frac``; and
    undefined for n = 1 (a one-channel site): :func:`hoyer` gives NaN and the streaming ``hoyer_mean`` NaN too
    (``null`` in JSON reports), with an empty histogram.
``gini``
    ``1 − 2 Σ_k (x_(k)/‖x‖₁)·(n − k + ½)/n`` with |x| sorted ascending (k = 1…n); 0 for a constant vector,
    ``1 − 1/n`` for a one-hot one (Hurley & Rickard 2009).
``dead`` / ``dense`` units
    channels that are non-zero at no evaluated position / at more than 90 % of them; with the histogram
    of ``log10(firing density)`` over the live channels (density = fraction of positions where it fires).

:class:`SparsityStats` keeps exact sums and counts (integers in int64, real sums in float64), so a
dataset-level result does not depend on how the data was batched.

The package, by job: :mod:`~analysis.sparsity.measures` (each measure on one tensor: the reference),
:mod:`~analysis.sparsity.kernels` (the streaming reductions and their running sums, shared with
:mod:`analysis.graph`), :mod:`~analysis.sparsity.results` (the typed per-site and model-wide results and their
JSON forms) and :mod:`~analysis.sparsity.meter` (:class:`SparsityStats`, :class:`SparsityMeter`). Every public
name is importable from ``analysis.sparsity``; the constants that are part of a definition (default τ, the
dense threshold, the Gini subsample rate) come from :mod:`analysis.definitions`.
"""

from analysis.definitions import DEFAULT_TAU_ABS, DEFAULT_TAU_REL, DENSE_THRESHOLD, GINI_EVERY
from analysis.sparsity.kernels import GINI_BINS, HIST_EDGES, HOYER_BINS, SparsityState, code_view, gini_selection
from analysis.sparsity.measures import gini, hoyer, l0_per_position, near_zero_frac, zero_frac
from analysis.sparsity.meter import SparsityMeter, SparsityStats
from analysis.sparsity.results import Histogram, NearZero, SiteSparsity, SparsitySummary, near_zero_stats, summarize

__all__ = [
    "DEFAULT_TAU_ABS", "DEFAULT_TAU_REL", "DENSE_THRESHOLD", "GINI_BINS", "GINI_EVERY", "HIST_EDGES", "HOYER_BINS",
    "Histogram", "NearZero", "SiteSparsity", "SparsityMeter", "SparsityState", "SparsityStats", "SparsitySummary",
    "code_view", "gini", "gini_selection", "hoyer", "l0_per_position", "near_zero_frac", "near_zero_stats",
    "summarize", "zero_frac",
]
