"""Dictionary coherence of trained weights (no data needed).

In the deep-sparse-coding view a layer's filters are dictionary atoms. Atoms are ℓ2-normalized:

- Linear ``W ∈ R^{out×in}``: the atoms are the rows ``w_i`` (one per output unit), in ``R^in``.
- Conv ``W ∈ R^{Cout×Cin/g×kh×kw}``: *local* atoms are the flattened filters (per group);
  the *shift-aware* coherence treats the layer as a global convolutional dictionary whose atoms are the filters
  at every position, so it also compares filters at relative shifts ``|u| < kh, |v| < kw`` that are multiples of
  the stride (a filter with itself at shift 0 excluded). One ``conv2d(W, W, padding=(kh-1, kw-1))`` gives all
  of them. Grouped / depthwise convs: atoms of different groups touch disjoint inputs (inner product 0), so the
  coherence is the max over groups.

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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis.errors import AnalysisError

BABEL_K = 16


def normalize_atoms(atoms: Tensor) -> Tensor:
    """Rows of ``atoms`` (flattened) scaled to unit ℓ2 norm; all-zero atoms stay zero."""
    a = atoms.detach().reshape(atoms.shape[0], -1).float()
    return a / a.norm(dim=1, keepdim=True).clamp_min(1e-30)


def welch_bound(m: int, n: int) -> float | None:
    """Lowest possible coherence of m unit vectors in R^n (m > n), else None."""
    if m <= n or n < 1:
        return None
    return math.sqrt((m - n) / (n * (m - 1)))


def uniqueness_bound(mu: float) -> float:
    """``s* = ½(1 + 1/μ)``: the sparsity below which a representation is the unique sparsest one."""
    return math.inf if mu <= 0 else 0.5 * (1 + 1 / mu)


def stability_bound(eps: float, s: float, mu: float) -> float:
    """Bound on ``‖Γ − Γ̂‖²`` for noise ``‖e‖ ≤ ε`` and s-sparse codes: ``4ε²/(1 − (2s − 1)μ)``; inf outside."""
    denom = 1 - (2 * s - 1) * mu
    return math.inf if denom <= 0 else 4 * eps**2 / denom


def gram_stats(atoms: Tensor, babel_k: int = BABEL_K) -> dict:
    """Coherence statistics of the rows of ``atoms`` ([m, n]; normalized here)."""
    a = normalize_atoms(atoms)
    m, n = a.shape
    if m < 2:
        return {"atoms": m, "dim": n, "mu": 0.0, "gram_mean": 0.0, "gram_p99": 0.0, "babel": [0.0] * min(babel_k, 1)}
    g = (a @ a.T).abs()
    g.fill_diagonal_(0.0)
    off = g[~torch.eye(m, dtype=torch.bool)]
    k = min(babel_k, m - 1)
    top = g.topk(k, dim=1).values.cumsum(dim=1)  # [m, k]
    q = max(1, int(math.ceil(0.99 * off.numel())))
    return {
        "atoms": m,
        "dim": n,
        "mu": float(off.max()),
        "gram_mean": float(off.mean()),
        "gram_p99": float(off.kthvalue(q).values),
        "babel": top.max(dim=0).values.tolist(),
    }


def grouped_gram_stats(atoms: Tensor, groups: int, babel_k: int = BABEL_K) -> dict:
    """:func:`gram_stats` of a grouped layer: atoms of different groups never overlap (inner product 0), so
    μ and the Babel curve are maxima over groups and the |Gram| mean / p99 run over within-group pairs."""
    a = normalize_atoms(atoms)
    m, n = a.shape
    per = m // groups
    if per < 2:  # depthwise: one atom per group, no pair shares an input
        return {"atoms": m, "dim": n, "groups": groups, "mu": 0.0, "gram_mean": 0.0, "gram_p99": 0.0,
                "babel": [0.0] * min(babel_k, 1)}
    a = a.view(groups, per, n)
    g = (a @ a.transpose(1, 2)).abs()  # [groups, per, per]
    g.diagonal(dim1=1, dim2=2).zero_()
    off = g[:, ~torch.eye(per, dtype=torch.bool)].flatten()
    k = min(babel_k, per - 1)
    top = g.topk(k, dim=2).values.cumsum(dim=2)  # [groups, per, k]
    q = max(1, int(math.ceil(0.99 * off.numel())))
    return {"atoms": m, "dim": n, "groups": groups, "mu": float(off.max()), "gram_mean": float(off.mean()),
            "gram_p99": float(off.kthvalue(q).values), "babel": top.amax(dim=(0, 1)).tolist()}


def conv_shift_coherence(weight: Tensor, stride: tuple[int, ...] = (1, 1), groups: int = 1) -> float:
    """Shift-aware mutual coherence of a 1-D or 2-D convolution's global dictionary.

    Max over filter pairs (same group) and relative shifts that are multiples of ``stride`` of the inner
    product of the two unit-norm filters overlapped at that shift; a filter with itself at shift 0 is excluded.
    """
    w = weight.detach().float()  # float32: values in [0, 1], and float64 convolutions are 5x slower on CPU
    if w.dim() == 3:  # conv1d -> 2-D with a unit height
        w = w.unsqueeze(2)
        stride = (1, *tuple(stride)[-1:])
    if w.dim() != 4:
        raise AnalysisError(f"expected a 1-D or 2-D conv weight, got shape {tuple(weight.shape)}")
    cout, cin_g, kh, kw = w.shape
    if cout % groups:
        raise AnalysisError(f"{cout} filters do not split into {groups} groups")
    w = w / w.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, 1, 1, 1)
    out_g = cout // groups
    # batch b = filter index within its group, channels = (group, in-channel): corr[b, g*out_g + a, u, v]
    x = w.view(groups, out_g, cin_g, kh, kw).transpose(0, 1).reshape(out_g, groups * cin_g, kh, kw)
    corr = F.conv2d(x, w, padding=(kh - 1, kw - 1), groups=groups).abs()
    corr = corr.view(out_g, groups, out_g, 2 * kh - 1, 2 * kw - 1)
    sh, sw = tuple(stride) if len(tuple(stride)) == 2 else (1, tuple(stride)[0])
    keep_u = (torch.arange(2 * kh - 1) - (kh - 1)) % sh == 0
    keep_v = (torch.arange(2 * kw - 1) - (kw - 1)) % sw == 0
    corr = corr[..., keep_u, :][..., keep_v]
    cu, cv = int(keep_u[: kh - 1].sum()), int(keep_v[: kw - 1].sum())  # index of shift 0 after filtering
    idx = torch.arange(out_g)
    corr[idx, :, idx, cu, cv] = 0.0  # a filter with itself at shift 0
    return float(corr.max())


@dataclass
class LayerCoherence:
    """Coherence of one layer's atoms (see module docstring for every field)."""

    name: str
    kind: str  # "linear" | "conv"
    shape: list[int]
    groups: int
    stride: list[int]
    local: dict
    mu_shift: float | None = None
    welch: float | None = None
    mu_over_welch: float | None = None
    s_star_local: float = 0.0
    s_star_shift: float | None = None
    bn_folded: bool = False
    threshold: dict | None = None  # effective thresholds −b/‖w‖ (when the layer has a bias after folding)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def fold_bn(layer: nn.Module, bn: nn.Module | None = None) -> tuple[Tensor, Tensor]:
    """(weight, bias) of a conv/linear layer, with the eval-mode BatchNorm that follows it folded in (float64):
    ``W' = W·γ/σ``, ``b' = β + (b − μ)·γ/σ`` with ``σ = √(running_var + ε)`` (γ = 1, β = 0 without affine)."""
    w = layer.weight.detach().double()
    b = layer.bias.detach().double() if getattr(layer, "bias", None) is not None else torch.zeros(w.shape[0],
                                                                                                  dtype=w.dtype, device=w.device)
    if bn is None:
        return w, b
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(b)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(b)
    scale = gamma / (bn.running_var.detach().double() + bn.eps).sqrt()
    return w * scale.view(-1, *([1] * (w.dim() - 1))), beta + (b - bn.running_mean.detach().double()) * scale


