"""Layerwise convergence: do successive layers refine a representation the way a pursuit refines a code?

Three measurements (definitions in :mod:`analysis.definitions`):

``relative change``
    ``‖F_{l+1} − F_l‖ / ‖F_l‖`` between consecutive *blocks* with outputs of equal shape (residual stages),
    aggregated over the data as ``sqrt(Σ‖F_{l+1} − F_l‖² / Σ‖F_l‖²)``. Blocks are the innermost numbered
    sub-modules that hold parameters (``layer1.0``, ``blocks.2.1``, ``encoder.layer.3``, …).
``linear CKA``
    between every pair of sites: ``CKA = mean_b HSIC₁(K_b, L_b) / sqrt(mean_b HSIC₁(K_b, K_b) · mean_b HSIC₁(L_b, L_b))``
    with ``K_b = X_b X_bᵀ`` the linear Gram matrix of minibatch b (features flattened per sample) and HSIC₁ the
    unbiased estimator of Song et al. (2012) (minibatch CKA of Nguyen et al., 2021). 1 for representations
    equal up to an orthogonal transform and isotropic scaling, about 0 for unrelated ones. The unbiased HSIC
    can be negative, so a value can fall slightly below 0 (reported as is, clipped only to [−1, 1]); the biased
    estimator's [0, 1] range does not hold. Minibatches need ≥ 4 samples.
``ISTA agreement``
    for a conv/linear layer followed (through an optional BatchNorm, folded) by an activation φ, with A the
    layer's linear map (D = Aᵀ the dictionary), b its bias and η = 1/‖A‖², the layer-scale non-negative ISTA
    ``Γ¹ = φ(A x + b)``, ``Γ^{k+1} = φ(Γ^k − η A Aᵀ Γ^k + A x + b)`` (for ReLU exactly ISTA on
    ``min_{Γ≥0} ½‖x − DΓ‖² − ⟨b, Γ⟩`` rescaled by 1/η, so step 1 is the layer itself). Reported for k = 1…K:
    relative error ``‖Γ^k − y‖/‖y‖`` and support Jaccard against the layer's actual output y, the step sizes
    ``d_k = ‖Γ^{k+1} − Γ^k‖/‖Γ^1‖`` and the geometric rate ρ̂ fitted to them (log-linear least squares), next to
    the theory's ``(2s − 1)μ`` with s the mean non-zeros per position of y and μ the layer's shift-aware
    coherence ("vacuous" when ≥ 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from analysis.collect import SiteCollector, call_model, split_batch, to_device
from analysis.dictionary import fold_bn
from analysis.errors import AnalysisError
from analysis.sites import Site, find_blocks, find_sites, pursuit_layers

# ------------------------------------------------------------------------------------------------ CKA


def hsic_unbiased_matrix(grams: Tensor) -> Tensor:
    """Unbiased HSIC₁ between every pair of ``[S, n, n]`` Gram matrices (n ≥ 4): ``[S, S]``."""
    s, n, _ = grams.shape
    if n < 4:
        raise AnalysisError(f"the unbiased HSIC needs at least 4 samples per batch, got {n}")
    k = grams.double().clone()
    k.diagonal(dim1=1, dim2=2).zero_()
    flat = k.reshape(s, -1)
    sums = flat.sum(1)
    rows = k.sum(2)  # K̃ 1
    trace = flat @ flat.T  # tr(K̃ L̃) for symmetric matrices
    return (trace + torch.outer(sums, sums) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * rows @ rows.T) / (n * (n - 3))


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of two representations ``[n, d1]``, ``[n, d2]`` of the same n samples (unbiased HSIC)."""
    feats = [x.reshape(x.shape[0], -1).double(), y.reshape(y.shape[0], -1).double()]
    h = hsic_unbiased_matrix(torch.stack([f @ f.T for f in feats]))
    return float(h[0, 1] / (h[0, 0] * h[1, 1]).clamp_min(1e-300).sqrt())


