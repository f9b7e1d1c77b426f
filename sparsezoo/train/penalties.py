"""Sparsity penalties on feature sites, computed inside the forward pass by forward hooks.

Normalization: the per-sample Lasso penalty of sparse coding, ``λ‖Γ‖₁`` on every coefficient of the sample's
codes (Li, Feng & Zhou, arXiv:2408.05540, and basis pursuit generally), summed over the feature sites and
averaged over the batch::

    penalty = Σ_kinds λ_kind · (1/B) Σ_b Σ_sites w_site · Σ_pos f_kind(a[b, :, pos])

with ``f_l1(x) = ‖x‖₁`` and ``f_hoyer_square(x) = ‖x‖₁² / ‖x‖₂²`` (scale-invariant, so a BatchNorm after
the site cannot cheat it; an all-zero code counts 0), ``B`` the batch size and ``w_site`` the per-site weight
(default 1). So λ is the ℓ1 weight *per code coefficient*: every activation entry of every sample feels the same
pull ``λ`` toward 0 whatever the architecture, depth or resolution, just as each sample's cross-entropy (the mean
over the batch) pulls on it. (Averaging over positions and sites instead, as earlier versions did, weakened the
pull on each entry by the number of positions times the number of sites, ~10⁴ for a CNN at 96 px, and made
it depend on both.) ``--l1 1e-4`` is a moderate setting, ``1e-5`` / ``1e-3`` gentle / strong (README, "Zoo").

Add the penalty to any training loop in two lines::

    with SparsityPenalty(model, l1=1e-4) as reg:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y) + reg.penalty()
            loss.backward(); opt.step(); opt.zero_grad()

For token models set ``reg.position_mask = attention_mask.bool()`` before each forward: padded positions then
count for nothing (the sum runs over real tokens only).

Hooks compute only while autograd is enabled (not under ``torch.no_grad``), and only the kinds whose
λ is currently > 0, so λ = 0 costs nothing and leaves training exactly as it was.

Life cycle: construction only selects sites; :meth:`~SparsityPenalty.attach` registers the hooks and turns off
``inplace`` on the site modules that need it (see :data:`INPLACE_SAFE_ON_NONNEGATIVE`), and
:meth:`~SparsityPenalty.detach` removes the hooks and turns back on exactly the flags it turned off. Both are
idempotent. Several penalties may be attached to one model at once and work independently (each has its own hooks
and sums); an ``inplace`` flag stays off until the last penalty that needed it off is detached.
``nn.DataParallel`` is refused (:class:`DataParallelError`): its replicas, one thread per GPU, would all write
into one penalty's sums.
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from analysis.collect import HookSet, fitting_mask
from analysis.sites import Site, find_sites
from sparsezoo.errors import SparsezooError

PenaltyFn = Callable[[Tensor, int, bool, "Tensor | None"], Tensor]
# the registry of penalty kinds (register_penalty): recipes (sparsezoo.recipe.validate) and the finetune CLI read it
PENALTIES: dict[str, PenaltyFn] = {}
# kinds whose backward saves no activation when the site is non-negative (the l1 of a ReLU output is a
# plain sum): such sites may keep timm's in-place activations, which saves a copy per site and step
INPLACE_SAFE_ON_NONNEGATIVE: set[str] = set()
_EPS = 1e-12
# site module -> how many attached penalties need its `inplace` off; the flag goes back on when this drops to 0
_INPLACE_HOLDS: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()


class DataParallelError(SparsezooError):
    """``nn.DataParallel`` is not supported: its per-GPU replicas would share one penalty's hook state."""


DATA_PARALLEL_MESSAGE = ("nn.DataParallel is not supported (its replicas would share the sparsity hooks' state); "
                         "use DDP, one process per GPU: torchrun --nproc_per_node=N or accelerate launch")


def _patterns(value: str | Iterable[Any] | None) -> str | list[str] | None:
    """Site patterns as :func:`analysis.sites.find_sites` takes them: one regex, a list of them, or None."""
    return value if value is None or isinstance(value, str) else list(value)


