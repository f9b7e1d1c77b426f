"""Unrolled non-negative pursuit: layered thresholding, ISTA with fixed and with decaying thresholds, and a
self-attention variant. Layer ``j`` of a J-layer model is solved from the previous layer's estimate
(``Γ̂_0 = x``); the network of depth K runs K unrolled steps per layer:

``Γ^{k+1} = φ(Γ^k + γ_k D_jᵀ A(h − D_j Γ^k); θ_k)``,  ``Γ^0 = 0``

with ``φ`` a shrinkage activation (:mod:`analysis.dsc.activations`, ReLU by default), ``A`` the identity except
for the attention variant, ``γ_k`` the step and ``θ_k`` the threshold.

**Why two ISTAs.** Textbook ISTA (``ista``) takes the step ``1/L`` (``L = ‖D‖₂²``) and a fixed threshold
``λ/L``; it converges to the non-negative LASSO minimizer, which is biased by ~λ per non-zero, so its error
has a floor even without noise. The analysis of the paper (as in LISTA-CP / ALISTA: Chen et al. 2018,
Liu et al. 2019) uses step 1 (the weights *are* the unit-norm atoms) and thresholds that decay with the error:
with ``θ_k ≥ μ‖Γ^k − Γ‖_{1,stripe} + ‖Dᵀe‖_∞`` no off-support entry ever switches on, and on the support the
error contracts in ℓ1 by at most ``(s − 1)μ + sμ = (2s − 1)μ`` per step. ``ista_decay`` implements exactly that
schedule, with the two sups calibrated on the training samples (the theorem's thresholds are sups over the
signal class; the calibration set stands in for it):

``τ   = max_b ‖Dᵀ A(h_b − DΓ_b)‖_∞``                    (noise seen by a step at the true code)
``θ_k = μ · max_b ‖Γ^k_b − Γ_b‖_{1,stripe} + τ``         (``‖·‖_{1,stripe}``: ℓ1 norm, or its max over stripes
                                                           for convolutional dictionaries)

except that at k = 0, where the error is the code itself, the deepest layer uses its exact class sup
``s·a_max``: a test code a little larger than every calibration code would otherwise switch on a false
positive in the first step and slow everything after it (seen with 256 calibration samples at s = 1).
Later steps keep the calibration sup, so a test signal whose error exceeds every calibration signal's can
still get a (small) false positive; the configs calibrate on 1024 (quick) or 2048 (full) samples.

so the thresholds, and with them the error, decay geometrically down to a floor set by τ, i.e. ∝ σ.
Layered thresholding (``thresholding``, the CNN forward pass ``ReLU(Dᵀh − θ)`` per layer) is the first step of
that network: ``θ_0 = μ max‖Γ‖_{1,stripe} + τ``, which is exact when ``contrast > (2s − 1)μ + 2τ/a_max``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from analysis.dsc.activations import get_activation
from analysis.dsc.base import Estimator
from analysis.dsc.dictionaries import Dictionary
from analysis.dsc.generator import DSCBatch, DSCModel
from analysis.errors import AnalysisError

Mix = Callable[[Tensor], Tensor]


def unroll(h: Tensor, d: Tensor, gamma: Tensor, theta: Tensor, *, activation: str = "relu", temperature: float = 1e-3,
           mix: Mix | None = None, snapshots: Sequence[int] = ()) -> dict[int, Tensor]:
    """Run ``len(gamma)`` unrolled steps on inputs ``h`` [B, n] with dictionary ``d`` [n, m].

    Returns the codes [B, m] after each step listed in ``snapshots`` (step k+1 uses ``gamma[k]``, ``theta[k]``).
    """
    act = get_activation(activation)
    code = h.new_zeros(h.shape[0], d.shape[1])
    out = {}
    for k in range(len(gamma)):
        r = h - code @ d.T
        code = act(code + gamma[k] * ((mix(r) if mix else r) @ d), theta[k], temperature)
        if k + 1 in snapshots:
            out[k + 1] = code
    return out


class UnrolledPursuit(Estimator):
    """Layer-by-layer unrolled pursuit; subclasses supply the step/threshold schedule and (optionally) a mixer."""

    def __init__(self, activation: str = "relu", temperature: float = 1e-3):
        get_activation(activation)
        if temperature <= 0:
            raise AnalysisError(f"temperature must be > 0, got {temperature}")
        self.activation, self.temperature = activation, temperature
        self._model: DSCModel | None = None
        self._schedules: dict[tuple[int, int | None], dict] = {}

    def _schedule(self, d: Dictionary, h: Tensor, target: Tensor, steps: int, mix: Mix | None, sup0: float | None) -> dict:
        """``{"gamma": [steps], "theta": [steps], …}`` for one layer, calibrated on inputs ``h`` with true codes ``target``.

        ``sup0`` is the class sup of the code's (stripe) ℓ1 norm when the model fixes it (the deepest layer:
        ``s·a_max``), else None.
        """
        raise NotImplementedError

    def _mixer(self, x: Tensor) -> Mix | None:
        return None

    def fit(self, model: DSCModel, train: DSCBatch, depths: Sequence[int]) -> UnrolledPursuit:
        self._model, self._schedules = model, {}
        self._run(train.x, depths, train.codes)
        return self

    def estimate(self, x: Tensor, depths: Sequence[int]) -> dict[int, list[Tensor | None]]:
        if self._model is None:
            raise AnalysisError(f"{self.name}: call fit() before estimate()")
        return self._run(x, depths, None)

    def _run(self, x: Tensor, depths: Sequence[int], targets: list[Tensor] | None) -> dict[int, list[Tensor | None]]:
        depths = sorted(k for k in depths if self.supports(k))
        mix = self._mixer(x)
        out: dict[int, list[Tensor | None]] = {k: [] for k in depths}
        model = self._model
        for j, d in enumerate(model.dictionaries):
            sup0 = model.s * model.amplitude[1] if j == len(model.dictionaries) - 1 else None
            # layer 1 sees the same input at every depth, so one run serves all K; deeper layers see depth-K inputs
            groups = [(None, depths)] if j == 0 else [(k, [k]) for k in depths]
            for key, snaps in groups:
                h = x if j == 0 else out[snaps[0]][-1]
                if targets is not None:
                    self._schedules[(j, key)] = self._schedule(d, h, targets[j], max(snaps), mix, sup0)
                sched = self._schedules.get((j, key))
                if sched is None or len(sched["gamma"]) < max(snaps):
                    raise AnalysisError(f"{self.name}: not fitted for depth {max(snaps)}")
                g = torch.tensor(sched["gamma"], dtype=x.dtype, device=x.device)
                t = torch.tensor(sched["theta"], dtype=x.dtype, device=x.device)
                res = unroll(h, d.matrix.to(x), g[: max(snaps)], t[: max(snaps)], activation=self.activation,
                             temperature=self.temperature, mix=mix, snapshots=snaps)
                for k in snaps:
                    out[k].append(res[k])
        return out

    def describe(self) -> dict:
        sched = {f"layer{j + 1}" + ("" if key is None else f"@K={key}"): s for (j, key), s in self._schedules.items()}
        return {"activation": self.activation, "temperature": self.temperature, "schedules": sched}


def _noise_correlation(d: Dictionary, h: Tensor, target: Tensor, mix: Mix | None) -> float:
    """``τ = max_b ‖Dᵀ A(h_b − DΓ_b)‖_∞``: the largest correlation of the residual at the true code with an atom."""
    r = h - target @ d.matrix.to(h).T
    return float(((mix(r) if mix else r) @ d.matrix.to(h)).abs().max())


class FixedISTA(UnrolledPursuit):
    """Textbook non-negative ISTA: step ``1/L``, fixed threshold ``λ/L`` with ``λ = lam + τ`` (τ: noise correlation)."""

    name = "ista"

    def __init__(self, lam: float = 0.05, activation: str = "relu", temperature: float = 1e-3):
        super().__init__(activation, temperature)
        if lam < 0:
            raise AnalysisError(f"ista: lam must be >= 0, got {lam}")
        self.lam = lam

    def _schedule(self, d, h, target, steps, mix, sup0):
        tau = _noise_correlation(d, h, target, mix)
        lip = d.lipschitz
        return {"tau": tau, "lambda": self.lam + tau, "gamma": [1 / lip] * steps, "theta": [(self.lam + tau) / lip] * steps}

    def describe(self) -> dict:
        return {"lam": self.lam, **super().describe()}


class DecayingISTA(UnrolledPursuit):
    """Non-negative ISTA with step 1 and the theorem's decaying thresholds (module docstring), calibrated on ``train``."""

    name = "ista_decay"

    def _schedule(self, d, h, target, steps, mix, sup0):
        act = get_activation(self.activation)
        mat = d.matrix.to(h)
        tau = _noise_correlation(d, h, target, mix)
        code = torch.zeros_like(target)
        theta = []
        for k in range(steps):
            sup = float(d.stripe_l1(code - target).max())
            if k == 0 and sup0 is not None:
                sup = max(sup, sup0)  # Γ^0 = 0: the error is the code itself, whose class sup the model fixes
            theta.append(d.mu * sup + tau)
            r = h - code @ mat.T
            code = act(code + (mix(r) if mix else r) @ mat, torch.tensor(theta[-1], dtype=h.dtype), self.temperature)
        return {"tau": tau, "gamma": [1.0] * steps, "theta": theta}


