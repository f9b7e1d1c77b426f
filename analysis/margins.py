"""Theory margins: is each layer's output code sparse enough for the uniqueness theorem?

In the multi-layer convolutional sparse coding model (Papyan, Romano & Elad, "Convolutional neural networks
analyzed via convolutional sparse coding", JMLR 2017; the analysis of Li, Feng & Zhou, arXiv:2408.05540, builds
on it) layer *i*'s filters are the atoms of the dictionary ``D_i``, and the code they must represent uniquely is
the layer's **output** ``Γ_i = φ(D_iᵀ Γ_{i−1} + b_i)``. The code is unique (and stably recovered) when its stripe
sparsity is below the uniqueness bound of its dictionary::

    ‖Γ_i‖_{0,∞}^s  <  s* = ½ (1 + 1/μ(D_i))

**The code measured.** The output of the activation that follows the layer (through its BatchNorm, folded;
see :func:`analysis.sites.pursuit_layers`), i.e. the post-activation map of the block, also where a residual add
comes before the activation; only the activation call that follows the layer in the same forward counts. A
layer with no activation after it (a linear bottleneck's projection, a classifier) has its own output as its
code (after its BatchNorm when it has one), reported with ``code: "linear"``: nothing thresholds it, so it is
dense.

**The stripe.** The stripe of the atom at output position ``p`` is every entry of ``Γ_i`` whose atom overlaps
that atom: the output positions ``q`` with ``|q − p|·stride < K`` in each spatial dimension, where
``K = (k − 1)·dilation + 1`` is the kernel's true extent in input pixels, so a neighbourhood of ``2r + 1`` output
positions with ``r = ⌊(K − 1)/stride⌋`` (``2k − 1`` for an undilated stride-1 layer; fewer in the output grid of
a strided layer), times all output channels of the atom's group. ``‖Γ‖_{0,∞}^s`` is the most non-zeros in any
stripe (over positions, groups and samples); neighbourhoods are clipped at the borders of the map. A linear
layer is a dense dictionary applied at each position (token): its stripe is the whole output vector at one
position (padding tokens excluded).

Reported per layer: ``stripe_max`` (= ``‖Γ‖_{0,∞}^s``, non-zeros), ``stripe_mean`` and ``stripe_p95`` over all
stripes (exact: a streaming histogram of integer counts), ``stripe_shape`` (output positions per dimension),
``window_size`` (the most entries a stripe can hold), ``code`` and ``code_site``. The *margin* is
``s* − stripe_max``; positive means the theorem applies. Real networks are far outside; the report says by
what factor (``stripe_max / s*``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis.collect import HookSet
from analysis.sites import PursuitLayer, pursuit_layers

ConvLayer = nn.modules.conv._ConvNd  # Conv1d/2d/3d and their subclasses (timm's Conv2dSame, …)


def stripe_radius(layer: ConvLayer) -> tuple[int, ...]:
    """``r = ⌊(K − 1)/stride⌋`` per spatial dimension, ``K = (k − 1)·dilation + 1`` (see module docstring)."""
    return tuple(((k - 1) * d) // s for k, d, s in zip(layer.kernel_size, layer.dilation, layer.stride, strict=True))


def stripe_counts(code: Tensor, layer: ConvLayer | nn.Linear, mask: Tensor | None = None) -> tuple[Tensor, int]:
    """Non-zeros of every stripe of ``code`` (the output code of ``layer``) as a flat float tensor, and the most
    entries a stripe can hold.

    Conv codes are ``[B, C, L]`` or ``[B, C, H, W]``: one stripe per (sample, group, output position). Linear codes
    ``[..., C]``: one per position; ``mask`` (``[B, T]``, True = real token) drops padding positions.
    """
    nz = (code != 0).to(torch.float32)
    if isinstance(layer, nn.Linear):
        counts = nz.sum(-1)
        if mask is not None and code.dim() == 3 and tuple(mask.shape) == tuple(code.shape[:2]):
            counts = counts[mask.bool()]
        return counts.reshape(-1), int(code.shape[-1])
    radius = stripe_radius(layer)
    if nz.dim() == 3:  # Conv1d: a unit height
        nz, radius = nz.unsqueeze(2), (0, *radius)
    g, c = layer.groups, nz.shape[1]
    window = tuple(2 * r + 1 for r in radius)
    ones = torch.ones(g, c // g, *window, device=nz.device)
    counts = F.conv2d(nz, ones, padding=radius, groups=g)
    cap = (c // g) * math.prod(min(w, s) for w, s in zip(window, nz.shape[2:], strict=True))
    return counts.round().reshape(-1), int(cap)


class StripeCollector(HookSet):
    """Hooks accumulating the stripe sparsity of every conv/linear layer's output code (streaming, exact)."""

    def __init__(self, model: nn.Module, layers: Iterable[PursuitLayer] | None = None):
        self.model = model
        self.layers = list(layers) if layers is not None else pursuit_layers(model)
        self.state: dict[str, dict] = {}
        self.position_mask: Tensor | None = None  # set per batch by run_pass
        self._pending: set[str] = set()
        self._handles: list = []

    @staticmethod
    def code_module(p: PursuitLayer) -> tuple[str, nn.Module, str]:
        """(name, module, kind) of the module whose output is ``p``'s code: its activation, else its BN, else itself."""
        if p.act is not None:
            return p.act_name or p.name, p.act, "activation"
        if p.bn is not None:
            return p.name, p.bn, "linear"
        return p.name, p.layer, "linear"

    def _ran(self, name: str):
        def hook(mod, args, out):
            self._pending.add(name)

        return hook

    def _code(self, p: PursuitLayer, site: str, kind: str):
        width = p.layer.out_features if isinstance(p.layer, nn.Linear) else p.layer.out_channels
        channel_dim = -1 if isinstance(p.layer, nn.Linear) else 1

        def hook(mod, args, out):
            if p.name not in self._pending or not isinstance(out, Tensor) or out.dim() < 2:
                return
            self._pending.discard(p.name)
            if out.shape[channel_dim] != width:  # not this layer's code after all
                return
            counts, cap = stripe_counts(out.detach(), p.layer, self.position_mask)
            if not counts.numel():
                return
            hist = torch.bincount(counts.to(torch.int64), minlength=cap + 1)[: cap + 1]
            st = self.state.get(p.name)
            if st is None:
                self.state[p.name] = {"max": counts.max(), "sum": counts.sum(dtype=torch.float64), "n": counts.numel(),
                                      "hist": hist, "cap": cap, "code": kind, "code_site": site,
                                      "stripe_shape": [2 * r + 1 for r in stripe_radius(p.layer)]
                                      if not isinstance(p.layer, nn.Linear) else [1]}
                return
            st["max"] = torch.maximum(st["max"], counts.max())
            st["sum"] += counts.sum(dtype=torch.float64)
            st["n"] += counts.numel()
            if cap > st["cap"]:  # a larger input map: widen the histogram
                st["hist"] = F.pad(st["hist"], (0, cap - st["cap"]))
                st["cap"] = cap
            st["hist"][: hist.numel()] += hist

        return hook

    def _start(self, module, args):
        self._pending.clear()

    def _register(self) -> list:
        handles = [self.model.register_forward_pre_hook(self._start)]
        for p in self.layers:
            site, mod, kind = self.code_module(p)
            # the layer's own hook runs first when it is its own code module (registration order)
            handles.append(p.layer.register_forward_hook(self._ran(p.name)))
            handles.append(mod.register_forward_hook(self._code(p, site, kind)))
        return handles

    def results(self) -> dict[str, dict]:
        out = {}
        for p in self.layers:
            st = self.state.get(p.name)
            if st is None:
                continue
            hist = st["hist"].cpu().double()
            cdf = hist.cumsum(0) / hist.sum()
            p95 = int(torch.searchsorted(cdf, torch.tensor(0.95, dtype=cdf.dtype)))
            out[p.name] = {"code": st["code"], "code_site": st["code_site"], "stripe_max": int(st["max"]),
                           "stripe_mean": float(st["sum"]) / st["n"], "stripe_p95": p95, "stripes": st["n"],
                           "stripe_shape": st["stripe_shape"], "window_size": st["cap"]}
        return out