def check_no_data_parallel(model: nn.Module) -> None:
    """Raise :class:`DataParallelError` if ``model`` is, or contains, an ``nn.DataParallel``."""
    if any(isinstance(m, nn.DataParallel) for m in model.modules()):
        raise DataParallelError(DATA_PARALLEL_MESSAGE)


def register_penalty(name: str, inplace_safe_on_nonnegative: bool = False) -> Callable[[PenaltyFn], PenaltyFn]:
    """Register ``fn(a, channel_dim, nonnegative, mask) -> scalar`` under ``name``: per sample, the sum over the
    valid positions of the code vectors' penalty (Σ over positions, divided by the batch size).

    ``mask`` is None or a bool tensor over the positions of a token site (``[B, T]`` for ``a`` of shape
    ``[B, T, C]``); positions where it is False (padding) must not contribute.
    """

    def deco(fn: PenaltyFn) -> PenaltyFn:
        PENALTIES[name] = fn
        if inplace_safe_on_nonnegative:
            INPLACE_SAFE_ON_NONNEGATIVE.add(name)
        return fn

    return deco


def unregister_penalty(name: str) -> None:
    """Remove a kind added with :func:`register_penalty` (a no-op for an unknown name)."""
    PENALTIES.pop(name, None)
    INPLACE_SAFE_ON_NONNEGATIVE.discard(name)


def _per_sample(per_position: Tensor, mask: Tensor | None) -> Tensor:
    """Σ over the (valid) positions of every sample, divided by the batch size (dim 0)."""
    if mask is not None:
        per_position = per_position * mask.to(per_position.dtype)
    return per_position.sum() / per_position.shape[0]


@register_penalty("l1", inplace_safe_on_nonnegative=True)
def l1_penalty(a: Tensor, channel_dim: int, nonnegative: bool, mask: Tensor | None = None) -> Tensor:
    """Per sample, Σ over positions of ``‖a[b, :, pos]‖₁`` (= Σ|a| / B); units of ``a``.

    Summed per position first, as the formula reads: compiled, that reduction joins the kernel that produces the
    activation, where a flat ``Σ|a|`` was a second pass over it (``benchmarks/bench_penalty.py --compile``:
    mobilenetv2_100's compiled ratio 1.021 before, 1.003-1.024 after; README, "Performance")."""
    mag = a if nonnegative else a.abs()
    return _per_sample(mag.sum(dim=channel_dim, dtype=torch.float32), mask)


@register_penalty("hoyer_square")
def hoyer_square_penalty(a: Tensor, channel_dim: int, nonnegative: bool, mask: Tensor | None = None) -> Tensor:
    """Per sample, Σ over positions of ``‖x‖₁² / ‖x‖₂²`` per code vector x (each in [1, C]; 0 if x = 0)."""
    a = a.float()
    l1 = (a if nonnegative else a.abs()).sum(dim=channel_dim)
    l2sq = a.square().sum(dim=channel_dim)
    return _per_sample(l1.square() / (l2sq + _EPS), mask)


@dataclass(frozen=True, eq=False)
class PenaltyTerms(Mapping[str, Tensor]):
    """The term of each penalty kind in one forward pass before λ: kind → detached 0-d tensor on the model's device,
    ``(1/B) Σ_b Σ_sites w_site · Σ_pos f_kind`` (the module docstring), e.g. for "l1" the mean over the batch of
    the sample's ‖Γ‖₁ summed over the sites (in activation units). A read-only mapping; :meth:`to_json` gives
    host floats. :attr:`SparsityPenalty.last_terms` holds those of the latest :meth:`SparsityPenalty.penalty`."""

    terms: Mapping[str, Tensor] = field(default_factory=dict)

    def __getitem__(self, kind: str) -> Tensor:
        return self.terms[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self.terms)

    def __len__(self) -> int:
        return len(self.terms)

    def to_json(self) -> dict[str, float]:
        """Each term as a Python float (one host sync per kind)."""
        return {kind: float(v) for kind, v in self.terms.items()}