class Thresholding(DecayingISTA):
    """Layered thresholding, the CNN forward pass: one step of :class:`DecayingISTA` per layer (depth 1 only)."""

    name = "thresholding"

    def supports(self, depth: int) -> bool:
        return depth == 1


class AttentionISTA(DecayingISTA):
    """Decaying-threshold ISTA whose dictionary step is attention-weighted over the tokens of a sequence.

    Consecutive ``seq_len`` samples form one sequence; the residual of token t is replaced by
    ``Σ_t' A_tt' r_t'`` with ``A = softmax_t'(β · cos(x_t, x_t'))`` (queries = keys = the input tokens, values
    = residuals), so every step is a self-attention block followed by the dictionary step and shrinkage. Tokens
    that share a code pool their noise; attention that leaks onto tokens with other codes (mass ``leak``,
    measured at fit) acts like extra noise. The calibrated thresholds include both (τ is measured through A).
    """

    name = "attention"

    def __init__(self, beta: float = 20.0, seq_len: int = 8, activation: str = "relu", temperature: float = 1e-3):
        super().__init__(activation, temperature)
        if beta < 0 or seq_len < 1:
            raise AnalysisError(f"attention: need beta >= 0 and seq_len >= 1, got beta={beta}, seq_len={seq_len}")
        self.beta, self.seq_len = beta, seq_len
        self.leak: float | None = None

    def _attention(self, x: Tensor) -> Tensor:
        if x.shape[0] % self.seq_len:
            raise AnalysisError(f"attention: {x.shape[0]} samples do not split into sequences of {self.seq_len}")
        t = x.reshape(-1, self.seq_len, x.shape[1])
        t = t / t.norm(dim=2, keepdim=True).clamp_min(1e-300)
        return torch.softmax(self.beta * t @ t.transpose(1, 2), dim=2)  # [B/T, T, T]

    def _mixer(self, x: Tensor) -> Mix:
        a = self._attention(x)
        return lambda r: (a @ r.reshape(a.shape[0], self.seq_len, -1)).reshape(r.shape)

    def fit(self, model: DSCModel, train: DSCBatch, depths: Sequence[int]) -> AttentionISTA:
        a = self._attention(train.x)
        code = train.codes[-1].reshape(a.shape[0], self.seq_len, -1)
        other = (code[:, :, None, :] != code[:, None, :, :]).any(dim=3)  # token pairs with different codes
        self.leak = float((a * other).sum(dim=2).mean())
        return super().fit(model, train, depths)

    def describe(self) -> dict:
        return {"beta": self.beta, "seq_len": self.seq_len, "leak": self.leak, **super().describe()}
