"""Dictionary coherence of trained weights (no data needed).

In the deep-sparse-coding view a layer's filters are dictionary atoms. Atoms are ℓ2-normalized:

- Linear ``W ∈ R^{out×in}``: the atoms are the rows ``w_i`` (one per output unit), in ``R^in``.
- Conv ``W ∈ R^{Cout×Cin/g×kh×kw}``: *local* atoms are the flattened filters (per group);
  the *shift-aware* coherence treats the layer as a global convolutional dictionary whose atoms are the filters
  at every output position, so it also compares filters at relative shifts (in input pixels) that are
  multiples of the stride, over the filters' true support: a dilated filter is first placed on its dilated
  grid, ``(k − 1)·d + 1`` pixels wide. A filter with itself at shift 0 is excluded. One
  ``conv2d(W, W, padding=(K − 1))`` of the (dilated) filters gives all of them. Padding plays no part: the
  global dictionary is the layer away from the borders. Grouped convs: atoms of different groups touch
  disjoint inputs (inner product 0), so the coherence is the max over groups. Depthwise convs have one atom per
  group, so their *local* coherence is not applicable (None, left out of every mean); their shift-aware one is.
- *Zero atoms* (``‖w_i‖ ≤ 1e-4 · max‖w‖``) have no direction: they are counted (``zero_atoms``) and left out of
  μ, the Gram statistics and the thresholds.

Papyan, Romano & Elad, "Convolutional neural networks analyzed via convolutional sparse coding", JMLR 2017;
Li, Feng & Zhou, "Convergence analysis for deep sparse coding via convolutional neural networks",
arXiv:2408.05540.

Definitions (all dimensionless):

``mu``            mutual coherence ``max_{i≠j} |⟨w_i, w_j⟩|`` ∈ [0, 1]
``gram_mean``     mean of the off-diagonal ``|⟨w_i, w_j⟩|``; ``gram_p99`` its 99th percentile
``babel``         Babel function ``μ₁(k) = max_i Σ_{j ∈ top-k(i)} |⟨w_i, w_j⟩|`` for k = 1…K (``μ₁(1) = μ``)
``welch``         Welch bound ``√((m − n)/(n(m − 1)))``, the smallest μ any m unit atoms in R^n can have
                  (None when m ≤ n, where orthonormal atoms reach 0); ``mu_over_welch = μ / welch``
``s_star``        uniqueness bound ``½(1 + 1/μ)``: codes with fewer non-zeros are the unique sparsest
                  (Donoho–Elad); for conv layers with the shift-aware μ it bounds the stripe sparsity ``‖Γ‖_{0,∞}``
``stability``     ``‖Γ − Γ̂‖² ≤ 4ε²/(1 − (2s − 1)μ)`` (see :func:`stability_bound`)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis.errors import AnalysisError

BABEL_K = 16


ZERO_ATOM_RTOL = 1e-4


def atom_norms(atoms: Tensor) -> Tensor:
    """ℓ2 norm of each atom (row of ``atoms``, flattened), float64."""
    return atoms.detach().reshape(atoms.shape[0], -1).double().norm(dim=1)


def zero_atoms(atoms: Tensor) -> Tensor:
    """Bool mask of the *zero atoms*: ``‖w_i‖ ≤ 1e-4 · max_j ‖w_j‖`` (every atom when all are 0).

    Such an atom is switched off: below the resolution of a 16-bit float next to the layer's largest atom, in
    practice a filter whose BatchNorm γ went to ≈ 0 in training (the offline ImageNet EfficientNet-Lite0 has
    dozens, with relative norms 1e-8 … 1e-5). Its direction says nothing about the dictionary and its threshold
    ``−b/‖w‖`` is a meaningless 1e5 … 1e299, so it enters no coherence statistic and no threshold; it is
    counted under ``zero_atoms`` instead.
    """
    norms = atom_norms(atoms)
    return norms <= ZERO_ATOM_RTOL * norms.max() if norms.numel() else norms.bool()


def normalize_atoms(atoms: Tensor) -> Tensor:
    """Rows of ``atoms`` (flattened) scaled to unit ℓ2 norm; zero atoms (:func:`zero_atoms`) become exactly zero."""
    a = atoms.detach().reshape(atoms.shape[0], -1).float()
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return a.masked_fill(zero_atoms(atoms).to(a.device)[:, None], 0.0)


def welch_bound(m: int, n: int) -> float | None:
    """Lowest possible coherence of m unit vectors in R^n (m > n), else None."""
    if m <= n or n < 1:
        return None
    return math.sqrt((m - n) / (n * (m - 1)))


def uniqueness_bound(mu: float | None) -> float | None:
    """``s* = ½(1 + 1/μ)``: the sparsity below which a representation is the unique sparsest one.

    None when μ is not applicable (None); inf for μ = 0 (pairwise orthogonal atoms: every code is unique)."""
    if mu is None:
        return None
    return math.inf if mu <= 0 else 0.5 * (1 + 1 / mu)


def stability_bound(eps: float, s: float, mu: float) -> float:
    """Bound on ``‖Γ − Γ̂‖²`` for noise ``‖e‖ ≤ ε`` and s-sparse codes: ``4ε²/(1 − (2s − 1)μ)``; inf outside."""
    denom = 1 - (2 * s - 1) * mu
    return math.inf if denom <= 0 else 4 * eps**2 / denom


def gram_stats(atoms: Tensor, babel_k: int = BABEL_K, groups: int = 1) -> dict:
    """Coherence statistics of the rows of ``atoms`` (``[m, n]``; normalized here), split into ``groups``.

    Atoms of different groups touch disjoint inputs (inner product 0), so μ and the Babel curve are maxima over
    groups and the |Gram| mean / p99 run over within-group pairs. Zero atoms are left out (counted in
    ``zero_atoms``). With fewer than two non-zero atoms in every group (a depthwise layer has one atom per group:
    no two atoms share an input) the statistics are not applicable: ``mu`` etc. are None and
    ``not_applicable`` says why.
    """
    a = normalize_atoms(atoms)
    m, n = a.shape
    if m % groups:
        raise AnalysisError(f"{m} atoms do not split into {groups} groups")
    live = ~zero_atoms(atoms).to(a.device)
    per = m // groups
    out: dict = {"atoms": m, "dim": n, "zero_atoms": int((~live).sum())}
    if groups > 1:
        out["groups"] = groups
    eye = torch.eye(per, dtype=torch.bool, device=a.device)
    live = live.view(groups, per)
    pairs = live[:, :, None] & live[:, None, :] & ~eye
    if not pairs.any():
        why = ("depthwise: one atom per group, no two atoms share an input" if per < 2
               else "fewer than two non-zero atoms")
        return {**out, "mu": None, "gram_mean": None, "gram_p99": None, "babel": [], "not_applicable": why}
    a = a.view(groups, per, n)
    g = (a @ a.transpose(1, 2)).abs() * pairs  # [groups, per, per], 0 outside the counted pairs
    off = g[pairs]
    k = min(babel_k, per - 1)
    top = g.topk(k, dim=2).values.cumsum(dim=2)  # [groups, per, k]
    q = max(1, int(math.ceil(0.99 * off.numel())))
    return {**out, "mu": float(off.max()), "gram_mean": float(off.mean()), "gram_p99": float(off.kthvalue(q).values),
            "babel": top.amax(dim=(0, 1)).tolist()}


def dilate_filters(weight: Tensor, dilation: tuple[int, ...]) -> Tensor:
    """Filters ``[Cout, Cin/g, *k]`` placed on their dilated grid: ``[Cout, Cin/g, *((k − 1)·d + 1)]`` with zeros
    between the taps (the true support of a dilated filter in input pixels)."""
    dilation = tuple(dilation)
    if all(d == 1 for d in dilation):
        return weight
    k = weight.shape[2:]
    out = weight.new_zeros(*weight.shape[:2], *((kk - 1) * d + 1 for kk, d in zip(k, dilation, strict=True)))
    grid: tuple[Any, ...] = (..., *(slice(None, None, d) for d in dilation))
    out[grid] = weight
    return out


def conv_shift_coherence(weight: Tensor, stride: tuple[int, ...] = (1, 1), groups: int = 1,
                         dilation: tuple[int, ...] = (1, 1)) -> float | None:
    """Shift-aware mutual coherence of a 1-D or 2-D convolution's global dictionary.

    The atoms are the unit-norm filters at every output position. Two atoms at output positions ``j`` and ``j'``
    of the same group sit ``(j' − j)·stride`` input pixels apart, so μ is the max over filter pairs and relative
    shifts that are multiples of ``stride`` of the inner product of the two filters, each placed on its dilated
    grid (:func:`dilate_filters`), overlapped at that shift; a filter with itself at shift 0 is excluded.
    Zero atoms contribute nothing. None when no such pair exists (a 1×1 depthwise layer).
    """
    w = weight.detach().float()  # float32: values in [0, 1], and float64 convolutions are 5x slower on CPU
    if w.dim() == 3:  # conv1d -> 2-D with a unit height
        w = w.unsqueeze(2)
        stride = (1, *tuple(stride)[-1:])
        dilation = (1, *tuple(dilation)[-1:])
    if w.dim() != 4:
        raise AnalysisError(f"expected a 1-D or 2-D conv weight, got shape {tuple(weight.shape)}")
    cout = w.shape[0]
    if cout % groups:
        raise AnalysisError(f"{cout} filters do not split into {groups} groups")
    live = (~zero_atoms(w)).view(groups, -1).sum(1)  # non-zero atoms per group
    w = dilate_filters(normalize_atoms(w).view_as(w), dilation)
    _, cin_g, kh, kw = w.shape
    out_g = cout // groups
    # batch b = filter index within its group, channels = (group, in-channel): corr[b, g*out_g + a, u, v]
    x = w.view(groups, out_g, cin_g, kh, kw).transpose(0, 1).reshape(out_g, groups * cin_g, kh, kw)
    corr = F.conv2d(x, w, padding=(kh - 1, kw - 1), groups=groups).abs()
    corr = corr.view(out_g, groups, out_g, 2 * kh - 1, 2 * kw - 1)
    sh, sw = tuple(stride)
    keep_u = (torch.arange(2 * kh - 1) - (kh - 1)) % sh == 0
    keep_v = (torch.arange(2 * kw - 1) - (kw - 1)) % sw == 0
    corr = corr[..., keep_u, :][..., keep_v]
    shifts = int(keep_u.sum()) * int(keep_v.sum())
    if int((live * live * shifts - live).sum()) == 0:  # pairs (i, j, shift) of non-zero atoms, minus (i, i, 0)
        return None  # e.g. a 1×1 depthwise layer, or all atoms zero
    cu, cv = int(keep_u[: kh - 1].sum()), int(keep_v[: kw - 1].sum())  # index of shift 0 after filtering
    idx = torch.arange(out_g)
    corr[idx, :, idx, cu, cv] = 0.0  # a filter with itself at shift 0
    return float(corr.max())


@dataclass
class LayerCoherence:
    """Coherence of one layer's atoms (see module docstring for every field).

    ``local`` holds :func:`gram_stats` (its ``mu`` is None, with ``not_applicable``, for depthwise layers);
    ``s_star_local`` / ``s_star_shift`` are None where the matching μ is.
    """

    name: str
    kind: str  # "linear" | "conv"
    shape: list[int]
    groups: int
    stride: list[int]
    local: dict
    dilation: list[int] = field(default_factory=lambda: [1])
    mu_shift: float | None = None
    welch: float | None = None
    mu_over_welch: float | None = None
    s_star_local: float | None = None
    s_star_shift: float | None = None
    bn_folded: bool = False
    threshold: dict | None = None  # effective thresholds −b/‖w‖ of the non-zero atoms (bias after folding)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def fold_bn(layer: nn.Module, bn: nn.Module | None = None) -> tuple[Tensor, Tensor]:
    """(weight, bias) of a conv/linear layer, with the eval-mode BatchNorm that follows it folded in (float64):
    ``W' = W·γ/σ``, ``b' = β + (b − μ)·γ/σ`` with ``σ = √(running_var + ε)`` (γ = 1, β = 0 without affine)."""
    w = _tensor(layer, "weight").detach().double()
    bias = getattr(layer, "bias", None)
    b = bias.detach().double() if bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    if bn is None:
        return w, b
    gamma_p, beta_p = getattr(bn, "weight", None), getattr(bn, "bias", None)  # None without affine
    gamma = gamma_p.detach().double() if gamma_p is not None else torch.ones_like(b)
    beta = beta_p.detach().double() if beta_p is not None else torch.zeros_like(b)
    scale = gamma / (_tensor(bn, "running_var").detach().double() + float(getattr(bn, "eps", 0.0))).sqrt()
    mean = _tensor(bn, "running_mean").detach().double()
    return w * scale.view(-1, *([1] * (w.dim() - 1))), beta + (b - mean) * scale


def _tensor(module: nn.Module, name: str) -> Tensor:
    """A tensor attribute (parameter or buffer) of ``module``."""
    value = getattr(module, name)
    if not isinstance(value, Tensor):
        raise TypeError(f"{type(module).__name__}.{name} is not a tensor")
    return value


def _threshold_stats(weight: Tensor, bias: Tensor) -> dict:
    """Effective soft-threshold per unit: ``−b/‖w‖`` (input units of a normalized atom); zero atoms have none
    (they are counted in ``zero_atoms`` and left out of every statistic)."""
    live = ~zero_atoms(weight)
    t = -bias.double()[live] / atom_norms(weight)[live]
    out: dict = {"zero_atoms": int((~live).sum())}
    if not t.numel():
        return {**out, "mean": None, "min": None, "max": None, "quantiles": None, "positive_frac": None, "values": []}
    q = torch.quantile(t, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=t.dtype, device=t.device))
    return {**out, "mean": float(t.mean()), "min": float(t.min()), "max": float(t.max()),
            "quantiles": {"p5": float(q[0]), "p25": float(q[1]), "p50": float(q[2]), "p75": float(q[3]),
                          "p95": float(q[4])},
            "positive_frac": float((t > 0).double().mean()), "values": t.tolist()}


def _following_bn(model: nn.Module) -> dict[str, nn.Module]:
    """Map a conv/linear name to the BatchNorm registered right after it (module order) with matching width."""
    mods = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())
            or isinstance(m, nn.modules.batchnorm._BatchNorm)]
    out: dict[str, nn.Module] = {}
    for (n, m), (_, nxt) in zip(mods, mods[1:], strict=False):
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) and isinstance(nxt, nn.modules.batchnorm._BatchNorm):
            width = m.out_channels if hasattr(m, "out_channels") else m.out_features
            if nxt.num_features == width and nxt.running_var is not None:
                out[n] = nxt
    return out


def layer_coherence(name: str, module: nn.Module, bn: nn.Module | None = None, babel_k: int = BABEL_K) -> LayerCoherence:
    """Coherence of one ``nn.Linear`` or ``nn.Conv1d/2d`` (optionally with the BatchNorm that follows it folded in)."""
    w, b = fold_bn(module, bn)
    has_bias = bn is not None or getattr(module, "bias", None) is not None
    if isinstance(module, nn.Linear):
        stats = gram_stats(w, babel_k)
        live = w.shape[0] - stats["zero_atoms"]
        res = LayerCoherence(name, "linear", list(w.shape), 1, [1], stats)
    elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
        groups = module.groups
        stats = gram_stats(w, babel_k, groups)
        live = w.shape[0] // groups  # the dictionary's atoms per group
        res = LayerCoherence(name, "conv", list(w.shape), groups, list(module.stride), stats,
                             dilation=list(module.dilation),
                             mu_shift=conv_shift_coherence(w, tuple(module.stride), groups, tuple(module.dilation)))
        res.s_star_shift = uniqueness_bound(res.mu_shift)
    else:
        raise AnalysisError(f"{name}: coherence is defined for Linear and Conv1d/2d layers, not {type(module).__name__}")
    mu = stats["mu"]
    res.welch = welch_bound(live, w[0].numel())
    res.mu_over_welch = mu / res.welch if res.welch and mu is not None else None
    res.s_star_local = uniqueness_bound(mu)
    res.bn_folded = bn is not None
    if has_bias:
        res.threshold = _threshold_stats(w, b)
    return res


_QKV = {"query": "attention_q", "key": "attention_k", "value": "attention_v", "q_proj": "attention_q",
        "k_proj": "attention_k", "v_proj": "attention_v", "qkv": "attention_qkv"}


def linear_roles(model: nn.Module) -> dict[str, str]:
    """Role of each Linear layer: ``attention_q/k/v/qkv`` (by name), ``ffn_in`` (its output feeds an activation),
    ``ffn_out`` (it reads an activation's output), or ``linear`` — from the order modules are registered in."""
    from analysis.sites import is_activation

    leaves = [(n, m) for n, m in model.named_modules()
              if n and not any(True for _ in m.children()) and not isinstance(m, (nn.Dropout, nn.Identity))]
    roles = {}
    for i, (n, m) in enumerate(leaves):
        if not isinstance(m, nn.Linear):
            continue
        last = n.rsplit(".", 1)[-1]
        if last in _QKV:
            roles[n] = _QKV[last]
        elif i + 1 < len(leaves) and is_activation(leaves[i + 1][1]):
            roles[n] = "ffn_in"
        elif i > 0 and is_activation(leaves[i - 1][1]):
            roles[n] = "ffn_out"
        else:
            roles[n] = "linear"
    return roles


def coherence(model: nn.Module, include_linear: bool = True, fold_bn: bool = True, babel_k: int = BABEL_K,
              progress: bool = False) -> dict[str, dict]:
    """Coherence of every conv (and linear) layer of ``model``, as JSON-ready dicts keyed by module path.

    BatchNorm layers registered right after a conv/linear with the same width are folded into it (eval-mode
    statistics), which changes thresholds but not coherence (folding rescales whole atoms). Linear layers carry
    a ``role`` (see :func:`linear_roles`); for an FFN output projection ``W ∈ R^{d×4d}`` the atoms that write
    each hidden unit back into the residual stream are its *columns*, reported under ``columns``.
    """
    from tqdm.auto import tqdm

    bns = _following_bn(model) if fold_bn else {}
    roles = linear_roles(model) if include_linear else {}
    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, (nn.Conv1d, nn.Conv2d)) or (include_linear and isinstance(m, nn.Linear))]
    out = {}
    for n, m in tqdm(layers, desc="coherence", disable=not progress, leave=False):
        res = layer_coherence(n, m, bns.get(n), babel_k)
        if n in roles:
            res.extra["role"] = roles[n]
            if roles[n] == "ffn_out":
                res.extra["columns"] = gram_stats(m.weight.detach().T, babel_k)
        out[n] = res.to_dict()
    return out