class CKACollector(SiteCollector):
    """Accumulates minibatch HSIC between all pairs of sites (batches of fewer than 4 samples are skipped)."""

    def __init__(self, model: nn.Module, sites: Iterable[Site]):
        super().__init__(model, sites)
        self.grams: dict[str, Tensor] = {}
        self.hsic: Tensor | None = None
        self.keys: list[str] = []
        self.batches = 0

    def observe(self, key: str, site: Site, out: Tensor) -> None:
        mask = self.mask_for(out)
        if mask is not None:
            out = out * mask.unsqueeze(-1)
        f = out.reshape(out.shape[0], -1).float()
        self.grams[key] = f @ f.T

    def _start_batch(self, module, args, kwargs):
        self._flush()
        super()._start_batch(module, args, kwargs)

    def _flush(self) -> None:
        if not self.grams:
            return
        if not self.keys:
            self.keys = list(self.grams)
        grams, self.grams = self.grams, {}
        if len(grams) != len(self.keys) or next(iter(grams.values())).shape[0] < 4:
            return
        h = hsic_unbiased_matrix(torch.stack([grams[k] for k in self.keys]))
        self.hsic = h if self.hsic is None else self.hsic + h
        self.batches += 1

    def detach(self) -> None:
        self._flush()
        super().detach()

    def result(self) -> dict:
        if self.hsic is None:
            return {"sites": self.keys, "matrix": [], "batches": 0}
        d = self.hsic.diagonal().clamp_min(1e-300)
        cka = (self.hsic / (d[:, None] * d[None, :]).sqrt()).clamp(-1, 1)
        return {"sites": self.keys, "matrix": cka.tolist(), "batches": self.batches}


