"""Dictionaries for synthetic deep-sparse-coding signals, and their coherence.

A :class:`Dictionary` is a matrix ``D ∈ R^{n×m}`` whose **columns** are unit-norm atoms (float64); a code
``Γ ∈ R^m`` synthesizes the signal ``DΓ``. Builders are registered by name in :data:`DICTIONARIES`:

``hadamard``   identity + normalized Hadamard frame ``[I, H/√n]`` (n a power of 2, m = 2n), ``μ = 1/√n``
               (in theory for ``s < ½(1 + √n)``)
``design``     sparse non-negative combinatorial design: atoms are the lines ``y = a·j + b (mod p)`` of an affine
               plane over Z_p restricted to ``d`` rows-blocks, so any two atoms share at most one row and
               ``μ = 1/d``; entries ``1/√d`` (non-negative, so it can be an inner layer of a J-layer model)
``gaussian``   i.i.d. Gaussian atoms (out of theory: ``μ ≈ √(4 ln m / n)``)
``conv1d``     circular 1-D convolutional dictionary (``channels`` filters of length ``k`` at all ``n`` shifts)
``conv2d``     circular 2-D convolutional dictionary on ``size×size`` images (filters ``k×k``)

Coherence numbers always come from :mod:`analysis.dictionary`: ``gram_stats`` of the atoms for dense
dictionaries, ``conv_shift_coherence`` of the filters (shift-aware, :mod:`analysis.dictionary`) for convolutional ones. For a
convolutional dictionary the sparsity that the theory bounds is the *stripe* sparsity ``‖Γ‖_{0,∞}``: the most
non-zeros among the atoms that overlap any one atom (shifts ``|u| < k`` in every dimension, all channels);
for a dense dictionary every atom may overlap every other, so the stripe is the whole code and ``‖Γ‖_{0,∞} = ‖Γ‖₀``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from analysis.dictionary import conv_shift_coherence, gram_stats, uniqueness_bound, welch_bound
from analysis.errors import AnalysisError

BARKER = {
    2: [1, -1], 3: [1, 1, -1], 4: [1, 1, -1, 1], 5: [1, 1, 1, -1, 1], 7: [1, 1, 1, -1, -1, 1, -1],
    11: [1, 1, 1, -1, -1, -1, 1, -1, -1, 1, -1], 13: [1, 1, 1, 1, 1, -1, -1, 1, 1, -1, 1, -1, 1],
}  # binary sequences whose aperiodic autocorrelation sidelobes are at most 1 in magnitude: shift-aware μ = 1/k


@dataclass
class Dictionary:
    """A synthesis dictionary with unit-norm columns and the coherence facts the theory needs.

    ``mu`` is the mutual coherence (dimensionless, ∈ [0, 1]) — shift-aware for convolutional dictionaries;
    ``s_star = ½(1 + 1/μ)`` the uniqueness bound on (stripe) sparsity; ``lipschitz = ‖D‖₂²``.
    ``neighbors`` (convolutional only): ``[m, w]`` indices of the atoms in each atom's stripe (itself included).
    """

    name: str
    matrix: Tensor  # [n, m] float64, unit-norm columns
    mu: float
    mu_source: str
    params: dict
    filters: Tensor | None = None  # conv weight [C, 1, k] or [C, 1, k, k] (unit-norm filters)
    neighbors: Tensor | None = None

    @property
    def n(self) -> int:
        return self.matrix.shape[0]

    @property
    def m(self) -> int:
        return self.matrix.shape[1]

    @property
    def s_star(self) -> float:
        return uniqueness_bound(self.mu)

    @property
    def nonnegative(self) -> bool:
        return bool((self.matrix >= 0).all())

    @cached_property
    def lipschitz(self) -> float:
        return float(torch.linalg.matrix_norm(self.matrix, ord=2)) ** 2

    @cached_property
    def _stripe_matrix(self) -> Tensor:
        """[m, m] 0/1 matrix: column i marks the atoms in atom i's stripe (convolutional dictionaries only)."""
        mat = torch.zeros(self.m, self.m, dtype=torch.float64)
        return mat.scatter_(0, self.neighbors.T, 1.0)

    def stripe_l0(self, codes: Tensor) -> Tensor:
        """Stripe sparsity ``‖Γ‖_{0,∞}`` of each row of ``codes`` ([B, m] → [B], integer counts)."""
        return self.stripe_l1((codes != 0).to(torch.float64)).round().long()

    def stripe_l1(self, codes: Tensor) -> Tensor:
        """Largest ℓ1 norm of ``codes`` over any stripe ([B, m] → [B]); the plain ℓ1 norm for dense dictionaries."""
        a = codes.abs()
        if self.neighbors is None:
            return a.sum(dim=1)
        return (a @ self._stripe_matrix.to(a)).max(dim=1).values

    def info(self) -> dict:
        """JSON-ready facts: shape, μ (and where it came from), s*, Welch bound, ‖D‖₂², non-negativity."""
        welch = welch_bound(self.m, self.n)
        return {"name": self.name, "params": self.params, "n": self.n, "m": self.m, "mu": self.mu,
                "mu_source": self.mu_source, "s_star": self.s_star, "welch": welch,
                "mu_over_welch": self.mu / welch if welch else None, "lipschitz": self.lipschitz,
                "nonnegative": self.nonnegative, "convolutional": self.filters is not None}


