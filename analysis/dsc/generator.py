"""J-layer deep-sparse-coding signals ``x = D₁D₂…D_J Γ_J + e`` with known non-negative sparse codes.

The deepest code ``Γ_J`` has ``s`` non-zeros (for a convolutional ``D_J``: stripe sparsity ``‖Γ_J‖_{0,∞} ≤ s``)
at uniformly random positions, with values drawn uniformly from ``[a_min, a_max]``; ``contrast = a_min/a_max``.
The intermediate codes are ``Γ_{j-1} = D_j Γ_j`` (``Γ_0`` is the clean signal), so the inner dictionaries
``D_2 … D_J`` must be non-negative for every ``Γ_j`` to be a non-negative sparse code. The noise ``e`` is
i.i.d. ``N(0, σ²)`` per signal entry.

Randomness: one ``torch.Generator`` per call, on the CPU, drawing codes first and the noise last, so two
problems that differ only in σ get the same codes and noise patterns scaled by σ (common random numbers:
an error floor measured across σ is not blurred by resampling). Every sample is tagged *in theory* when
every layer's (stripe) sparsity is below that layer's uniqueness bound ``½(1 + 1/μ_j)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from analysis.dsc.dictionaries import Dictionary, make_dictionary
from analysis.errors import AnalysisError


@dataclass
class DSCBatch:
    """Samples of a DSC model: signals ``x`` [B, n], codes ``Γ_1 … Γ_J`` ([B, m_j] each), noise ``e`` [B, n].

    ``stripe_l0`` [B, J] is each layer's (stripe) sparsity, ``in_theory`` [B] whether all are below the bound.
    """

    x: Tensor
    codes: list[Tensor]
    noise: Tensor
    stripe_l0: Tensor
    in_theory: Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: str | torch.device) -> DSCBatch:
        return DSCBatch(self.x.to(device), [c.to(device) for c in self.codes], self.noise.to(device),
                        self.stripe_l0, self.in_theory)


@dataclass
class DSCModel:
    """The generative model; ``dictionaries[0]`` is ``D₁`` (next to the signal), ``dictionaries[-1]`` is ``D_J``.

    ``repeat`` > 1 makes each run of ``repeat`` consecutive samples share one code (independent noise): the
    token groups that the self-attention estimator can pool over.
    """

    dictionaries: list[Dictionary]
    s: int
    amplitude: tuple[float, float] = (0.5, 1.0)
    sigma: float = 0.0
    repeat: int = 1

    def __post_init__(self):
        ds = self.dictionaries
        if not ds:
            raise AnalysisError("a DSC model needs at least one dictionary")
        for j in range(1, len(ds)):
            if ds[j].n != ds[j - 1].m:
                raise AnalysisError(f"layer {j + 1}: dictionary has {ds[j].n} rows but layer {j} has {ds[j - 1].m} atoms")
            if not ds[j].nonnegative:
                raise AnalysisError(f"layer {j + 1}: inner dictionaries must be non-negative ({ds[j].name} is not)")
        lo, hi = self.amplitude
        if not 0 < lo <= hi:
            raise AnalysisError(f"amplitude range must satisfy 0 < a_min <= a_max, got {self.amplitude}")
        if self.s < 1 or self.sigma < 0 or self.repeat < 1:
            raise AnalysisError(f"need s >= 1, sigma >= 0, repeat >= 1; got s={self.s}, sigma={self.sigma}, "
                                f"repeat={self.repeat}")

    @classmethod
    def from_spec(cls, spec: dict) -> DSCModel:
        """Build from a config dict ``{"layers": [{"dictionary": name, **params}, …], "s", "amplitude", "sigma", "repeat"}``."""
        known = {"layers", "s", "amplitude", "sigma", "repeat"}
        unknown = set(spec) - known
        if unknown:
            raise AnalysisError(f"unknown problem key(s) {sorted(unknown)} (known: {sorted(known)})")
        layers = []
        for layer in spec["layers"]:
            params = dict(layer)
            layers.append(make_dictionary(params.pop("dictionary"), **params))
        return cls(layers, int(spec["s"]), tuple(float(a) for a in spec.get("amplitude", (0.5, 1.0))),
                   float(spec.get("sigma", 0.0)), int(spec.get("repeat", 1)))

    @property
    def contrast(self) -> float:
        return self.amplitude[0] / self.amplitude[1]

    def predicted_rates(self, stripe_l0: Tensor) -> list[float]:
        """``(2s_j − 1)μ_j`` per layer with ``s_j`` the largest (stripe) sparsity seen in ``stripe_l0`` [B, J]."""
        return [(2 * int(stripe_l0[:, j].max()) - 1) * d.mu for j, d in enumerate(self.dictionaries)]

    def sample(self, count: int, seed: int) -> DSCBatch:
        """``count`` samples, deterministic in ``seed`` (float64, CPU)."""
        g = torch.Generator().manual_seed(seed)
        deepest = self.dictionaries[-1]
        n_codes = -(-count // self.repeat)
        support = self._support(deepest, n_codes, g)
        lo, hi = self.amplitude
        values = lo + (hi - lo) * torch.rand(n_codes, deepest.m, generator=g, dtype=torch.float64)
        code = torch.where(support, values, torch.zeros((), dtype=torch.float64))
        code = code.repeat_interleave(self.repeat, 0)[:count]
        codes = [code]
        for d in reversed(self.dictionaries):
            codes.insert(0, codes[0] @ d.matrix.T)
        clean, codes = codes[0], codes[1:]
        noise = self.sigma * torch.randn(clean.shape, generator=g, dtype=torch.float64)
        stripe = torch.stack([d.stripe_l0(c) for d, c in zip(self.dictionaries, codes, strict=True)], 1)
        bound = torch.tensor([d.s_star for d in self.dictionaries], dtype=torch.float64)
        return DSCBatch(clean + noise, codes, noise, stripe, (stripe < bound).all(1))

    def _support(self, d: Dictionary, count: int, g: torch.Generator) -> Tensor:
        """[count, m] boolean supports: ``s`` uniform positions, or for a convolutional dictionary a random greedy
        fill that keeps every stripe at ≤ s non-zeros."""
        order = torch.rand(count, d.m, generator=g).argsort(dim=1)
        support = torch.zeros(count, d.m, dtype=torch.bool)
        if d.neighbors is None:
            if self.s > d.m:
                raise AnalysisError(f"s = {self.s} exceeds the {d.m} atoms of the deepest dictionary")
            return support.scatter_(1, order[:, : self.s], True)
        # stripe counts live on atoms: count[b, i] = non-zeros among the neighbours of atom i
        count_in_stripe = torch.zeros(count, d.m, dtype=torch.long)
        rows = torch.arange(count)
        for t in range(d.m):
            cand = order[:, t]
            nb = d.neighbors[cand]  # [count, w] atoms whose stripe contains the candidate
            ok = count_in_stripe.gather(1, nb).max(dim=1).values < self.s
            support[rows[ok], cand[ok]] = True
            count_in_stripe[rows[ok][:, None], nb[ok]] += 1
        return support