@torch.no_grad()
def cka_between(model_a: nn.Module, model_b: nn.Module, loader: Iterable, sites: Iterable[str],
                max_samples: int | None = None) -> dict[str, float | None]:
    """Linear CKA between two models' representations at each site name both have, on the same samples.

    The same minibatch estimator as :class:`CKACollector` (unbiased HSIC per batch of ≥ 4 samples, summed over
    batches; padded tokens zeroed): 1 = the same representation up to rotation and isotropic scaling. Typical use:
    a sparse fine-tune against its dense baseline. None for a site seen in no batch of ≥ 4 samples.
    """
    from analysis.collect import batch_size, split_batch

    names = list(sites)
    found = [{s.name: s for s in find_sites(m, kinds=("activation",))} for m in (model_a, model_b)]
    missing = [n for n in names if n not in found[0] or n not in found[1]]
    if missing:
        raise AnalysisError(f"site(s) {', '.join(missing[:3])} are not activation sites of both models")
    sums: dict[str, Tensor] = {}
    seen = 0
    for m in (model_a, model_b):
        m.eval()
    for batch in loader:
        inputs, mask = split_batch(batch)
        n = batch_size(inputs)
        if max_samples is not None:
            n = min(n, max_samples - seen)
            if n <= 0:
                break
            inputs = {k: v[:n] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[:n]
            mask = mask[:n] if mask is not None else None
        seen += n
        if n < 4:
            continue
        grams = [_site_grams(m, sites_m, names, inputs, mask) for m, sites_m in zip((model_a, model_b), found,
                                                                                     strict=True)]
        for name in names:
            h = hsic_unbiased_matrix(torch.stack([grams[0][name], grams[1][name]]))
            sums[name] = h if name not in sums else sums[name] + h
    result: dict[str, float | None] = {}
    for name in names:
        total = sums.get(name)
        result[name] = (None if total is None
                        else float(total[0, 1] / (total[0, 0] * total[1, 1]).clamp_min(1e-300).sqrt()))
    return result


def _site_grams(model: nn.Module, sites: dict[str, Site], names: list[str], inputs, mask: Tensor | None) -> dict:
    """Linear Gram matrix ``X Xᵀ`` (features flattened per sample, padding zeroed) of each named site's first
    output, for one forward pass of ``model`` on ``inputs``."""
    from analysis.collect import call_model, to_device

    out: dict[str, Tensor] = {}

    def keep(name: str):
        def fn(t: Tensor) -> None:
            if name in out:  # a module run twice per forward: its first call is the site
                return
            f = t.detach().float()
            if mask is not None and f.dim() == 3 and tuple(mask.shape) == tuple(f.shape[:2]):
                f = f * mask.to(f.device).unsqueeze(-1)
            f = f.reshape(f.shape[0], -1)
            out[name] = (f @ f.T).cpu()

        return fn

    handles = [sites[name].hook(keep(name)) for name in names]
    try:
        call_model(model, to_device(inputs, next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return out


# ------------------------------------------------------------------------------------------------ relative change


class RelChangeCollector(SiteCollector):
    """Σ‖F_{l+1} − F_l‖² and Σ‖F_l‖² for consecutive blocks whose outputs have equal shapes."""

    def __init__(self, model: nn.Module, blocks: Iterable[Site]):
        super().__init__(model, blocks)
        self._prev: tuple[str, Tensor] | None = None
        self.sums: dict[tuple[str, str], list[Tensor]] = {}

    def _start_batch(self, module, args, kwargs):
        self._prev = None
        super()._start_batch(module, args, kwargs)

    def observe(self, key: str, site: Site, out: Tensor) -> None:
        mask = self.mask_for(out)
        if mask is not None:  # padded tokens do not count
            out = out * mask.unsqueeze(-1)
        if self._prev is not None and self._prev[1].shape == out.shape:
            prev_key, prev = self._prev
            acc = self.sums.setdefault((prev_key, key), [torch.zeros((), dtype=torch.float64, device=out.device)] * 2)
            acc[0] = acc[0] + (out.double() - prev.double()).square().sum()
            acc[1] = acc[1] + prev.double().square().sum()
        self._prev = (key, out)

    def result(self) -> list[dict]:
        return [{"from": a, "to": b, "relative_change": float((d / p.clamp_min(1e-300)).sqrt())}
                for (a, b), (d, p) in self.sums.items()]


# ------------------------------------------------------------------------------------------------ ISTA agreement


class _Operator:
    """A = the layer's linear map (its own forward with the given weight and no bias) and its adjoint, for one
    input shape.

    A runs the layer's own ``forward``, so it applies whatever padding the layer really applies (timm's TF-"same"
    ``Conv2dSame`` pads inside ``forward`` and reports ``padding == 0``; ``padding_mode="reflect"``; …). The
    adjoint Aᵀy is the gradient of ⟨A x, y⟩ with respect to x, exact for any such linear map.
    """

    def __init__(self, layer: nn.Module, weight: Tensor, in_shape: torch.Size):
        self.layer, self.in_shape = layer, in_shape
        self.params = {"weight": weight}
        bias = getattr(layer, "bias", None)
        if bias is not None:
            self.params["bias"] = torch.zeros_like(bias, dtype=weight.dtype, device=weight.device)

    def fwd(self, x: Tensor) -> Tensor:
        return torch.func.functional_call(self.layer, self.params, (x,))

    def adj(self, y: Tensor) -> Tensor:
        x = torch.zeros((y.shape[0], *self.in_shape[1:]), dtype=y.dtype, device=y.device, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.fwd(x), x, grad_outputs=y)
        return grad

    def norm_sq(self, iters: int = 50, rtol: float = 1e-3) -> float:
        """‖A‖² (largest eigenvalue of AᵀA) by power iteration on one sample's input shape.

        Stops when the estimate changes by less than ``rtol``; the estimate approaches ‖A‖² from below,
        so η = 1/estimate can exceed 1/‖A‖² by about ``rtol`` (harmless for ISTA's step bound 2/‖A‖²).
        """
        g = torch.Generator(device="cpu").manual_seed(0)
        v = torch.randn((1, *self.in_shape[1:]), generator=g).to(self.params["weight"].device)
        lam = 0.0
        for _ in range(iters):
            v = v / v.norm().clamp_min(1e-30)
            u = self.adj(self.fwd(v))
            new = float((u * v).sum())
            done = abs(new - lam) <= rtol * abs(new)
            lam, v = new, u
            if done:
                break
        return max(lam, 1e-12)


def layer_triples(model: nn.Module, sites: Iterable[Site]) -> list[tuple[str, nn.Module, nn.Module | None, Site]]:
    """(name, conv/linear, BatchNorm or None, activation site) in module order: candidate pursuit layers
    (:func:`~analysis.sites.pursuit_layers` whose activation is one of ``sites``)."""
    site_by_module = {id(s.module): s for s in sites}
    return [(p.name, p.layer, p.bn, site_by_module[id(p.act)]) for p in pursuit_layers(model)
            if p.act is not None and id(p.act) in site_by_module]


def layer_ista(fwd: Callable[[Tensor], Tensor], adj: Callable[[Tensor], Tensor], drive: Tensor,
               phi: Callable[[Tensor], Tensor], eta: float, steps: int) -> Iterator[Tensor]:
    """Iterates ``Γ¹ … Γ^steps`` of layer-scale ISTA: ``Γ¹ = φ(drive)``, ``Γ^{k+1} = φ(Γ^k − η A Aᵀ Γ^k + drive)``.

    ``fwd`` is A (input → code space), ``adj`` its adjoint Aᵀ (the dictionary D), ``drive = A x + b``.
    With φ = ReLU the iterates multiplied by η are non-negative ISTA with step η on
    ``min_{Γ≥0} ½‖x − AᵀΓ‖² − ⟨b, Γ⟩`` (an l1 penalty of weight −b on each unit).
    """
    g = phi(drive.clone())
    yield g
    for _ in range(steps - 1):
        g = phi(g - eta * fwd(adj(g)) + drive)
        yield g


def _fit_rate(d: list[float]) -> dict:
    """Least-squares fit of log d_k = a + k·log ρ over the decaying steps (d_k > 1e-7·d_1)."""
    pts = [(k, math.log(v)) for k, v in enumerate(d, start=1) if v > 1e-7 * max(d[0], 1e-30) and v > 0]
    if len(pts) < 3:
        return {"rho": None, "r2": None, "points": len(pts)}
    ks = torch.tensor([p[0] for p in pts], dtype=torch.float64)
    ys = torch.tensor([p[1] for p in pts], dtype=torch.float64)
    km, ym = ks.mean(), ys.mean()
    slope = float(((ks - km) * (ys - ym)).sum() / ((ks - km) ** 2).sum())
    pred = ym + slope * (ks - km)
    ss_tot = float(((ys - ym) ** 2).sum())
    r2 = 1 - float(((ys - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return {"rho": math.exp(slope), "r2": r2, "points": len(pts)}


def _capture(model: nn.Module, inputs, triples: list) -> dict[str, dict[str, Tensor]]:
    """``{layer name: {"x": its input, "y": its activation's output}}`` of one eval-mode forward of ``inputs``
    (the model's mode is restored after)."""
    captured: dict[str, dict] = {}
    handles = []
    for name, layer, _, site in triples:
        handles.append(layer.register_forward_pre_hook(
            lambda m, a, n=name: captured.setdefault(n, {}).__setitem__("x", a[0].detach())))
        handles.append(site.module.register_forward_hook(
            lambda m, a, o, n=name: captured.setdefault(n, {}).__setitem__("y", o.detach())))
    was_training = model.training
    model.eval()
    try:
        call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return captured


def _ista_trace(op: _Operator, drive: Tensor, phi, eta: float, steps: int, y: Tensor) -> dict[str, list[float]]:
    """Per ISTA iterate k: relative error to ``y``, support Jaccard with ``y``, and (k ≥ 2) the step size."""
    ynorm = float(y.norm()) or 1e-30
    rel_err, jacc, step = [], [], []
    supp_y = y != 0
    prev: Tensor | None = None
    g1norm = 1.0
    for gk in layer_ista(op.fwd, op.adj, drive, phi, eta, steps):
        rel_err.append(float((gk - y).norm()) / ynorm)
        s = gk != 0
        union = int((s | supp_y).sum())
        jacc.append(int((s & supp_y).sum()) / union if union else 1.0)
        if prev is None:
            g1norm = max(float(gk.norm()), 1e-30)  # step sizes are relative to ‖Γ¹‖
        else:
            step.append(float((gk - prev).norm()) / g1norm)
        prev = gk
    return {"relative_error": rel_err, "support_jaccard": jacc, "step_size": step}


def _theory_rate(layer: nn.Module, y: Tensor, coherence: dict) -> tuple[float, float | None, float | None]:
    """(s: mean non-zeros per position of ``y``, μ: the layer's coherence or None, the rate (2s − 1)μ or None)."""
    channel_dim = 1 if y.dim() >= 3 and not isinstance(layer, nn.Linear) else -1
    s_code = float((y != 0).sum(channel_dim).float().mean())
    mu = coherence.get("mu_shift") if coherence.get("mu_shift") is not None else (coherence.get("local") or {}).get("mu")
    return s_code, mu, (2 * s_code - 1) * mu if mu is not None else None


def _layer_agreement(triple: tuple[str, nn.Module, nn.Module | None, Site], x: Tensor, y: Tensor, steps: int,
                     coherence: dict, tol: float) -> dict:
    """ISTA agreement of one layer (a :func:`layer_triples` entry: name, layer, BatchNorm or None, activation site)
    with its activation's actual output ``y`` on input ``x`` (or why it is skipped)."""
    _, layer, bn, site = triple
    w, b = (t.to(x.device, torch.float32) for t in fold_bn(layer, bn))
    op = _Operator(layer, w, x.shape)
    bias = b.view(1, -1, *([1] * (y.dim() - 2))) if not isinstance(layer, nn.Linear) else b
    drive = op.fwd(x) + bias
    if drive.shape != y.shape:
        return {"skipped": f"activation output {tuple(y.shape)} is not the layer output {tuple(drive.shape)}"}
    phi = site.module
    first_err = float((phi(drive.clone()) - y).norm()) / (float(y.norm()) or 1e-30)
    if first_err > tol:
        return {"skipped": f"activation input is not this layer's output (relative gap {first_err:.2g}; "
                           "e.g. a residual add)", "activation": site.name}
    eta = 1.0 / op.norm_sq()
    trace = _ista_trace(op, drive, phi, eta, steps, y)
    fit = _fit_rate(trace["step_size"]) if trace["step_size"] else {"rho": None, "r2": None, "points": 0}
    s_code, mu, theory = _theory_rate(layer, y, coherence)
    return {"activation": site.name, "steps": steps, "eta": eta, **trace, "rho_hat": fit["rho"],
            "rho_fit_r2": fit["r2"], "s_code_mean": s_code, "mu": mu, "theory_rate": theory,
            "theory_vacuous": theory is None or theory >= 1}


@torch.no_grad()
def ista_agreement(model: nn.Module, inputs: Any, sites: Iterable[Site] | None = None, steps: int = 16,
                   coherences: dict[str, dict] | None = None, tol: float = 1e-3) -> dict[str, dict]:
    """ISTA agreement of every conv/linear → (BatchNorm) → activation layer on one batch of ``inputs``.

    Layers whose activation input is not exactly the (folded) layer output (e.g. a residual add before the
    activation) are reported as skipped, with the reason.
    """
    sites = list(sites) if sites is not None else find_sites(model)
    triples = layer_triples(model, sites)
    captured = _capture(model, inputs, triples)
    out = {}
    for triple in triples:
        name = triple[0]
        cap = captured.get(name, {})
        if "x" in cap and "y" in cap:
            out[name] = _layer_agreement(triple, cap["x"].float(), cap["y"].float(), steps,
                                         (coherences or {}).get(name, {}), tol)
    return out


def first_batch(loader: Iterable) -> Any:
    """The model inputs of the first batch of ``loader``."""
    for batch in loader:
        return split_batch(batch)[0]
    raise AnalysisError("the data loader is empty")


def convergence(model: nn.Module, loader: Iterable, *, sites: Iterable[Site] | None = None, blocks: Iterable[Site] | None = None,
                max_samples: int | None = 256, ista_samples: int = 16, ista_steps: int = 16,
                coherences: dict[str, dict] | None = None, progress: bool = False) -> dict:
    """Relative change between blocks, CKA between sites, and ISTA agreement per layer (plain data)."""
    from analysis.collect import run_pass

    sites = list(sites) if sites is not None else find_sites(model)
    blocks = list(blocks) if blocks is not None else find_blocks(model)
    rel, cka = RelChangeCollector(model, blocks), CKACollector(model, sites)
    run_pass(model, loader, [rel, cka], max_samples=max_samples, progress=progress, desc="convergence")
    device = next((p.device for p in model.parameters()), "cpu")
    x: Any = first_batch(loader)
    x = {k: v[:ista_samples] for k, v in x.items()} if isinstance(x, dict) else x[:ista_samples]
    return {"relative_change": rel.result(), "cka": cka.result(),
            "ista": ista_agreement(model, to_device(x, device), sites, ista_steps, coherences)}