class SparsityPenalty(HookSet):
    """Attach sparsity penalties to the feature sites of any ``nn.Module``.

    Args:
        model: the module to regularize (its activation modules are the default sites).
        l1, hoyer_square: λ for each built-in kind (0 = not configured). ``lams`` gives λ by kind name
            instead (including kinds added with :func:`register_penalty`); use it with λ = 0 for a kind whose
            λ a schedule will raise later through :meth:`set_lam`.
        sites: regex(es) selecting site names, or a list of :class:`~analysis.sites.Site`; default all.
        exclude: regex(es) removing sites.
        site_weights: ``{regex: w}``; a site's terms are multiplied by the first matching weight.
        track_zero_frac: also count exact zeros at the sites (for a target-sparsity controller).
        inplace_off: while attached, turn off ``inplace`` on the site modules whose penalty needs their output
            in backward (every site except non-negative ones under l1 alone; required, see
            :data:`INPLACE_SAFE_ON_NONNEGATIVE`).
            :meth:`detach` turns back on exactly the flags that :meth:`attach` turned off.

    Raises:
        DataParallelError: ``model`` is or contains an ``nn.DataParallel`` (use DDP: torchrun / accelerate).

    Nothing is hooked until :meth:`attach` (or ``with``); call :meth:`penalty` once per forward pass; λ can be
    changed at any time with :meth:`set_lam`. Other penalties on the same model work independently.
    """

    def __init__(self, model: nn.Module, l1: float = 0.0, hoyer_square: float = 0.0, *,
                 lams: Mapping[str, float] | None = None, sites: str | Iterable[str] | list[Site] | None = None,
                 exclude: str | Iterable[str] | None = None, site_weights: Mapping[str, float] | None = None,
                 track_zero_frac: bool = False, inplace_off: bool = True):
        check_no_data_parallel(model)
        self.model = model
        if lams is None:  # keyword form: only the kinds given a λ > 0
            lams = {k: v for k, v in (("l1", l1), ("hoyer_square", hoyer_square)) if v != 0}
        self.lams: dict[str, float] = {}
        for k, v in lams.items():
            if k not in PENALTIES:
                raise ValueError(f"unknown penalty kind {k!r} (known: {', '.join(PENALTIES)})")
            self.lams[k] = 0.0
            self.set_lam(k, v)
        if isinstance(sites, list) and sites and isinstance(sites[0], Site):
            self.sites = sites
        else:
            self.sites = find_sites(model, include=_patterns(sites), exclude=_patterns(exclude))
        weights = [(re.compile(p), float(w)) for p, w in (site_weights or {}).items()]
        self.weights = {s.name: next((w for p, w in weights if p.search(s.name)), 1.0) for s in self.sites}
        # in-place activations break autograd for penalties that save the site's output (INPLACE_SAFE_ON_NONNEGATIVE)
        needs_copy = [s for s in self.sites if not (s.nonnegative and set(self.lams) <= INPLACE_SAFE_ON_NONNEGATIVE)]
        self._needs_copy = needs_copy if inplace_off else []
        self._inplace_held: list[Site] = []  # sites whose `inplace` this penalty holds off while attached
        self.track_zero_frac = track_zero_frac
        self.position_mask: Tensor | None = None  # [B, T] bool for token models: padding excluded; set per step
        self.last_terms = PenaltyTerms()  # the per-kind terms of the latest penalty(), for logging
        self._terms: dict[str, list[Tensor]] = {}  # kind -> the per-site terms of the current forward
        self._zeros: dict[str, list[Tensor]] = {}
        self._handles: list = []

    # -------------------------------------------------------------------------------- λ
    def set_lam(self, kind: str, lam: float) -> None:
        """Change λ of a configured kind (e.g. from a schedule); kinds are fixed at construction."""
        if kind not in self.lams:
            raise ValueError(f"penalty kind {kind!r} is not configured here (configured: {', '.join(self.lams)})")
        if not math.isfinite(lam) or lam < 0:
            raise ValueError(f"λ for {kind!r} must be a finite number >= 0, got {lam}")
        self.lams[kind] = float(lam)

    # -------------------------------------------------------------------------------- hooks
    def _hook(self, site: Site) -> Callable:
        weight = self.weights[site.name]

        def hook(out: Tensor) -> None:
            if not torch.is_grad_enabled():
                return
            channel_dim = site.channel_dim(out.dim())
            mask = fitting_mask(self.position_mask, out)
            for kind, lam in self.lams.items():
                if lam > 0 and weight > 0:
                    term = PENALTIES[kind](out, channel_dim, site.nonnegative, mask)
                    self._terms.setdefault(kind, []).append(term * weight if weight != 1.0 else term)
            if self.track_zero_frac:
                zeros = out.detach() == 0
                if mask is not None:
                    z = (zeros & mask[..., None]).sum(dtype=torch.float32) / (mask.sum() * out.shape[-1]).clamp_min(1)
                else:
                    z = zeros.sum(dtype=torch.float32) / out.numel()
                self._zeros.setdefault(site.name, []).append(z)

        return hook

    def _reset(self, module: nn.Module | None = None, _args=None) -> None:
        if module is not None and module is not self.model:  # a DataParallel replica (wrapped after attach)
            raise DataParallelError(DATA_PARALLEL_MESSAGE)
        self._terms.clear()

    def _register(self) -> list:
        return [self.model.register_forward_pre_hook(self._reset), *(s.hook(self._hook(s)) for s in self.sites)]

    @property
    def attached(self) -> bool:
        """Whether the hooks are registered (between :meth:`attach` and :meth:`detach`)."""
        return bool(self._handles)

    @property
    def inplace_disabled(self) -> list[str]:
        """Names of the site modules whose ``inplace`` this penalty turns off while attached: while attached, those
        it holds off; while detached, those :meth:`attach` would turn off now."""
        if self.attached:
            return [s.name for s in self._inplace_held]
        return [s.name for s in self._needs_copy if getattr(s.module, "inplace", False) or s.module in _INPLACE_HOLDS]

    def attach(self) -> SparsityPenalty:
        """Register the hooks and turn off ``inplace`` where needed; a no-op when already attached."""
        if self.attached:
            return self
        held = []
        for s in {id(s.module): s for s in self._needs_copy}.values():
            if s.module in _INPLACE_HOLDS:  # another attached penalty already turned it off
                _INPLACE_HOLDS[s.module] += 1
            elif getattr(s.module, "inplace", False):
                s.module.inplace = False
                _INPLACE_HOLDS[s.module] = 1
            else:
                continue
            held.append(s)
        self._inplace_held = held
        return super().attach()

    def detach(self) -> None:
        """Remove the hooks and turn back on the ``inplace`` flags :meth:`attach` turned off (once no other
        attached penalty needs them off); a no-op when not attached."""
        super().detach()
        for s in self._inplace_held:
            left = _INPLACE_HOLDS.get(s.module, 1) - 1
            if left > 0:
                _INPLACE_HOLDS[s.module] = left
            else:
                _INPLACE_HOLDS.pop(s.module, None)
                setattr(s.module, "inplace", True)  # noqa: B010 - a flag of the activation module, not a tensor
        self._inplace_held = []
        self._reset()  # drop sums (and their autograd graphs) of a forward whose penalty was never taken

    # -------------------------------------------------------------------------------- results
    def penalty(self) -> Tensor:
        """λ-weighted penalty of the latest forward pass (a 0-d tensor; 0 when every λ is 0).

        Per-kind unweighted values go to :attr:`last_terms` (a :class:`PenaltyTerms`, detached) for logging.
        """
        total = None
        last: dict[str, Tensor] = {}
        for kind, terms in self._terms.items():
            value = torch.stack(terms).sum()  # Σ over site outputs of the per-sample sums
            last[kind] = value.detach()
            weighted = self.lams[kind] * value
            total = weighted if total is None else total + weighted
        self.last_terms = PenaltyTerms(last)
        self._reset()
        if total is None:
            p = next(self.model.parameters(), None)
            return torch.zeros((), device=p.device if p is not None else "cpu")
        return total

    def pop_zero_frac(self) -> Tensor | None:
        """Mean over sites of the fraction of exact zeros since the last call (0-d tensor, no host sync)."""
        if not self._zeros:
            return None
        per_site = [torch.stack(v).mean() for v in self._zeros.values()]
        self._zeros.clear()
        return torch.stack(per_site).mean()