def _dense(name: str, atoms_as_columns: Tensor, params: dict) -> Dictionary:
    d = atoms_as_columns.to(torch.float64)
    d = d / d.norm(dim=0, keepdim=True).clamp_min(1e-300)
    return Dictionary(name, d, gram_stats(d.T)["mu"], "gram_stats", params)


def hadamard(n: int = 64) -> Dictionary:
    """``[I, H/√n]`` in ``R^{n×2n}`` (Sylvester Hadamard matrix; n a power of 2 ≥ 2): ``μ = 1/√n``."""
    if n < 2 or n & (n - 1):
        raise AnalysisError(f"hadamard: n must be a power of 2 >= 2, got {n}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return _dense("hadamard", torch.cat([torch.eye(n, dtype=torch.float64), h / math.sqrt(n)], 1), {"n": n})


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % q for q in range(2, math.isqrt(p) + 1))


def design(p: int = 31, d: int = 4, slopes: int | None = None, rows: int | None = None) -> Dictionary:
    """Affine-plane design: atom ``(a, b)`` (slope ``a < slopes``, offset ``b < p``) has ones at rows ``(j, a·j + b mod p)``.

    ``n = rows`` (default ``d·p``; extra rows are zero, so the design can feed a layer of any width ≥ ``d·p``),
    ``m = slopes·p`` (default ``p²``). Two atoms meet in at most one row, so ``μ = 1/d`` (needs p prime, d ≤ p).
    """
    slopes = p if slopes is None else slopes
    rows = d * p if rows is None else rows
    if not _is_prime(p) or not 1 <= d <= p or not 1 <= slopes <= p or rows < d * p:
        raise AnalysisError(f"design: need p prime, 1 <= d <= p, 1 <= slopes <= p, rows >= d*p; got p={p}, d={d}, "
                            f"slopes={slopes}, rows={rows}")
    a = torch.arange(slopes).repeat_interleave(p)
    b = torch.arange(p).repeat(slopes)
    mat = torch.zeros(rows, slopes * p, dtype=torch.float64)
    cols = torch.arange(slopes * p)
    for j in range(d):
        mat[j * p + (a * j + b) % p, cols] = 1.0
    return _dense("design", mat, {"p": p, "d": d, "slopes": slopes, "rows": rows})


def gaussian(n: int = 64, m: int | None = None, seed: int = 0) -> Dictionary:
    """i.i.d. N(0, 1) atoms, normalized (default ``m = 2n``); out of theory for all but the sparsest codes."""
    m = 2 * n if m is None else m
    g = torch.Generator().manual_seed(seed)
    return _dense("gaussian", torch.randn(n, m, generator=g, dtype=torch.float64), {"n": n, "m": m, "seed": seed})