def _threshold_stats(weight: Tensor, bias: Tensor) -> dict:
    """Effective soft-threshold per unit: ``−b/‖w‖`` (input units of a normalized atom)."""
    t = -bias.double() / weight.double().flatten(1).norm(dim=1).clamp_min(1e-300)
    q = torch.quantile(t, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=t.dtype))
    return {"mean": float(t.mean()), "min": float(t.min()), "max": float(t.max()),
            "quantiles": {"p5": float(q[0]), "p25": float(q[1]), "p50": float(q[2]), "p75": float(q[3]),
                          "p95": float(q[4])},
            "positive_frac": float((t > 0).double().mean()), "values": t.tolist()}


def _following_bn(model: nn.Module) -> dict[str, nn.Module]:
    """Map a conv/linear name to the BatchNorm registered right after it (module order) with matching width."""
    mods = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())
            or isinstance(m, nn.modules.batchnorm._BatchNorm)]
    out = {}
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
        welch = welch_bound(*w.shape)
        mu = stats["mu"]
        res = LayerCoherence(name, "linear", list(w.shape), 1, [1], stats, welch=welch,
                             mu_over_welch=mu / welch if welch else None, s_star_local=uniqueness_bound(mu),
                             bn_folded=bn is not None)
    elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
        groups = module.groups
        per = w.shape[0] // groups
        stats = gram_stats(w, babel_k) if groups == 1 else grouped_gram_stats(w, groups, babel_k)
        mu_shift = conv_shift_coherence(w, tuple(module.stride), groups)
        welch = welch_bound(per, w[0].numel())
        res = LayerCoherence(name, "conv", list(w.shape), groups, list(module.stride), stats, mu_shift=mu_shift,
                             welch=welch, mu_over_welch=stats["mu"] / welch if welch else None,
                             s_star_local=uniqueness_bound(stats["mu"]), s_star_shift=uniqueness_bound(mu_shift),
                             bn_folded=bn is not None)
    else:
        raise AnalysisError(f"{name}: coherence is defined for Linear and Conv1d/2d layers, not {type(module).__name__}")
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
