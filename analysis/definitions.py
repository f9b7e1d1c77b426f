"""One-line definitions of every reported number, written into reports and ``metrics.json``.

The authoritative definitions (with formulas and units) are the docstrings of the modules that compute
them: :mod:`analysis.sparsity`, :mod:`analysis.dictionary`, :mod:`analysis.margins`, :mod:`analysis.layerwise`.
"""

from analysis.sparsity import DENSE_THRESHOLD, GINI_EVERY

DEFINITIONS: dict[str, str] = {
    # predictions (analysis.collect.AccuracyMeter), in the same pass as the sparsity
    "top1": "fraction of samples whose largest logit is their label (reported in %; differences in points)",
    "loss": "mean cross-entropy of the logits against the labels (nats per sample)",
    # sparsity (analysis.sparsity)
    "zero_frac": "fraction of activation entries exactly 0 at a site (unitless)",
    "near_zero_frac(abs,tau)": "fraction of entries with |a| <= tau",
    "near_zero_frac(rel,tau)": "fraction of entries with |a| <= tau * max_c |a[b,c,pos]| (same code vector)",
    "l0_per_position": "non-zero channels per code vector (b, h, w) or (b, t); mean, max, and mean / C",
    "hoyer": "(sqrt(n) - ||x||_1/||x||_2) / (sqrt(n) - 1) per non-empty code vector, n = C; 1 = one non-zero",
    "gini": f"1 - 2 sum_k (x_(k)/||x||_1)(n - k + 1/2)/n, |x| ascending; on 1 code vector in {GINI_EVERY}, chosen by"
            " the position and a hash of the sample index, so independent of batching",
    "empty_position_frac": "fraction of code vectors that are entirely zero (excluded from hoyer/gini)",
    "dead_units": "channels that are zero at every evaluated position",
    "dense_units": f"channels non-zero at more than {DENSE_THRESHOLD:.0%} of positions",
    "log10_firing_density": "histogram over live channels of log10(fraction of positions where it is non-zero)",
    "l1_per_position": "mean over positions of ||a[b,:,pos]||_1 (the l1 penalty's quantity; units of a)",
    "zero_frac_mean_sites": "zero_frac averaged over sites, each site weighted equally",
    "zero_frac_all_entries": "fraction of all activation entries (all sites) exactly 0",
    "zero_frac_per_stage": "zero_frac averaged over the sites of each stage (rN = output stride N)",
    # coherence (analysis.dictionary)
    "mu": "mutual coherence max_{i!=j} |<w_i, w_j>| of the l2-normalized non-zero atoms (filters / rows); not"
          " applicable (null) for depthwise layers, whose atoms share no input",
    "zero_atoms": "atoms with ||w_i|| <= 1e-4 max_j ||w_j|| (switched off): counted, left out of mu and the thresholds",
    "mu_shift": "shift-aware coherence: max over filter pairs and relative shifts (multiples of the stride) of the"
                " inner product of overlapped unit filters placed on their dilated grid, a filter with itself at shift 0"
                " excluded",
    "gram_mean / gram_p99": "mean / 99th percentile of the off-diagonal |Gram| entries",
    "babel": "Babel function mu_1(k) = max_i sum of the k largest |<w_i, w_j>|, j != i, for k = 1..16",
    "welch": "Welch bound sqrt((m - n)/(n(m - 1))) for m atoms in R^n (m > n)",
    "s_star": "uniqueness bound 1/2 (1 + 1/mu): sparser codes are the unique sparsest representation",
    "threshold": "effective soft-threshold -b/||w|| per unit, BatchNorm folded (positive: the unit needs"
                 " evidence above this to fire)",
    # margins (analysis.margins)
    "stripe_sparsity": "||G_i||_{0,inf}^s of the layer's OUTPUT code G_i = act(D_i^T G_{i-1} + b) (post-activation"
                       " map; BatchNorm folded): the most non-zeros among the entries whose atoms overlap one atom,"
                       " i.e. a (2r+1) neighbourhood of output positions, r = floor(((k-1)*dilation)/stride) per"
                       " dimension (2k-1 at stride 1), all output channels of the group; linear layers: non-zeros of"
                       " the output vector per position. max, mean, p95 over stripes (Papyan-Romano-Elad 2017)",
    "margin": "s* - max stripe sparsity; > 0 means the uniqueness theorem applies to this layer",
    "factor_outside": "max stripe sparsity / s* of a layer (> 1: outside the theorem's regime by that factor);"
                      " the headline gives the median over layers followed by an activation",
    # convergence (analysis.layerwise)
    "relative_change": "sqrt(sum ||F_{l+1} - F_l||^2 / sum ||F_l||^2) between consecutive equal-shape blocks",
    "cka": "minibatch linear CKA with the unbiased HSIC estimator (1 = same up to rotation and scale, ~0 ="
           " unrelated; the unbiased estimator can dip slightly below 0)",
    "ista.relative_error": "||G^k - y|| / ||y||: k steps of layer-scale non-negative ISTA with the layer's own"
                           " (BatchNorm-folded) filters vs the layer's output y; 0 at k = 1 by construction",
    "ista.support_jaccard": "|supp(G^k) & supp(y)| / |supp(G^k) | supp(y)|",
    "ista.rho_hat": "geometric rate fitted to the ISTA step sizes ||G^{k+1} - G^k|| / ||G^1||",
    "ista.theory_rate": "(2s - 1) mu with s = mean non-zeros per position of y; vacuous when >= 1",
}