def _filters(kind: str, k: int, channels: int, dims: int, seed: int) -> Tensor:
    if kind == "barker":
        if k not in BARKER or channels != 1:
            raise AnalysisError(f"barker filters exist for one channel and k in {sorted(BARKER)}; got k={k}, "
                                f"channels={channels}")
        b = torch.tensor(BARKER[k], dtype=torch.float64)
        w = b if dims == 1 else torch.outer(b, b)
        return w.reshape(1, 1, *w.shape)
    if kind == "gaussian":
        g = torch.Generator().manual_seed(seed)
        return torch.randn(channels, 1, *([k] * dims), generator=g, dtype=torch.float64)
    raise AnalysisError(f"unknown filter kind {kind!r} (choose barker or gaussian)")


def _offsets(k: int, dims: int, lo: int) -> Tensor:
    """All integer offset vectors with entries in ``[lo, k)`` ([count, dims])."""
    grids = torch.meshgrid(*[torch.arange(lo, k)] * dims, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], 1)


def _conv(name: str, weight: Tensor, shape: tuple[int, ...], params: dict) -> Dictionary:
    """Circular convolutional dictionary: atom ``c·n + p`` is filter c placed at position p of a signal of ``shape``."""
    k, dims = weight.shape[-1], len(shape)
    if any(s < 2 * k - 1 for s in shape):
        raise AnalysisError(f"{name}: signal size {shape} must be at least 2k-1 = {2 * k - 1} for filter size {k}")
    w = weight / weight.flatten(1).norm(dim=1).view(-1, *([1] * (weight.dim() - 1)))
    c, n = w.shape[0], math.prod(shape)
    size = torch.tensor(shape)
    strides = torch.tensor([math.prod(shape[i + 1:]) for i in range(dims)])
    pos = _offsets(max(shape), dims, 0)
    pos = pos[(pos < size).all(1)]  # every position of the signal, row-major: [n, dims]
    flat = lambda p: ((p % size) * strides).sum(-1)  # circular position -> row index
    mat = torch.zeros(n, c * n, dtype=torch.float64)
    for ch in range(c):
        for off, val in zip(_offsets(k, dims, 0), w[ch, 0].reshape(-1), strict=True):
            mat[flat(pos + off), ch * n + torch.arange(n)] = val
    stripe = flat(pos[:, None, :] + _offsets(k, dims, -k + 1)[None])  # [n, (2k-1)^dims] positions overlapping p
    neighbors = torch.cat([stripe + ch * n for ch in range(c)], 1).repeat(c, 1)
    return Dictionary(name, mat, conv_shift_coherence(w.float()), "conv_shift_coherence", params, filters=w,
                      neighbors=neighbors)


def conv1d(n: int = 64, k: int = 13, channels: int = 1, filters: str = "barker", seed: int = 0) -> Dictionary:
    """Circular 1-D convolutional dictionary in ``R^{n×(channels·n)}`` (Barker-13: shift-aware ``μ = 1/13``)."""
    w = _filters(filters, k, channels, 1, seed)
    return _conv("conv1d", w, (n,), {"n": n, "k": k, "channels": channels, "filters": filters, "seed": seed})


def conv2d(size: int = 16, k: int = 7, channels: int = 1, filters: str = "barker", seed: int = 0) -> Dictionary:
    """Circular 2-D convolutional dictionary on ``size×size`` images (Barker-7 ⊗ Barker-7: ``μ = 1/7``)."""
    w = _filters(filters, k, channels, 2, seed)
    return _conv("conv2d", w, (size, size), {"size": size, "k": k, "channels": channels, "filters": filters,
                                            "seed": seed})


DICTIONARIES: dict[str, Callable[..., Dictionary]] = {
    "hadamard": hadamard, "design": design, "gaussian": gaussian, "conv1d": conv1d, "conv2d": conv2d,
}


def make_dictionary(name: str, **params: Any) -> Dictionary:
    """Build the dictionary registered as ``name`` (see :data:`DICTIONARIES`) with keyword ``params``."""
    if name not in DICTIONARIES:
        raise AnalysisError(f"unknown dictionary {name!r} (choose from {', '.join(DICTIONARIES)})")
    try:
        return DICTIONARIES[name](**params)
    except TypeError as e:
        raise AnalysisError(f"dictionary {name!r}: {e}") from e
