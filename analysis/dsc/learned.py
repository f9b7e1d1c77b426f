"""Trained estimators: an unrolled network with tied weights and learned steps/thresholds, and a plain MLP.

``alista``  LISTA-type network ``Γ^{k+1} = φ(Γ^k + γ_k Dᵀ(x − DΓ^k); θ_k)`` whose weights are tied to the
            dictionary (the analytic / "ALISTA" parametrization, Liu et al. 2019: only 2 numbers per layer are
            learned). It starts from the theorem's calibrated schedule (:class:`DecayingISTA`) and is trained
            with Adam, full batch, on the mean over the requested depths of ``log NMSE_K`` (so every prefix of
            the network is a trained network of depth K), keeping the parameters with the lowest training loss.
            One-layer models (J = 1) only.
``mlp``     a plain network of depth L: ``h_{l+1} = ReLU(W_l h_l + b_l)`` with free weights (width = number of
            atoms of the deepest layer), trained with Adam on minibatches (drawn with replacement) of
            the normalized squared code error from PyTorch's default initialization, one network per depth in
            ``depths``; it maps ``x`` straight to ``Γ_J``.

Training is seeded (``torch.random.fork_rng``), so results are deterministic on one device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from analysis.dsc.base import Estimator
from analysis.dsc.generator import DSCBatch, DSCModel
from analysis.dsc.pursuit import DecayingISTA, unroll
from analysis.errors import AnalysisError

LOG_EPS = 1e-30  # added to the NMSE inside the log loss, far below float64 round-off of the codes (~1e-32)


def _nmse(est: Tensor, true: Tensor) -> Tensor:
    return ((est - true) ** 2).sum() / (true**2).sum()


class ALISTA(Estimator):
    """Unrolled network with dictionary-tied weights and learned per-layer step ``γ_k`` and threshold ``θ_k``."""

    name = "alista"

    def __init__(self, activation: str = "relu", temperature: float = 1e-3, steps: int = 100, lr: float = 0.02,
                 train_samples: int | None = None):
        if steps < 0 or lr <= 0:
            raise AnalysisError(f"alista: need steps >= 0 and lr > 0, got steps={steps}, lr={lr}")
        self.init = DecayingISTA(activation, temperature)
        self.steps, self.lr, self.train_samples = steps, lr, train_samples
        self.gamma: list[float] = []
        self.theta: list[float] = []
        self.loss: list[float] = []
        self._d: Tensor | None = None

    def fit(self, model: DSCModel, train: DSCBatch, depths: Sequence[int]) -> ALISTA:
        if len(model.dictionaries) != 1:
            raise AnalysisError("alista is defined for one-layer models (J = 1)")
        depths = sorted(depths)
        sched = self.init.fit(model, train, depths)._schedules[(0, None)]
        x, code = train.x[: self.train_samples], train.codes[0][: self.train_samples]
        self._d = model.dictionaries[0].matrix.to(x)
        log_gamma = torch.tensor(sched["gamma"], dtype=x.dtype, device=x.device).log().requires_grad_()
        log_theta = torch.tensor(sched["theta"], dtype=x.dtype, device=x.device).clamp_min(1e-300).log().requires_grad_()
        opt = torch.optim.Adam([log_gamma, log_theta], lr=self.lr)
        self.loss, best = [], (float("inf"), None)
        for step in range(self.steps + 1):
            out = unroll(x, self._d, log_gamma.exp(), log_theta.exp(), activation=self.init.activation,
                         temperature=self.init.temperature, snapshots=depths)
            loss = torch.stack([torch.log(_nmse(out[k], code) + LOG_EPS) for k in depths]).mean()
            self.loss.append(loss.item())
            if self.loss[-1] < best[0]:  # keep the parameters with the lowest training loss seen
                best = (self.loss[-1], (log_gamma.detach().exp().tolist(), log_theta.detach().exp().tolist()))
            if step == self.steps:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.gamma, self.theta = best[1]
        return self

    def estimate(self, x: Tensor, depths: Sequence[int]) -> dict[int, list[Tensor | None]]:
        if self._d is None:
            raise AnalysisError("alista: call fit() before estimate()")
        g = torch.tensor(self.gamma, dtype=x.dtype, device=x.device)
        t = torch.tensor(self.theta, dtype=x.dtype, device=x.device)
        with torch.no_grad():
            out = unroll(x, self._d.to(x), g, t, activation=self.init.activation, temperature=self.init.temperature,
                         snapshots=depths)
        return {k: [out[k]] for k in sorted(depths)}

    def describe(self) -> dict:
        return {"activation": self.init.activation, "temperature": self.init.temperature, "steps": self.steps,
                "lr": self.lr, "train_samples": self.train_samples, "gamma": self.gamma, "theta": self.theta,
                "loss_init": self.loss[0] if self.loss else None, "loss_best": min(self.loss) if self.loss else None}


class MLP(Estimator):
    """Plain ReLU network of depth L (free weights), one per L in ``depths``, trained on the code error."""

    name = "mlp"

    def __init__(self, depths: Sequence[int] = (1, 2, 4), steps: int = 1000, lr: float = 1e-3, batch_size: int = 256,
                 seed: int = 0):
        if not depths or min(depths) < 1 or steps < 0 or lr <= 0 or batch_size < 1:
            raise AnalysisError(f"mlp: need depths >= 1, steps >= 0, lr > 0, batch_size >= 1; got depths={depths}, "
                                f"steps={steps}, lr={lr}, batch_size={batch_size}")
        self.depths, self.steps, self.lr, self.seed = sorted(int(k) for k in depths), steps, lr, seed
        self.batch_size = batch_size
        self._nets: dict[int, nn.Sequential] = {}
        self.loss: dict[int, float] = {}
        self._layers = 1

    def supports(self, depth: int) -> bool:
        return depth in self.depths

    def fit(self, model: DSCModel, train: DSCBatch, depths: Sequence[int]) -> MLP:
        self._layers = len(model.dictionaries)
        x, code = train.x, train.codes[-1]
        width = code.shape[1]
        for depth in [k for k in self.depths if k in depths]:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed + depth)
                dims = [x.shape[1]] + [width] * depth
                layers = [m for i in range(depth) for m in (nn.Linear(dims[i], dims[i + 1]), nn.ReLU())]
                net = nn.Sequential(*layers).to(dtype=x.dtype, device=x.device)
                order = torch.randint(0, x.shape[0], (self.steps, min(self.batch_size, x.shape[0])))
            opt = torch.optim.Adam(net.parameters(), lr=self.lr)
            for idx in order.to(x.device):
                loss = _nmse(net(x[idx]), code[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            self._nets[depth] = net
            with torch.no_grad():
                self.loss[depth] = float(_nmse(net(x), code))
        return self

    def estimate(self, x: Tensor, depths: Sequence[int]) -> dict[int, list[Tensor | None]]:
        with torch.no_grad():
            return {k: [None] * (self._layers - 1) + [self._nets[k](x)] for k in sorted(depths) if k in self._nets}

    def describe(self) -> dict:
        return {"depths": self.depths, "steps": self.steps, "lr": self.lr, "batch_size": self.batch_size, "seed": self.seed,
                "train_nmse": {str(k): v for k, v in self.loss.items()}}