def theory_margins(stripes: dict[str, dict], coherences: dict[str, dict]) -> dict[str, dict]:
    """Join measured stripe sparsity with each layer's uniqueness bound and state the result plainly.

    Uses the shift-aware ``s*`` for conv layers (the global convolutional dictionary) and the local one for
    linear layers. ``factor`` = measured max stripe sparsity / s* (how far outside the regime; ≤ 1 inside).
    Layers whose bound is not applicable (no pair of atoms shares an input) or infinite (μ = 0) are reported with
    the reason and no margin.
    """
    out = {}
    for name, st in stripes.items():
        coh = coherences.get(name)
        if coh is None:
            continue
        s_star = coh["s_star_shift"] if coh.get("s_star_shift") is not None else coh.get("s_star_local")
        measured = st["stripe_max"]
        if s_star is None or not math.isfinite(s_star):
            why = "no two atoms overlap" if s_star is None else "μ = 0: the atoms are orthogonal, every code is unique"
            out[name] = {**st, "s_star": None, "margin": None, "factor": None, "inside": None,
                         "verdict": f"not applicable ({why})"}
            continue
        margin = s_star - measured
        factor = measured / s_star
        inside = margin > 0
        verdict = (f"inside the theorem's regime (margin {margin:.2f} non-zeros)" if inside
                   else f"outside the theorem's regime by a factor of {factor:.1f}")
        if st.get("code") == "linear":
            verdict += "; no activation follows this layer, so its code is not thresholded"
        out[name] = {**st, "s_star": s_star, "margin": margin, "factor": factor, "inside": inside, "verdict": verdict}
    return out
